-- Writes to the shared operational state, then bumps the generation and notifies.
-- KEYS: revocations hash, toggles hash, blocked hash, generation counter.
-- ARGV[1]: channel; ARGV[2]: op; then its arguments:
--   rev  FIELD EXPIRES_AT BEFORE REASON   (merge: max of expires_at and before, new reason)
--   set  NAME VALUE                       (toggle override)
--   clear NAME
--   block FIELD UNTIL_MS                  (max with the current value)
local channel, op = ARGV[1], ARGV[2]
if op == 'rev' then
  local field, exp, before, reason = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
  local cur = redis.call('HGET', KEYS[1], field)
  if cur then
    local e, b = string.match(cur, '^(%d+) (%d+) ')
    if e then
      exp = math.max(exp, tonumber(e))
      before = math.max(before, tonumber(b))
    end
  end
  redis.call('HSET', KEYS[1], field, string.format('%d %d %s', exp, before, reason))
elseif op == 'set' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
elseif op == 'clear' then
  redis.call('HDEL', KEYS[2], ARGV[3])
elseif op == 'block' then
  local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0') or 0
  redis.call('HSET', KEYS[3], ARGV[3], string.format('%d', math.max(cur, tonumber(ARGV[4]))))
end
local gen = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', channel, gen)
return gen
