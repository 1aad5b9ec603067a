-- hold.lua: holds a tenant (see `Queue::hold`): no call is made for it until the hold ends
-- or is released; its jobs stay queued and no attempt is spent. The hold is kept in `holds`
-- (tenant -> JSON record, for status and the page) and its end in `paused`, the hash every
-- dispatch reads already: a hold costs a dispatch nothing. An indefinite hold ends at
-- `FOREVER_US` (year 2255); the tenant stays in `ready`, scored there, so a dispatch never
-- looks at it again until it is released.
--
-- A timed hold (host_unreachable) never replaces an indefinite one (keys_refused, paused).
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: kind
-- ARGV[4]: reason
-- ARGV[5]: length, µs (0: until released)
-- ARGV[6]: who (empty: nobody named)
-- ARGV[7]: failures in a row it stands for
-- ARGV[8]: window + margin, µs
--
-- Returns 1 when held, 2 when an indefinite hold was kept instead, 0 for an unknown tenant.

local tenant = ARGV[2]
if redis.call('HEXISTS', KEYS[1], tenant) == 0 then
  return 0
end
return hold_tenant(tenant, ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]),
  now_us(), tonumber(ARGV[8]))
