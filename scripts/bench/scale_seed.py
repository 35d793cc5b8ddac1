#!/usr/bin/env python3
"""Seeds many users straight into a Tollgate database for `just bench-scale`:
each a user with one API key and an active subscription of one plan, in a
few large transactions (the API would take minutes for a million).

  scale_seed.py sqlite DB_FILE PLAN_ID USERS KEYS_FILE
  scale_seed.py mysql  SOCKET DATABASE PLAN_ID USERS KEYS_FILE

The schema must exist (start tollgate on the database once) and the plan
too. Rows get ids from 10,000,000 on, clear of what the API made. The keys
go to KEYS_FILE, one per line, and their users' ids to KEYS_FILE.ids.
Standard library only; MySQL through the `mariadb` client.
"""
import base64
import hashlib
import os
import subprocess
import sys
import time

FIRST_ID = 10_000_000
CHUNK = 5_000


def rows(users):
    now = int(time.time() * 1_000_000)
    for n in range(users):
        uid = FIRST_ID + n
        key = "tg_" + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        digest = hashlib.sha256(key.encode()).hexdigest()
        yield uid, key, digest, now


def write_keys(keys_file, seeded):
    with open(keys_file, "w") as f:
        f.writelines(key + "\n" for _, key in seeded)
    with open(keys_file + ".ids", "w") as f:
        f.writelines(f"{uid}\n" for uid, _ in seeded)


def seed_sqlite(path, plan_id, users, keys_file):
    import sqlite3

    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA foreign_keys = ON")
    seeded = []
    batch = list(rows(users))
    with db:
        db.executemany(
            "INSERT INTO users (id, username, role, status, created_at, updated_at) "
            "VALUES (?, ?, 'user', 'active', ?, ?)",
            ((uid, f"scale{uid}", now, now) for uid, _, _, now in batch))
        db.executemany(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
            "VALUES (?, ?, '', ?, ?, ?)",
            ((uid, uid, key[:8], digest, now) for uid, key, digest, now in batch))
        db.executemany(
            "INSERT INTO subscriptions (id, user_id, plan_id, status, active_user_id, started_at) "
            "VALUES (?, ?, ?, 'active', ?, ?)",
            ((uid, uid, plan_id, uid, now) for uid, _, _, now in batch))
        db.execute("UPDATE change_epoch SET epoch = epoch + 1")
    db.close()
    seeded = [(uid, key) for uid, key, _, _ in batch]
    write_keys(keys_file, seeded)


def seed_mysql(socket, database, plan_id, users, keys_file):
    batch = list(rows(users))

    def statements():
        yield "SET foreign_key_checks = 1;\n"
        for table, shape in (
            ("users (id, username, role, status, created_at, updated_at)",
             lambda uid, key, digest, now: f"({uid}, 'scale{uid}', 'user', 'active', {now}, {now})"),
            ("api_keys (id, user_id, name, prefix, key_hash, created_at)",
             lambda uid, key, digest, now: f"({uid}, {uid}, '', '{key[:8]}', '{digest}', {now})"),
            ("subscriptions (id, user_id, plan_id, status, active_user_id, started_at)",
             lambda uid, key, digest, now: f"({uid}, {uid}, {plan_id}, 'active', {uid}, {now})"),
        ):
            for start in range(0, len(batch), CHUNK):
                values = ", ".join(shape(*row) for row in batch[start:start + CHUNK])
                yield f"INSERT INTO {table} VALUES {values};\n"
        yield "UPDATE change_epoch SET epoch = epoch + 1;\n"

    client = subprocess.Popen(
        ["mariadb", "--no-defaults", f"--socket={socket}", "-uroot", database],
        stdin=subprocess.PIPE, text=True)
    for sql in statements():
        client.stdin.write(sql)
    client.stdin.close()
    if client.wait() != 0:
        sys.exit("mariadb failed")
    write_keys(keys_file, [(uid, key) for uid, key, _, _ in batch])


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "sqlite":
        path, plan_id, users, keys_file = sys.argv[2:6]
        seed_sqlite(path, int(plan_id), int(users), keys_file)
    elif kind == "mysql":
        socket, database, plan_id, users, keys_file = sys.argv[2:7]
        seed_mysql(socket, database, int(plan_id), int(users), keys_file)
    else:
        sys.exit(__doc__)
