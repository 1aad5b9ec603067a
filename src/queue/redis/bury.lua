-- bury.lua: dead-letters a leased job with a reason.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: reason
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local job = leased(id, ARGV[3])
if not job then
  return 0
end
bury(id, nil, ARGV[4], now_us())
return 1
