-- prelude.lua: helpers shared by every script of the Redis queue; prepended to each of them
-- (see scripts.rs), so a script's own header names its KEYS and ARGV.
--
-- ARGV[1] of every script: the queue's key prefix, `{name}:`. Every key a script touches is
-- built from it, so all of a queue's keys share one Redis Cluster hash slot; KEYS[1] names
-- one of them so that a cluster client routes the call to that slot.
--
-- Times: sorted-set scores are microseconds on Redis's clock (TIME): exact integers in a
-- double, and fine enough that two dispatches never tie. Hash fields ending in _ms are
-- milliseconds since the Unix epoch.

local P = ARGV[1]
-- Keys a dispatch reads for every job, built once per call (a new string costs about what a
-- command does).
local LIMITS = P .. 'limits'
local RESERVE = P .. 'reserve'
local DAILY_LIMIT = P .. 'daily_limit'
local PAUSED = P .. 'paused'
-- tenant -> µs its pacing counts from (its last call, or its last cut): see `paced_at`.
local PACED = P .. 'paced'

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Integers as exact decimal text. Lua's own number-to-string keeps 14 digits and would
-- round a microsecond time.
local function int(n)
  return string.format('%d', n)
end

local function ms(us)
  return int(math.floor(us / 1000))
end

-- When a job was pushed, ms since the epoch: the 48-bit timestamp that opens its UUIDv7
-- id (`xxxxxxxx-xxxx-7...`); nil for anything else.
local function enqueued_ms(id)
  if type(id) ~= 'string' or #id ~= 36 or string.sub(id, 15, 15) ~= '7' then
    return nil
  end
  return tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16)
end

-- Keeps `oldest` (tenant -> push time, ms, of the job next in its list) right after the
-- tenant's list changed at its head or became empty or non-empty: the queue's latency is
-- read from it without visiting every tenant (pulse.lua, which also repairs what it reads).
-- Returns whether the list has a head (a job still waits), so that a caller that just
-- popped need not ask again. `popped`: the id the caller just took from the head; when the
-- new head was pushed in the same millisecond (a bulk push), the entry already says so.
-- `list`, `oldest`: the tenant's list key and the `oldest` key, when the caller has them.
local function note_head(tenant, popped, list, oldest)
  local ok, head = pcall(redis.call, 'LINDEX', list or (P .. 'q:' .. tenant), 0)
  if ok and type(head) == 'string' and type(popped) == 'string'
      and string.sub(head, 1, 15) == string.sub(popped, 1, 15) then
    -- The same millisecond and version (`enqueued_ms` reads no more): nothing changes.
    return true
  end
  local at = ok and enqueued_ms(head)
  oldest = oldest or (P .. 'oldest')
  if at then
    redis.call('ZADD', oldest, at, tenant)
  else
    redis.call('ZREM', oldest, tenant)
  end
  return ok and head ~= false
end

-- The tenant's calls per window: the imported limit, or the lower one LeadSquared named.
-- A missing or unreadable entry gives 1, the one value that can never exceed a real limit
-- (and `status` shows it).
local function tenant_limit(tenant)
  local l = tonumber(redis.call('HGET', LIMITS, tenant))
  if not l or l < 1 then
    return 1
  end
  return math.floor(l)
end

-- The share controller's climb and pacing (`queue::share`: CLIMB, DOUBLING, OVERLAP),
-- written into the script's text from those constants when it is built (scripts.rs).
local SHARE_CLIMB = {scale = SHARE_CLIMB_SCALE, doubling = SHARE_DOUBLING, overlap = SHARE_OVERLAP}

-- The tenant's share at `now`, as `queue::share` rules it (this is its arithmetic for the
-- scripts; the cuts are decided in Rust and written by adapt_share.lua): its cap is its
-- limit less its reserve (at least 1); with `adaptive`, the share set at its last cut
-- (`share:<tenant>`: share, since µs) climbed since, `set + scale × (2^(windows / doubling)
-- − 1)` (`share::share_at`), at least 1 and at most the cap. Returns the most calls it may
-- make in any window, its share (calls per window), and while the share is under the
-- limit the least gap between two of its calls (µs; nil otherwise; `share::pace`).
-- Scripts that do not know the mode (every one but dispatch, take_call, status, tenants
-- and pulse) use the cap without the share: a score they set can only be too early, and
-- dispatch re-checks it. `limit`: the tenant's limit when the caller has read it (nil:
-- read here).
local function tenant_cap(tenant, now, window_us, adaptive, limit)
  limit = limit or tenant_limit(tenant)
  local reserve = tonumber(redis.call('HGET', RESERVE, tenant)) or 0
  local cap = math.max(1, limit - math.max(0, math.floor(reserve)))
  local share = cap
  if adaptive then
    local ok, s = pcall(redis.call, 'HMGET', P .. 'share:' .. tenant, 'share', 'since')
    local set, since = ok and tonumber(s[1]), ok and tonumber(s[2])
    if set and since then
      local w = math.max(0, now - since) / window_us
      share = set + SHARE_CLIMB.scale * (2 ^ (w / SHARE_CLIMB.doubling) - 1)
      share = math.max(1, math.min(cap, share))
    end
  end
  if share >= limit then
    return cap, share, nil
  end
  return math.min(cap, math.floor(share) + 1), share, (1 - SHARE_CLIMB.overlap) * window_us / share
end

-- When a paced tenant (one whose `tenant_cap` gave a gap) may make its next call: `gap`
-- after its last call went out (`paced:` tenant -> µs), or 0.
local function paced_at(tenant, gap)
  if not gap then
    return 0
  end
  local last = tonumber(redis.call('HGET', PACED, tenant))
  return last and last + gap or 0
end

-- Daily quotas: `day:<tenant>` holds, per day (`floor(now / day_us)`, days from the Unix
-- epoch, as the field's name), the calls dispatched in it; `daily_limit` the tenant's quota
-- (nil: none). One field per day, so that counting a call is one HINCRBY.
local function daily_quota(tenant)
  return tonumber(redis.call('HGET', DAILY_LIMIT, tenant))
end

-- The scrape's indexes (issue 15), read by pulse.lua so that a scrape counts and lists the
-- tenants whose share is cut, whose daily quota is spent or that are held without visiting
-- every tenant. Each is written where what it stands for changes, scored by a moment, and
-- read against now, so that an entry whose moment has passed stops counting without a write:
-- `cut`: tenants whose adaptive share is below their cap, scored with MINUS the moment (µs)
--   it is back at the cap (ZRANGE: the longest to recover first, ties by name);
-- `quota`: tenants whose calls in a day reached their daily quota, scored by that day (days
--   since the epoch): the ones scored today are parked until the day's end;
-- `held:<kind>`: held tenants by kind, scored by the hold's end (µs; FOREVER_US: until
--   released).

-- Keeps `cut` right for `tenant` after its share, limit or reserve changed (adapt_share,
-- put_tenants). The share climbs from `share` at `since` (see `tenant_cap`), so it is cut
-- until `share::back_at_cap` later: since + doubling × log2((cap − share) / scale + 1)
-- windows.
local function note_share(tenant, window_us)
  local ok, s = pcall(redis.call, 'HMGET', P .. 'share:' .. tenant, 'share', 'since')
  local share, since = ok and tonumber(s[1]), ok and tonumber(s[2])
  local cap = tenant_cap(tenant, 0, window_us, false)
  if share and since and cap > 1 and share < cap then
    local windows = SHARE_CLIMB.doubling * math.log((cap - share) / SHARE_CLIMB.scale + 1) / math.log(2)
    redis.call('ZADD', P .. 'cut', int(-(since + windows * window_us)), tenant)
  else
    redis.call('ZREM', P .. 'cut', tenant)
  end
end

-- The latest day counted in `day:<tenant>` and its calls (nil, nil when none). A queue an
-- older version wrote keeps `day` and `calls` fields instead; they are read too.
local function last_day(tenant)
  local ok, f = pcall(redis.call, 'HGETALL', P .. 'day:' .. tenant)
  if not ok then
    return nil, nil
  end
  local day, calls = nil, nil
  local legacy = {}
  for i = 1, #f - 1, 2 do
    local d = tonumber(f[i])
    if d and (not day or d > day) then
      day, calls = d, tonumber(f[i + 1])
    elseif f[i] == 'day' or f[i] == 'calls' then
      legacy[f[i]] = tonumber(f[i + 1])
    end
  end
  if legacy.day and legacy.calls and (not day or legacy.day > day) then
    return legacy.day, legacy.calls
  end
  return day, calls
end

-- Keeps `quota` right for `tenant` after its daily quota changed (learn_daily_limit,
-- put_tenants), from the day's count as stored.
local function note_quota(tenant)
  local quota = daily_quota(tenant)
  local day, calls = last_day(tenant)
  if quota and day and calls and calls >= quota then
    redis.call('ZADD', P .. 'quota', int(day), tenant)
  else
    redis.call('ZREM', P .. 'quota', tenant)
  end
end

-- The kinds of hold `held:<kind>` is kept for (`HoldKind`).
local HOLD_KINDS = {'keys_refused', 'host_unreachable', 'paused'}

-- Keeps `held:<kind>` right for `tenant` after its hold changed: held as `kind` until
-- `until_us`, or not held (`kind` nil).
local function note_hold(tenant, kind, until_us)
  for _, k in ipairs(HOLD_KINDS) do
    if k ~= kind then
      redis.call('ZREM', P .. 'held:' .. k, tenant)
    end
  end
  if kind then
    redis.call('ZADD', P .. 'held:' .. kind, int(until_us), tenant)
  end
end

-- The count an older version kept in `key` (`day` and `calls` fields) when it is `day`'s;
-- nil otherwise.
local function older_count(key, day)
  local ok, f = pcall(redis.call, 'HMGET', key, 'day', 'calls')
  if ok and tonumber(f[1]) == day and (tonumber(f[2]) or 0) >= 1 then
    return math.floor(tonumber(f[2]))
  end
  return nil
end

-- Calls dispatched today.
local function calls_today(tenant, now, day_us)
  if not day_us or day_us <= 0 then
    return 0
  end
  local key = P .. 'day:' .. tenant
  local day = math.floor(now / day_us)
  local ok, n = pcall(redis.call, 'HGET', key, int(day))
  if ok and tonumber(n) then
    return tonumber(n)
  end
  -- Until this version counts today's first call.
  return older_count(key, day) or 0
end

-- When `calls` made today have reached `quota` (nil: none): the end of the day (µs), when
-- the tenant resumes; 0 otherwise.
local function quota_end(quota, calls, now, day_us)
  if not quota or not day_us or day_us <= 0 or calls < quota then
    return 0
  end
  return (math.floor(now / day_us) + 1) * day_us
end

-- `quota_end` for the tenant's stored quota and today's stored count.
local function quota_until(tenant, now, day_us)
  local quota = daily_quota(tenant)
  if not quota then
    return 0
  end
  return quota_end(quota, calls_today(tenant, now, day_us), now, day_us)
end

-- Counts one call dispatched at `now` against the tenant's day; returns today's calls. A
-- count that reaches the tenant's daily quota puts it in `quota`, the scrape's index
-- (nothing is taken out here: a count only grows within a day, and an entry of another day
-- counts for nothing). `quota`: the daily quota when the caller has read it already (false:
-- none; nil: read here). `day_text`: the day as text, when the caller has it.
local function count_today(tenant, now, day_us, quota, day_text)
  local key = P .. 'day:' .. tenant
  local day = math.floor(now / day_us)
  day_text = day_text or int(day)
  local ok, calls = pcall(redis.call, 'HINCRBY', key, day_text, 1)
  if not ok then
    -- Not a hash, or the day's count not a number: counting starts again with this call.
    redis.call('DEL', key)
    calls = redis.call('HINCRBY', key, day_text, 1)
  end
  if calls == 1 then
    -- The day's first call. A count an older version kept for today carries over; the
    -- day before goes, and the key is forgotten a day after this day (a fixed moment).
    local old = older_count(key, day)
    if old then
      calls = redis.call('HINCRBY', key, day_text, old)
    end
    redis.call('HDEL', key, int(day - 1), 'day', 'calls')
    redis.call('PEXPIRE', key, int(math.ceil(((day + 2) * day_us - now) / 1000)))
  end
  if quota == nil then
    quota = daily_quota(tenant)
  end
  if quota and calls >= quota then
    redis.call('ZADD', P .. 'quota', int(day), tenant)
  end
  return calls
end

-- When the call log next allows a call: the limit-th most recent call plus the window (and
-- margin). 0 when fewer than `limit` calls are logged.
local function log_allows_at(tenant, limit, window_us)
  local e = redis.call('ZRANGE', P .. 'calls:' .. tenant, -limit, -limit, 'WITHSCORES')
  if #e == 0 then
    return 0
  end
  return tonumber(e[2]) + window_us
end

-- Pause set by a rate-limit answer from LeadSquared; 0 when none.
local function paused_until(tenant)
  return tonumber(redis.call('HGET', PAUSED, tenant)) or 0
end

-- Puts the tenant in the ready set at the time its next call is allowed, or takes it out
-- when nothing of it is waiting. A tenant that may still call now gets `now`, behind every
-- tenant that has been waiting since earlier: that is what makes tenants take turns.
local function rescore(tenant, now, window_us)
  if redis.call('LLEN', P .. 'q:' .. tenant) == 0 then
    redis.call('ZREM', P .. 'ready', tenant)
    return
  end
  local at = math.max(now, log_allows_at(tenant, tenant_cap(tenant, now, window_us, false),
    window_us), paused_until(tenant))
  redis.call('ZADD', P .. 'ready', int(at), tenant)
end

-- `call_until_ms` (set by the fence in heartbeat.lua) says until when a Create sent by the
-- job's current holder may still land at LeadSquared. Every script that finishes a lease
-- clears it (`release`): the holder reported how its call ended. Only a lease that expires (dispatch)
-- or is handed back mid-call (requeue) turns it into a wait before the next dispatch.
--
-- The time, µs, until which a job's last Create may still land; 0 when none is recorded.
local function call_until_us(job)
  local ok, v = pcall(redis.call, 'HGET', job, 'call_until_ms')
  if ok then
    return (tonumber(v) or 0) * 1000
  end
  return 0
end

-- Tells waiting workers (wait_for_work) that work may be available.
local function wake()
  redis.call('PUBLISH', P .. 'wake', '1')
end

-- The tenants view's counters (issue 15; read by tenants.lua): `tc:unfinished` (jobs pushed
-- or retried from the dead letters and not finished), `tc:done` (jobs ever done) and
-- `tc:dead` (dead jobs), each a sorted set of tenants scored with MINUS the count, so that
-- ZRANGE lists the most first with ties by name; `tc:names` holds every tenant at 0 (the
-- order by name). Adds `by` to `tenant`'s count of `what`; never below 0.
local tc_keys = {}
local function count_tenant(tenant, what, by)
  local key = tc_keys[what]
  if not key then
    key = P .. 'tc:' .. what
    tc_keys[what] = key
  end
  if tonumber(redis.call('ZINCRBY', key, -by, tenant)) > 0 then
    redis.call('ZADD', key, 0, tenant)
  end
end

-- Calls in flight (issue 14): `fly:<tenant>` holds the tenant's calls dispatched and not
-- yet answered (lease token -> lease expiry, µs; heartbeat.lua moves it), so that dispatch
-- can cap how many calls one tenant has in flight: a host that never answers holds a
-- worker slot per call until the call times out. Every path that ends a lease, and an
-- answer (answered.lua), takes its call out (`landed`). An entry a path missed stops
-- counting when its lease expires, so the count can only be too low, never stuck. A tenant
-- dispatch found at its cap is in `capped`; the first of its calls to land puts it back in
-- `ready` at once and wakes the workers (`uncap`).
local function uncap(tenant, now)
  if redis.call('HDEL', P .. 'capped', tenant) == 1 then
    redis.call('ZADD', P .. 'ready', 'LT', int(now), tenant)
    wake()
  end
end

-- Takes the call out of the tenant's calls in flight; `landed` also uncaps the tenant (a
-- completion batch, which lands many, checks `capped` once for all of them instead).
local function unfly(tenant, call)
  redis.call('ZREM', P .. 'fly:' .. tenant, call)
end

local function landed(tenant, call, now)
  if not tenant or not call then
    return
  end
  unfly(tenant, call)
  uncap(tenant, now)
end

-- Dead-letters a job, writing a minimal record when its own is missing, so ops see it in
-- `dead list` with the reason.
local function bury(id, tenant, reason, now)
  local job = P .. 'job:' .. id
  local ok_was, was = pcall(redis.call, 'HMGET', job, 'state', 'tenant', 'lease')
  if ok_was and was[1] ~= 'dead' and was[1] ~= 'done' and (tenant or was[2]) then
    count_tenant(tenant or was[2], 'unfinished', -1)
    count_tenant(tenant or was[2], 'dead', 1)
  end
  redis.call('HSET', job, 'state', 'dead', 'error', reason, 'finished_ms', ms(now))
  if tenant and redis.call('HEXISTS', job, 'tenant') == 0 then
    redis.call('HSET', job, 'tenant', tenant)
  end
  redis.call('HDEL', job, 'lease', 'call_until_ms')
  if redis.call('ZREM', P .. 'running', id) == 1 and ok_was then
    landed(tenant or was[2], was[3], now)
  end
  redis.call('ZADD', P .. 'dead', int(now), id)
end

-- The job's record key when `token` still holds its lease; nil when the lease was lost.
-- `job`: the record key, when the caller has it.
local function leased(id, token, job)
  job = job or (P .. 'job:' .. id)
  local ok, held = pcall(redis.call, 'HGET', job, 'lease')
  if ok and held == token then
    return job
  end
  return nil
end

-- Ends the lease `token` holds on job `id`. Takes the job out of `running` and clears its
-- lease and `call_until_ms` (the holder reported how its call ended). Returns the record
-- key; nil when the lease was lost (the script answers 0, nothing changed). With
-- `need_tenant`, also the tenant, the attempts spent and until when (µs) the holder's
-- Create may still land (0: none recorded), and a record with no tenant is buried here and
-- the answer is false (the script answers 1: the job is finished, as dead).
local function release(id, token, now, need_tenant)
  local job = leased(id, token)
  if not job then
    return nil
  end
  redis.call('ZREM', P .. 'running', id)
  if not need_tenant then
    redis.call('HDEL', job, 'lease', 'call_until_ms')
    return job
  end
  local f = redis.call('HMGET', job, 'tenant', 'attempts', 'call_until_ms')
  redis.call('HDEL', job, 'lease', 'call_until_ms')
  if not f[1] then
    bury(id, nil, ARGV[6], now)
    return false
  end
  return job, f[1], tonumber(f[2]) or 0, (tonumber(f[3]) or 0) * 1000
end

-- Re-stamps a call (`call`: the lease token it was dispatched with) at `now`, when its
-- answer arrived: LeadSquared saw the call at or before now, so measuring the window from
-- now is conservative and needs no margin. Needs no lease: moving a call later can only make
-- the limiter stricter. Finishing scripts do it first, whether or not the lease is still
-- held (the call was made either way); `answered.lua` does it alone for a call that ends
-- without a finish.
--
-- The tenant's score in `ready` is left as it is, though the call moved later may now be the
-- one that says when the next call is allowed: a score there is when the tenant is next
-- worth examining, never later than its next allowed call, and dispatch reads the log before
-- it hands out a call (a tenant it finds early is re-scored then). The re-score cost every
-- completion and fence of a tenant with work waiting four commands (ZSCORE, two HGETs for
-- the cap, ZRANGE); it changes a score only for a tenant at its cap, and saves dispatch one
-- examination of it then (docs/decisions.md, session 9).
--
-- `dispatched_us`: when the call was dispatched (nil: not known). The dispatch set the log's
-- expiry two windows and a second after it, so a call answered within a window of its
-- dispatch is still covered and the log's expiry is not set again.
local function restamp(tenant, call, now, window_us, dispatched_us)
  local calls = P .. 'calls:' .. tenant
  -- GT: only ever later. An entry already trimmed is added back as the newest; the trim
  -- then drops the oldest instead, which is the conservative choice.
  local added = redis.call('ZADD', calls, 'GT', int(now), call) == 1
  if added then
    redis.call('ZREMRANGEBYRANK', calls, 0, -(tenant_limit(tenant) + 1))
  end
  if added or not dispatched_us or now - dispatched_us >= window_us then
    redis.call('PEXPIRE', calls, int(math.ceil(window_us / 1000) * 2 + 1000))
  end
end

-- How every finishing script (complete, retry_later, rate_limited, requeue, bury) starts,
-- with its arguments ARGV[2] job id, ARGV[3] lease token, ARGV[4] tenant, ARGV[5] window +
-- margin (µs), ARGV[6] the reason a record with no tenant is buried with (`release`):
-- re-stamps the call (whether or not the lease is still held), then releases the lease.
-- Returns now (µs), then what `release` returns.
local function finish_lease(need_tenant)
  local now = now_us()
  restamp(ARGV[4], ARGV[3], now, tonumber(ARGV[5]))
  local job, tenant, attempts, until_us = release(ARGV[2], ARGV[3], now, need_tenant)
  if job ~= nil then
    landed(ARGV[4], ARGV[3], now)
  end
  return now, job, tenant, attempts, until_us
end

-- A pushed job's entry in `bodies`: `tenant \n length-of-key \n key body`, so that one hash
-- field per job holds all a push writes (its tenant and key are moved into the job's own
-- hash when it is first dispatched). Where its key and body start, and the key's length:
-- key_at, key_len, body_at, and where the tenant ends (byte positions, 1-based; the
-- tenant's end is its newline); for an entry that is a bare body (a JSON object: an entry
-- written by an older version, whose tenant and key are in `meta`) nil, nil, 1; nil when
-- the entry is damaged. Positions, not pieces: dispatch sends the
-- entry as it is with the body's position (the worker cuts it) and makes a new string only
-- of the key, when it needs one.
local function record_layout(v)
  if type(v) ~= 'string' then
    return nil
  end
  if string.byte(v, 1) == 123 then
    -- '{'
    return nil, nil, 1
  end
  local t_end = string.find(v, '\n', 1, true)
  if not t_end then
    return nil
  end
  local l_end = string.find(v, '\n', t_end + 1, true)
  local len = l_end and tonumber(string.sub(v, t_end + 1, l_end - 1))
  if not len or len < 0 or l_end + len > #v then
    return nil
  end
  return l_end + 1, len, l_end + len + 1, t_end
end

-- The entry's tenant, key and body (see `record_layout`): nil, nil, body for a bare body;
-- nil when the entry is damaged.
local function split_record(v)
  local key_at, key_len, body_at, t_end = record_layout(v)
  if not body_at then
    return nil
  end
  if not key_at then
    return nil, nil, v
  end
  return string.sub(v, 1, t_end - 1), string.sub(v, key_at, key_at + key_len - 1),
    string.sub(v, body_at)
end

-- Tenant holds (see `Queue::hold`): `holds` keeps tenant -> JSON record (kind, reason,
-- since_ms, until_ms, failures, by); the hold's end is written to `paused`, which every
-- dispatch reads already, so a held tenant costs a dispatch nothing more. An indefinite
-- hold ends at FOREVER_US (exact in a double; year 2255).
local FOREVER_US = 9000000000000000

-- The tenant's hold record, decoded; nil when none (or unreadable).
local function hold_of(tenant)
  local raw = redis.call('HGET', P .. 'holds', tenant)
  if not raw then
    return nil
  end
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then
    return rec
  end
  return nil
end

-- Holds `tenant` for `length_us` (0: until released). A timed hold never replaces an
-- indefinite one (returns 2 then); otherwise returns 1.
local function hold_tenant(tenant, kind, reason, length_us, by, failures, now, window_us, holds)
  local old = hold_of(tenant)
  if old and old.until_ms == nil and length_us > 0 then
    return 2
  end
  local rec = {kind = kind, reason = reason, since_ms = math.floor(now / 1000),
    failures = failures or 0, holds = holds or 0}
  local untl = FOREVER_US
  if length_us > 0 then
    untl = now + length_us
    rec.until_ms = math.floor(untl / 1000)
  end
  if by and by ~= '' then
    rec.by = by
  end
  redis.call('HSET', P .. 'holds', tenant, cjson.encode(rec))
  note_hold(tenant, kind, untl)
  if untl > paused_until(tenant) then
    redis.call('HSET', P .. 'paused', tenant, int(untl))
  end
  redis.call('HSET', P .. 'pause_reason', tenant, reason)
  rescore(tenant, now, window_us)
  return 1
end

-- Ends the tenant's hold, its pause and its unreachable streak; puts it back in `ready`
-- when jobs wait and wakes workers. Returns the record released (JSON) or false.
local function release_tenant(tenant, now, window_us)
  local raw = redis.call('HGET', P .. 'holds', tenant)
  if not raw then
    return false
  end
  redis.call('HDEL', P .. 'holds', tenant)
  note_hold(tenant, nil)
  redis.call('HDEL', P .. 'paused', tenant)
  redis.call('HDEL', P .. 'pause_reason', tenant)
  redis.call('HDEL', P .. 'streak', tenant)
  rescore(tenant, now, window_us)
  wake()
  return raw
end

-- The earliest dispatch time (ms) among the first `n` leases in `running` (the ones that
-- expire first), or -1 when none: `status` and `pulse` show its age.
local function oldest_dispatched_ms(n)
  local oldest = -1
  local running = redis.call('ZRANGE', P .. 'running', 0, n - 1)
  for _, id in ipairs(running) do
    local ok, d = pcall(redis.call, 'HGET', P .. 'job:' .. id, 'dispatched_ms')
    d = ok and tonumber(d)
    if d and (oldest < 0 or d < oldest) then
      oldest = d
    end
  end
  return oldest
end
