# Tollgate's recipes. `just` alone lists them.

mariadb_dir := justfile_directory() / ".mariadb"
mariadb_port := "3307"
mariadb_url := "mysql://tollgate:tollgate@127.0.0.1:" + mariadb_port

default:
    @just --list

# Run the server on the SQLite default
run:
    cargo run --release

# The whole test suite on SQLite (the README's command)
test:
    cargo test

# The whole suite on SQLite and on the MariaDB of `just mysql-up`
test-mysql:
    TOLLGATE_TEST_MYSQL_URL={{mariadb_url}} cargo test --features mysql

# What CI runs, from a clean clone: lint, both backends, hostile, fuzz (.ci/run)
ci:
    .ci/run

# Start a throwaway MariaDB on 127.0.0.1:3307 (data in ./.mariadb)
mysql-up:
    scripts/mariadb.sh start {{mariadb_dir}} {{mariadb_port}}

# Stop the MariaDB of `just mysql-up`
mysql-down:
    scripts/mariadb.sh stop {{mariadb_dir}}

# Formatting check and clippy on every feature
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets --all-features -- -D warnings

# Format the code
fmt:
    cargo fmt --all

# The access-check benchmark on SQLite and MariaDB (see docs/performance.md)
bench:
    scripts/bench.sh

# The long benchmark: 1,000 then 100,000 users seeded into the database,
# one-minute runs back to back (USERS=, MINUTES=, BACKENDS=; see the script)
bench-scale:
    scripts/bench-scale.sh

# Hostile clients (odd methods, random keys, slowloris, huge headers, bad
# JSON) beside a good one, against a release build; at most 2 minutes
hostile *ARGS:
    cargo build --release
    timeout 120 scripts/hostile.py target/release/tollgate {{ARGS}}
