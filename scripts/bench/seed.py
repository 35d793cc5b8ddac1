#!/usr/bin/env python3
"""Seeds a running Tollgate for the benchmark and verifies its usage after it.

  seed.py seed   BASE ADMIN_KEY USERS LIMIT KEYS_FILE TAG [PLAN_JSON]
                                                         -> users with keys on one plan
                                                            (PLAN_JSON: more plan fields)
  seed.py used   BASE ADMIN_KEY IDS_FILE                 -> prints the sum of `used`
Standard library only.
"""
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(base, key, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as res:
        raw = res.read()
        return json.loads(raw) if raw else None


def seed(base, admin, users, limit, keys_file, tag, extra):
    call(base, admin, "POST", "/v1/permissions", {"name": "bench:read"}) if tag == "main" else None
    plan = call(base, admin, "POST", "/v1/plans", {
        "name": f"bench-{tag}", "permissions": ["bench:read"],
        "usage_limit": limit, "usage_period": "month", **extra})

    def one(i):
        user = call(base, admin, "POST", "/v1/users", {"username": f"{tag}{i}"})
        key = call(base, admin, "POST", f"/v1/users/{user['id']}/api-keys", {})
        call(base, admin, "PUT", f"/v1/users/{user['id']}/subscription", {"plan_id": plan["id"]})
        return user["id"], key["key"]

    with ThreadPoolExecutor(16) as pool:
        rows = list(pool.map(one, range(users)))
    with open(keys_file, "w") as f:
        f.writelines(k + "\n" for _, k in rows)
    with open(keys_file + ".ids", "w") as f:
        f.writelines(f"{i}\n" for i, _ in rows)


def used(base, admin, ids_file):
    ids = [line.strip() for line in open(ids_file) if line.strip()]
    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(lambda i: call(base, admin, "GET", f"/v1/users/{i}/usage")["used"], ids))
    print(total)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "seed":
        base, admin, users, limit, keys_file, tag = sys.argv[2:8]
        extra = json.loads(sys.argv[8]) if len(sys.argv) > 8 else {}
        seed(base, admin, int(users), None if limit == "none" else int(limit), keys_file, tag, extra)
    elif cmd == "used":
        used(*sys.argv[2:5])
    else:
        sys.exit("usage: seed.py seed|used ...")
