-- keyward: every limit of one request, decided all or nothing (GCRA rates and quotas).
--
-- KEYS: the rate keys, then the quota keys.
-- ARGV[1]: "" to use Redis TIME as the clock, else the time in microseconds (tests only; read by
-- the prelude, clock.lua).
-- ARGV[2], ARGV[3]: number of rates, number of quotas.
-- Then per rate: emission interval (µs, may be fractional), burst, cost;
-- then per quota: refill ("d" day, "w" ISO week, "m" month, "e" every N seconds), N, limit, cost.
--
-- State: a rate key holds the theoretical arrival time (µs since the Unix epoch, "%.3f"),
-- expiring when the bucket is full again; a quota key is a hash {p = period index, u = used},
-- expiring when its period ends.
--
-- Returns {kind, index, retry_us, remaining_1, reset_secs_1, ...}: kind 0 allowed, 1 a rate
-- refused (index among the rates), 2 a quota refused (index among the quotas); then one pair
-- per rate and per quota, in order: after the request when it is allowed, as they are when it
-- is refused (a refused request consumes from no limit, so nothing was taken).

local nr = tonumber(ARGV[2])
local nq = tonumber(ARGV[3])
local secs = math.floor(now / 1000000)
-- Float arithmetic on microseconds near 1.8e15 is exact to 0.25 µs: allow one µs of slack.
local EPS = 1

local function ceil_secs(us)
  if us <= 0 then return 0 end
  return math.ceil(us / 1000000 - 1e-9)
end

local out = {0, 0, 0}
-- The fields as they are (for a refusal) and after this request (when all allow).
local before, after = {}, {}
local rate_wait, rate_idx = -1, 0
local quota_reset, quota_idx = -1, 0
local new_tats = {}
local a = 4

local function rate_fields(cap, t, used)
  local rem = math.floor((cap - used) / t + 1e-9)
  if rem < 0 then rem = 0 end
  return rem, ceil_secs(used)
end

for i = 1, nr do
  local t = tonumber(ARGV[a])
  local burst = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 2])
  a = a + 3
  local cap = t * burst
  local tat = now
  local v = redis.call('GET', KEYS[i])
  if v then
    local stored = tonumber(v)
    if stored and stored > now then tat = stored end
  end
  local new_tat = tat + t * cost
  local ahead = new_tat - now
  local rem, reset = rate_fields(cap, t, tat - now)
  before[#before + 1] = rem
  before[#before + 1] = reset
  if ahead > cap + EPS then
    local wait = ahead - cap
    if wait > rate_wait then
      rate_wait = wait
      rate_idx = i
    end
  else
    rem, reset = rate_fields(cap, t, ahead)
  end
  after[#after + 1] = rem
  after[#after + 1] = reset
  new_tats[i] = new_tat
end

local new_quotas = {}
for j = 1, nq do
  local kind = ARGV[a]
  local len = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local cost = tonumber(ARGV[a + 3])
  a = a + 4
  local period, finish = period_of(kind, len, secs)
  local used = 0
  local cell = redis.call('HMGET', KEYS[nr + j], 'p', 'u')
  if cell[1] and tonumber(cell[1]) == period then
    used = tonumber(cell[2]) or 0
  end
  local reset = finish - secs
  if reset < 0 then reset = 0 end
  local used_after = used + cost
  local rem = limit - used
  if rem < 0 then rem = 0 end
  before[#before + 1] = rem
  before[#before + 1] = reset
  if used_after > limit then
    if reset > quota_reset then
      quota_reset = reset
      quota_idx = j
    end
  else
    rem = limit - used_after
  end
  after[#after + 1] = rem
  after[#after + 1] = reset
  new_quotas[j] = {period, used_after, reset}
end

local function answer(fields)
  for k = 1, #fields do out[#out + 1] = fields[k] end
  return out
end

if quota_idx > 0 then
  out[1] = 2
  out[2] = quota_idx
  out[3] = quota_reset * 1000000
  return answer(before)
end
if rate_idx > 0 then
  out[1] = 1
  out[2] = rate_idx
  out[3] = math.ceil(rate_wait - 1e-9)
  return answer(before)
end
for i = 1, nr do
  local ttl = math.ceil((new_tats[i] - now) / 1000) + 1 + slack
  redis.call('SET', KEYS[i], string.format('%.3f', new_tats[i]), 'PX', ttl)
end
for j = 1, nq do
  local q = new_quotas[j]
  redis.call('HSET', KEYS[nr + j], 'p', string.format('%d', q[1]), 'u', string.format('%d', q[2]))
  redis.call('EXPIRE', KEYS[nr + j], q[3] + 1 + slack / 1000)
end
return answer(after)
