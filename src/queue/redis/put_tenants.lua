-- put_tenants.lua: adds or updates tenants. The effective limit is the imported one, or the
-- lower one LeadSquared named earlier (kept in `learned`).
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: three per tenant: name, tenant record (JSON, holds the keys), limit
--
-- Returns the number of tenants that were new.

local added = 0
for i = 2, #ARGV, 3 do
  local name, record, limit = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  added = added + redis.call('HSET', KEYS[1], name, record)
  local learned = tonumber(redis.call('HGET', P .. 'learned', name))
  if learned and learned < limit then
    limit = learned
  end
  redis.call('HSET', P .. 'limits', name, limit)
end
-- A raised limit may let a waiting tenant call sooner.
wake()
return added
