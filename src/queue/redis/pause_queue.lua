-- pause_queue.lua: pauses or resumes the whole queue (see `Queue::pause_queue`). While
-- `paused_queue` exists, dispatch.lua hands nothing out; resuming wakes the workers.
--
-- KEYS[1]: {q}:paused_queue
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: `pause` or `resume`
-- ARGV[3]: the reason (pause)
-- ARGV[4]: who (pause; empty: nobody named)
--
-- Returns the pause recorded (pause) or ended (resume) as JSON (reason, by, since_ms), or
-- false when a resume found the queue not paused.

if ARGV[2] == 'resume' then
  local raw = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  wake()
  return raw
end
local rec = {reason = ARGV[3], since_ms = math.floor(now_us() / 1000)}
if ARGV[4] ~= '' then
  rec.by = ARGV[4]
end
local raw = cjson.encode(rec)
redis.call('SET', KEYS[1], raw)
return raw
