-- release.lua: ends a tenant's hold (see `Queue::release`): its record, its pause (a
-- rate-limit pause still running goes too: an operator's "resume" means now) and its
-- unreachable-host streak; the tenant goes back in `ready` if jobs wait, and workers wake.
--
-- KEYS[1]: {q}:holds
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: window + margin, µs
--
-- Returns the hold record released (JSON), or false when there was none.

local tenant = ARGV[2]
return release_tenant(tenant, now_us(), tonumber(ARGV[3]))
