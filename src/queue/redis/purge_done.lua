-- purge_done.lua: deletes the records of done jobs (`results --purge-done`, once their rows
-- are written out). Their idempotency keys stay taken, so the same webhook enqueued again is
-- still a duplicate and is never created twice; the duplicate names the purged job's id.
-- A done job's body is already gone (complete.lua drops it).
--
-- KEYS[1]: {q}:done
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2..]: job ids; an id that is not a done job is left alone
--
-- Returns the number of records deleted.

local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('DEL', P .. 'job:' .. id, P .. 'hist:' .. id)
    count = count + 1
  end
end
return count
