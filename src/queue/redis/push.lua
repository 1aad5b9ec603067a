-- push.lua: enqueues many jobs at once. Each job is new, or a duplicate of the job already
-- enqueued under the same idempotency key (per tenant). Unknown tenants refuse the whole
-- batch before anything is written.
--
-- Written in bulk (a handful of calls per batch, not per job): a new job's tenant, key and
-- creation time go into the `meta` hash and its body into `bodies`; its own `job:<id>` hash
-- is created when it is first dispatched.
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
local fields = {}
for i = 2, #ARGV, 4 do
  local tenant = ARGV[i + 1]
  if not lists[tenant] then
    if redis.call('HEXISTS', KEYS[1], tenant) == 0 then
      return {'unknown', tenant}
    end
    lists[tenant] = {}
    order[#order + 1] = tenant
  end
  -- Tenant names cannot hold a newline, so the first one splits the field unambiguously.
  fields[#fields + 1] = tenant .. '\n' .. ARGV[i + 2]
end

-- Calls with many arguments go in slices: unpack() is bounded by Lua's C stack.
local SLICE = 400
local function bulk(command, key, args)
  for j = 1, #args, SLICE do
    redis.call(command, key, unpack(args, j, math.min(j + SLICE - 1, #args)))
  end
end

local existing = {}
for j = 1, #fields, SLICE do
  local got = redis.call('HMGET', P .. 'keys', unpack(fields, j, math.min(j + SLICE - 1, #fields)))
  for k = 1, #got do
    existing[j + k - 1] = got[k]
  end
end

local out = {}
local index, meta, bodies = {}, {}, {}
local fresh = {}
for n = 1, #fields do
  local i = 2 + (n - 1) * 4
  local id, tenant, key, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local field = fields[n]
  local before = existing[n] or fresh[field]
  if before then
    out[#out + 1] = 0
    out[#out + 1] = before
  else
    fresh[field] = id
    index[#index + 1] = field
    index[#index + 1] = id
    meta[#meta + 1] = id
    meta[#meta + 1] = tenant .. '\n' .. created .. '\n' .. key
    bodies[#bodies + 1] = id
    bodies[#bodies + 1] = body
    local ids = lists[tenant]
    ids[#ids + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
bulk('HSET', P .. 'keys', index)
bulk('HSET', P .. 'meta', meta)
bulk('HSET', P .. 'bodies', bodies)

local any = false
for _, tenant in ipairs(order) do
  local ids = lists[tenant]
  if #ids > 0 then
    bulk('RPUSH', P .. 'q:' .. tenant, ids)
    redis.call('ZADD', P .. 'ready', 'NX', int(now), tenant)
    any = true
  end
end
if any then
  wake()
end
return out
