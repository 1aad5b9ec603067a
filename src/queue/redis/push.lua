-- push.lua: enqueues many jobs at once. Each job is new, or a duplicate of the job already
-- enqueued under the same idempotency key (per tenant). Unknown tenants refuse the whole
-- batch before anything is enqueued.
--
-- Runs inside one MULTI/EXEC with the plain `HSET bodies` that comes before it (see
-- `RedisQueue::push_batch`): that HSET has already written every job's `bodies` entry
-- (`tenant \n length-of-key \n key body`, see split_record) under its new id. This script
-- decides which jobs are new, indexes their keys, queues their ids, and deletes the entries
-- of the others, so a batch ends with each job enqueued once or not at all. The bulk of the
-- bytes (the bodies) never passes through Lua, and the script builds no per-job strings:
-- that is what makes bulk enqueue fast. A job's own `job:<id>` hash is created when it is
-- first dispatched.
--
-- KEYS[1]: {q}:limits
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: n, the number of jobs
-- ARGV[3]: m, the number of tenants (runs of consecutive jobs with the same tenant: jobs
--          are grouped by tenant, each tenant's jobs in their order)
-- then m pairs:  tenant, number of its jobs
-- then n fields: `tenant\nidempotency key` per job (tenant names cannot hold a newline)
-- then n ids:    the new job id per job (each already has its `bodies` entry)
-- then n revisions: per job `digest` (`job::body_digest` of its body, or `-` for a delete),
--          then, for a job whose key was derived, a space and the key version 1 derived
--          (`job::legacy_key`; see "Revisions" below and `queue::revision`)
--
-- Returns {'unknown', tenant}, {'layout'} when the arguments do not add up, or else a flat
-- list of pairs, one per job whose key was taken: its 1-based position in the batch and the
-- id of the job already enqueued under that key. Every other job was enqueued under its new
-- id (so the usual answer is an empty list). A batch never names a key twice.

local n = tonumber(ARGV[2]) or -1
local m = tonumber(ARGV[3]) or -1
local RUNS = 4
local FIELDS = RUNS + 2 * m
local IDS = FIELDS + n
local REVS = IDS + n
-- Calls with many arguments go in slices: unpack() is bounded by Lua's C stack.
local SLICE = 4000

local function drop_entries(from, to)
  for j = from, to, SLICE do
    redis.call('HDEL', P .. 'bodies', unpack(ARGV, j, math.min(j + SLICE - 1, to)))
  end
end

if n < 1 or m < 1 or #ARGV ~= REVS + n - 1 then
  if n >= 1 and #ARGV >= IDS + n - 1 then
    drop_entries(IDS, IDS + n - 1)
  end
  return {'layout'}
end
local counted = 0
for j = 0, m - 1 do
  counted = counted + (tonumber(ARGV[RUNS + 2 * j + 1]) or 0)
end
if counted ~= n then
  drop_entries(IDS, IDS + n - 1)
  return {'layout'}
end

-- Every tenant registered, or nothing is enqueued.
for j = 0, m - 1 do
  local tenant = ARGV[RUNS + 2 * j]
  if redis.call('HEXISTS', KEYS[1], tenant) == 0 then
    drop_entries(IDS, IDS + n - 1)
    return {'unknown', tenant}
  end
end

-- Which keys are taken already, and what that makes of each job. (A batch never names a key twice: the client answers a
-- repeat within one push itself, as a duplicate of its first job.)
-- Revisions (issue 18): a key whose job is done decides what a job pushed again under it
-- does, as `queue::revision::push_as` does for the embedded backend: the same body (its
-- digest) is a duplicate; another body an update of the webhook the record holds; a delete
-- line deletes it; after a delete, a body creates it again. A job still unfinished under the
-- key (queued, running, scheduled, dead) keeps it: duplicate. An update or delete is marked
-- in front of the new job's body (`job::Operation`).
local function push_as(existing, digest)
  local ok, f = pcall(redis.call, 'HMGET', P .. 'job:' .. existing, 'state', 'outcome',
    'digest', 'webhook_id')
  if not ok or f[1] ~= 'done' then
    return 'duplicate'
  end
  local gone = f[2] == 'deleted' or f[2] == 'not_found'
  if digest == '-' then
    if gone then
      return 'duplicate'
    end
    return 'delete', f[4] or ''
  end
  if gone then
    return 'create'
  end
  if f[3] == digest then
    return 'duplicate'
  end
  return 'update', f[4] or ''
end

local function mark(id, op, webhook_id)
  local tenant, key, body = split_record(redis.call('HGET', P .. 'bodies', id))
  if tenant and key and body then
    redis.call('HSET', P .. 'bodies', id, tenant .. '\n' .. #key .. '\n' .. key .. op .. ' ' ..
      webhook_id .. '\n' .. body)
  end
end

local out, n_out = {}, 0
local index, n_index = {}, 0
local dropped, n_dropped = {}, 0
local taken = {}
for j = 0, n - 1, SLICE do
  local last = math.min(j + SLICE, n) - 1
  local got = redis.call('HMGET', P .. 'keys', unpack(ARGV, FIELDS + j, FIELDS + last))
  -- The version 1 keys of the jobs whose key is new, looked up in one call per slice.
  local legacy_fields, legacy_at, legacy_got = {}, {}, {}
  for k = 1, #got do
    if not got[k] then
      local rev = ARGV[REVS + j + k - 1]
      local space = string.find(rev, ' ', 1, true)
      if space then
        local tenant = string.match(ARGV[FIELDS + j + k - 1], '^([^\n]*)\n')
        if tenant then
          legacy_fields[#legacy_fields + 1] = tenant .. '\n' .. string.sub(rev, space + 1)
          legacy_at[#legacy_at + 1] = k
        end
      end
    end
  end
  if #legacy_fields > 0 then
    local found = redis.call('HMGET', P .. 'keys', unpack(legacy_fields))
    for x = 1, #legacy_at do
      legacy_got[legacy_at[x]] = found[x]
    end
  end
  for k = 1, #got do
    local i = j + k
    local id = ARGV[IDS + i - 1]
    local rev = ARGV[REVS + i - 1]
    local existing, verdict, webhook_id = got[k], 'create', nil
    if existing then
      verdict, webhook_id = push_as(existing, string.match(rev, '^(%S+)'))
    elseif legacy_got[k] then
      -- Keyed by version 1: the same tenant and body. That job is this one; its key
      -- version 2 now names it too, and a done record learns the body's digest.
      existing = legacy_got[k]
      verdict = 'duplicate'
      redis.call('HSET', P .. 'keys', ARGV[FIELDS + i - 1], existing)
      local record = P .. 'job:' .. existing
      if redis.call('HGET', record, 'state') == 'done' then
        redis.call('HSETNX', record, 'digest', string.match(rev, '^(%S+)'))
      end
    elseif string.byte(rev, 1) == 45 then
      -- `-`: a delete of a key never pushed: a delete of nothing.
      verdict, webhook_id = 'delete', ''
    end
    if verdict == 'duplicate' then
      out[n_out + 1] = i
      out[n_out + 2] = existing
      n_out = n_out + 2
      n_dropped = n_dropped + 1
      dropped[n_dropped] = id
      taken[i] = true
    else
      if verdict ~= 'create' then
        mark(id, verdict, webhook_id)
      end
      index[n_index + 1] = ARGV[FIELDS + i - 1]
      index[n_index + 2] = id
      n_index = n_index + 2
    end
  end
end
for j = 1, n_index, SLICE do
  redis.call('HSET', P .. 'keys', unpack(index, j, math.min(j + SLICE - 1, n_index)))
end
for j = 1, n_dropped, SLICE do
  redis.call('HDEL', P .. 'bodies', unpack(dropped, j, math.min(j + SLICE - 1, n_dropped)))
end

-- The new ids onto their tenants' lists, in order; tenants that were not waiting become
-- ready now (a waiting tenant keeps its place).
local now = int(now_us())
local scores = {}
local at = IDS
for j = 0, m - 1 do
  local tenant, count = ARGV[RUNS + 2 * j], tonumber(ARGV[RUNS + 2 * j + 1])
  local ids, from = ARGV, at
  if n_dropped > 0 then
    ids, from = {}, 1
    for i = at, at + count - 1 do
      if not taken[i - IDS + 1] then
        ids[#ids + 1] = ARGV[i]
      end
    end
    count = #ids
  end
  for s = 0, count - 1, SLICE do
    redis.call('RPUSH', P .. 'q:' .. tenant,
      unpack(ids, from + s, from + math.min(s + SLICE, count) - 1))
  end
  at = at + tonumber(ARGV[RUNS + 2 * j + 1])
  if count > 0 then
    count_tenant(tenant, 'unfinished', count)
    note_head(tenant)
    scores[#scores + 1] = now
    scores[#scores + 1] = tenant
  end
end
for j = 1, #scores, SLICE do
  redis.call('ZADD', P .. 'ready', 'NX', unpack(scores, j, math.min(j + SLICE - 1, #scores)))
end
if #scores > 0 then
  wake()
end
return out
