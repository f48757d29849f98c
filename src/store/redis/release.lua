-- release: for each KEYS[i] (a concurrency key), drop expired leases, then the lease that
-- expires last.
local now = now_ms()
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZPOPMAX', KEYS[i])
end
return 1
