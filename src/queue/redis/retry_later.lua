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
-- ARGV[6]: the reason a record with no tenant is buried with
-- ARGV[7]: delay, µs
-- ARGV[8]: error text
-- ARGV[9]: outcome unknown (0|1)
-- ARGV[10]: max attempts
-- ARGV[11]: the reason recorded when no attempt is left (the error text within it)
--
-- Returns 1 (scheduled), 2 (dead: no attempts left), or 0 when the lease was lost.

local id = ARGV[2]
local now, job, tenant, attempts = finish_lease(true)
if job == nil then
  return 0
elseif not job then
  return 1
end
if ARGV[9] == '1' then
  redis.call('HSET', job, 'outcome_unknown', 1)
end
if attempts >= tonumber(ARGV[10]) then
  bury(id, tenant, ARGV[11], now)
  return 2
end
redis.call('HSET', job, 'state', 'scheduled', 'error', ARGV[8])
redis.call('ZADD', P .. 'sched', int(now + tonumber(ARGV[7])), id)
-- A waiting worker may be sleeping past this retry's time.
wake()
return 1
