-- heartbeat.lua: extends a job's lease. Before a Create is sent it is also the fence: it
-- proves the lease is still held (a worker whose lease was lost must not send) and records
-- until when that call may still land at LeadSquared (`call_until_ms`), so that a worker
-- taking the job back after this one died waits for it before reconciling.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: lease, µs from now
-- ARGV[5]: 0 for a plain heartbeat; for the fence, how long the Create about to be sent may
--          still land at LeadSquared, µs from now (client timeout + settle)
-- ARGV[6]: window + margin, µs (the fence re-stamps the call at now, as `restamp` in
--          prelude.lua does for an answer: a Create that goes out late counts in its
--          tenant's window from when it goes out, not from its dispatch)
-- ARGV[7]: the job's tenant (its entry among the tenant's calls in flight, `fly:<tenant>`,
--          moves with the lease: see `landed` in prelude.lua)
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local job = P .. 'job:' .. id
local ok, f = pcall(redis.call, 'HMGET', job, 'lease', 'call_until_ms', 'dispatched_ms')
if not ok or f[1] ~= ARGV[3] then
  return 0
end
local now = now_us()
redis.call('ZADD', KEYS[1], 'XX', int(now + tonumber(ARGV[4])), id)
redis.call('ZADD', P .. 'fly:' .. ARGV[7], 'XX', int(now + tonumber(ARGV[4])), ARGV[3])
local in_flight = tonumber(ARGV[5]) or 0
if in_flight > 0 then
  local until_ms = math.floor((now + in_flight) / 1000)
  local held = tonumber(f[2]) or 0
  redis.call('HSET', job, 'call_until_ms', int(math.max(until_ms, held)))
  local dispatched = tonumber(f[3])
  restamp(ARGV[7], ARGV[3], now, tonumber(ARGV[6]), dispatched and dispatched * 1000)
end
return 1
