#!/usr/bin/env python3
"""The client side of deploy/rehearse's upgrade step: a few users pushing
and pulling over HTTPS while the binary is replaced, every answer counted.

Python 3 standard library only. Talks only to the rehearsal host (a
loopback address given with --addr), with SNI and Host set to --host and
the server's certificate checked against --ca. Every request has a
timeout, and the loop is bounded in time and in requests.

  load.py run --addr A --port P --host H --ca CA --state F
              [--users 4] [--stop-file F] [--ready-file F]
              [--max-seconds 120] [--max-requests 50000] [--pause 0.005]
              [--expect-version V]
      Registers --users new accounts, then each pushes health metrics
      (three new records a push, and every third push also edits one of its
      earlier records from the version it was told) and pulls its changes
      with its sync token, one keep-alive connection per user, while
      another connection asks GET /health every 0.2 s. The loop ends when
      --stop-file exists, or after --max-seconds or --max-requests;
      --ready-file is written once every user has had a push acknowledged.
      Then each user pulls everything back from no cursor. Writes F (JSON:
      the users, their tokens and every acknowledged record's version) and
      prints a summary. Fails (exit 1) on any 5xx, any connection error,
      any other unexpected status, an acknowledged record missing or at
      another version, or a final /health version other than
      --expect-version.
  load.py verify --addr A --port P --host H --ca CA --state F
                 [--expect-version V]
      Pulls every user of F back and compares with what F says was
      acknowledged; checks /health's version. Exit 1 on any difference.
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import uuid

TIMEOUT = 30  # seconds per request
PASSWORD = "rehearsal-password-0123"
SLUG = "health-metrics"
LIST_KEY = "metrics"


class Connection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, whatever the host name says (curl's
    --resolve): SNI, certificate check and Host all use the name."""

    def __init__(self, addr, port, host, context):
        super().__init__(host, port, timeout=TIMEOUT, context=context)
        self.addr = addr

    def connect(self):
        raw = socket.create_connection((self.addr, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


class Tally:
    """Every answer and every failure to get one, for all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.statuses = {}
        self.requests = 0
        self.connection_errors = []  # (seconds since start, request, error)
        self.unexpected = []  # (seconds, request, status, body head)
        self.versions = []  # (seconds, version) each time /health's changes

    def now(self):
        return time.monotonic() - self.started

    def answer(self, what, status, expected, body):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status not in expected:
                self.unexpected.append((round(self.now(), 3), what, status, body[:200].decode("utf-8", "replace")))

    def malformed(self, what, status, body):
        """An expected status whose body is not the API's JSON envelope."""
        with self.lock:
            self.unexpected.append((round(self.now(), 3), what, f"{status} (not JSON)", body[:200].decode("utf-8", "replace")))

    def failure(self, what, error):
        with self.lock:
            self.requests += 1
            self.connection_errors.append((round(self.now(), 3), what, f"{type(error).__name__}: {error}"))

    def version(self, version):
        with self.lock:
            if not self.versions or self.versions[-1][1] != version:
                self.versions.append((round(self.now(), 3), version))


class Client:
    def __init__(self, args, tally):
        self.args = args
        self.tally = tally
        self.context = ssl.create_default_context(cafile=args.ca)
        self.conn = None
        self.last_used = 0.0

    def request(self, method, path, body=None, token=None, expected=(200,)):
        """(status, parsed data or None). A connection error is counted and
        gives (None, None); the next request opens a new connection."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        what = f"{method} /api{path.split('?')[0]}"
        # Apache closes a keep-alive connection idle for 5 s; a request sent
        # just then would fail through no fault of the server's.
        if self.conn is not None and time.monotonic() - self.last_used > 3:
            self.close()
        if self.conn is None:
            self.conn = Connection(self.args.addr, self.args.port, self.args.host, self.context)
        try:
            self.conn.request(method, "/api" + path, body=data, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as error:
            self.tally.failure(what, error)
            self.close()
            return None, None
        finally:
            self.last_used = time.monotonic()
        self.tally.answer(what, response.status, expected, raw)
        if response.status not in expected:
            return response.status, None
        try:
            return response.status, json.loads(raw)["data"]
        except (ValueError, KeyError):
            self.tally.malformed(what, response.status, raw)
            return response.status, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def record(index, data_note):
    return {
        "id": str(uuid.uuid4()),
        "data": {"date": f"2024-03-{index % 28 + 1:02d}", "type": "vitals",
                 "heartRate": 50 + index % 40, "notes": data_note},
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }


class User(threading.Thread):
    def __init__(self, args, tally, email, stop):
        super().__init__(daemon=True)
        self.args = args
        self.tally = tally
        self.email = email
        self.stop = stop
        self.client = Client(args, tally)
        self.token = None
        self.acked = {}  # id -> version the server said it stored
        self.ready = threading.Event()
        self.sync_token = None

    def register(self):
        body = {"email": self.email, "password": PASSWORD, "name": "Rehearsal"}
        status, data = self.client.request("POST", "/auth/register", body, expected=(201,))
        if data is None:
            raise SystemExit(f"load: registering {self.email} answered {status}")
        self.token = data["token"]

    def run(self):
        pushes = 0
        while not self.stop.is_set():
            records = [record(pushes * 3 + i, f"push {pushes} of {self.email}") for i in range(3)]
            if pushes % 3 == 2 and self.acked:
                old_id = next(iter(self.acked))
                edit = record(pushes, f"edit {pushes}")
                edit["id"] = old_id
                edit["base_version"] = self.acked[old_id]
                records.append(edit)
            pushes += 1
            _, data = self.client.request("POST", f"/{SLUG}/sync", {LIST_KEY: records}, self.token)
            if data is not None:
                for item in data.get("applied", []):
                    self.acked[item["id"]] = item["version"]
                self.ready.set()
            query = f"?limit=100&sync_token={self.sync_token}" if self.sync_token else "?limit=100"
            _, data = self.client.request("GET", f"/{SLUG}{query}", token=self.token)
            if data is not None:
                self.sync_token = data["next_sync_token"]
            if self.args.pause:
                time.sleep(self.args.pause)
        self.ready.set()

    def state(self):
        return {"email": self.email, "token": self.token, "acked": self.acked}


def pull_all(client, token):
    """Every record of the user, from no cursor: id -> version."""
    held = {}
    cursor = None
    for _ in range(1000):
        query = "?limit=1000" + (f"&sync_token={cursor}" if cursor else "")
        status, data = client.request("GET", f"/{SLUG}{query}", token=token)
        if data is None:
            return None, f"pull answered {status}"
        for item in data[LIST_KEY]:
            held[item["id"]] = item["version"]
        cursor = data["next_sync_token"]
        if not data["has_more"]:
            return held, None
    return None, "pull did not end after 1000 pages"


def compare(users, client):
    """Lines describing every acknowledged write missing or changed."""
    problems = []
    total = 0
    for user in users:
        held, error = pull_all(client, user["token"])
        if held is None:
            problems.append(f"{user['email']}: {error}")
            continue
        for record_id, version in user["acked"].items():
            total += 1
            if record_id not in held:
                problems.append(f"{user['email']}: record {record_id} (version {version}) is missing")
            elif held[record_id] != version:
                problems.append(f"{user['email']}: record {record_id} is at version {held[record_id]}, acknowledged {version}")
    return total, problems


def health_version(client, tally=None):
    _, data = client.request("GET", "/health")
    version = data.get("version") if data else None
    if tally is not None and version:
        tally.version(version)
    return version


def poll_health(args, tally, stop):
    client = Client(args, tally)
    while not stop.is_set():
        health_version(client, tally)
        stop.wait(0.2)
    client.close()


def summary(tally, seconds):
    codes = " ".join(f"{code}={count}" for code, count in sorted(tally.statuses.items(), key=str))
    fives = sum(count for code, count in tally.statuses.items() if isinstance(code, int) and code >= 500)
    print(f"load: {tally.requests} requests in {seconds:.1f} s ({tally.requests / max(seconds, 0.001):.0f}/s): {codes}")
    print(f"load: 5xx={fives} connection_errors={len(tally.connection_errors)} unexpected={len(tally.unexpected)}")
    for when, what, error in tally.connection_errors[:10]:
        print(f"load:   +{when}s {what}: {error}")
    for when, what, status, body in tally.unexpected[:10]:
        print(f"load:   +{when}s {what}: {status} {body}")
    if tally.versions:
        timeline = ", ".join(f"{version} from +{when}s" for when, version in tally.versions)
        print(f"load: /health versions: {timeline}")
    return fives


def cmd_run(args):
    tally = Tally()
    stop = threading.Event()
    run_id = uuid.uuid4().hex[:8]
    users = [User(args, tally, f"load-{run_id}-{n}@example.test", stop) for n in range(args.users)]
    for user in users:
        user.register()
    poller = threading.Thread(target=poll_health, args=(args, tally, stop), daemon=True)
    poller.start()
    for user in users:
        user.start()
    for user in users:
        user.ready.wait(args.max_seconds)
    if args.ready_file:
        with open(args.ready_file, "w", encoding="ascii") as out:
            out.write("ready\n")
    deadline = tally.started + args.max_seconds
    while time.monotonic() < deadline and tally.requests < args.max_requests:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        time.sleep(0.05)
    stop.set()
    for user in users:
        user.join(TIMEOUT + 5)
    poller.join(TIMEOUT + 5)
    seconds = tally.now()
    state = [user.state() for user in users]
    with open(args.state, "w", encoding="ascii") as out:
        json.dump({"users": state}, out)

    checker = Client(args, tally)
    total, problems = compare(state, checker)
    final = health_version(checker, tally)
    fives = summary(tally, seconds)
    failed = []
    if fives or tally.connection_errors or tally.unexpected:
        failed.append("answers other than expected")
    if problems:
        failed.append(f"{len(problems)} acknowledged write(s) not held as acknowledged")
        for line in problems[:10]:
            print(f"load:   {line}")
    print(f"load: {total} acknowledged record versions, {total - len(problems)} pulled back as acknowledged")
    if args.expect_version and final != args.expect_version:
        failed.append(f"/health reports version {final}, expected {args.expect_version}")
    print(f"load: final /health version {final}")
    if failed:
        print("load: FAILED: " + "; ".join(failed))
        return 1
    print("load: ok")
    return 0


def cmd_verify(args):
    tally = Tally()
    with open(args.state, encoding="ascii") as source:
        state = json.load(source)["users"]
    client = Client(args, tally)
    total, problems = compare(state, client)
    final = health_version(client, tally)
    for line in problems[:10]:
        print(f"verify:   {line}")
    failed = bool(problems) or bool(tally.connection_errors) or bool(tally.unexpected)
    if args.expect_version and final != args.expect_version:
        print(f"verify: /health reports version {final}, expected {args.expect_version}")
        failed = True
    print(f"verify: {total - len(problems)} of {total} acknowledged records held; /health version {final}"
          + ("" if not (tally.connection_errors or tally.unexpected) else
             f"; {len(tally.connection_errors)} connection error(s), {len(tally.unexpected)} unexpected answer(s)"))
    for when, what, status, body in tally.unexpected[:5]:
        print(f"verify:   {what}: {status} {body}")
    for when, what, error in tally.connection_errors[:5]:
        print(f"verify:   {what}: {error}")
    print("verify: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "verify"):
        p = sub.add_parser(name)
        p.add_argument("--addr", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--host", required=True)
        p.add_argument("--ca", required=True)
        p.add_argument("--state", required=True)
        p.add_argument("--expect-version")
        if name == "run":
            p.add_argument("--users", type=int, default=4)
            p.add_argument("--stop-file")
            p.add_argument("--ready-file")
            p.add_argument("--max-seconds", type=float, default=120)
            p.add_argument("--max-requests", type=int, default=50000)
            p.add_argument("--pause", type=float, default=0.005)
    args = parser.parse_args()
    if not args.addr.startswith("127."):
        parser.error("--addr must be a loopback address (127.0.0.0/8)")
    return cmd_run(args) if args.command == "run" else cmd_verify(args)


if __name__ == "__main__":
    sys.exit(main())
