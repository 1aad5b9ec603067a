-- dispatch.lua: the limiter. Promotes due retries, takes back expired leases, then takes the
-- next job of the first tenant whose time has come, spends one of its calls, leases the job
-- and re-scores the tenant. One atomic call, so dispatchers on any number of connections
-- never hand out more than `limit` calls of a tenant in any window.
--
-- KEYS[1]: {q}:ready
-- ARGV[1]: key prefix `{q}:`
-- ARGV[2]: window + margin, µs
-- ARGV[3]: lease, µs
-- ARGV[4]: max attempts (a job whose lease expires with no attempt left is dead)
-- ARGV[5]: lease token for the job handed out (also the call's id in the call log)
-- ARGV[6]: at most this many retries promoted, and this many leases taken back, per call
-- ARGV[7]: at most this many tenants examined per call
--
-- Returns {'job', id, tenant, key, body, attempt, outcome_unknown(0|1), token, now_ms},
-- {'wait', µs} ({'wait', 0}: the examination budget ran out, call again), or {'empty'}.

local window_us = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local token = ARGV[5]
local max_moves = tonumber(ARGV[6])
local max_tenants = tonumber(ARGV[7])
local ready = KEYS[1]
local now = now_us()
local moved = 0

-- Due retries go to the FRONT of their tenant's list: they were first in line once. Taken
-- latest-due first so that the earliest-due ends up first.
local due = redis.call('ZRANGEBYSCORE', P .. 'sched', '-inf', int(now), 'LIMIT', 0, max_moves)
for i = #due, 1, -1 do
  local id = due[i]
  redis.call('ZREM', P .. 'sched', id)
  local ok, tenant = pcall(redis.call, 'HGET', P .. 'job:' .. id, 'tenant')
  if ok and tenant then
    redis.call('HSET', P .. 'job:' .. id, 'state', 'queued')
    redis.call('LPUSH', P .. 'q:' .. tenant, id)
    redis.call('ZADD', ready, 'NX', int(now), tenant)
    moved = moved + 1
  elseif ok then
    bury(id, nil, 'job record missing when its retry came due', now)
  end
end

-- Expired leases: the worker died or hung. The attempt stays spent and the outcome is
-- unknown (the call may have reached LeadSquared). A job that kills its worker every time
-- runs out of attempts here and ends dead. A job whose holder had sent Create (the fence
-- recorded `call_until_ms`) waits in the schedule until that call can no longer land: a
-- reconcile before then could find nothing while the call is still being processed, and
-- create a second webhook.
local expired = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', int(now), 'LIMIT', 0,
  max_moves)
for i = #expired, 1, -1 do
  local id = expired[i]
  redis.call('ZREM', P .. 'running', id)
  local job = P .. 'job:' .. id
  local ok, f = pcall(redis.call, 'HMGET', job, 'tenant', 'attempts')
  if not ok or not f[1] then
    if ok then
      bury(id, nil, 'job record missing when its lease expired', now)
    end
  elseif (tonumber(f[2]) or 0) >= max_attempts then
    redis.call('HSET', job, 'outcome_unknown', 1)
    bury(id, f[1], 'lease expired on attempt ' .. (tonumber(f[2]) or 0) ..
      ' (the worker died or hung holding the job); no attempts left', now)
  else
    local in_flight_until = call_until_us(job)
    redis.call('HDEL', job, 'lease', 'call_until_ms')
    if in_flight_until > now then
      redis.call('HSET', job, 'state', 'scheduled', 'outcome_unknown', 1, 'error',
        'lease expired mid-call (the worker died or hung); reconciled once that call can no longer land')
      redis.call('ZADD', P .. 'sched', int(in_flight_until), id)
    else
      redis.call('HSET', job, 'state', 'queued', 'outcome_unknown', 1)
      redis.call('LPUSH', P .. 'q:' .. f[1], id)
      redis.call('ZADD', ready, 'NX', int(now), f[1])
    end
    moved = moved + 1
  end
end
if moved > 0 then
  wake()
end

local budget_spent = true
for _ = 1, max_tenants do
  local head = redis.call('ZRANGEBYSCORE', ready, '-inf', int(now), 'LIMIT', 0, 1)
  if #head == 0 then
    budget_spent = false
    break
  end
  local tenant = head[1]
  local limit = tenant_limit(tenant)
  local at = math.max(log_allows_at(tenant, limit, window_us), paused_until(tenant))
  if at > now then
    redis.call('ZADD', ready, int(at), tenant)
  else
    local popped, id = pcall(redis.call, 'LPOP', P .. 'q:' .. tenant)
    if not popped or not id then
      -- Nothing waiting (or the list key is not a list): not a ready tenant.
      redis.call('ZREM', ready, tenant)
    else
      local job = P .. 'job:' .. id
      local ok, f = pcall(redis.call, 'HMGET', job, 'state', 'attempts', 'outcome_unknown', 'key')
      local body = redis.call('HGET', P .. 'bodies', id)
      local key = f and f[4]
      local first = ok and not f[1] and not f[2]
      if first then
        -- Never dispatched: its record is still in `meta`. Move it into the job's own hash.
        local m = redis.call('HGET', P .. 'meta', id)
        if m then
          key = string.match(m, '^[^\n]*\n(.*)$') or ''
          redis.call('HSET', job, 'tenant', tenant, 'key', key, 'state', 'queued', 'attempts', 0)
          redis.call('HDEL', P .. 'meta', id)
        end
      end
      if not ok then
        -- Not a hash: keep the data for inspection under another name, bury the job.
        redis.call('RENAME', job, P .. 'corrupt:' .. id)
        bury(id, tenant, 'corrupt job record (not a hash); kept as corrupt:' .. id, now)
        rescore(tenant, now, window_us)
      elseif first and not key then
        bury(id, tenant, 'job record missing from the queue', now)
        rescore(tenant, now, window_us)
      elseif (first or f[1] == 'queued') and body then
        local attempt = (tonumber(f[2]) or 0) + 1
        local calls = P .. 'calls:' .. tenant
        redis.call('ZADD', calls, int(now), token)
        redis.call('ZREMRANGEBYRANK', calls, 0, -(limit + 1))
        -- Entries older than the window no longer matter: let an idle tenant's log go.
        redis.call('PEXPIRE', calls, int(math.ceil(window_us / 1000) * 2 + 1000))
        redis.call('HSET', job, 'state', 'running', 'attempts', attempt, 'lease', token,
          'dispatched_ms', ms(now))
        redis.call('ZADD', P .. 'running', int(now + lease_us), id)
        rescore(tenant, now, window_us)
        local unknown = 0
        if f[3] == '1' then
          unknown = 1
        end
        return {'job', id, tenant, key or '', body, attempt, unknown, token, ms(now)}
      elseif first or f[1] == 'queued' or not f[1] then
        bury(id, tenant, 'corrupt job record (no body or no state)', now)
        rescore(tenant, now, window_us)
      else
        -- A stale entry: the job is running, scheduled or finished elsewhere. Drop it.
        rescore(tenant, now, window_us)
      end
    end
  end
end
if budget_spent then
  return {'wait', 0}
end

local next_at = nil
local r = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
if #r > 0 then
  next_at = tonumber(r[2])
end
local s = redis.call('ZRANGE', P .. 'sched', 0, 0, 'WITHSCORES')
if #s > 0 and (not next_at or tonumber(s[2]) < next_at) then
  next_at = tonumber(s[2])
end
if not next_at then
  return {'empty'}
end
return {'wait', math.max(0, next_at - now)}
