-- rate_limited.lua: LeadSquared said "rate limited". Pauses the tenant, puts the job back at
-- the FRONT of its list with the attempt given back, and lowers the tenant's limit when the
-- answer named a smaller one. The call stays in the log: it was made.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: pause, µs
-- ARGV[5]: the limit LeadSquared named, 0 if none
-- ARGV[6]: pause reason
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local job = leased(id, ARGV[3])
if not job then
  return 0
end
local now = now_us()
redis.call('ZREM', KEYS[1], id)
local f = redis.call('HMGET', job, 'tenant', 'attempts')
local tenant = f[1]
if not tenant then
  bury(id, nil, 'corrupt job record (no tenant)', now)
  return 1
end
redis.call('HSET', job, 'state', 'queued', 'attempts', math.max(0, (tonumber(f[2]) or 1) - 1))
redis.call('HDEL', job, 'lease', 'call_until_ms')
redis.call('LPUSH', P .. 'q:' .. tenant, id)

local resume = now + tonumber(ARGV[4])
if resume > paused_until(tenant) then
  redis.call('HSET', P .. 'paused', tenant, int(resume))
  redis.call('HSET', P .. 'pause_reason', tenant, ARGV[6])
end

local named = tonumber(ARGV[5]) or 0
if named >= 1 and named < tenant_limit(tenant) then
  redis.call('HSET', P .. 'learned', tenant, named)
  redis.call('HSET', P .. 'limits', tenant, named)
  redis.call('ZREMRANGEBYRANK', P .. 'calls:' .. tenant, 0, -(named + 1))
end
-- GT: never moves the tenant earlier than its call log already put it.
redis.call('ZADD', P .. 'ready', 'GT', int(math.max(resume, paused_until(tenant))), tenant)
wake()
return 1
