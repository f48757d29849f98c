-- charge: KEYS[1] budget key; ARGV: limit, window (0 day, -1 month, >0 fixed ms), units.
-- Returns { used, reset_after_ms }.
local now = now_ms()
local limit, win, units = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local start, stop = bounds(now, win)
local bkey = KEYS[1] .. '@' .. string.format('%d', start)
local used
if units > 0 then
  used = redis.call('INCRBY', bkey, units)
  redis.call('PEXPIREAT', bkey, stop)
else
  used = tonumber(redis.call('GET', bkey) or '0') or 0
end
return { used, stop - now }
