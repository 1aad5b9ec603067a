-- push.lua: enqueues many jobs at once. Each job is new, or a duplicate of the job already
-- enqueued under the same idempotency key (per tenant). Unknown tenants refuse the whole
-- batch before anything is written.
--
-- KEYS[1]: {q}:limits
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: four per job: new job id, tenant, idempotency key, body (JSON text)
--
-- Returns {'unknown', tenant}, or a flat list with two entries per job, in input order:
-- 1 and the new id, or 0 and the existing job's id.

local now = now_us()
local created = ms(now)
local lists = {}
local order = {}
for i = 2, #ARGV, 4 do
  local tenant = ARGV[i + 1]
  if not lists[tenant] then
    if redis.call('HEXISTS', KEYS[1], tenant) == 0 then
      return {'unknown', tenant}
    end
    lists[tenant] = {}
    order[#order + 1] = tenant
  end
end

local out = {}
for i = 2, #ARGV, 4 do
  local id, tenant, key, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  -- Tenant names cannot hold a newline, so the first one splits the field unambiguously.
  local field = tenant .. '\n' .. key
  if redis.call('HSETNX', P .. 'keys', field, id) == 1 then
    redis.call('HSET', P .. 'job:' .. id, 'tenant', tenant, 'key', key, 'body', body,
      'state', 'queued', 'attempts', 0, 'created_ms', created)
    local ids = lists[tenant]
    ids[#ids + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = id
  else
    out[#out + 1] = 0
    out[#out + 1] = redis.call('HGET', P .. 'keys', field)
  end
end

local any = false
for _, tenant in ipairs(order) do
  local ids = lists[tenant]
  -- unpack() is bounded by Lua's C stack: push in slices.
  for j = 1, #ids, 500 do
    redis.call('RPUSH', P .. 'q:' .. tenant, unpack(ids, j, math.min(j + 499, #ids)))
  end
  if #ids > 0 then
    redis.call('ZADD', P .. 'ready', 'NX', int(now), tenant)
    any = true
  end
end
if any then
  wake()
end
return out
