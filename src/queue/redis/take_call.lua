-- take_call.lua: spends one call in a tenant's window now, for a call that is not a
-- dispatched job's (host discovery: see `Queue::take_call`), if the tenant's cap, pause,
-- hold and daily quota allow one now.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the call's id in the tenant's call log
-- ARGV[4]: window + margin, µs
-- ARGV[5]: the share mode, `adaptive` or `fixed`
-- ARGV[6]: the length of a day for daily quotas, µs
--
-- Returns -1 when the call was spent, or µs to wait before asking again.

local tenant, call = ARGV[2], ARGV[3]
local window_us = tonumber(ARGV[4])
local day_us = tonumber(ARGV[6]) or 0
local now = now_us()
local limit = tenant_limit(tenant)
local cap, _, gap = tenant_cap(tenant, now, window_us, ARGV[5] == 'adaptive')
local at = math.max(log_allows_at(tenant, cap, window_us), paused_until(tenant),
  quota_until(tenant, now, day_us), paced_at(tenant, gap))
if at > now then
  return math.floor(at - now)
end
local calls = P .. 'calls:' .. tenant
redis.call('ZADD', calls, int(now), call)
redis.call('ZREMRANGEBYRANK', calls, 0, -(limit + 1))
redis.call('PEXPIRE', calls, int(math.ceil(window_us / 1000) * 2 + 1000))
if day_us > 0 then
  count_today(tenant, now, day_us)
end
if gap then
  redis.call('HSET', PACED, tenant, int(now))
end
-- A waiting tenant's next dispatch comes no sooner than its log allows.
local score = tonumber(redis.call('ZSCORE', KEYS[1], tenant))
if score then
  local next_at = math.max(log_allows_at(tenant, cap, window_us), paced_at(tenant, gap))
  if next_at > score then
    redis.call('ZADD', KEYS[1], 'XX', int(next_at), tenant)
  end
end
return -1
