-- retry_later.lua: schedules a retry after a delay (the attempt stays spent), or buries the
-- job when it has no attempts left. An unknown outcome stays unknown: a transient failure
-- cannot prove the webhook was not created (only `requeue` after a reconcile clears it).
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: delay, µs
-- ARGV[5]: error text
-- ARGV[6]: outcome unknown (0|1)
-- ARGV[7]: max attempts
--
-- Returns 1 (scheduled), 2 (dead: no attempts left), or 0 when the lease was lost.

local id = ARGV[2]
local job = leased(id, ARGV[3])
if not job then
  return 0
end
local now = now_us()
redis.call('ZREM', KEYS[1], id)
if ARGV[6] == '1' then
  redis.call('HSET', job, 'outcome_unknown', 1)
end
local f = redis.call('HMGET', job, 'attempts', 'tenant')
local attempts = tonumber(f[1]) or 0
if attempts >= tonumber(ARGV[7]) then
  bury(id, f[2], 'gave up after ' .. attempts .. ' attempts: ' .. ARGV[5], now)
  return 2
end
redis.call('HSET', job, 'state', 'scheduled', 'error', ARGV[5])
redis.call('HDEL', job, 'lease', 'call_until_ms')
redis.call('ZADD', P .. 'sched', int(now + tonumber(ARGV[4])), id)
-- A waiting worker may be sleeping past this retry's time.
wake()
return 1
