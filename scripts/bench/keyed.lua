-- wrk script: POST /v1/access/check with a random key of $BENCH_KEYS and a
-- fresh Idempotency-Key per request (thread number and a counter), so that
-- every check records its key. Each key's request is formatted once around
-- a marker; a request costs wrk one concatenation more than check.lua's.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  local marker = "@IDEMPOTENCY@"
  local body = '{"permission":"bench:read"}'
  heads, tails = {}, {}
  for key in io.lines(os.getenv("BENCH_KEYS")) do
    local r = wrk.format("POST", "/v1/access/check",
      { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = marker }, body)
    local at = r:find(marker, 1, true)
    heads[#heads + 1] = r:sub(1, at - 1)
    tails[#tails + 1] = r:sub(at + #marker)
  end
  prefix = "b" .. os.time() .. "-" .. tostring(thread_no or 0) .. "-"
  counter = 0
  math.randomseed(os.time() * 1000 + (tonumber(tostring(args):match("0x(%x+)") or "0", 16) % 1000))
end

function request()
  counter = counter + 1
  local i = math.random(#heads)
  return heads[i] .. prefix .. counter .. tails[i]
end

dofile("scripts/bench/report.lua")
