-- tenants.lua: one page of the tenants view (see `Queue::tenants_page`), from the counters
-- the queue keeps per tenant (`tc:*`, see `count_tenant` in prelude.lua) and what each
-- tenant's own keys say (its list's length, its call log, its place in `ready`, its hold).
-- It walks one of the `tc:*` orders from `offset`, examining at most `budget` tenants, so a
-- page costs the same at 10 tenants or 10,000. The state rules are `TenantState::of`'s.
--
-- KEYS[1]: {q}:tenants
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: the order: `names`, `unfinished`, `done` or `dead` (a `tc:` key)
-- ARGV[3]: only tenants in this state (held, throttled, waiting, stuck, done); '' for all
-- ARGV[4]: offset in the order
-- ARGV[5]: most rows
-- ARGV[6]: most tenants examined
-- ARGV[7]: window, µs (calls counted in the window ending now)
-- ARGV[8]: window + margin, µs (what the share climbs by)
-- ARGV[9]: the share mode, `adaptive` or `fixed`
--
-- Returns {registered tenants, offset of the next page (-1: none), then eleven entries per
-- row: name, state, waiting, in flight, done, dead, calls in window, share, limit, next
-- call ms (-1: not later than now), hold record (JSON, '' for none)}.

local now = now_us()
local order = P .. 'tc:' .. ARGV[2]
local filter = ARGV[3]
local at = tonumber(ARGV[4])
local rows = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local window_us = tonumber(ARGV[7])
local span_us = tonumber(ARGV[8])
local adaptive = ARGV[9] == 'adaptive'
local orders = {'names', 'unfinished', 'done', 'dead'}

-- Tenants registered before the counters existed get their place in every order once.
local total = redis.call('HLEN', KEYS[1])
if redis.call('ZCARD', P .. 'tc:names') < total then
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    for _, what in ipairs(orders) do
      redis.call('ZADD', P .. 'tc:' .. what, 'NX', 0, name)
    end
  end
end

local function count(what, name)
  return math.max(0, -(tonumber(redis.call('ZSCORE', P .. 'tc:' .. what, name)) or 0))
end

local out = {total, -1}
local got = 0
local last = at + budget
local size = redis.call('ZCARD', order)
while at < last and at < size and got < rows do
  local chunk = redis.call('ZRANGE', order, at, math.min(at + 100, last) - 1)
  if #chunk == 0 then
    break
  end
  for _, name in ipairs(chunk) do
    if got == rows then
      break
    end
    at = at + 1
    local unfinished, dead = count('unfinished', name), count('dead', name)
    local ok, queued = pcall(redis.call, 'LLEN', P .. 'q:' .. name)
    if not ok then
      queued = 0
    end
    local raw = redis.call('HGET', P .. 'holds', name)
    local hold = raw and hold_of(name)
    local held = hold and (hold.until_ms == nil or hold.until_ms * 1000 > now)
    local score = tonumber(redis.call('ZSCORE', P .. 'ready', name))
    local later = queued > 0 and score ~= nil and score > now
    local state
    if held then
      state = 'held'
    elseif later then
      state = 'throttled'
    elseif unfinished > 0 then
      state = 'waiting'
    elseif dead > 0 then
      state = 'stuck'
    else
      state = 'done'
    end
    if filter == '' or filter == state then
      got = got + 1
      local calls = 0
      local c_ok, c = pcall(redis.call, 'ZCOUNT', P .. 'calls:' .. name,
        '(' .. int(now - window_us), '+inf')
      if c_ok then
        calls = c
      end
      local next_ms = -1
      if later and not held then
        next_ms = math.floor(score / 1000)
      end
      local n = #out
      out[n + 1] = name
      out[n + 2] = state
      out[n + 3] = queued
      out[n + 4] = math.max(0, unfinished - queued)
      out[n + 5] = count('done', name)
      out[n + 6] = dead
      out[n + 7] = calls
      out[n + 8] = tenant_cap(name, now, span_us, adaptive)
      out[n + 9] = tenant_limit(name)
      out[n + 10] = next_ms
      if held then
        out[n + 11] = raw
      else
        out[n + 11] = ''
      end
    end
  end
end
if at < size then
  out[2] = at
end
return out
