-- set_host.lua: records a tenant's discovered API base in its record (see
-- `Queue::set_tenant_host`), unless the record's keys changed since the worker read them.
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: API base
-- ARGV[4]: the access key the host was discovered with
--
-- Returns 1 when recorded, 0 when the tenant is unknown, its record unreadable, or its
-- keys changed meanwhile.

local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then
  return 0
end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec.access_key ~= ARGV[4] then
  return 0
end
if rec.api_base ~= ARGV[3] then
  -- A new host has not answered yet (dispatch's `flight_cap`).
  redis.call('HSET', P .. 'probe', ARGV[2], 'new')
end
rec.api_base = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(rec))
redis.call('HSET', P .. 'hosts', ARGV[2], ARGV[3])
wake()
return 1
