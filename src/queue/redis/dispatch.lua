-- dispatch.lua: the limiter. Promotes due retries, takes back expired leases, then hands out
-- up to `max jobs` jobs: each time, the next job of the first tenant whose time has come,
-- spending one of its calls, leasing the job and re-scoring the tenant. One atomic call, so
-- dispatchers on any number of connections never hand out more than `limit` calls of a
-- tenant in any window.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: window + margin, µs
-- ARGV[3]: lease, µs
-- ARGV[4]: max attempts (a job whose lease expires with no attempt left is dead)
-- ARGV[5]: lease token base: the n-th job handed out gets `<base>.<n>` (also the call's id
--          in its tenant's call log)
-- ARGV[6]: at most this many retries promoted, and this many leases taken back, per call
-- ARGV[7]: at most this many tenants examined per call without handing out a job
-- ARGV[8]: at most this many jobs handed out (>= 1)
-- ARGV[9]: the fence for Creates, µs (0: none): a job handed out to be created (not one
--          whose outcome is unknown, which only reconciles) records `call_until_ms` = its
--          dispatch time + this, as `heartbeat.lua`'s fence does (see `Queue::dispatch_many`)
-- ARGV[19]: the share mode, `adaptive` or `fixed` (see `tenant_cap` in prelude.lua)
-- ARGV[20]: the length of a day for daily quotas, µs (see `quota_end` in prelude.lua)
-- ARGV[21]: `slow_start` or '' (see `QueueConfig::slow_start`): a tenant whose host has not
--          answered yet may have one call in flight, not its cap
-- ARGV[10..18]: the reasons recorded (built in Rust, `queue::reason`): lease expired with no
--          attempt left; lease expired mid-call; lease expired, handed back; record missing
--          when a retry came due; record missing when a lease expired; damaged `bodies`
--          entry; record not a hash; record missing from the queue; no body or no state
--
-- Returns {'jobs', then 8 fields per job: id, tenant, key, its `bodies` entry as it is
-- and where the body starts in it (bytes, 1-based; see `record_layout`), attempt,
-- outcome_unknown(0|1), dispatch time ms}, {'wait', µs} until the earliest of the next
-- tenant's turn, the next retry due and the first lease's expiry ({'wait', 0}: the
-- examination budget ran out, call again), or {'empty'}: nothing queued, scheduled or
-- running (but for tenants held until released). The n-th job's lease token is `<base>.<n>`,
-- and it is fenced when the call asked for a fence and its outcome is known: the caller
-- knows both, so they are not sent back.

local window_us = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local token_base = ARGV[5]
local max_moves = tonumber(ARGV[6])
local max_skipped = tonumber(ARGV[7])
local max_jobs = math.max(1, tonumber(ARGV[8]) or 1)
local fence_us = tonumber(ARGV[9]) or 0
local adaptive = ARGV[19] == 'adaptive'
local day_us = tonumber(ARGV[20]) or 0
local slow_start = ARGV[21] == 'slow_start'
local probe_key = P .. 'probe'
local why = {
  no_attempts_left = ARGV[10],
  expired_mid_call = ARGV[11],
  expired = ARGV[12],
  retry_record_missing = ARGV[13],
  lease_record_missing = ARGV[14],
  damaged_entry = ARGV[15],
  not_a_hash = ARGV[16],
  record_missing = ARGV[17],
  no_body_or_state = ARGV[18],
}
local ready = KEYS[1]
local now = now_us()
local moved = 0

-- Due retries go to the FRONT of their tenant's list: they were first in line once. Taken
-- latest-due first so that the earliest-due ends up first.
local due = redis.call('ZRANGEBYSCORE', P .. 'sched', '-inf', int(now), 'LIMIT', 0, max_moves)
for i = #due, 1, -1 do
  local id = due[i]
  redis.call('ZREM', P .. 'sched', id)
  local ok, tenant = pcall(redis.call, 'HGET', P .. 'job:' .. id, 'tenant')
  if ok and tenant then
    redis.call('HSET', P .. 'job:' .. id, 'state', 'queued')
    redis.call('LPUSH', P .. 'q:' .. tenant, id)
    note_head(tenant)
    redis.call('ZADD', ready, 'NX', int(now), tenant)
    moved = moved + 1
  elseif ok then
    bury(id, nil, why.retry_record_missing, now)
  end
end

-- Expired leases: the worker died or hung. The attempt stays spent and the outcome is
-- unknown (the call may have reached LeadSquared). A job that kills its worker every time
-- runs out of attempts here and ends dead. A job whose holder may have sent Create (a fence
-- recorded `call_until_ms`) waits in the schedule until that call can no longer land: a
-- reconcile before then could find nothing while the call is still being processed, and
-- create a second webhook.
local expired = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', int(now), 'LIMIT', 0,
  max_moves)
for i = #expired, 1, -1 do
  local id = expired[i]
  redis.call('ZREM', P .. 'running', id)
  local job = P .. 'job:' .. id
  local ok, f = pcall(redis.call, 'HMGET', job, 'tenant', 'attempts', 'lease')
  if ok and f[1] then
    landed(f[1], f[3], now)
  end
  if not ok or not f[1] then
    if ok then
      bury(id, nil, why.lease_record_missing, now)
    end
  elseif (tonumber(f[2]) or 0) >= max_attempts then
    redis.call('HSET', job, 'outcome_unknown', 1)
    bury(id, f[1], why.no_attempts_left, now)
  else
    local in_flight_until = call_until_us(job)
    redis.call('HDEL', job, 'lease', 'call_until_ms')
    if in_flight_until > now then
      redis.call('HSET', job, 'state', 'scheduled', 'outcome_unknown', 1, 'error',
        why.expired_mid_call)
      redis.call('ZADD', P .. 'sched', int(in_flight_until), id)
    else
      redis.call('HSET', job, 'state', 'queued', 'outcome_unknown', 1, 'error', why.expired)
      redis.call('LPUSH', P .. 'q:' .. f[1], id)
      note_head(f[1])
      redis.call('ZADD', ready, 'NX', int(now), f[1])
    end
    moved = moved + 1
  end
end
if moved > 0 then
  wake()
end

-- The whole queue paused (`Queue::pause_queue`): retries come due and expired leases are
-- taken back as above, but nothing is handed out; resuming wakes the workers.
if redis.call('EXISTS', P .. 'paused_queue') == 1 then
  return {'empty'}
end

-- The tenant's call log around its cap: the scores of its (limit-1)-th and limit-th most
-- recent calls (nil where it has fewer), `limit` being the cap (`tenant_cap`). The limit-th
-- says when the next call is allowed; once a call is added, the (limit-1)-th becomes the
-- limit-th. A call added at `t` may not
-- be the newest (an entry re-stamped later, a clock step): then the real limit-th is no
-- later than the (limit-1)-th, so using it is never less strict.
-- `calls`: the log's key.
local function log_edge(calls, limit)
  if limit == 1 then
    local e = redis.call('ZREVRANGE', calls, 0, 0, 'WITHSCORES')
    return nil, tonumber(e[2])
  end
  local e = redis.call('ZREVRANGE', calls, limit - 2, limit - 1, 'WITHSCORES')
  return tonumber(e[2]), tonumber(e[4])
end

-- How many calls the tenant may have in flight (issue 14): its cap, or 1 with `slow_start`
-- while its host has not answered yet (`probe` is `new`: a new tenant, new keys, a new
-- host; any answer deletes it). Without a cap, a host that never answers would take a
-- worker slot per call until each call times out: up to a whole window's calls every
-- window, for the client's timeout.
local function flight_cap(tenant, cap)
  if slow_start and redis.call('HGET', probe_key, tenant) == 'new' then
    return 1
  end
  return cap
end

-- When the tenant has `most` calls in flight (leases not yet expired), the time its first
-- lease expires (µs); nil when it has room for another. `flying`: its `fly:` key.
local function flight_full(flying, most, t)
  if redis.call('ZCARD', flying) < most then
    return nil
  end
  redis.call('ZREMRANGEBYSCORE', flying, '-inf', int(t))
  if redis.call('ZCARD', flying) < most then
    return nil
  end
  local first = redis.call('ZRANGE', flying, 0, 0, 'WITHSCORES')
  return tonumber(first[2]) or t
end

-- Keys and texts a dispatch uses for every job: built once (each new string costs the
-- script about as much as a command).
local bodies_key = P .. 'bodies'
local oldest_key = P .. 'oldest'
local day_text = {}
local out = {'jobs'}
local running = {}
local spent_meta = {}
local served = 0
local skipped = 0
local budget_spent = true
local expire_ms = int(math.ceil(window_us / 1000) * 2 + 1000)
-- The tenants whose time has come, in order, read several at a time: a tenant served or
-- skipped is re-scored at its `t` or later, behind every tenant read with it, so the order
-- read is the order one read per job would give.
local heads, next_head = {}, 1
while served < max_jobs and skipped < max_skipped do
  -- The n-th job of a batch is dispatched as if by a call of its own n µs after `now`: a
  -- tenant served in this batch is re-scored at that time, behind every tenant already
  -- waiting, so tenants take turns within a batch as they do across calls.
  local t = now + served
  local t_text = int(t)
  if next_head > #heads then
    heads = redis.call('ZRANGEBYSCORE', ready, '-inf', t_text, 'LIMIT', 0,
      max_jobs - served + 4)
    next_head = 1
    if #heads == 0 then
      budget_spent = false
      break
    end
  end
  local tenant = heads[next_head]
  next_head = next_head + 1
  -- The log keeps the newest `limit` calls (what rate_limited.lua counts); the dispatch
  -- allows `cap` of them per window.
  local limit = tenant_limit(tenant)
  local cap, _, gap = tenant_cap(tenant, t, window_us, adaptive, limit)
  -- A tenant whose daily quota is spent is parked until the day resets: like a pause, its
  -- jobs stay queued and no attempt is spent.
  local quota = daily_quota(tenant)
  local pause = paused_until(tenant)
  if quota then
    pause = math.max(pause, quota_end(quota, calls_today(tenant, t, day_us), t, day_us))
  end
  local calls = P .. 'calls:' .. tenant
  local flying = P .. 'fly:' .. tenant
  local before_last, last = log_edge(calls, cap)
  local at = math.max(last and last + window_us or 0, pause, paced_at(tenant, gap))
  local full = at <= t and flight_full(flying, flight_cap(tenant, cap), t)
  if at > t then
    redis.call('ZADD', ready, int(at), tenant)
    skipped = skipped + 1
  elseif full then
    -- At its cap of calls in flight: back in `ready` when one of them ends (`landed`), or
    -- when the first lease expires.
    redis.call('HSET', P .. 'capped', tenant, 1)
    redis.call('ZADD', ready, int(math.max(t, full)), tenant)
    skipped = skipped + 1
  else
    local list = P .. 'q:' .. tenant
    local popped, id = pcall(redis.call, 'LPOP', list)
    local more = note_head(tenant, popped and id, list, oldest_key)
    if not popped or not id then
      -- Nothing waiting (or the list key is not a list): not a ready tenant.
      redis.call('ZREM', ready, tenant)
      skipped = skipped + 1
    else
      local job = P .. 'job:' .. id
      local ok, f = pcall(redis.call, 'HMGET', job, 'state', 'attempts', 'outcome_unknown', 'key')
      local entry = redis.call('HGET', bodies_key, id)
      local key_at, key_len, body_at = record_layout(entry)
      local key = f and f[4]
      local first = ok and not f[1] and not f[2]
      -- The `meta` entry of a job pushed by an older version (which kept tenant and key
      -- there); nil for jobs pushed since.
      local meta = nil
      if first then
        -- Never dispatched: its tenant and key are in its `bodies` entry (or in `meta`);
        -- they move into the job's own hash.
        if key_at then
          key = string.sub(entry, key_at, key_at + key_len - 1)
        else
          meta = redis.call('HGET', P .. 'meta', id)
          key = meta and (string.match(meta, '^[^\n]*\n(.*)$') or '')
        end
      end
      if entry and not body_at and (first or (ok and f[1] == 'queued')) then
        bury(id, tenant, why.damaged_entry, now)
        rescore(tenant, now, window_us)
        skipped = skipped + 1
      elseif not ok then
        -- Not a hash: keep the data for inspection under another name, bury the job.
        redis.call('RENAME', job, P .. 'corrupt:' .. id)
        bury(id, tenant, why.not_a_hash, now)
        rescore(tenant, now, window_us)
        skipped = skipped + 1
      elseif first and not key then
        bury(id, tenant, why.record_missing, now)
        rescore(tenant, now, window_us)
        skipped = skipped + 1
      elseif (first or f[1] == 'queued') and body_at then
        served = served + 1
        local attempt = (tonumber(f[2]) or 0) + 1
        local token = token_base .. '.' .. served
        local t_ms = ms(t)
        redis.call('ZADD', calls, t_text, token)
        if last then
          -- The log held `cap` calls already: keep only the newest `limit`.
          redis.call('ZREMRANGEBYRANK', calls, 0, -(limit + 1))
        end
        -- Entries older than the window no longer matter: let an idle tenant's log go.
        redis.call('PEXPIRE', calls, expire_ms)
        if day_us > 0 then
          -- The count just written says whether this call spent the quota.
          local day = math.floor(t / day_us)
          day_text[day] = day_text[day] or int(day)
          pause = math.max(pause, quota_end(quota,
            count_today(tenant, t, day_us, quota or false, day_text[day]), t, day_us))
        end
        if gap then
          redis.call('HSET', PACED, tenant, t_text)
        end
        local unknown = 0
        if f[3] == '1' then
          unknown = 1
        end
        local fields = {'state', 'running', 'attempts', attempt, 'lease', token,
          'dispatched_ms', t_ms}
        if first then
          fields[#fields + 1] = 'tenant'
          fields[#fields + 1] = tenant
          fields[#fields + 1] = 'key'
          fields[#fields + 1] = key
          if meta then
            spent_meta[#spent_meta + 1] = id
          end
        end
        if fence_us > 0 and unknown == 0 then
          fields[#fields + 1] = 'call_until_ms'
          fields[#fields + 1] = int(math.ceil((t + fence_us) / 1000))
        end
        redis.call('HSET', job, unpack(fields))
        local lease_end = int(t + lease_us)
        running[#running + 1] = lease_end
        running[#running + 1] = id
        redis.call('ZADD', flying, lease_end, token)
        -- Re-score: the call just added makes the (limit-1)-th newest the limit-th.
        if not more then
          redis.call('ZREM', ready, tenant)
        else
          local next_at = pause
          if cap == 1 then
            next_at = math.max(next_at, math.max(t, last or 0) + window_us)
          elseif before_last then
            next_at = math.max(next_at, before_last + window_us)
          end
          if gap then
            next_at = math.max(next_at, t + gap)
          end
          redis.call('ZADD', ready, next_at <= t and t_text or int(next_at), tenant)
        end
        local n = #out
        out[n + 1] = id
        out[n + 2] = tenant
        out[n + 3] = key or ''
        out[n + 4] = entry
        out[n + 5] = body_at
        out[n + 6] = attempt
        out[n + 7] = unknown
        out[n + 8] = t_ms
      elseif first or f[1] == 'queued' or not f[1] then
        if first and key then
          redis.call('HSET', job, 'tenant', tenant, 'key', key)
        end
        if meta then
          redis.call('HDEL', P .. 'meta', id)
        end
        bury(id, tenant, why.no_body_or_state, now)
        rescore(tenant, now, window_us)
        skipped = skipped + 1
      else
        -- A stale entry: the job is running, scheduled or finished elsewhere. Drop it.
        rescore(tenant, now, window_us)
        skipped = skipped + 1
      end
    end
  end
end
if served > 0 then
  redis.call('ZADD', P .. 'running', unpack(running))
  if #spent_meta > 0 then
    redis.call('HDEL', P .. 'meta', unpack(spent_meta))
  end
  return out
end
if budget_spent then
  return {'wait', 0}
end

local next_at = nil
-- A tenant held until released (scored FOREVER_US) is nothing to wait for.
local r = redis.call('ZRANGEBYSCORE', ready, '-inf', '(' .. int(FOREVER_US), 'WITHSCORES',
  'LIMIT', 0, 1)
if #r > 0 then
  next_at = tonumber(r[2])
end
-- The next retry due, and the first lease to expire: its job comes back then with no
-- wake-up (only a dispatch takes it back), so that is a moment to look again too. 'empty'
-- then says that nothing can come but through a write that wakes the workers (see
-- `Dispatch::Empty`).
for _, set in ipairs({'sched', 'running'}) do
  local first = redis.call('ZRANGE', P .. set, 0, 0, 'WITHSCORES')
  if #first > 0 and (not next_at or tonumber(first[2]) < next_at) then
    next_at = tonumber(first[2])
  end
end
if not next_at then
  return {'empty'}
end
return {'wait', math.max(0, next_at - now)}
