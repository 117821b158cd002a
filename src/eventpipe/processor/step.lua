-- One atomic step per batch and partition: dedupe marks, aggregate deltas and the next offset.
-- MULTI/EXEC cannot do this: a duplicate is only known after SET NX answers, too late to skip its
-- counts in the same transaction. Here a duplicate adds nothing, and a replayed batch (offset not
-- past the stored one) changes nothing at all.
-- KEYS[1]: the partition's offsets hash. Every other key shares its hash tag {pN}.
-- ARGV: field, first_offset, next_offset, dedupe_ttl, unique_ttl, n_targets, n_groups, n_pairs,
--       n_targets x (op, key, member, ttl)      counters: 'h' HINCRBY, 'z' ZINCRBY
--       n_groups x (k, k target indices)        the counters of one name in one minute
--       n_pairs x (hour key, day key)           the HyperLogLogs of one project and hour
--       then per event: dedupe mark, group, pair, user.
-- Returns {new, duplicates, the 0-based positions of the duplicates...}, or {-1, stored} when the stored offset is short of this batch's
-- first one: Redis lost its last writes (a failover, an fsync window), so the caller seeks back.
-- A first_offset of -1 skips that check.
local offsets = KEYS[1]
local field = ARGV[1]
local first_offset = tonumber(ARGV[2])
local next_offset = tonumber(ARGV[3])
local stored_raw = redis.call('HGET', offsets, field)
local stored = tonumber(stored_raw or '-1')
if stored >= next_offset then
  return {0, 0}
end
if stored_raw and first_offset >= 0 and stored < first_offset then
  return {-1, stored}
end
local dedupe_ttl = tonumber(ARGV[4])
local unique_ttl = tonumber(ARGV[5])
local n_targets = tonumber(ARGV[6])
local n_groups = tonumber(ARGV[7])
local n_pairs = tonumber(ARGV[8])
local i = 9 + 4 * n_targets
local groups, hits = {}, {}
for g = 1, n_groups do
  local k = tonumber(ARGV[i])
  local members = {}
  for j = 1, k do members[j] = tonumber(ARGV[i + j]) end
  groups[g] = members
  hits[g] = 0
  i = i + 1 + k
end
local pairs_at = i
local users = {}
for p = 1, n_pairs do users[p] = {} end
i = i + 2 * n_pairs
local new, dup = 0, 0
local events_at, answer = i, {0, 0}
while i <= #ARGV do
  if redis.call('SET', ARGV[i], '1', 'NX', 'EX', dedupe_ttl) then
    new = new + 1
    local g = tonumber(ARGV[i + 1])
    hits[g] = hits[g] + 1
    local members = users[tonumber(ARGV[i + 2])]
    members[#members + 1] = ARGV[i + 3]
  else
    dup = dup + 1
    answer[#answer + 1] = (i - events_at) / 4
  end
  i = i + 4
end
local counts = {}
for t = 1, n_targets do counts[t] = 0 end
for g = 1, n_groups do
  local h = hits[g]
  if h > 0 then
    for _, t in ipairs(groups[g]) do counts[t] = counts[t] + h end
  end
end
local expire = {}
for t = 1, n_targets do
  local c = counts[t]
  if c > 0 then
    local base = 9 + 4 * (t - 1)
    local op, key, member, ttl = ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
    if op == 'h' then
      redis.call('HINCRBY', key, member, c)
    else
      redis.call('ZINCRBY', key, c, member)
    end
    if ttl > 0 then expire[key] = ttl end
  end
end
for p = 1, n_pairs do
  local members = users[p]
  if #members > 0 then
    for k = 0, 1 do
      local key = ARGV[pairs_at + 2 * (p - 1) + k]
      for s = 1, #members, 5000 do
        redis.call('PFADD', key, unpack(members, s, math.min(s + 4999, #members)))
      end
      expire[key] = unique_ttl
    end
  end
end
for key, ttl in pairs(expire) do
  redis.call('EXPIRE', key, ttl)
end
redis.call('HSET', offsets, field, next_offset)
answer[1], answer[2] = new, dup
return answer
