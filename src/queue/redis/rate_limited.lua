-- rate_limited.lua: LeadSquared said "rate limited". Pauses the tenant, puts the job back at
-- the FRONT of its list with the attempt given back, and lowers the tenant's limit when the
-- answer named a smaller one. The call stays in the log (it was made), re-stamped first
-- (see `restamp` in prelude.lua).
--
-- KEYS[1]: {q}:running
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: job id
-- ARGV[3]: lease token (the call's id in the tenant's call log)
-- ARGV[4]: tenant
-- ARGV[5]: window + margin, µs
-- ARGV[6]: the reason a record with no tenant is buried with
-- ARGV[7]: pause, µs
-- ARGV[8]: the limit LeadSquared named, 0 if none
-- ARGV[9]: pause reason
-- ARGV[10]: the share mode, `adaptive` or `fixed`
-- ARGV[11], ARGV[12]: the cut, numerator and denominator (`queue::share::CUT_NUM`, `CUT_DEN`)
--
-- With `adaptive` and a pause no longer than the window: counts our calls in the tenant's window (the refused one included);
-- fewer than its limit means another client is using the account, and the share
-- (`share:<tenant>`: share, since µs, cut µs) is cut, at most once per window. Either way
-- the climb restarts from now (see `tenant_cap` in prelude.lua).
--
-- Returns 1, or 0 when the lease was lost.

local id = ARGV[2]
local now, job, tenant, attempts = finish_lease(true)
if job == nil then
  return 0
elseif not job then
  return 1
end
redis.call('HSET', job, 'state', 'queued', 'attempts', math.max(0, attempts - 1))
redis.call('LPUSH', P .. 'q:' .. tenant, id)
note_head(tenant)

local resume = now + tonumber(ARGV[7])
if resume > paused_until(tenant) then
  redis.call('HSET', P .. 'paused', tenant, int(resume))
  redis.call('HSET', P .. 'pause_reason', tenant, ARGV[9])
end

local named = tonumber(ARGV[8]) or 0
if named >= 1 and named < tenant_limit(tenant) then
  redis.call('HSET', P .. 'learned', tenant, named)
  redis.call('HSET', P .. 'limits', tenant, named)
  redis.call('ZREMRANGEBYRANK', P .. 'calls:' .. tenant, 0, -(named + 1))
end
-- A pause longer than the window is a quota (a daily one), not the account's 5-s window
-- crowded by another client: it parks the tenant and leaves the share alone.
if ARGV[10] == 'adaptive' and tonumber(ARGV[7]) <= tonumber(ARGV[5]) then
  local window_us = tonumber(ARGV[5])
  local key = P .. 'share:' .. tenant
  local current = tenant_cap(tenant, now, window_us, true)
  local ours = redis.call('ZCOUNT', P .. 'calls:' .. tenant, '(' .. int(now - window_us), '+inf')
  local cut_at = tonumber(redis.call('HGET', key, 'cut'))
  local share = current
  if ours < tenant_limit(tenant) and (not cut_at or cut_at + window_us <= now) then
    share = math.max(1, math.floor(current * tonumber(ARGV[11]) / tonumber(ARGV[12])))
    redis.call('HSET', key, 'cut', int(now))
  end
  redis.call('HSET', key, 'share', share, 'since', int(now))
end
-- The scrape's index of cut shares follows the share and the limit (see prelude.lua).
note_share(tenant, tonumber(ARGV[5]))
-- GT: never moves the tenant earlier than its call log already put it.
redis.call('ZADD', P .. 'ready', 'GT', int(math.max(resume, paused_until(tenant))), tenant)
wake()
return 1
