-- wrk script of `just bench-scale`: POST /v1/access/check with a random key
-- of $BENCH_KEYS per request. Unlike check.lua it keeps the keys, not a
-- formatted request per key, so that a million keys fit in wrk's memory;
-- the 1,000-user baseline runs the same script, so the ratio is fair.
function init(args)
  keys = {}
  for key in io.lines(os.getenv("BENCH_KEYS")) do
    keys[#keys + 1] = key
  end
  body = '{"permission":"bench:read"}'
  math.randomseed(os.time() * 1000 + (tonumber(tostring(args):match("0x(%x+)") or "0", 16) % 1000))
end

function request()
  return wrk.format("POST", "/v1/access/check",
    { ["Authorization"] = "Bearer " .. keys[math.random(#keys)], ["Content-Type"] = "application/json" },
    body)
end

dofile("scripts/bench/report.lua")
