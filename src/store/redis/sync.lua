-- sync: KEYS as shared.lua. ARGV[1]: the generation the caller holds ('' for none).
-- Returns { gen } when unchanged, else { gen, revocations, toggles, blocked } (flat hashes),
-- after dropping revocations and blocks that have expired (server clock).
local gen = redis.call('GET', KEYS[4]) or '0'
if gen == ARGV[1] then return { gen } end
local now = now_ms()
local revs = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #revs, 2 do
  local e = tonumber(string.match(revs[i + 1], '^(%d+) ') or '0')
  if e * 1000 > now then
    kept[#kept + 1] = revs[i]
    kept[#kept + 1] = revs[i + 1]
  else
    redis.call('HDEL', KEYS[1], revs[i])
  end
end
local blocked = redis.call('HGETALL', KEYS[3])
local live = {}
for i = 1, #blocked, 2 do
  if (tonumber(blocked[i + 1]) or 0) > now then
    live[#live + 1] = blocked[i]
    live[#live + 1] = blocked[i + 1]
  else
    redis.call('HDEL', KEYS[3], blocked[i])
  end
end
return { gen, kept, redis.call('HGETALL', KEYS[2]), live }
