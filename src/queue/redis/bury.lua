-- bury.lua: dead-letters a leased job with a reason; re-stamps its call first (see `restamp`
-- in prelude.lua).
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token (the call's id in the tenant's call log)
-- ARGV[4]: tenant
-- ARGV[5]: window + margin, µs
-- ARGV[6]: the reason a record with no tenant is buried with
-- ARGV[7]: reason
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local now, job = finish_lease(false)
if job == nil then
  return 0
end
bury(id, nil, ARGV[7], now)
return 1
