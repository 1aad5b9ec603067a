-- complete.lua: records success, the webhook Id atomically with completion; re-stamps the
-- job's call first (see `restamp` in prelude.lua). The body is dropped (it may hold custom
-- header secrets and is never needed again); the record stays for `results`.
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token (the call's id in the tenant's call log)
-- ARGV[4]: tenant
-- ARGV[5]: window + margin, µs
-- ARGV[6]: the reason a record with no tenant is buried with
-- ARGV[7]: webhook Id
-- ARGV[8]: reconciled (1 when found with Retrieve instead of created)
-- ARGV[9]: what the job did (`job::Outcome`: created, updated, unchanged, deleted, not_found)
-- ARGV[10]: the digest of the body the webhook now has (`job::body_digest`; '' after a
--          delete), which push.lua compares a job pushed again under the key with
-- ARGV[11]: the body's field digests (`job::field_digests`), for `sync`'s plan
--
-- Returns 1, or 0 when the lease was lost (nothing recorded). A completion repeated after
-- its first answer was lost, or not acknowledged by the replicas, finds the job done with
-- this Id: 1 again.

local id = ARGV[2]
local now, job = finish_lease(false)
if not job then
  local record = P .. 'job:' .. id
  local ok, f = pcall(redis.call, 'HMGET', record, 'state', 'webhook_id')
  if ok and f[1] == 'done' and f[2] == ARGV[7] then
    -- Written again, so that the WAIT after this call covers the completion: a WAIT
    -- counts only the writes of its own connection, and the first may have been another.
    redis.call('HSET', record, 'webhook_id', ARGV[7])
    return 1
  end
  return 0
end
-- An earlier attempt's error is blanked (readers take '' as none): one call, not two.
redis.call('HSET', job, 'state', 'done', 'webhook_id', ARGV[7], 'reconciled', ARGV[8],
  'finished_ms', ms(now), 'error', '')
redis.call('HDEL', P .. 'bodies', id)
-- The tenant's host answered: its unreachable-host streak (host_failed.lua) starts over.
redis.call('HDEL', P .. 'streak', ARGV[4])
redis.call('ZADD', P .. 'done', int(now), id)
redis.call('HINCRBY', P .. 'stats', 'done_total', 1)
-- Issue 18: what it did, for push.lua's revisions and the per-outcome counts.
redis.call('HSET', job, 'outcome', ARGV[9], 'digest', ARGV[10], 'fields', ARGV[11])
redis.call('HINCRBY', P .. 'stats', 'outcome:' .. ARGV[9], 1)
return 1
