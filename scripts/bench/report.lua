-- wrk's report, shared by the bench scripts (run from the repository root):
-- one RESULT line that scripts/bench.sh reads.
function done(summary, latency, requests)
  io.write(string.format("RESULT ok=%d other=%d requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests - summary.errors.status, summary.errors.status, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
