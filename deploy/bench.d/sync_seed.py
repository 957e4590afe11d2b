#!/usr/bin/env python3
"""Seeding and chain timing for the sync workloads of deploy/bench.

Python 3 standard library only. Talks only to 127.0.0.1:<port>, through the
API (register/login, push, bulk, account); every request has a timeout.

  sync_seed.py user --port P --email E [--fresh] [--entity KEY=N ...]
                    [--pool-file F --pool N] [--seed S]
      Logs in as E (or registers it), then pushes records until each listed
      entity (a bulk key) holds at least N live records, in pushes of up to
      1000. With --fresh, an existing account E is deleted first (the write
      workloads start from an empty user every run, and a long-lived one
      would grow by every run's pushes). With --pool-file, N meals dated
      2024-03-01 are pushed under new ids that are written to F, one a line
      (the existing records of push50conflict). Prints shell assignments:
      TOKEN, SYNC_TOKEN (the user's position after seeding), SEEDED (records
      pushed now), SEED_SECONDS. With --seed, record ids and data come from
      a generator seeded with S instead of the OS: the same S seeds the same
      records (deploy/bench --compare seeds each build's database alike).
  sync_seed.py delete --port P --email E
      Deletes account E and its records (the end of a write workload).
  BENCH_TOKEN=T sync_seed.py chain --port P --label L --connections C
                     --duration S [--limit 1000] [--expect N] [--log F]
                     [--dump F]
      The initial sync: bulk {"limit": 1000}, then {"sync_token": <previous
      sync_token>, "limit": 1000} until has_more is false, timed as a whole.
      C threads (one keep-alive connection each) run chains back to back
      until S seconds have passed (at least one chain each); prints one
      table row `label|C|path|chains/s|p50 ms|p99 ms|failed|server p50 ms`.
      The first chain is a check, untimed: it must return exactly --expect
      distinct records. With --log (the instance's error.log), the server
      p50 is the median over chains of the sum of the binary's own "ms" of
      each page, matched by X-Request-Id. With --dump, the run is also
      appended to F in the format of bench.d/latency-dump.lua (a `run`
      line, then each chain's time in microseconds with a count of 1).
"""

import argparse
import http.client
import json
import math
import os
import random
import re
import sys
import threading
import time
import uuid

PASSWORD = "bench-password-0123"
UPDATED_AT = "2024-03-01T10:00:00.000Z"
BULK_KEYS = ("health_metrics", "medications", "meals", "exercises", "meal_plans")
SLUG = {
    "health_metrics": ("health-metrics", "metrics"),
    "medications": ("medications", "medications"),
    "meals": ("meals", "meals"),
    "exercises": ("exercises", "exercises"),
    "meal_plans": ("meal-plans", "meal_plans"),
}
TIMEOUT = 120  # seconds; a push of 1000 records takes well under one


class Api:
    """One keep-alive connection to the local instance."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.last_request_id = None

    def request(self, method, path, body=None, token=None):
        """Returns (status, raw bytes). Reconnects once if the server closed."""
        headers = {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            try:
                self.conn.request(method, "/api" + path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                self.last_request_id = response.getheader("X-Request-Id")
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, raw
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None, token=None, expect=(200,)):
        status, raw = self.request(method, path, body, token)
        if status not in expect:
            die(f"{method} /api{path} answered {status}: {raw[:300]!r}")
        return json.loads(raw)["data"]

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def die(message):
    print(f"sync_seed: error: {message}", file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------- record data

MEALS = [
    ("breakfast", "Oatmeal with blueberries and walnuts", 380, 11.5, 54.0, 13.2),
    ("lunch", "Grilled chicken salad with quinoa", 520, 38.5, 42.1, 18.3),
    ("dinner", "Salmon, brown rice and steamed broccoli", 640, 41.0, 58.2, 22.7),
    ("snack", "Greek yogurt with honey", 210, 15.0, 24.5, 5.1),
]


def meal_data(rng, date):
    kind, name, kcal, protein, carbs, fat = rng.choice(MEALS)
    return {
        "date": date,
        "mealType": kind,
        "name": name,
        "calories": kcal + rng.randint(-40, 40),
        "protein": protein,
        "carbs": carbs,
        "fat": fat,
        "fiber": round(rng.uniform(2, 9), 1),
        "notes": "home cooked",
        "source": "manual",
    }


def entity_data(rng, key, index):
    day = f"2024-02-{index % 28 + 1:02d}"
    if key == "meals":
        return meal_data(rng, day)
    if key == "exercises":
        return {
            "date": day,
            "type": rng.choice(["running", "cycling", "swimming", "strength"]),
            "durationMinutes": rng.randint(20, 75),
            "caloriesBurned": rng.randint(150, 700),
            "distanceKm": round(rng.uniform(2, 25), 1),
            "avgHeartRate": rng.randint(110, 165),
            "notes": "felt good, steady pace",
            "source": "watch",
        }
    if key == "health_metrics":
        return {
            "date": day,
            "type": "vitals",
            "weightKg": round(rng.uniform(60, 95), 1),
            "systolic": rng.randint(108, 138),
            "diastolic": rng.randint(68, 88),
            "heartRate": rng.randint(52, 80),
            "sleepHours": round(rng.uniform(5.5, 8.5), 1),
            "notes": "morning, before coffee",
            "source": "smart scale",
        }
    if key == "medications":
        return {
            "name": rng.choice(["Metformin", "Lisinopril", "Atorvastatin", "Vitamin D3"]),
            "dosage": rng.choice(["500 mg", "10 mg", "20 mg", "1000 IU"]),
            "frequency": rng.choice(["once daily", "twice daily"]),
            "startDate": day,
            "active": True,
            "sideEffects": ["mild nausea"],
            "prescribedBy": "Dr. Okafor",
            "reminder": "08:00",
        }
    if key == "meal_plans":
        return {
            "name": "Week of " + day,
            "weekStart": day,
            "targetCalories": rng.choice([1800, 2000, 2200]),
            "days": [
                {"day": "mon", "meals": ["oatmeal", "chicken salad", "salmon"]},
                {"day": "tue", "meals": ["yogurt", "lentil soup", "stir fry"]},
            ],
        }
    raise ValueError(key)


def record(rng, key, index, record_id=None, data=None):
    return {
        "id": record_id or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "data": data if data is not None else entity_data(rng, key, index),
        "updated_at": UPDATED_AT,
    }


def push(api, token, key, records):
    slug, list_key = SLUG[key]
    result = api.json("POST", f"/{slug}/sync", {list_key: records}, token)
    if result["errors"] or result["synced"] != len(records):
        die(f"seeding push to /{slug}/sync: synced {result['synced']} of {len(records)}, "
            f"errors {result['errors'][:3]}")


# ----------------------------------------------------------------- users

def login_or_register(api, email, fresh):
    status, raw = api.request("POST", "/auth/login", {"email": email, "password": PASSWORD})
    if status == 200 and fresh:
        token = json.loads(raw)["data"]["token"]
        api.json("DELETE", "/account", {"password": PASSWORD}, token)
        status = 401
    if status == 200:
        return json.loads(raw)["data"]["token"]
    if status != 401:
        die(f"login {email} answered {status}: {raw[:300]!r}")
    body = {"email": email, "password": PASSWORD, "name": "Bench User"}
    return api.json("POST", "/auth/register", body, expect=(201,))["token"]


def cmd_user(args):
    started = time.monotonic()
    api = Api(args.port)
    # New ids every run (seeded from the OS), unless a seed is given.
    rng = random.Random(args.seed) if args.seed is not None else random.Random()
    token = login_or_register(api, args.email, args.fresh)
    want = {}
    for spec in args.entity or []:
        key, _, count = spec.partition("=")
        if key not in BULK_KEYS or not count.isdigit():
            die(f"--entity wants BULK_KEY=COUNT, got {spec!r}")
        want[key] = int(count)
    seeded = 0
    if want:
        counts = api.json("GET", "/account", token=token)["counts"]
        for key, count in want.items():
            have = counts.get(key, 0)
            if have < count:
                print(f"==> seeding {args.email}: {key} {have} -> {count}", file=sys.stderr)
            while have < count:
                batch = min(1000, count - have)
                push(api, token, key, [record(rng, key, have + i) for i in range(batch)])
                have += batch
                seeded += batch
    if args.pool_file:
        # The pool of push50conflict: meals stored with date 2024-03-01 and
        # updated_at 2024-03-01T10:00, which the workload sends again older.
        ids = []
        for start in range(0, args.pool, 1000):
            batch = [
                record(rng, "meals", 0, data=meal_data(rng, "2024-03-01"))
                for _ in range(min(1000, args.pool - start))
            ]
            push(api, token, "meals", batch)
            ids.extend(item["id"] for item in batch)
            seeded += len(batch)
        with open(args.pool_file, "w", encoding="ascii") as out:
            out.write("\n".join(ids) + "\n")
    sync_token = api.json("GET", "/sync/status", token=token)["sync_token"]
    if not isinstance(sync_token, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", sync_token):
        die(f"unexpected sync_token {sync_token!r}")
    print(f"TOKEN={token}")
    print(f"SYNC_TOKEN={sync_token}")
    print(f"SEEDED={seeded}")
    print(f"SEED_SECONDS={time.monotonic() - started:.1f}")


def cmd_delete(args):
    api = Api(args.port)
    status, raw = api.request("POST", "/auth/login", {"email": args.email, "password": PASSWORD})
    if status == 401:
        return
    if status != 200:
        die(f"login {args.email} answered {status}: {raw[:300]!r}")
    token = json.loads(raw)["data"]["token"]
    api.json("DELETE", "/account", {"password": PASSWORD}, token)


# ----------------------------------------------------------------- chain

# The chain reads only these two fields of each page, by pattern: parsing a
# whole page of 1000 records with json.loads would cost the client several
# ms a page and be counted as the server's time. `"sync_token"` with its
# opening quote does not match inside `"previous_sync_token"`.
SYNC_TOKEN_RE = re.compile(rb'"sync_token":("(?:[^"\\]|\\.)*")')
HAS_MORE_RE = re.compile(rb'"has_more":(true|false)')


def run_chain(api, token, limit, check=False, request_ids=None):
    """One initial sync; returns (pages, records seen if check else None).
    Appends each page's X-Request-Id to request_ids when given."""
    body = {"limit": limit}
    pages = 0
    seen = [] if check else None
    while True:
        status, raw = api.request("POST", "/sync/bulk", json.dumps(body).encode(), token)
        pages += 1
        if request_ids is not None:
            request_ids.append(api.last_request_id)
        if status != 200:
            raise RuntimeError(f"bulk answered {status}: {raw[:300]!r}")
        if check:
            data = json.loads(raw)["data"]
            for key in BULK_KEYS:
                seen.extend((key, item["id"]) for item in data[key]["server_updates"])
        token_match = SYNC_TOKEN_RE.search(raw)
        more_match = HAS_MORE_RE.search(raw)
        if not token_match or not more_match:
            raise RuntimeError(f"bulk page without sync_token/has_more: {raw[:300]!r}")
        if more_match.group(1) == b"false":
            return pages, seen
        if pages >= 1000:
            raise RuntimeError("initial sync did not end after 1000 pages")
        body = {"sync_token": json.loads(token_match.group(1)), "limit": limit}


def percentile(sorted_values, fraction):
    # Nearest rank, like wrk's percentiles.
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def cmd_chain(args):
    args.token = os.environ.get("BENCH_TOKEN") or die("BENCH_TOKEN is not set")
    check_api = Api(args.port)
    pages, seen = run_chain(check_api, args.token, args.limit, check=True)
    check_api.close()
    if args.expect is not None and (len(seen) != args.expect or len(set(seen)) != len(seen)):
        die(f"initial sync returned {len(seen)} records ({len(set(seen))} distinct) "
            f"in {pages} pages, expected {args.expect}")
    print(f"==> initial sync check: {len(seen)} records in {pages} pages", file=sys.stderr)

    times = []
    chains = []  # the request ids of each timed chain
    failures = []
    lock = threading.Lock()
    log_offset = os.path.getsize(args.log) if args.log and os.path.exists(args.log) else None
    deadline = time.monotonic() + args.duration

    def worker():
        api = Api(args.port)
        first = True
        while first or time.monotonic() < deadline:
            first = False
            begun = time.perf_counter()
            ids = []
            try:
                run_chain(api, args.token, args.limit, request_ids=ids)
            except (OSError, RuntimeError, http.client.HTTPException) as error:
                with lock:
                    failures.append(str(error))
                api.close()
                time.sleep(0.1)
                continue
            elapsed = time.perf_counter() - begun
            with lock:
                times.append(elapsed * 1000)
                chains.append(ids)
        api.close()

    wall_start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.duration + 10 * TIMEOUT)
    wall = time.perf_counter() - wall_start
    if failures:
        print(f"==> initial sync: first failure: {failures[0]}", file=sys.stderr)
    times.sort()
    rate = len(times) / wall if wall > 0 else 0.0
    print(f"==> initial sync, {args.connections} connection(s): {len(times)} chains "
          f"of {pages} pages in {wall:.1f}s", file=sys.stderr)
    server = "-"
    if log_offset is not None:
        sums = server_chain_ms(args.log, log_offset, chains)
        if sums:
            server = f"{percentile(sums, 0.50):.2f}"
    if args.dump:
        with open(args.dump, "a", encoding="ascii") as dump:
            dump.write(f"run {len(times)} {round(wall * 1e6)} {len(failures)} 0 0\n")
            dump.writelines(f"{round(ms * 1000)} 1\n" for ms in times)
    print(f"{args.label}|{args.connections}|/api/sync/bulk x{pages}|{rate:.1f}|"
          f"{percentile(times, 0.50):.2f}|{percentile(times, 0.99):.2f}|{len(failures)}|{server}")


def server_chain_ms(log_path, offset, chains):
    """The binary's own time of each chain: the sum of its pages' "ms" in
    the instance's log (one JSON line per request, with its request id)."""
    time.sleep(0.2)  # the last lines of the workers
    ms_of = {}
    with open(log_path, "rb") as log:
        log.seek(offset)
        for line in log:
            if not line.startswith(b"{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "request_id" in entry and "ms" in entry:
                ms_of[entry["request_id"]] = entry["ms"]
    sums = []
    for ids in chains:
        if ids and all(i in ms_of for i in ids):
            sums.append(sum(ms_of[i] for i in ids))
    return sorted(sums)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    user = sub.add_parser("user")
    user.add_argument("--port", type=int, required=True)
    user.add_argument("--email", required=True)
    user.add_argument("--fresh", action="store_true")
    user.add_argument("--entity", action="append")
    user.add_argument("--pool-file")
    user.add_argument("--pool", type=int, default=2000)
    user.add_argument("--seed")
    delete = sub.add_parser("delete")
    delete.add_argument("--port", type=int, required=True)
    delete.add_argument("--email", required=True)
    chain = sub.add_parser("chain")
    chain.add_argument("--port", type=int, required=True)
    chain.add_argument("--label", required=True)
    chain.add_argument("--connections", type=int, default=1)
    chain.add_argument("--duration", type=float, default=5)
    chain.add_argument("--limit", type=int, default=1000)
    chain.add_argument("--expect", type=int)
    chain.add_argument("--log")
    chain.add_argument("--dump")
    args = parser.parse_args()
    {"user": cmd_user, "delete": cmd_delete, "chain": cmd_chain}[args.command](args)


if __name__ == "__main__":
    main()
