-- unsent.lua: takes a dispatched job's call out of its tenant's call log: the call was
-- never sent (see `Queue::unsent`), so it must not count against the window. Needs no
-- lease. The tenant is re-scored, so it may call again as soon as its log allows.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the call's id in the log (the lease token it was dispatched with)
-- ARGV[4]: window + margin, µs
--
-- Returns 1 when the call was in the log, else 0.

local removed = redis.call('ZREM', P .. 'calls:' .. ARGV[2], ARGV[3])
if removed == 1 and redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  rescore(ARGV[2], now_us(), tonumber(ARGV[4]))
  wake()
end
return removed
