-- complete.lua: records successes, each webhook Id atomically with its job's completion,
-- and each call's history entry (as note_attempt.lua adds it); a batch of them in one call
-- (`Queue::complete_many`: a worker process sends its completions together), or one
-- (`Queue::complete`). Each call is re-stamped first (see `restamp` in prelude.lua), at the
-- moment its answer arrived: now less how long ago the worker got it. The body is dropped
-- (it may hold custom header secrets and is never needed again); the record stays for
-- `results`. Work that does not depend on the job (the running, done and bodies keys, the
-- counter, the tenants) is one command per batch.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: window + margin, µs
-- ARGV[3]: N, the most history entries kept per job
-- ARGV[4..]: 11 per job: job id; lease token (the call's id in the tenant's call log);
--          tenant; webhook Id; reconciled (1 when found with Retrieve instead of created);
--          how long before this call the answer arrived, µs; history entry (JSON, '' for
--          none); what the job did (`job::Outcome`: created, updated, unchanged, deleted,
--          not_found); the digest of the body the webhook now has ('' after a delete),
--          which push.lua compares a job pushed again under the key with; the body's field
--          digests, for `sync`'s plan; when the job was dispatched (ms, `dispatched_ms`)
--
-- Returns per job, in order, 1, or 0 when the lease was lost (nothing recorded). A
-- completion repeated after its first answer was lost, or not acknowledged by the replicas,
-- finds the job done with this Id: 1 again.

local window_us = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local now = now_us()
local finished = ms(now)
local now_text = int(now)
local out = {}
local done = {}
local scores = {}
local tenants = {}
local seen = {}
local outcomes = {}
for i = 4, #ARGV - 10, 11 do
  local id, token, tenant, webhook_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local dispatched = tonumber(ARGV[i + 10])
  restamp(tenant, token, now - (tonumber(ARGV[i + 5]) or 0), window_us,
    dispatched and dispatched * 1000)
  local record = P .. 'job:' .. id
  local job = leased(id, token, record)
  local known = job ~= nil
  local recorded = 0
  if job then
    redis.call('HDEL', job, 'lease', 'call_until_ms')
    -- Its call is no longer in flight (`landed`, less the `capped` check: once per batch).
    unfly(tenant, token)
    -- An earlier attempt's error is blanked (readers take '' as none): one call, not two.
    -- What it did and the body's digests (issue 18) are for push.lua's revisions and sync.
    local outcome = ARGV[i + 7]
    redis.call('HSET', job, 'state', 'done', 'webhook_id', webhook_id, 'reconciled',
      ARGV[i + 4], 'finished_ms', finished, 'error', '', 'outcome', outcome,
      'digest', ARGV[i + 8], 'fields', ARGV[i + 9])
    outcomes[outcome] = (outcomes[outcome] or 0) + 1
    done[#done + 1] = id
    scores[#scores + 1] = now_text
    scores[#scores + 1] = id
    -- The tenants view's counters (tenants.lua).
    count_tenant(tenant, 'unfinished', -1)
    count_tenant(tenant, 'done', 1)
    -- The tenant's host answered: its unreachable-host streak (host_failed.lua) starts over,
    -- and it is out of its probe (dispatch's `flight_cap`).
    if not seen[tenant] then
      seen[tenant] = true
      tenants[#tenants + 1] = tenant
    end
    recorded = 1
  else
    local ok, f = pcall(redis.call, 'HMGET', record, 'state', 'webhook_id')
    known = ok and f[1] ~= false and f[1] ~= nil
    if ok and f[1] == 'done' and f[2] == webhook_id then
      -- Written again, so that the WAIT after this call covers the completion: a WAIT
      -- counts only the writes of its own connection, and the first may have been another.
      redis.call('HSET', record, 'webhook_id', webhook_id)
      recorded = 1
    end
  end
  -- The history is for people: a damaged one (not a list) never fails a completion.
  local entry = ARGV[i + 6]
  if known and entry ~= '' then
    local hist = P .. 'hist:' .. id
    local ok, len = pcall(redis.call, 'RPUSH', hist, entry)
    if ok and len > keep then
      redis.call('LTRIM', hist, -keep, -1)
    end
  end
  out[#out + 1] = recorded
end
if #done > 0 then
  redis.call('ZREM', KEYS[1], unpack(done))
  redis.call('HDEL', P .. 'bodies', unpack(done))
  redis.call('HDEL', P .. 'streak', unpack(tenants))
  redis.call('HDEL', P .. 'probe', unpack(tenants))
  -- A tenant dispatch found at its cap of calls in flight is back in `ready` now that one
  -- landed (`uncap`). Tenants are rarely capped, so `capped` is usually empty: one HLEN
  -- per batch instead of an HDEL per job.
  if redis.call('HLEN', P .. 'capped') > 0 then
    for _, tenant in ipairs(tenants) do
      uncap(tenant, now)
    end
  end
  redis.call('ZADD', P .. 'done', unpack(scores))
  redis.call('HINCRBY', P .. 'stats', 'done_total', #done)
  -- Issue 18: the per-outcome counts.
  for outcome, n in pairs(outcomes) do
    redis.call('HINCRBY', P .. 'stats', 'outcome:' .. outcome, n)
  end
end
return out
