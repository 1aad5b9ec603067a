-- heartbeat.lua: extends a job's lease.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: lease, µs from now
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
if not leased(id, ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', int(now_us() + tonumber(ARGV[4])), id)
return 1
