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
--
-- Returns {0} when the lease was lost. Otherwise {1}, and with `adaptive` and a pause no
-- longer than the window (a 5-s refusal, not a quota) also what the worker needs to decide
-- a cut of the share (unless the answer named a lower limit, which explains it) (`queue::share::after_refusal`, applied by adapt_share.lua): our calls
-- in the tenant's window (the refused one included), and the share's stored `share`,
-- `since` µs and `cut` µs ('' where none), now µs, its limit and its reserve.

local id = ARGV[2]
local now, job, tenant, attempts = finish_lease(true)
if job == nil then
  return {0}
elseif not job then
  return {1}
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
local learned = named >= 1 and named < tenant_limit(tenant)
if learned then
  redis.call('HSET', P .. 'learned', tenant, named)
  redis.call('HSET', P .. 'limits', tenant, named)
  redis.call('ZREMRANGEBYRANK', P .. 'calls:' .. tenant, 0, -(named + 1))
end
-- The scrape's index of cut shares follows the limit (see prelude.lua).
note_share(tenant, tonumber(ARGV[5]))
-- GT: never moves the tenant earlier than its call log already put it.
redis.call('ZADD', P .. 'ready', 'GT', int(math.max(resume, paused_until(tenant))), tenant)
wake()
-- A pause longer than the window is a quota (a daily one), not the account's 5-s window
-- crowded by another client: it parks the tenant and leaves the share alone. So does an
-- answer that named a lower limit than the tenant's: that explains it.
if ARGV[10] ~= 'adaptive' or tonumber(ARGV[7]) > tonumber(ARGV[5]) or learned then
  return {1}
end
local window_us = tonumber(ARGV[5])
local ours = redis.call('ZCOUNT', P .. 'calls:' .. tenant, '(' .. int(now - window_us), '+inf')
local s = redis.call('HMGET', P .. 'share:' .. tenant, 'share', 'since', 'cut')
local reserve = tonumber(redis.call('HGET', P .. 'reserve', tenant)) or 0
return {1, ours, s[1] or '', s[2] or '', s[3] or '', int(now), tenant_limit(tenant),
  math.max(0, math.floor(reserve))}
