-- pulse.lua: what a metrics scrape reads, in O(top + log tenants), not O(tenants): the
-- counts, the jobs ever done, the oldest running lease, the queue's latency (the oldest
-- job next in line, from `oldest`) and the throttled tenants (from `ready`).
--
-- KEYS[1]: {q}:oldest
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: top, the most tenants listed
-- ARGV[3]: at most this many running jobs examined for the oldest dispatch
--
-- `oldest` is kept by every script that changes a list's head (note_head in prelude.lua);
-- the entries read here are checked against their list's head and repaired, so an entry a
-- future script forgot to update is shown right and fixed, never reported stale.
--
-- Returns {now_us, queued, scheduled, running, done, dead, done_total,
-- oldest_dispatched_ms (-1: none), throttled, n, then n pairs (tenant, pushed ms) oldest
-- first, then the throttled tenants listed (up to top)}.

local top = tonumber(ARGV[2])
local now = now_us()

-- A queue written before `oldest` existed: built once from the tenants with waiting jobs.
if redis.call('EXISTS', KEYS[1]) == 0 then
  for _, tenant in ipairs(redis.call('ZRANGE', P .. 'ready', 0, -1)) do
    note_head(tenant)
  end
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

local out = {now, queued, sched, leased, redis.call('ZCARD', P .. 'done'), dead,
  tonumber(redis.call('HGET', P .. 'stats', 'done_total')) or 0, oldest, throttled, #listed / 2}
for _, v in ipairs(listed) do
  out[#out + 1] = v
end
for _, n in ipairs(names) do
  out[#out + 1] = n
end
return out
