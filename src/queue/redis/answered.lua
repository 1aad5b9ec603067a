-- answered.lua: re-stamps a call at the moment its answer arrived (see `restamp` in
-- prelude.lua), for a call that ends without a finishing script: the lease was lost
-- mid-call. Every finishing script re-stamps the job's call itself. The call is no longer
-- in flight (`landed`).
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the call's id (the lease token it was dispatched with)
-- ARGV[4]: window + margin, µs
--
-- Returns 1.

local now = now_us()
restamp(ARGV[2], ARGV[3], now, tonumber(ARGV[4]))
landed(ARGV[2], ARGV[3], now)
return 1
