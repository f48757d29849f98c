-- Shared by the fortress scripts (prepended to each). Numbers are Lua doubles: every value
-- here stays below 2^53, so integer arithmetic is exact (see store/gcra.rs).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local DAY = 86400000

local function idiv(a, b) return math.floor(a / b) end
local function ceil_div(a, b) return math.floor((a + b - 1) / b) end

-- Days since 1970-01-01 -> year, month (Howard Hinnant's civil_from_days, as store/mod.rs).
local function civil_from_days(days)
  local z = days + 719468
  local era = idiv(z, 146097)
  local doe = z - era * 146097
  local yoe = idiv(doe - idiv(doe, 1460) + idiv(doe, 36524) - idiv(doe, 146096), 365)
  local doy = doe - (365 * yoe + idiv(yoe, 4) - idiv(yoe, 100))
  local mp = idiv(5 * doy + 2, 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = idiv(y, 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = idiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + idiv(yoe, 4) - idiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

-- Window bounds: w == 0 a UTC day, w == -1 a UTC month, w > 0 a fixed period (ms).
local function bounds(now, w)
  if w == -1 then
    local days = idiv(now, DAY)
    local y, m = civil_from_days(days)
    local start = days_from_civil(y, m, 1)
    local ny, nm = y, m + 1
    if m == 12 then ny, nm = y + 1, 1 end
    return start * DAY, days_from_civil(ny, nm, 1) * DAY
  end
  local p = w
  if w == 0 then p = DAY end
  if p < 1 then p = 1 end
  local start = now - (now % p)
  return start, start + p
end
