#!/usr/bin/env bash
# A throwaway MariaDB on loopback, without systemd.
#   scripts/mariadb.sh start DIR [PORT]   initialise DIR if new, start, print the URL
#   scripts/mariadb.sh stop DIR           stop the server started in DIR
# The URL is for user `tollgate` (password `tollgate`), who may create databases.
# MARIADB_BUFFER_POOL and MARIADB_LOG_FILE set innodb_buffer_pool_size and
# innodb_log_file_size (MariaDB's defaults, 128M and 96M, when unset).
set -euo pipefail

cmd=${1:?usage: mariadb.sh start|stop DIR [PORT]}
dir=${2:?usage: mariadb.sh start|stop DIR [PORT]}
port=${3:-3307}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

client() { mariadb --no-defaults --socket="$dir/sock" -uroot "$@"; }

case "$cmd" in
start)
    command -v mariadbd >/dev/null || {
        echo "mariadbd not found: apt-get install -y mariadb-server" >&2
        exit 1
    }
    if [ ! -d "$dir/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$dir" \
            --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 || {
            echo "mariadb-install-db failed in $dir:" >&2
            tail -20 "$dir/install.log" >&2 || true
            exit 1
        }
    fi
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "mariadbd already runs in $dir" >&2
    else
        nohup mariadbd --no-defaults --datadir="$dir" --socket="$dir/sock" \
            --pid-file="$dir/pid" --port="$port" --bind-address=127.0.0.1 \
            --user=root --log-error="$dir/err.log" --max-connections=500 \
            --innodb-buffer-pool-size="${MARIADB_BUFFER_POOL:-128M}" \
            --innodb-log-file-size="${MARIADB_LOG_FILE:-96M}" \
            >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 300); do
        client -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
    client -e 'SELECT 1' >/dev/null || {
        echo "mariadbd did not start; see $dir/err.log" >&2
        tail -20 "$dir/err.log" >&2 || true
        exit 1
    }
    client <<'SQL'
CREATE USER IF NOT EXISTS 'tollgate'@'127.0.0.1' IDENTIFIED BY 'tollgate';
CREATE USER IF NOT EXISTS 'tollgate'@'localhost' IDENTIFIED BY 'tollgate';
GRANT ALL PRIVILEGES ON *.* TO 'tollgate'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'tollgate'@'localhost';
FLUSH PRIVILEGES;
SQL
    echo "mysql://tollgate:tollgate@127.0.0.1:$port"
    ;;
stop)
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    ;;
*)
    echo "usage: mariadb.sh start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
