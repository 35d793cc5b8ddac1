#!/usr/bin/env bash
# The long benchmark (`just bench-scale`): for each backend, a baseline of
# BASELINE_USERS users and then USERS users, each on a fresh database seeded
# straight into its tables (scripts/bench/scale_seed.py: a user, a key and an
# active subscription each), random-user checks for MINUTES back-to-back
# one-minute wrk runs on one server. Per minute: checks/s, p50/p99,
# non-2xx, the server's RSS, the database's size (SQLite: file + WAL;
# MariaDB: its tables' files). Then the latency of the
# usage report of the user with the most events, and of its history.
#
#   scripts/bench-scale.sh                           both backends, 100,000 users, 10 minutes
#   USERS=1000000 MINUTES=3 BACKENDS=sqlite scripts/bench-scale.sh
# Settings: USERS (100000), BASELINE_USERS (1000), MINUTES (10),
# BASELINE_MINUTES (3), MINUTE (60 seconds a run), CONNECTIONS (64), WRK_THREADS (2),
# BACKENDS ("sqlite mariadb"), BIN (unset: build), HEAVY_EVENTS (1000000:
# after the USERS run, one user is checked until it has that many events,
# then its report is timed idle and under load; 0 skips), MARIADB_BUFFER_POOL and
# MARIADB_LOG_FILE (1G each: innodb_buffer_pool_size, innodb_log_file_size).
# Needs wrk, python3, curl, and for MariaDB mariadb-server.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-100000}
BASELINE_USERS=${BASELINE_USERS:-1000}
MINUTES=${MINUTES:-10}
BASELINE_MINUTES=${BASELINE_MINUTES:-3}
MINUTE=${MINUTE:-60} # seconds of each run: shorter for a quick look
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
BACKENDS=${BACKENDS:-"sqlite mariadb"}
HEAVY_EVENTS=${HEAVY_EVENTS:-1000000}
# MariaDB sized as a server that keeps months of usage should be (see
# docs/operations.md): with its defaults (128 MiB buffer pool, 96 MiB redo
# log) the checks/s fell by a third over 10 minutes at 100,000 users.
export MARIADB_BUFFER_POOL=${MARIADB_BUFFER_POOL:-1G}
export MARIADB_LOG_FILE=${MARIADB_LOG_FILE:-1G}
# shellcheck source=scripts/bench/common.sh
. scripts/bench/common.sh

ms() { python3 -c "print(f'{$1 / 1000:.1f}')"; }

api() { # method path [body]
    curl -sf -X "$1" -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "$BASE$2"
}

db_size() { # backend: "N MB" (SQLite: "N MB + WAL M MB")
    case "$1" in
    sqlite) echo "$(($(stat -c %s "$work/scale.db") / 1048576)) MB + WAL $(($(stat -c %s "$work/scale.db-wal" 2>/dev/null || echo 0) / 1048576)) MB" ;;
    mariadb) echo "$(($(du -sb "$maria_dir/scale" | cut -f1) / 1048576)) MB" ;; # its tables' files
    esac
}

sql() { # backend query: one value
    case "$1" in
    sqlite) python3 -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$work/scale.db" "$2" ;;
    mariadb) mariadb --no-defaults --socket="$maria_dir/sock" -uroot -N scale -e "$2" ;;
    esac
}

latency() { # path: p50 and p99 of 200 GETs, in ms
    for _ in $(seq 1 200); do
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $ADMIN_KEY" "$BASE$1"
    done | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
codes = sorted({r[0] for r in rows})
t = sorted(float(r[1]) * 1000 for r in rows)
print("p50 %.1f ms, p99 %.1f ms, status %s" % (t[len(t) // 2], t[min(len(t) - 1, int(len(t) * 0.99))], "/".join(codes)))'
}

# wrk's RESULT line of SECONDS of random-key checks, the keys from KEYS_FILE.
checks() { # keys_file seconds
    BENCH_KEYS=$1 wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$2s" --timeout 10s \
        -s scripts/bench/scale.lua "$BASE/v1/access/check" | grep '^RESULT'
}

run() { # backend users minutes [heavy: then heavy_user]
    local backend=$1 users=$2 minutes=$3 url
    rm -f "$work/scale.db" "$work/scale.db-wal" "$work/scale.db-shm"
    case "$backend" in
    sqlite) url="sqlite://$work/scale.db" ;;
    mariadb)
        mariadb --no-defaults --socket="$maria_dir/sock" -uroot -e \
            "DROP DATABASE IF EXISTS scale; CREATE DATABASE scale CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        url="$maria_url/scale"
        ;;
    esac
    start_server "$url"
    api POST /v1/permissions '{"name": "bench:read"}' >/dev/null
    plan_id=$(api POST /v1/plans \
        '{"name": "scale", "permissions": ["bench:read"], "usage_limit": 1000000000000, "usage_period": "month"}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    stop_server
    echo "== $backend: seeding $users users"
    local started=$SECONDS
    case "$backend" in
    sqlite) python3 scripts/bench/scale_seed.py sqlite "$work/scale.db" "$plan_id" "$users" "$work/keys" ;;
    mariadb) python3 scripts/bench/scale_seed.py mysql "$maria_dir/sock" scale "$plan_id" "$users" "$work/keys" ;;
    esac
    echo "   seeded in $((SECONDS - started)) s"
    start_server "$url"
    table+=("$backend, $users users")
    for minute in $(seq 1 "$minutes"); do
        local r
        r=$(checks "$work/keys" "$MINUTE")
        local rss_kb
        rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
        table+=("$(printf '  minute %2d: %7s checks/s, p50 %5s ms, p99 %6s ms, non-2xx %s, RSS %s MB, database %s' \
            "$minute" "$(python3 -c "print(round($(field requests "$r") / ($(field duration_us "$r") / 1e6)))")" \
            "$(ms "$(field p50_us "$r")")" "$(ms "$(field p99_us "$r")")" \
            "$(($(field other "$r") + $(field errors "$r")))" "$((rss_kb / 1024))" \
            "$(db_size "$backend")")")
        echo "${table[-1]}"
    done
    local heavy events
    heavy=$(sql "$backend" "SELECT user_id FROM usage_events GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 1")
    events=$(sql "$backend" "SELECT COUNT(*) FROM usage_events WHERE user_id = $heavy")
    table+=("  usage report of user $heavy ($events events): $(latency "/v1/users/$heavy/usage")")
    table+=("  usage history of user $heavy (hour buckets): $(latency "/v1/users/$heavy/usage/history?bucket=hour")")
    echo "${table[-2]}"
    echo "${table[-1]}"
    if [ "${4:-}" = heavy ] && [ "$HEAVY_EVENTS" -gt 0 ]; then heavy_user "$backend"; fi
    stop_server
}

heavy_user() { # backend: one user given HEAVY_EVENTS events, then its report's latency
    local id events=0
    head -1 "$work/keys" >"$work/heavy_key"
    id=$(head -1 "$work/keys.ids")
    for _ in $(seq 1 30); do # 20 s runs of every connection on this one user
        events=$(sql "$1" "SELECT COUNT(*) FROM usage_events WHERE user_id = $id")
        [ "$events" -ge "$HEAVY_EVENTS" ] && break
        checks "$work/heavy_key" 20 >/dev/null
    done
    table+=("  usage report of user $id ($events events), idle: $(latency "/v1/users/$id/usage")")
    echo "${table[-1]}"
    # The same while the random-user load of the minutes above runs.
    checks "$work/keys" 30 >/dev/null &
    local load=$!
    sleep 5
    table+=("  usage report of user $id ($events events), under the load: $(latency "/v1/users/$id/usage")")
    echo "${table[-1]}"
    wait "$load"
}

table=()
for backend in $BACKENDS; do
    case "$backend" in
    sqlite) ;;
    mariadb)
        maria_dir=$work/mariadb
        maria_url=$(scripts/mariadb.sh start "$maria_dir" "$(free_port)")
        ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
    run "$backend" "$BASELINE_USERS" "$BASELINE_MINUTES"
    run "$backend" "$USERS" "$MINUTES" heavy
    if [ -n "$maria_dir" ]; then scripts/mariadb.sh stop "$maria_dir"; maria_dir=""; fi
done

echo
echo "machine: $(nproc) cores; wrk -t$WRK_THREADS -c$CONNECTIONS, one-minute runs back to back on one server, the same cores"
for line in "${table[@]}"; do echo "$line"; done
