-- answered.lua: re-stamps a call at the moment its answer arrived: LeadSquared saw the call
-- at or before now, so measuring the window from now is conservative and needs no margin.
-- Needs no lease: moving a call later can only make the limiter stricter.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the call's id (the lease token it was dispatched with)
-- ARGV[4]: window + margin, µs
--
-- Returns 1.

local tenant = ARGV[2]
local window_us = tonumber(ARGV[4])
local now = now_us()
local calls = P .. 'calls:' .. tenant
local limit = tenant_limit(tenant)
-- GT: only ever later. An entry already trimmed is added back as the newest; the trim
-- below then drops the oldest instead, which is the conservative choice.
redis.call('ZADD', calls, 'GT', int(now), ARGV[3])
redis.call('ZREMRANGEBYRANK', calls, 0, -(limit + 1))
redis.call('PEXPIRE', calls, int(math.ceil(window_us / 1000) * 2 + 1000))
local score = tonumber(redis.call('ZSCORE', KEYS[1], tenant))
if score then
  local at = log_allows_at(tenant, limit, window_us)
  if at > score then
    redis.call('ZADD', KEYS[1], 'XX', int(at), tenant)
  end
end
return 1
