-- pulse.lua: what a metrics scrape reads, in O(top + log tenants), not O(tenants): the
-- counts, the jobs ever done, the oldest running lease, the queue's latency (the oldest
-- job next in line, from `oldest`), the throttled tenants (from `ready`), the tenants whose
-- share is cut, whose daily quota is spent or that are held (from `cut`, `quota` and
-- `held:<kind>`, see prelude.lua), and the shares of up to `top` tenants.
--
-- KEYS[1]: {q}:oldest
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: top, the most tenants listed
-- ARGV[3]: at most this many running jobs examined for the oldest dispatch
-- ARGV[4]: the share mode, `adaptive` or `fixed`
-- ARGV[5]: window + margin, µs (what the share climbs by)
-- ARGV[6]: the length of a day for daily quotas, µs
--
-- `oldest` is kept by every script that changes a list's head (note_head in prelude.lua);
-- the entries read here are checked against their list's head and repaired, so an entry a
-- future script forgot to update is shown right and fixed, never reported stale.
--
-- Returns {now_us, queued, scheduled, running, done, dead, done_total,
-- oldest_dispatched_ms (-1: none), throttled, share cut, quota reached, held keys_refused,
-- held host_unreachable, held paused, n, m, k, then n pairs (tenant, pushed ms) oldest
-- first, then m throttled tenants (up to top), then k shares of nine entries each: tenant,
-- limit, configured limit, reserve, share, calls today, cut until ms (-1: not cut), quota
-- spent until ms (-1: not spent), the share as the controller holds it (text)}. The shares listed: the tenants
-- whose share is cut (the longest to recover first), then those whose quota is spent (by
-- name), then those of the latency list, up to `top` in all.

local top = tonumber(ARGV[2])
local adaptive = ARGV[4] == 'adaptive'
local window_us = tonumber(ARGV[5])
local day_us = tonumber(ARGV[6]) or 0
local now = now_us()

-- A queue written before `oldest` existed: built once from the tenants with waiting jobs.
if redis.call('EXISTS', KEYS[1]) == 0 then
  for _, tenant in ipairs(redis.call('ZRANGE', P .. 'ready', 0, -1)) do
    note_head(tenant)
  end
end
-- A queue written before `cut`, `quota` and `held:<kind>` existed: built once, visiting
-- every tenant (the first scrape after an upgrade only).
if redis.call('HEXISTS', P .. 'stats', 'pulse_indexes') == 0 then
  for _, tenant in ipairs(redis.call('HKEYS', P .. 'limits')) do
    note_share(tenant, window_us)
    note_quota(tenant)
  end
  local holds = redis.call('HGETALL', P .. 'holds')
  for i = 1, #holds, 2 do
    local ok, rec = pcall(cjson.decode, holds[i + 1])
    if ok and type(rec) == 'table' and type(rec.kind) == 'string' then
      local untl = FOREVER_US
      if tonumber(rec.until_ms) then
        untl = tonumber(rec.until_ms) * 1000
      end
      note_hold(holds[i], rec.kind, untl)
    end
  end
  redis.call('HSET', P .. 'stats', 'pulse_indexes', 1)
end

local listed = {}
local checked = 0
while #listed < top and checked < 4 * top + 16 do
  local entries = redis.call('ZRANGE', KEYS[1], 0, top - 1, 'WITHSCORES')
  if #entries == 0 then
    break
  end
  local all_right = true
  listed = {}
  for i = 1, #entries, 2 do
    local tenant, at = entries[i], tonumber(entries[i + 1])
    checked = checked + 1
    local ok, head = pcall(redis.call, 'LINDEX', P .. 'q:' .. tenant, 0)
    local real = ok and enqueued_ms(head)
    if real ~= at then
      note_head(tenant)
      all_right = false
    else
      listed[#listed + 1] = tenant
      listed[#listed + 1] = at
    end
  end
  if all_right then
    break
  end
end

local oldest = oldest_dispatched_ms(tonumber(ARGV[3]))

-- Bodies are kept for queued, scheduled, running and dead jobs (dropped when done).
local sched = redis.call('ZCARD', P .. 'sched')
local leased = redis.call('ZCARD', P .. 'running')
local dead = redis.call('ZCARD', P .. 'dead')
local queued = math.max(0, redis.call('HLEN', P .. 'bodies') - sched - leased - dead)
-- A tenant whose next call is allowed later than now is throttled.
local later = '(' .. int(now)
local throttled = redis.call('ZCOUNT', P .. 'ready', later, '+inf')
local names = redis.call('ZRANGEBYSCORE', P .. 'ready', later, '+inf', 'LIMIT', 0, top)

-- Cut until later than now: scored below -now. With fixed shares no share is cut.
local cut, cut_names = 0, {}
if adaptive then
  cut = redis.call('ZCOUNT', P .. 'cut', '-inf', '(' .. int(-now))
  cut_names = redis.call('ZRANGEBYSCORE', P .. 'cut', '-inf', '(' .. int(-now), 'WITHSCORES',
    'LIMIT', 0, top)
end
local quota, quota_names = 0, {}
if day_us > 0 then
  local today = math.floor(now / day_us)
  quota = redis.call('ZCOUNT', P .. 'quota', int(today), int(today))
  quota_names = redis.call('ZRANGEBYSCORE', P .. 'quota', int(today), int(today), 'LIMIT', 0,
    top)
end
local held = {}
for _, kind in ipairs(HOLD_KINDS) do
  held[#held + 1] = redis.call('ZCOUNT', P .. 'held:' .. kind, later, '+inf')
end

local shown, seen = {}, {}
local function show(tenant)
  if #shown < top and not seen[tenant] then
    seen[tenant] = true
    shown[#shown + 1] = tenant
  end
end
-- Why each is listed. A tenant listed from the latency list is in neither index: had
-- either held more than the ones listed from it, the list would be full before it.
local cut_until, quota_until = {}, {}
for i = 1, #cut_names, 2 do
  show(cut_names[i])
  cut_until[cut_names[i]] = ms(-tonumber(cut_names[i + 1]))
end
for _, t in ipairs(quota_names) do
  show(t)
  quota_until[t] = ms((math.floor(now / day_us) + 1) * day_us)
end
for i = 1, #listed, 2 do show(listed[i]) end

local out = {now, queued, sched, leased, redis.call('ZCARD', P .. 'done'), dead,
  tonumber(redis.call('HGET', P .. 'stats', 'done_total')) or 0, oldest, throttled, cut, quota,
  held[1], held[2], held[3], #listed / 2, #names, #shown}
for _, v in ipairs(listed) do
  out[#out + 1] = v
end
for _, n in ipairs(names) do
  out[#out + 1] = n
end
for _, t in ipairs(shown) do
  local limit = tenant_limit(t)
  out[#out + 1] = t
  out[#out + 1] = limit
  out[#out + 1] = tonumber(redis.call('HGET', P .. 'configured', t)) or limit
  out[#out + 1] = tonumber(redis.call('HGET', P .. 'reserve', t)) or 0
  local most, share = tenant_cap(t, now, window_us, adaptive, limit)
  out[#out + 1] = most
  out[#out + 1] = calls_today(t, now, day_us)
  out[#out + 1] = cut_until[t] or -1
  out[#out + 1] = quota_until[t] or -1
  out[#out + 1] = string.format('%.4f', share)
end
return out
