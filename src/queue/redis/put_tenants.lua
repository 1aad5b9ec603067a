-- put_tenants.lua: adds or updates tenants. The effective limit is the imported one, or the
-- lower one LeadSquared named earlier (kept in `learned`); so is the daily limit (the
-- learned one kept in `daily_learned`).
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[#ARGV]: window + margin, µs (the last argument)
-- ARGV[2..]: five per tenant: name, tenant record (JSON, holds the keys), limit, reserve,
--   daily limit (0: none). The limit is also kept as imported in `configured`, the reserve
--   in `reserve` (read by every dispatch), the daily limit in `daily_limit`.
--
-- A record without an API base keeps the one discovered for the same keys. New keys end a
-- `keys_refused` hold (and drop a discovered host: it belonged to the old keys' account).
-- A new tenant, new keys or a new host have not been answered yet: the tenant's `probe` is
-- `new` (see `flight_cap` in dispatch.lua).
--
-- Returns the number of tenants that were new.

local added = 0
for i = 2, #ARGV - 1, 5 do
  local name, record, limit = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local old_raw = redis.call('HGET', KEYS[1], name)
  if old_raw then
    local ok_old, old = pcall(cjson.decode, old_raw)
    local ok_new, new = pcall(cjson.decode, record)
    if ok_old and ok_new and type(old) == 'table' and type(new) == 'table' then
      local same_keys = old.access_key == new.access_key and old.secret_key == new.secret_key
      if same_keys and type(new.api_base) ~= 'string' and type(old.api_base) == 'string' then
        new.api_base = old.api_base
        record = cjson.encode(new)
      end
      if not same_keys or new.api_base ~= old.api_base then
        redis.call('HSET', P .. 'probe', name, 'new')
      end
      if not same_keys then
        local hold = hold_of(name)
        if hold and hold.kind == 'keys_refused' then
          release_tenant(name, now_us(), tonumber(ARGV[#ARGV]))
        end
      end
    end
  end
  if not old_raw then
    redis.call('HSET', P .. 'probe', name, 'new')
  end
  added = added + redis.call('HSET', KEYS[1], name, record)
  -- The host alone, for status (which never reads the records: they hold the keys).
  local ok_rec, rec = pcall(cjson.decode, record)
  if ok_rec and type(rec) == 'table' and type(rec.api_base) == 'string' then
    redis.call('HSET', P .. 'hosts', name, rec.api_base)
  else
    redis.call('HDEL', P .. 'hosts', name)
  end
  -- Every tenant has a row in the tenants view, in each of its orders.
  for _, what in ipairs({'names', 'unfinished', 'done', 'dead'}) do
    redis.call('ZADD', P .. 'tc:' .. what, 'NX', 0, name)
  end
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
  -- The scrape's indexes follow the new limit, reserve and daily quota (see prelude.lua).
  note_share(name, tonumber(ARGV[#ARGV]))
  note_quota(name)
end
-- A raised limit may let a waiting tenant call sooner.
wake()
return added
