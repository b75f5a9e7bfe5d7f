-- keyward: gives back what an allowed decision took (Redis Cluster, a request whose limits live
-- in several slots: the slots decided before the one that refused are given back).
--
-- KEYS: the rate keys, then the quota keys (those of one allowed decision, one slot).
-- ARGV[2], ARGV[3]: number of rates, number of quotas.
-- Then per rate: emission interval (µs), cost; per quota: refill, N, cost (as in gcra.lua).
--
-- A rate's theoretical arrival time moves back by interval × cost (never before now: a full
-- bucket stays full); a quota's count in the current period goes down by cost (never below
-- zero; nothing when its period has changed since). Other requests' consumption in between
-- is kept: GCRA and counts are additive. Returns the number of keys changed.

local nr = tonumber(ARGV[2])
local nq = tonumber(ARGV[3])
local secs = math.floor(now / 1000000)
local a = 4
local changed = 0

for i = 1, nr do
  local t = tonumber(ARGV[a])
  local cost = tonumber(ARGV[a + 1])
  a = a + 2
  local v = redis.call('GET', KEYS[i])
  local tat = v and tonumber(v)
  if tat and tat > now then
    local back = tat - t * cost
    if back <= now then
      redis.call('DEL', KEYS[i])
    else
      local ttl = math.ceil((back - now) / 1000) + 1 + slack
      redis.call('SET', KEYS[i], string.format('%.3f', back), 'PX', ttl)
    end
    changed = changed + 1
  end
end

for j = 1, nq do
  local kind = ARGV[a]
  local len = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 2])
  a = a + 3
  local period = period_of(kind, len, secs)
  local cell = redis.call('HMGET', KEYS[nr + j], 'p', 'u')
  if cell[1] and tonumber(cell[1]) == period then
    local used = (tonumber(cell[2]) or 0) - cost
    if used < 0 then used = 0 end
    -- HSET keeps the key's expiry (the end of the period).
    redis.call('HSET', KEYS[nr + j], 'u', string.format('%d', used))
    changed = changed + 1
  end
end
return changed
