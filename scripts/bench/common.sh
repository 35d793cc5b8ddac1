# What scripts/bench.sh and scripts/bench-scale.sh share; sourced from the
# repository root after their settings. Builds the release binary unless
# BIN names one, makes $work (removed at exit, with the server and a
# MariaDB started into $maria_dir), and defines the helpers below.

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
# BIN=path/to/tollgate benchmarks that build instead (a baseline of another
# commit, built with `--features mysql`, for a before/after in one go).
if [ -z "${BIN:-}" ]; then
    cargo build --release --features mysql
    BIN=$PWD/target/release/tollgate
fi
ADMIN_KEY="bench-admin-key-$(date +%s)-0123456789abcdef"
work=$(mktemp -d)
server_pid=""
maria_dir=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$maria_dir" ] && scripts/mariadb.sh stop "$maria_dir"
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A number field of a wrk RESULT line.
field() { # name line
    sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"
}

# Starts tollgate on a free port (BASE) with the bootstrap admin key.
start_server() { # url
    local port
    port=$(free_port)
    BASE="http://127.0.0.1:$port"
    DATABASE_URL=$1 TOLLGATE_BIND=127.0.0.1:$port TOLLGATE_ADMIN_KEY=$ADMIN_KEY RUST_LOG=warn \
        "$BIN" >>"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do
        curl -sf "$BASE/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "tollgate did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

stop_server() {
    kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
