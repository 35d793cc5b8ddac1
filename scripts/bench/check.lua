-- wrk script: POST /v1/access/check with a random key of $BENCH_KEYS per
-- request. Answers other than 2xx are counted by wrk itself (status errors),
-- so no Lua runs per response and wrk takes less of the shared cores.
function init(args)
  -- Every key's request is formatted once here, so a request costs wrk a
  -- random pick rather than building headers and body anew.
  requests = {}
  local body = '{"permission":"bench:read"}'
  for key in io.lines(os.getenv("BENCH_KEYS")) do
    requests[#requests + 1] = wrk.format("POST", "/v1/access/check",
      { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
  end
  math.randomseed(os.time() * 1000 + (tonumber(tostring(args):match("0x(%x+)") or "0", 16) % 1000))
end

function request()
  return requests[math.random(#requests)]
end

dofile("scripts/bench/report.lua")
