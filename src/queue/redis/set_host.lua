-- set_host.lua: records a tenant's discovered API base in its record, or forgets it (see
-- `Queue::set_tenant_host`), unless the record's keys changed since the worker read them.
-- Rust twin: `EmbeddedQueue::set_tenant_host`; conformance cases
-- `discovery_records_a_host_only_for_the_same_keys`, `a_forgotten_host_is_asked_for_again`.
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: API base, or '' to forget the host
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
local base = ARGV[3]
if base == '' then base = nil end
if rec.api_base ~= base then
  -- A new host has not answered yet (dispatch's `flight_cap`); nor has a host to discover.
  redis.call('HSET', P .. 'probe', ARGV[2], 'new')
end
rec.api_base = base
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(rec))
if base then
  redis.call('HSET', P .. 'hosts', ARGV[2], base)
else
  redis.call('HDEL', P .. 'hosts', ARGV[2])
end
wake()
return 1
