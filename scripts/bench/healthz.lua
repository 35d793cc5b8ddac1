-- wrk script: GET /healthz, the HTTP ceiling of the same machine and run.
dofile("scripts/bench/report.lua")
