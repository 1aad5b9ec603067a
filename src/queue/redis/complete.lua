-- complete.lua: records success, the webhook Id atomically with completion. The body is
-- dropped (it may hold custom header secrets and is never needed again); the record stays
-- for `results`.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: webhook Id
-- ARGV[5]: reconciled (1 when found with Retrieve instead of created)
--
-- Returns 1, or 0 when the lease was lost (nothing recorded).

local id = ARGV[2]
local job = leased(id, ARGV[3])
if not job then
  return 0
end
local now = now_us()
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', job, 'state', 'done', 'webhook_id', ARGV[4], 'reconciled', ARGV[5],
  'finished_ms', ms(now))
redis.call('HDEL', job, 'lease', 'error', 'call_until_ms')
redis.call('HDEL', P .. 'bodies', id)
redis.call('ZADD', P .. 'done', int(now), id)
return 1
