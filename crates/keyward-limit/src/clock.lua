-- keyward: the clock and the quota periods, shared by gcra.lua and refund.lua (each script is
-- this prelude followed by its own text).
--
-- ARGV[1]: "" to use Redis TIME as the clock, else the time in microseconds (tests only).

local now
-- With a test clock, state must outlive the test's real duration: a minute more of TTL.
local slack = 0
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
  slack = 60000
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function month_of(s)
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if m == 12 then ny, nm = y + 1, 1 end
  return y * 12 + m - 1, days_from_civil(ny, nm, 1) * 86400
end

-- The period a quota counts at `secs` and when it ends: "d" day, "w" ISO week, "m" month,
-- "e" every `len` seconds.
local function period_of(kind, len, secs)
  if kind == 'd' then
    local p = math.floor(secs / 86400)
    return p, (p + 1) * 86400
  elseif kind == 'w' then
    -- The Unix epoch was a Thursday: ISO weeks start on the Monday three days before it.
    local p = math.floor((secs + 259200) / 604800)
    return p, (p + 1) * 604800 - 259200
  elseif kind == 'm' then
    return month_of(secs)
  end
  local p = math.floor(secs / len)
  return p, (p + 1) * len
end

