-- purge_dead.lua: deletes dead jobs, and their idempotency keys so that the same job can be
-- enqueued again.
--
-- KEYS[1]: {q}:dead
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: job ids
--
-- Returns the number of jobs deleted.

local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local job = P .. 'job:' .. id
    local ok, f = pcall(redis.call, 'HMGET', job, 'tenant', 'key')
    if ok and f[1] then
      count_tenant(f[1], 'dead', -1)
    end
    if ok and f[1] and f[2] then
      local field = f[1] .. '\n' .. f[2]
      if redis.call('HGET', P .. 'keys', field) == id then
        redis.call('HDEL', P .. 'keys', field)
      end
    end
    redis.call('DEL', job, P .. 'hist:' .. id)
    redis.call('HDEL', P .. 'bodies', id)
    redis.call('HDEL', P .. 'meta', id)
    count = count + 1
  end
end
return count
