-- put_tenants.lua: adds or updates tenants. The effective limit is the imported one, or the
-- lower one LeadSquared named earlier (kept in `learned`); so is the daily limit (the
-- learned one kept in `daily_learned`).
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: five per tenant: name, tenant record (JSON, holds the keys), limit, reserve,
--   daily limit (0: none). The limit is also kept as imported in `configured`, the reserve
--   in `reserve` (read by every dispatch), the daily limit in `daily_limit`.
--
-- Returns the number of tenants that were new.

local added = 0
for i = 2, #ARGV, 5 do
  local name, record, limit = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  added = added + redis.call('HSET', KEYS[1], name, record)
  redis.call('HSET', P .. 'configured', name, limit)
  redis.call('HSET', P .. 'reserve', name, ARGV[i + 3])
  -- A daily quota LeadSquared named (learn_daily_limit.lua) is kept when it is lower.
  local daily = tonumber(ARGV[i + 4])
  local daily_learned = tonumber(redis.call('HGET', P .. 'daily_learned', name))
  if daily_learned and (daily <= 0 or daily_learned < daily) then
    daily = daily_learned
  end
  if daily > 0 then
    redis.call('HSET', P .. 'daily_limit', name, daily)
  else
    redis.call('HDEL', P .. 'daily_limit', name)
  end
  local learned = tonumber(redis.call('HGET', P .. 'learned', name))
  if learned and learned < limit then
    limit = learned
  end
  redis.call('HSET', P .. 'limits', name, limit)
end
-- A raised limit may let a waiting tenant call sooner.
wake()
return added
