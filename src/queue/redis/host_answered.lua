-- host_answered.lua: the tenant's host answered a call (see `Queue::host_answered`). Its
-- unreachable-host streak starts over at 0, which also says that the host answers (the
-- dispatch's `flight_cap`: out of a probe or a slow start, the tenant may have its cap of
-- calls in flight); a tenant dispatch found at its old cap goes back in `ready` at once.
--
-- KEYS[1]: {q}:streak
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
--
-- Returns 1.

redis.call('HSET', KEYS[1], ARGV[2], 0)
uncap(ARGV[2], now_us())
return 1
