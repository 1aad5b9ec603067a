-- learn_daily_limit.lua: LeadSquared named a daily quota in a rate-limit answer. Records it
-- as the tenant's learned daily limit (`daily_learned`) and, when it is lower than the daily
-- limit in force (or there is none), makes it the one the dispatch counts against
-- (`daily_limit`). put_tenants.lua keeps a learned quota that is lower than an imported one.
--
-- KEYS[1]: {q}:daily_learned
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the calls per day LeadSquared named (>= 1)
--
-- Returns 1 when the daily limit in force changed, 0 otherwise.

local tenant, calls = ARGV[2], tonumber(ARGV[3])
if not calls or calls < 1 then
  return 0
end
calls = math.floor(calls)
if redis.call('HEXISTS', P .. 'tenants', tenant) == 0 then
  return 0
end
local learned = tonumber(redis.call('HGET', KEYS[1], tenant))
if not learned or calls < learned then
  redis.call('HSET', KEYS[1], tenant, calls)
end
local current = daily_quota(tenant)
if current and current <= calls then
  return 0
end
redis.call('HSET', P .. 'daily_limit', tenant, calls)
-- Today's calls may have reached it already: the scrape's index of spent quotas follows.
note_quota(tenant)
return 1
