-- requeue.lua: puts a leased job back at the FRONT of its tenant's list (shutdown, or a
-- reconcile that found nothing). The call stays in the log either way: whether it was sent
-- is not known here, and counting it is the safe side. A job handed back with its outcome
-- unknown while its Create may still land (abandoned mid-call at shutdown) waits in the
-- schedule until then instead: a reconcile before that moment could miss the webhook.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token
-- ARGV[4]: keep the attempt (1) or give it back (0)
-- ARGV[5]: outcome unknown for the next dispatch (0|1), taken as given
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local job = leased(id, ARGV[3])
if not job then
  return 0
end
local now = now_us()
redis.call('ZREM', KEYS[1], id)
local f = redis.call('HMGET', job, 'tenant', 'attempts')
local tenant = f[1]
if not tenant then
  bury(id, nil, 'corrupt job record (no tenant)', now)
  return 1
end
local attempts = tonumber(f[2]) or 0
if ARGV[4] ~= '1' then
  attempts = math.max(0, attempts - 1)
end
local in_flight_until = call_until_us(job)
redis.call('HDEL', job, 'lease', 'call_until_ms')
if ARGV[5] == '1' and in_flight_until > now then
  redis.call('HSET', job, 'state', 'scheduled', 'attempts', attempts, 'outcome_unknown', 1,
    'error', 'handed back mid-call; reconciled once that call can no longer land')
  redis.call('ZADD', P .. 'sched', int(in_flight_until), id)
  wake()
  return 1
end
redis.call('HSET', job, 'state', 'queued', 'attempts', attempts, 'outcome_unknown', ARGV[5])
redis.call('LPUSH', P .. 'q:' .. tenant, id)
redis.call('ZADD', P .. 'ready', 'NX', int(now), tenant)
wake()
return 1
