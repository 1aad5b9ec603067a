-- done_per_second.lua: jobs finished done in each of the last N whole seconds of Redis's
-- clock, oldest first, the current (partial) second last.
--
-- KEYS[1]: {q}:done
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: N, the number of seconds
--
-- Returns N counts.

local n = tonumber(ARGV[2])
local second = math.floor(now_us() / 1000000)
local out = {}
for i = n - 1, 0, -1 do
  local from = (second - i) * 1000000
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], int(from), '(' .. int(from + 1000000))
end
return out
