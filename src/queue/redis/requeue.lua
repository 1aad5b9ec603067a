-- requeue.lua: puts a leased job back at the FRONT of its tenant's list (shutdown, or a
-- reconcile that found nothing). The call stays in the log either way, re-stamped first
-- (see `restamp` in prelude.lua): whether it was sent is not known here, and counting it is
-- the safe side. A job handed back with its outcome unknown while its Create may still land
-- (abandoned mid-call at shutdown) waits in the schedule until then instead: a reconcile
-- before that moment could miss the webhook.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token (the call's id in the tenant's call log)
-- ARGV[4]: tenant
-- ARGV[5]: window + margin, µs
-- ARGV[6]: the reason a record with no tenant is buried with
-- ARGV[7]: keep the attempt (1) or give it back (0)
-- ARGV[8]: outcome unknown for the next dispatch (0|1), taken as given
-- ARGV[9]: the error recorded for a job handed back mid-call
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local now, job, tenant, attempts, in_flight_until = finish_lease(true)
if job == nil then
  return 0
elseif not job then
  return 1
end
if ARGV[7] ~= '1' then
  attempts = math.max(0, attempts - 1)
end
if ARGV[8] == '1' and in_flight_until > now then
  redis.call('HSET', job, 'state', 'scheduled', 'attempts', attempts, 'outcome_unknown', 1,
    'error', ARGV[9])
  redis.call('ZADD', P .. 'sched', int(in_flight_until), id)
  wake()
  return 1
end
redis.call('HSET', job, 'state', 'queued', 'attempts', attempts, 'outcome_unknown', ARGV[8])
redis.call('LPUSH', P .. 'q:' .. tenant, id)
note_head(tenant)
redis.call('ZADD', P .. 'ready', 'NX', int(now), tenant)
wake()
return 1
