-- status.lua: counts and the per-tenant view, in one consistent read.
--
-- KEYS[1]: {q}:limits
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: window, µs (calls counted in the window ending now)
-- ARGV[3]: at most this many running jobs examined for the oldest dispatch
-- ARGV[4]: the share mode, `adaptive` or `fixed`
-- ARGV[5]: window + margin, µs (what the share climbs by)
-- ARGV[6]: the length of a day for daily quotas, µs
--
-- Returns {now_us, queued, scheduled, running, done, dead, oldest_dispatched_ms (-1: none),
-- then fourteen entries per tenant worth showing: name, waiting, limit, calls in window,
-- paused_until_ms (-1: not paused), pause reason, configured limit, reserve, share, daily
-- limit (0: none), calls today, quota parked until ms (-1: not parked), the daily quota
-- LeadSquared named (0: none), the share as the controller holds it (calls per window, as
-- text)}.

local window_us = tonumber(ARGV[2])
local now = now_us()

local names = {}
local seen = {}
local function add(name)
  if not seen[name] then
    seen[name] = true
    names[#names + 1] = name
  end
end
for _, n in ipairs(redis.call('HKEYS', KEYS[1])) do add(n) end
for _, n in ipairs(redis.call('ZRANGE', P .. 'ready', 0, -1)) do add(n) end
for _, n in ipairs(redis.call('HKEYS', P .. 'paused')) do add(n) end

local queued = 0
local rows = {}
for _, name in ipairs(names) do
  local ok, waiting = pcall(redis.call, 'LLEN', P .. 'q:' .. name)
  if not ok then
    waiting = 0
  end
  queued = queued + waiting
  local calls = 0
  local c_ok, c = pcall(redis.call, 'ZCOUNT', P .. 'calls:' .. name, '(' .. int(now - window_us),
    '+inf')
  if c_ok then
    calls = c
  end
  local paused = paused_until(name)
  local reason = ''
  if paused > now then
    paused = math.floor(paused / 1000)
    reason = redis.call('HGET', P .. 'pause_reason', name) or ''
  else
    paused = -1
  end
  local quota = quota_until(name, now, tonumber(ARGV[6]))
  if quota > 0 then
    quota = math.floor(quota / 1000)
  else
    quota = -1
  end
  if waiting > 0 or calls > 0 or paused >= 0 or quota >= 0 then
    local limit = tenant_limit(name)
    local most, share = tenant_cap(name, now, tonumber(ARGV[5]), ARGV[4] == 'adaptive', limit)
    rows[#rows + 1] = {name, waiting, limit, calls, paused, reason,
      tonumber(redis.call('HGET', P .. 'configured', name)) or limit,
      tonumber(redis.call('HGET', P .. 'reserve', name)) or 0,
      most,
      tonumber(redis.call('HGET', P .. 'daily_limit', name)) or 0,
      calls_today(name, now, tonumber(ARGV[6])), quota,
      tonumber(redis.call('HGET', P .. 'daily_learned', name)) or 0,
      string.format('%.4f', share)}
  end
end

local oldest = oldest_dispatched_ms(tonumber(ARGV[3]))

local out = {now, queued, redis.call('ZCARD', P .. 'sched'), redis.call('ZCARD', P .. 'running'),
  redis.call('ZCARD', P .. 'done'), redis.call('ZCARD', P .. 'dead'), oldest}
for _, row in ipairs(rows) do
  for _, v in ipairs(row) do
    out[#out + 1] = v
  end
end
return out
