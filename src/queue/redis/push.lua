-- push.lua: enqueues many jobs at once. Each job is new, or a duplicate of the job already
-- enqueued under the same idempotency key (per tenant). Unknown tenants refuse the whole
-- batch before anything is written.
--
-- Written in bulk (a handful of calls per batch, plus one RPUSH per tenant, not calls per
-- job): a new job's tenant and key go into the `meta` hash (its creation time is in its
-- UUIDv7 id) and its body into `bodies`; its own `job:<id>` hash is created when it is
-- first dispatched. Callers group a batch's jobs by tenant so that it touches few tenants.
--
-- KEYS[1]: {q}:limits
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: four per job: new job id, tenant, idempotency key, body (JSON text)
--
-- Returns {'unknown', tenant}, or one entry per job, in input order: 0 when it was
-- enqueued under its new id, or the id of the job already enqueued under its key.

local now = now_us()
local lists = {}
local order = {}
local fields = {}
for i = 2, #ARGV, 4 do
  local tenant = ARGV[i + 1]
  if not lists[tenant] then
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

-- Every tenant registered, or nothing is written.
for j = 1, #order, SLICE do
  local limits = redis.call('HMGET', KEYS[1], unpack(order, j, math.min(j + SLICE - 1, #order)))
  for k = 1, #limits do
    if not limits[k] then
      return {'unknown', order[j + k - 1]}
    end
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
  local id, tenant = ARGV[i], ARGV[i + 1]
  local field = fields[n]
  local before = existing[n] or fresh[field]
  if before then
    out[n] = before
  else
    fresh[field] = id
    index[#index + 1] = field
    index[#index + 1] = id
    meta[#meta + 1] = id
    meta[#meta + 1] = field
    bodies[#bodies + 1] = id
    bodies[#bodies + 1] = ARGV[i + 3]
    local ids = lists[tenant]
    ids[#ids + 1] = id
    out[n] = 0
  end
end
bulk('HSET', P .. 'keys', index)
bulk('HSET', P .. 'meta', meta)
bulk('HSET', P .. 'bodies', bodies)

local any = false
local scores = {}
for _, tenant in ipairs(order) do
  local ids = lists[tenant]
  if #ids > 0 then
    bulk('RPUSH', P .. 'q:' .. tenant, ids)
    scores[#scores + 1] = int(now)
    scores[#scores + 1] = tenant
    any = true
  end
end
for j = 1, #scores, SLICE do
  redis.call('ZADD', P .. 'ready', 'NX', unpack(scores, j, math.min(j + SLICE - 1, #scores)))
end
if any then
  wake()
end
return out
