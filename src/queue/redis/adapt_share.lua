-- adapt_share.lua: sets a tenant's adaptive share after a cut the worker decided
-- (`queue::share::after_refusal`, from what rate_limited.lua returned), unless another
-- worker cut it in between: the share's `since` must still be what the worker read.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: tenant
-- ARGV[3]: the share's `since` as read ('' when it had none)
-- ARGV[4]: the new share, calls per window
-- ARGV[5]: the moment of the cut, µs (the refusal's `now`)
-- ARGV[6]: window + margin, µs
--
-- `share:<tenant>`: share, since µs (the climb starts there), cut µs (the last cut);
-- `paced`: tenant -> µs its pacing counts from.
-- Returns 1 when set, or {share, since, cut} as they are now when another cut came first.

local tenant = ARGV[2]
local key = P .. 'share:' .. tenant
local s = redis.call('HMGET', key, 'share', 'since', 'cut')
if (s[2] or '') ~= ARGV[3] then
  return {s[1] or '', s[2] or '', s[3] or ''}
end
redis.call('HSET', key, 'share', ARGV[4], 'since', ARGV[5], 'cut', ARGV[5])
-- The pacing starts again from the cut: the next call a gap after it (see `paced_at`).
redis.call('HSET', PACED, tenant, ARGV[5])
note_share(tenant, tonumber(ARGV[6]))
return 1
