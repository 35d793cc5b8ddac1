-- wrk script: POST /v1/access/check with a random key of $BENCH_KEYS per
-- request, counting 200 answers and the others across threads.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  keys = {}
  for line in io.lines(os.getenv("BENCH_KEYS")) do
    keys[#keys + 1] = line
  end
  ok = 0
  other = 0
  math.randomseed(os.time() * 1000 + #threads)
  body = '{"permission":"bench:read"}'
end

function request()
  local key = keys[math.random(#keys)]
  return wrk.format("POST", "/v1/access/check",
    { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  io.write(string.format("RESULT ok=%d other=%d requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    total_ok, total_other, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
