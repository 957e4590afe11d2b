#!/usr/bin/env python3
"""The load and the report of deploy/soak (Python standard library only).

  load.py run --port PORT --seconds S [--workers N] [--users-per-worker U]
              --out STATS.json
      Runs a bounded mixed load against http://127.0.0.1:PORT/api for S
      seconds from N threads (default 4), each with its own U users
      (default 5, registered first): pushes of new and edited records to
      every entity, pulls by sync_token, bulks, status, account, health,
      refreshes and logins. Each thread keeps one keep-alive connection
      and opens a new one after a connection error. Writes the counts by
      route and status, and the connection errors, to STATS.json.

  load.py report --stats STATS.json --samples SAMPLES --warmup SECONDS
                 [--rss-growth PERCENT] [--fd-growth N]
      Prints the duration, requests by route, errors, and per FastCGI
      worker its RSS and open fds at start, maximum and end (SAMPLES has
      lines `SECONDS PID RSS_KIB FDS`). Exits 1 when any request failed
      (a non-2xx answer other than 409 or 429, or a connection error), or
      when a worker's RSS at the end exceeds its first sample after the
      warm-up by more than PERCENT (default 20), or its fds by more than
      N (default 5).
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

ENTITIES = [
    ("health-metrics", "metrics", "health_metrics"),
    ("medications", "medications", "medications"),
    ("meals", "meals", "meals"),
    ("exercises", "exercises", "exercises"),
    ("meal-plans", "meal_plans", "meal_plans"),
]
PASSWORD = "soak password 4f7Kq2"
EXPECTED = {409, 429}


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(rid, n, base_version=None):
    r = {
        "id": rid,
        "data": {"n": n, "date": "2026-11-30", "notes": "soak " * random.randint(1, 40)},
        "updated_at": now(),
        "deleted_at": None,
    }
    if base_version is not None:
        r["base_version"] = base_version
    return r


class Client:
    """One keep-alive connection; counts every answer by route."""

    def __init__(self, port, counts, failures):
        self.port = port
        self.counts = counts
        self.failures = failures
        self.conn = None

    def call(self, method, path, route, body=None, token=None):
        headers = {"X-Device-Id": "soak"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.conn.request(method, "/api" + path, body=data, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as error:
            self.counts[(route, "conn-error")] += 1
            if len(self.failures) < 20:
                self.failures.append(f"{route}: {type(error).__name__}: {error}")
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None, None
        self.counts[(route, status)] += 1
        if not 200 <= status < 300 and status not in EXPECTED and len(self.failures) < 20:
            self.failures.append(f"{route}: {status} {raw[:200]!r}")
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None


class User:
    def __init__(self, email):
        self.email = email
        self.token = None
        self.refresh = None
        self.cursors = {}
        self.known = {}  # (slug, id) -> version
        self.sync_token = None
        self.n = 0

    def take(self, answer):
        data = answer["data"]
        self.token = data["token"]
        self.refresh = data["refresh_token"]


def worker(port, deadline, users, counts, failures):
    client = Client(port, counts, failures)
    for user in users:
        status, answer = client.call("POST", "/auth/register", "POST /auth/register",
                                     {"email": user.email, "password": PASSWORD, "name": "Soak"})
        if status == 201:
            user.take(answer)
    users = [u for u in users if u.token]
    if not users:
        return
    actions = [
        ("push", 30), ("pull", 25), ("bulk", 10), ("status", 8), ("account", 5),
        ("health", 5), ("refresh", 5), ("login", 2),
    ]
    names = [a for a, _ in actions]
    weights = [w for _, w in actions]
    while time.monotonic() < deadline:
        user = random.choice(users)
        action = random.choices(names, weights)[0]
        slug, key, bulk_key = random.choice(ENTITIES)
        if action == "push":
            batch = []
            for _ in range(random.randint(1, 20)):
                user.n += 1
                batch.append(record(str(uuid.uuid4()), user.n))
            mine = [k for k in user.known if k[0] == slug]
            for _, rid in random.sample(mine, min(len(mine), random.randint(0, 5))):
                user.n += 1
                batch.append(record(rid, user.n, user.known[(slug, rid)]))
            status, answer = client.call("POST", f"/{slug}/sync", "POST /<slug>/sync",
                                         {key: batch}, user.token)
            if status == 200:
                for applied in answer["data"]["applied"]:
                    user.known[(slug, applied["id"])] = applied["version"]
        elif action == "pull":
            cursor = user.cursors.get(slug)
            query = "?limit=100" + (f"&sync_token={cursor}" if cursor else "")
            status, answer = client.call("GET", f"/{slug}{query}", "GET /<slug>", None, user.token)
            if status == 200:
                user.cursors[slug] = answer["data"]["next_sync_token"]
        elif action == "bulk":
            body = {"limit": 200}
            for _, _, bk in random.sample(ENTITIES, 2):
                user.n += 1
                body[bk] = [record(str(uuid.uuid4()), user.n) for _ in range(5)]
            if user.sync_token:
                body["sync_token"] = user.sync_token
            status, answer = client.call("POST", "/sync/bulk", "POST /sync/bulk", body, user.token)
            if status == 200:
                data = answer["data"]
                user.sync_token = None if data.get("has_more") else data.get("sync_token")
        elif action == "status":
            client.call("GET", "/sync/status", "GET /sync/status", None, user.token)
        elif action == "account":
            client.call("GET", "/account", "GET /account", None, user.token)
        elif action == "health":
            client.call("GET", "/health", "GET /health")
        elif action == "refresh":
            status, answer = client.call("POST", "/auth/refresh", "POST /auth/refresh", None,
                                         user.refresh)
            if status == 200:
                user.take(answer)
        elif action == "login":
            status, answer = client.call("POST", "/auth/login", "POST /auth/login",
                                         {"email": user.email, "password": PASSWORD})
            if status == 200:
                user.take(answer)


def run(args):
    started = time.monotonic()
    deadline = started + args.seconds
    run_id = uuid.uuid4().hex[:8]
    threads, all_counts, failures = [], [], []
    for w in range(args.workers):
        counts = Counter()
        all_counts.append(counts)
        users = [User(f"soak-{run_id}-{w}-{u}@example.invalid")
                 for u in range(args.users_per_worker)]
        thread = threading.Thread(target=worker,
                                  args=(args.port, deadline, users, counts, failures))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    total = Counter()
    for counts in all_counts:
        total.update(counts)
    stats = {
        "duration": time.monotonic() - started,
        "counts": [[route, str(status), n] for (route, status), n in sorted(total.items(), key=str)],
        "failures": failures,
    }
    with open(args.out, "w") as out:
        json.dump(stats, out)


def report(args):
    with open(args.stats) as f:
        stats = json.load(f)
    by_route = {}
    requests = errors = server_errors = conn_errors = expected = 0
    for route, status, n in stats["counts"]:
        by_route.setdefault(route, Counter())[status] += n
        requests += n
        if status == "conn-error":
            conn_errors += n
            errors += n
        elif 200 <= int(status) < 300:
            pass
        elif int(status) in EXPECTED:
            expected += n
        else:
            errors += n
            if int(status) >= 500:
                server_errors += n
    duration = stats["duration"]
    print(f"duration:  {duration:.1f} s")
    print(f"requests:  {requests} ({requests / duration:.1f}/s)")
    for route in sorted(by_route):
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(by_route[route].items()))
        print(f"  {route:<22} {sum(by_route[route].values()):>7}   ({statuses})")
    print(f"errors:    {errors} (5xx: {server_errors}, connection errors: {conn_errors}); "
          f"expected 409/429: {expected}")
    for failure in stats["failures"]:
        print(f"  {failure}")

    samples = {}
    with open(args.samples) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            t, pid, rss, fds = float(parts[0]), parts[1], int(parts[2]), int(parts[3])
            samples.setdefault(pid, []).append((t, rss, fds))
    failed = errors > 0
    print(f"workers (RSS KiB / open fds; growth measured from the first sample after "
          f"{args.warmup:.0f} s; tolerance RSS +{args.rss_growth:.0f}%, fds +{args.fd_growth}):")
    if not samples:
        print("  no FastCGI worker was sampled")
        failed = True
    for pid, rows in sorted(samples.items()):
        first, last = rows[0], rows[-1]
        warm = next((r for r in rows if r[0] >= args.warmup), None)
        max_rss = max(r[1] for r in rows)
        max_fds = max(r[2] for r in rows)
        verdict = "ok"
        if warm is None or warm is last:
            verdict = "too few samples after warm-up to judge"
        else:
            if last[1] > warm[1] * (1 + args.rss_growth / 100):
                verdict = f"RSS grew {100 * (last[1] - warm[1]) / warm[1]:.0f}% after warm-up"
                failed = True
            if last[2] > warm[2] + args.fd_growth:
                verdict = f"fds grew by {last[2] - warm[2]} after warm-up"
                failed = True
        base = f"warm {warm[1]}/{warm[2]}, " if warm is not None else ""
        print(f"  pid {pid:>7}: start {first[1]}/{first[2]}, {base}max {max_rss}/{max_fds}, "
              f"end {last[1]}/{last[2]} ({len(rows)} samples, {last[0] - first[0]:.0f} s): {verdict}")
    print("soak: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--users-per-worker", type=int, default=5)
    p.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--stats", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--rss-growth", type=float, default=20.0)
    p.add_argument("--fd-growth", type=int, default=5)
    args = parser.parse_args()
    if args.command == "run":
        run(args)
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
