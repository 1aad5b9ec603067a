-- retry_later.lua: schedules a retry after a delay (the attempt stays spent), or buries the
-- job when it has no attempts left; re-stamps the job's call first (see `finish_lease` in
-- prelude.lua). An unknown outcome stays unknown: a transient failure cannot prove the
-- webhook was not created (only `requeue` after a reconcile clears it).
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token (the call's id in the tenant's call log)
-- ARGV[4]: tenant
-- ARGV[5]: window + margin, µs
-- ARGV[6]: delay, µs
-- ARGV[7]: error text
-- ARGV[8]: outcome unknown (0|1)
-- ARGV[9]: max attempts
--
-- Returns 1 (scheduled), 2 (dead: no attempts left), or 0 when the lease was lost.

local id = ARGV[2]
local now, job, tenant, attempts = finish_lease(true)
if job == nil then
  return 0
elseif not job then
  return 1
end
if ARGV[8] == '1' then
  redis.call('HSET', job, 'outcome_unknown', 1)
end
if attempts >= tonumber(ARGV[9]) then
  bury(id, tenant, 'gave up after ' .. attempts .. ' attempts: ' .. ARGV[7], now)
  return 2
end
redis.call('HSET', job, 'state', 'scheduled', 'error', ARGV[7])
redis.call('ZADD', P .. 'sched', int(now + tonumber(ARGV[6])), id)
-- A waiting worker may be sleeping past this retry's time.
wake()
return 1
