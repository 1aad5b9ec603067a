-- note_attempt.lua: adds a call to a job's history, keeping the last N; nothing for a job
-- that is no longer known (purged), so no history outlives its record.
--
-- KEYS[1]: {q}:hist:<id>
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: the attempt (JSON)
-- ARGV[4]: N, the most attempts kept
--
-- Returns 1 when kept, 0 for an unknown job.

local id = ARGV[2]
if redis.call('HEXISTS', P .. 'bodies', id) == 0 and redis.call('EXISTS', P .. 'job:' .. id) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
return 1
