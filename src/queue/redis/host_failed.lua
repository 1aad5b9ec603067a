-- host_failed.lua: the tenant's host did not answer (see `Queue::host_failed`). Counts the
-- failure in the tenant's streak (`streak`, reset by every completion and by
-- `host_answered`); from the `after`-th in a row the tenant is held `host_unreachable`: base
-- for the first hold of the streak, doubled for each further hold of the same streak, at
-- most `max`, times the jitter. A failure while such a hold is in force only counts: it is
-- a call sent before the hold. The job itself goes back by `requeue` (no attempt spent).
--
-- KEYS[1]: {q}:streak
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: failures in a row before a hold (>= 1)
-- ARGV[4]: first hold, µs
-- ARGV[5]: longest hold, µs
-- ARGV[6]: jitter factor (0.5 to 1.0)
-- ARGV[7]: reason
-- ARGV[8]: window + margin, µs
--
-- Returns {failures in a row, hold µs (0: none)}.

local tenant = ARGV[2]
local n = redis.call('HINCRBY', KEYS[1], tenant, 1)
local after = math.max(1, tonumber(ARGV[3]))
if n < after then
  return {n, 0}
end
local now = now_us()
local old = hold_of(tenant)
if old and old.kind ~= 'host_unreachable' then
  old = nil
end
if old and old.until_ms and old.until_ms * 1000 > now then
  return {n, 0}
end
-- The same run when the streak has not started over since the last hold.
local holds = 1
if old and (tonumber(old.failures) or 0) < n then
  holds = (tonumber(old.holds) or 1) + 1
end
local base, max = tonumber(ARGV[4]), tonumber(ARGV[5])
local d = base * (2 ^ math.min(40, holds - 1))
d = math.floor(math.min(d, max) * (tonumber(ARGV[6]) or 1))
local r = hold_tenant(tenant, 'host_unreachable', ARGV[7], math.max(1, d), '', n, now,
  tonumber(ARGV[8]), holds)
if r == 2 then
  return {n, 0}
end
return {n, d}
