#!/usr/bin/env bash
# The access-check benchmark (`just bench`). Builds release, then for each
# backend starts a fresh database and `tollgate`, seeds USERS users with keys
# on a plan they cannot exhaust, and at CONNECTIONS connections for DURATION
# seconds measures GET /healthz (the HTTP ceiling) and POST /v1/access/check
# with a random key per request. Then the hot-row case: every connection on
# ONE subscription with a reachable limit, then the random-user load on a
# plan with a permission quota and a rate limit it never reaches, then the
# plain load with a fresh Idempotency-Key per check ("keyed"), then
# reserve + commit pairs ("pairs": pairs/s, half the requests), then the
# plain case again ("plain2": the entitled, keyed and pair cases' shares
# are of the mean of the plain runs on either side of them). Prints checks/s, p50/p99, non-2xx,
# peak RSS and the ratio to healthz, and verifies the recorded usage.
#
#   scripts/bench.sh                      both backends
#   BACKENDS=sqlite scripts/bench.sh      one backend
# Settings: DURATION (20), CONNECTIONS (64), USERS (1000), HOT_LIMIT (20000),
# WRK_THREADS (2), TOLLGATE_WORKERS (unset: one per core), BIN (unset: build).
# Needs wrk (apt-get install -y wrk), python3, and for MariaDB mariadb-server.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
USERS=${USERS:-1000}
HOT_LIMIT=${HOT_LIMIT:-20000}
WRK_THREADS=${WRK_THREADS:-2}
BACKENDS=${BACKENDS:-"sqlite mariadb"}
# shellcheck source=scripts/bench/common.sh
. scripts/bench/common.sh

run_wrk() { # script url [keys]
    BENCH_KEYS=${3:-} wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s \
        -s "scripts/bench/$1" "$2" | grep '^RESULT'
}

rate() { # line
    python3 -c "print(round($(field requests "$1") / ($(field duration_us "$1") / 1e6)))"
}

results=()
for backend in $BACKENDS; do
    case "$backend" in
    sqlite) url="sqlite://$work/bench.db" ;;
    mariadb)
        maria_port=$(free_port)
        maria_dir=$work/mariadb
        server_url=$(scripts/mariadb.sh start "$maria_dir" "$maria_port")
        mariadb --no-defaults --socket="$work/mariadb/sock" -uroot -e \
            "CREATE DATABASE bench CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        url="$server_url/bench"
        ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
    echo "== $backend: seeding $USERS users"
    start_server "$url"
    python3 scripts/bench/seed.py seed "$BASE" "$ADMIN_KEY" "$USERS" 1000000000000 "$work/keys" main
    python3 scripts/bench/seed.py seed "$BASE" "$ADMIN_KEY" 1 "$HOT_LIMIT" "$work/hot" hot
    # The same users' load on a plan with a permission quota and a rate
    # limit that it never reaches: what the entitlements cost a check.
    python3 scripts/bench/seed.py seed "$BASE" "$ADMIN_KEY" "$USERS" 1000000000000 "$work/ent" ent \
        '{"permission_limits": {"bench:read": {"usage_limit": 1000000000000, "usage_period": "day"}},
          "rate_limit": {"units": 1000000000, "per_seconds": 1}}'

    echo "== $backend: GET /healthz, $CONNECTIONS connections, ${DURATION}s"
    health=$(run_wrk healthz.lua "$BASE/healthz")
    echo "== $backend: POST /v1/access/check, random user, $CONNECTIONS connections, ${DURATION}s"
    check=$(run_wrk check.lua "$BASE/v1/access/check" "$work/keys")
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    recorded=$(python3 scripts/bench/seed.py used "$BASE" "$ADMIN_KEY" "$work/keys.ids")
    echo "== $backend: hot row, one subscription (limit $HOT_LIMIT), $CONNECTIONS connections, ${DURATION}s"
    hot=$(run_wrk check.lua "$BASE/v1/access/check" "$work/hot")
    hot_used=$(python3 scripts/bench/seed.py used "$BASE" "$ADMIN_KEY" "$work/hot.ids")
    echo "== $backend: entitled, random user (a permission quota and a rate limit), $CONNECTIONS connections, ${DURATION}s"
    ent=$(run_wrk check.lua "$BASE/v1/access/check" "$work/ent")
    echo "== $backend: keyed, random user, a fresh Idempotency-Key per check, $CONNECTIONS connections, ${DURATION}s"
    keyed=$(run_wrk keyed.lua "$BASE/v1/access/check" "$work/keys")
    echo "== $backend: reserve + commit pairs, random user, $CONNECTIONS connections, ${DURATION}s"
    pairs=$(run_wrk reserve.lua "$BASE/v1/access/reservations" "$work/keys")
    # The plain case once more: each case runs on a database the cases
    # before it have grown, so the entitled one is compared with the plain
    # runs on either side of it.
    echo "== $backend: plain again, after the entitled case, ${DURATION}s"
    check2=$(run_wrk check.lua "$BASE/v1/access/check" "$work/keys")
    stop_server

    health_rate=$(rate "$health")
    check_rate=$(rate "$check")
    hot_rate=$(rate "$hot")
    ent_rate=$(rate "$ent")
    check2_rate=$(rate "$check2")
    ent_ratio=$(python3 -c "print(f'{200 * $ent_rate / ($check_rate + $check2_rate):.0f}%')")
    keyed_rate=$(rate "$keyed")
    keyed_ratio=$(python3 -c "print(f'{200 * $keyed_rate / ($check_rate + $check2_rate):.0f}%')")
    pair_rate=$(python3 -c "print(round($(field requests "$pairs") / 2 / ($(field duration_us "$pairs") / 1e6)))")
    pair_ratio=$(python3 -c "print(f'{200 * $pair_rate / ($check_rate + $check2_rate):.0f}%')")
    ok=$(field ok "$check")
    other=$(field other "$check")
    hot_ok=$(field ok "$hot")
    ratio=$(python3 -c "print(f'{100 * $check_rate / $health_rate:.1f}%')")
    drift=$((recorded - ok))
    verdict="ok"
    if [ "$drift" -lt 0 ] || [ "$drift" -gt "$CONNECTIONS" ]; then verdict="MISMATCH"; fi
    hot_verdict="ok"
    if [ "$hot_used" -ne "$hot_ok" ] && [ "$((hot_used - hot_ok))" -gt "$CONNECTIONS" ]; then hot_verdict="MISMATCH"; fi
    if [ "$hot_used" -gt "$HOT_LIMIT" ]; then hot_verdict="OVER LIMIT"; fi
    ent_other=$(($(field other "$ent") + $(field other "$check2") + $(field other "$keyed") + $(field other "$pairs")))
    results+=("$(printf '%-8s %9s %9s %9s %8s %8s %9s %7s %9s %10s %9s %9s %9s %5s %6s %6s  %s' "$backend" "$check_rate" "$(($(field p50_us "$check") / 1000)).$(($(field p50_us "$check") % 1000 / 100))" "$(($(field p99_us "$check") / 1000)).$(($(field p99_us "$check") % 1000 / 100))" "$other" "$((rss_kb / 1024))" "$health_rate" "$ratio" "$hot_rate" "$ent_rate" "$keyed_rate" "$pair_rate" "$check2_rate" "$ent_ratio" "$keyed_ratio" "$pair_ratio" "usage: recorded $recorded vs $ok answered 200 ($verdict); hot row: $hot_ok granted, used $hot_used of $HOT_LIMIT ($hot_verdict); entitled, keyed, pairs and plain2 non-2xx: $ent_other")")
    if [ "$backend" = mariadb ]; then scripts/mariadb.sh stop "$maria_dir"; maria_dir=""; fi
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s on the same cores"
printf '%-8s %9s %9s %9s %8s %8s %9s %7s %9s %10s %9s %9s %9s %5s %6s %6s\n' backend "checks/s" "p50 ms" "p99 ms" "non-2xx" "RSS MB" "healthz/s" "ratio" "hot/s" "entitled/s" "keyed/s" "pairs/s" "plain2/s" "ent/p" "keyed/p" "pair/p"
for r in "${results[@]}"; do echo "$r"; done
