-- wrk script: reserve + commit pairs. A request is the commit of a
-- reservation this thread saw made (its user's key, `{"cost": 1}`), or,
-- when none waits, a reservation of 2 units for a random user of
-- $BENCH_KEYS. Each reservation's answer gives its id and user (the user's
-- key from $BENCH_KEYS.ids, in the same order), so wrk reads the bodies of
-- the answers: a pair costs wrk more than two plain checks do.
function init(args)
  keys, by_user = {}, {}
  for key in io.lines(os.getenv("BENCH_KEYS")) do
    keys[#keys + 1] = key
  end
  local i = 0
  for id in io.lines(os.getenv("BENCH_KEYS") .. ".ids") do
    i = i + 1
    by_user[id] = keys[i]
  end
  reserves = {}
  for n, key in ipairs(keys) do
    reserves[n] = wrk.format("POST", "/v1/access/reservations",
      { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" },
      '{"permission":"bench:read","cost":2,"ttl_seconds":60}')
  end
  waiting, first, last = {}, 1, 0
  math.randomseed(os.time() * 1000 + (tonumber(tostring(args):match("0x(%x+)") or "0", 16) % 1000))
end

function request()
  if first <= last then
    local w = waiting[first]
    waiting[first] = nil
    first = first + 1
    return wrk.format("POST", "/v1/access/reservations/" .. w.id .. "/commit",
      { ["Authorization"] = "Bearer " .. w.key, ["Content-Type"] = "application/json" },
      '{"cost":1}')
  end
  return reserves[math.random(#reserves)]
end

function response(status, headers, body)
  if status == 201 then
    local id = body:match('"id":"(rsv_%x+)"')
    local user = body:match('"user_id":(%d+)')
    if id and user and by_user[user] then
      last = last + 1
      waiting[last] = { id = id, key = by_user[user] }
    end
  end
end

dofile("scripts/bench/report.lua")
