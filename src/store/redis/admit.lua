-- admit: every check evaluated, all consumed only if all pass (store/mod.rs contract).
-- KEYS[i]: the check's key. ARGV: 4 per check: kind ('r', 'b', 'c'), p1, p2, p3, then a
-- lease id for concurrency checks.
--   r: limit, period_ms, burst            (GCRA, state "ms rem" in a string)
--   b: limit, window (0 day, -1 month, >0 fixed ms), cost   (counter KEY@windowstart)
--   c: limit, lease_ms, lease id           (sorted set of lease expiries)
-- Returns { allowed, then per check: allowed, remaining, reset_after_ms, retry_after_ms
-- (-1: none), used }.
local now = now_ms()
local n = #KEYS
local work = {}
local out = {}
local all = true
local writes = {}

local function load_rate(k)
  local v = redis.call('GET', k)
  if not v then return nil end
  local ms, rem = string.match(v, '^(%d+) (%d+)$')
  if not ms then return nil end
  return { tonumber(ms), tonumber(rem) }
end

for i = 1, n do
  local kind = ARGV[4 * i - 3]
  local a = tonumber(ARGV[4 * i - 2])
  local b = tonumber(ARGV[4 * i - 1])
  local c = ARGV[4 * i]
  local key = KEYS[i]
  if kind == 'r' then
    local limit, period, burst = a, b, tonumber(c)
    local w = work[key]
    if not w then w = { kind = 'r', tat = load_rate(key) }; work[key] = w end
    if limit <= 0 then
      all = false
      out[#out + 1] = { 0, 0, 0, math.max(period, 1), 0 }
    else
      local t = math.max(period, 1)
      local tau = math.max(burst, 1) * t
      local ahead = 0
      if w.tat then ahead = math.max(0, (w.tat[1] - now) * limit + w.tat[2]) end
      local an = ahead + t
      if an <= tau then
        w.tat = { now + idiv(an, limit), an % limit }
        w.dirty = true
        w.limit = limit
        out[#out + 1] = { 1, idiv(tau - an, t), ceil_div(an, limit), -1, 0,
          peek = { idiv(tau - ahead, t), ceil_div(ahead, limit), 0 } }
      else
        all = false
        out[#out + 1] = { 0, 0, ceil_div(ahead, limit), ceil_div(an - tau, limit), 0 }
      end
    end
  elseif kind == 'b' then
    local limit, win, cost = a, b, tonumber(c)
    local start, stop = bounds(now, win)
    local bkey = key .. '@' .. string.format('%d', start)
    local w = work[bkey]
    if not w then w = { kind = 'b', used = tonumber(redis.call('GET', bkey) or '0') or 0 }; work[bkey] = w end
    local after = w.used + cost
    local reset = stop - now
    if after <= limit then
      if cost > 0 then w.used = after; w.dirty = true; w.stop = stop end
      out[#out + 1] = { 1, limit - after, reset, -1, after,
        peek = { limit - (after - cost), reset, after - cost } }
    else
      all = false
      out[#out + 1] = { 0, math.max(limit - w.used, 0), reset, math.max(reset, 1), w.used }
    end
  else
    local limit, lease = a, b
    local w = work[key]
    if not w then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      w = { kind = 'c', held = redis.call('ZCARD', key), adds = {} }
      work[key] = w
    end
    if w.held < limit then
      w.held = w.held + 1
      w.adds[#w.adds + 1] = { now + lease, c }
      w.dirty = true
      out[#out + 1] = { 1, limit - w.held, lease, -1, w.held,
        peek = { limit - w.held + 1, lease, w.held - 1 } }
    else
      all = false
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      local retry = lease
      if first[2] then retry = tonumber(first[2]) - now end
      out[#out + 1] = { 0, 0, lease, math.max(retry, 1), w.held }
    end
  end
end

if all then
  for k, w in pairs(work) do
    if w.dirty then
      if w.kind == 'r' then
        local exp = w.tat[1] + ceil_div(w.tat[2], w.limit)
        redis.call('SET', k, string.format('%d %d', w.tat[1], w.tat[2]), 'PXAT', math.max(exp, now + 1))
      elseif w.kind == 'b' then
        redis.call('SET', k, string.format('%d', w.used), 'PXAT', w.stop)
      else
        for _, add in ipairs(w.adds) do
          redis.call('ZADD', k, add[1], add[2])
        end
        local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
        if last[2] then redis.call('PEXPIREAT', k, tonumber(last[2])) end
      end
    end
  end
end

-- Refused: the checks that passed report their current, unconsumed state.
if not all then
  for i = 1, #out do
    local o = out[i]
    if o[1] == 1 then o[2], o[3], o[5] = o.peek[1], o.peek[2], o.peek[3] end
  end
end

local reply = { all and 1 or 0 }
for i = 1, #out do
  local o = out[i]
  reply[#reply + 1] = o[1]
  reply[#reply + 1] = o[2]
  reply[#reply + 1] = o[3]
  reply[#reply + 1] = o[4]
  reply[#reply + 1] = o[5]
end
return reply
