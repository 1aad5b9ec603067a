-- retry_dead.lua: puts dead jobs back at the end of their tenants' lists with fresh
-- attempts. Ids that are not dead, or whose record lost its body, are left alone.
--
-- KEYS[1]: {q}:dead
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: job ids
--
-- Returns the number of jobs requeued.

local now = now_us()
local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) then
    local job = P .. 'job:' .. id
    local ok, f = pcall(redis.call, 'HMGET', job, 'tenant')
    if ok and f[1] and redis.call('HEXISTS', P .. 'bodies', id) == 1
      and redis.call('HEXISTS', P .. 'limits', f[1]) == 1 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('HSET', job, 'state', 'queued', 'attempts', 0)
      redis.call('HDEL', job, 'error', 'finished_ms', 'lease')
      redis.call('RPUSH', P .. 'q:' .. f[1], id)
      count_tenant(f[1], 'dead', -1)
      count_tenant(f[1], 'unfinished', 1)
      note_head(f[1])
      redis.call('ZADD', P .. 'ready', 'NX', int(now), f[1])
      count = count + 1
    end
  end
end
if count > 0 then
  wake()
end
return count
