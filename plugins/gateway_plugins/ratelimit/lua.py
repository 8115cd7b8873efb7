"""The Lua scripts of the Redis ``ratelimit`` store, one per decision.

Each runs atomically on the Redis server and reads the server's clock
(``TIME``), so replicas with skewed clocks still agree.  Times are microseconds
since the epoch; calendar windows are UTC days and months computed from the
day number (Howard Hinnant's ``civil_from_days`` / ``days_from_civil``).

Key layout (``P`` is ``key_prefix``; ``<key>`` is ``<rule name>:<subject>``)::

    P<key>              rate: string, the GCRA theoretical arrival time (µs);
                        expires when the bucket is full again
    P<key>:slots        concurrency: sorted set, slot id -> lease expiry (µs);
                        expired slots (a crashed gateway's) are pruned on each
                        decision; the key expires one lease after its last change
    P<key>:d20240131    requests or tokens used that UTC day; expires when the day ends
    P<key>:m202401      requests or tokens used that UTC month; expires when it ends
    P<key>:d20240131:reserved
                        tokens reserved by requests still running (token quotas);
                        expires with its window
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "CALENDAR", "RENEW", "SETTLE"]

#: ``window(period, now_s)``: the window's name and its end in epoch seconds;
#: ``window_end(name)``: the end of a window named so.
CALENDAR = """
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function window_end(name)
  local y, m = tonumber(string.sub(name, 2, 5)), tonumber(string.sub(name, 6, 7))
  if string.sub(name, 1, 1) == 'd' then
    return (days_from_civil(y, m, tonumber(string.sub(name, 8, 9))) + 1) * 86400
  end
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  return days_from_civil(y, m, 1) * 86400
end

local function window(period, now_s)
  local days = math.floor(now_s / 86400)
  local y, m, d = civil_from_days(days)
  if period == 'day' then
    return string.format('d%04d%02d%02d', y, m, d), (days + 1) * 86400
  end
  local name = string.format('m%04d%02d', y, m)
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  return name, days_from_civil(y, m, 1) * 86400
end
"""

#: KEYS: one per rule.  ARGV: slot id, lease (µs), then per rule kind, limit, param
#: (rate: interval in µs; quotas: period) and cost (token quotas: the reservation).
#: Returns admitted (0/1), then per rule: allowed, remaining, reset (ms), retry
#: after (ms), window (quotas; else "").  Writes only if all admit.  A token
#: quota admits when its reservation (at least 1) fits beside the tokens used and
#: reserved; refused only because of others' reservations, retry in a second.
ACQUIRE = (
    CALENDAR
    + """
local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
local now = now_s * 1000000 + tonumber(clock[2])
local slot, lease = ARGV[1], tonumber(ARGV[2])
local result = {1}
local charges = {}
for i, key in ipairs(KEYS) do
  local base = 4 * i - 2
  local kind, limit, param = ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local allowed, remaining, reset, retry, name = 1, 0, 0, 0, ""
  if kind == 'rate' then
    local interval = tonumber(param)
    local tolerance = (limit - 1) * interval
    local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
    if tat - tolerance > now + 0.001 then
      allowed, reset, retry = 0, tat - now, tat - tolerance - now
    else
      local new_tat = tat + interval
      remaining = math.floor((now + tolerance - new_tat) / interval + 1e-9) + 1
      reset = new_tat - now
      charges[#charges + 1] = function()
        redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.ceil(reset / 1000))
      end
    end
  elseif kind == 'concurrency' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local used = redis.call('ZCARD', key)
    if used >= limit then
      allowed, retry = 0, 1000000
    else
      remaining = limit - used - 1
      charges[#charges + 1] = function()
        redis.call('ZADD', key, now + lease, slot)
        redis.call('PEXPIRE', key, math.ceil(lease / 1000))
      end
    end
  else
    local ends
    name, ends = window(param, now_s)
    local counter = key .. ':' .. name
    local used = tonumber(redis.call('GET', counter)) or 0
    reset = ends * 1000000 - now
    if kind == 'tokens' then
      local cost, held = tonumber(ARGV[base + 4]), counter .. ':reserved'
      local reserved = tonumber(redis.call('GET', held)) or 0
      local need = math.max(cost, 1)
      if used + reserved + need > limit then
        allowed, remaining = 0, limit - used - reserved
        retry = (used + need <= limit) and 1000000 or reset
      else
        remaining = limit - used - reserved - cost
        if cost > 0 then
          charges[#charges + 1] = function()
            redis.call('INCRBY', held, cost)
            redis.call('EXPIREAT', held, ends)
          end
        end
      end
    elseif used >= limit then
      allowed, retry = 0, reset
    else
      remaining = limit - used - 1
      charges[#charges + 1] = function()
        redis.call('INCR', counter)
        redis.call('EXPIREAT', counter, ends)
      end
    end
  end
  if allowed == 0 then result[1] = 0 end
  result[#result + 1] = allowed
  result[#result + 1] = math.max(remaining, 0)
  result[#result + 1] = math.ceil(reset / 1000)
  result[#result + 1] = math.ceil(retry / 1000)
  result[#result + 1] = name
end
if result[1] == 1 then
  for _, charge in ipairs(charges) do charge() end
end
return result
"""
)

#: KEYS: the concurrency keys, then the token quota keys.  ARGV: slot id, how many
#: concurrency keys, then per token quota: the window of its reservation, the
#: tokens reserved and the tokens used.  Frees the slots and replaces each
#: reservation by the tokens used, unless its window has ended.
SETTLE = (
    CALENDAR
    + """
local slot, slots = ARGV[1], tonumber(ARGV[2])
for i = 1, slots do
  redis.call('ZREM', KEYS[i], slot)
end
if #KEYS > slots then
  local now_s = tonumber(redis.call('TIME')[1])
  for i = slots + 1, #KEYS do
    local base = 3 * (i - slots)
    local name, cost, used = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    local ends = window_end(name)
    if now_s < ends then
      local counter = KEYS[i] .. ':' .. name
      if cost > 0 and redis.call('DECRBY', counter .. ':reserved', cost) <= 0 then
        redis.call('DEL', counter .. ':reserved')
      end
      if used > 0 then
        redis.call('INCRBY', counter, used)
        redis.call('EXPIREAT', counter, ends)
      end
    end
  end
end
return 1
"""
)

#: KEYS: concurrency keys.  ARGV: lease (µs), then the slot id held in each key.
#: Moves the expiry of slots still held (never re-adds a freed one).
RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', now + lease, ARGV[i + 1]) == 1 then
    redis.call('PEXPIRE', key, math.ceil(lease / 1000))
  end
end
return 1
"""
