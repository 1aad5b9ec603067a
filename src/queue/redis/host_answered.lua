-- host_answered.lua: the tenant's host answered a call (see `Queue::host_answered`). Its
-- unreachable-host streak starts over, and it is out of its probe (the dispatch's
-- `flight_cap`: it may have its cap of calls in flight again); a tenant dispatch found at
-- the probe's cap goes back in `ready` at once.
--
-- KEYS[1]: {q}:streak
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
--
-- Returns 1.

redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', P .. 'probe', ARGV[2])
uncap(ARGV[2], now_us())
return 1
