-- One atomic step per batch and partition: dedupe marks, aggregate deltas and the next offset.
-- MULTI/EXEC cannot do this: a duplicate is only known after SET NX answers, too late to skip its
-- counts in the same transaction. Here a duplicate adds nothing, and a replayed batch (offset not
-- past the stored one) changes nothing at all.
-- KEYS[1]: the partition's offsets hash. Every other key shares its hash tag {pN}.
-- ARGV: field, first_offset, next_offset, dedupe_ttl, n_targets,
--       n_targets x (op, key, member, ttl), then per event: seen_key, k, k target indices.
-- Returns {new, duplicates}, or {-1, stored} when the stored offset is short of this batch's
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
local n_targets = tonumber(ARGV[5])
local counts = {}
for t = 1, n_targets do counts[t] = 0 end
local i = 6 + 4 * n_targets
local new, dup = 0, 0
while i <= #ARGV do
  local k = tonumber(ARGV[i + 1])
  if redis.call('SET', ARGV[i], '1', 'NX', 'EX', dedupe_ttl) then
    new = new + 1
    for j = i + 2, i + 1 + k do
      local t = tonumber(ARGV[j])
      counts[t] = counts[t] + 1
    end
  else
    dup = dup + 1
  end
  i = i + 2 + k
end
local unique_members = {}
local expire = {}
for t = 1, n_targets do
  local c = counts[t]
  if c > 0 then
    local base = 6 + 4 * (t - 1)
    local op, key, member, ttl = ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
    if op == 'h' then
      redis.call('HINCRBY', key, member, c)
    elseif op == 'z' then
      redis.call('ZINCRBY', key, c, member)
    else
      local members = unique_members[key]
      if not members then members = {}; unique_members[key] = members end
      members[#members + 1] = member
    end
    if ttl > 0 then expire[key] = ttl end
  end
end
for key, members in pairs(unique_members) do
  for s = 1, #members, 5000 do
    redis.call('PFADD', key, unpack(members, s, math.min(s + 4999, #members)))
  end
end
for key, ttl in pairs(expire) do
  redis.call('EXPIRE', key, ttl)
end
redis.call('HSET', offsets, field, next_offset)
return {new, dup}
