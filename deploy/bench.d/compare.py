#!/usr/bin/env python3
"""The table of deploy/bench --compare: build A against build B, per row.

Python 3 standard library only; reads files, talks to nothing.

  compare.py ROW ...
      Each ROW is "PREFIX|label|connections|path": PREFIX.A and PREFIX.B
      hold the rounds of that row on each build, as written by
      bench.d/latency-dump.lua (wrk) or `sync_seed.py chain --dump`: a line
      `run REQUESTS DURATION_US NON_2XX SOCKET_ERRORS UNEXPECTED` per round,
      each followed by `LATENCY_US COUNT` lines. Per side, the rounds'
      latencies are merged into one distribution (p50 and p99 by wrk's own
      rank rule) and req/s is all requests over all rounds' time. Prints the
      table, with the ratios A/B and, per round, the ratio of that round's
      p50s (how steady the comparison was).
      When PREFIX.A.cpu and PREFIX.B.cpu exist (bench.d/cpu.py: a line
      `cpu DATABASE HEALTHSYNC APACHE LOAD REST` of microseconds per
      round), a second table gives each build's CPU per request by kind of
      process, over all rounds: at 8 connections on a machine with few
      cores, req/s is the cores' time over this total, so it shows which
      process a difference in throughput comes from.
"""

import math
import sys


class Side:
    def __init__(self, path):
        self.counts = {}  # latency in microseconds -> count, all rounds
        self.rounds = []  # per round: its own {latency: count}
        self.requests = 0
        self.duration_us = 0
        self.bad = 0
        try:
            with open(path, encoding="ascii") as lines:
                for line in lines:
                    fields = line.split()
                    if not fields:
                        continue
                    if fields[0] == "run":
                        requests, duration, non2xx, socket, unexpected = map(int, fields[1:6])
                        self.requests += requests
                        self.duration_us += duration
                        self.bad += non2xx + socket + unexpected
                        self.rounds.append({})
                        continue
                    value, count = int(fields[0]), int(fields[1])
                    self.counts[value] = self.counts.get(value, 0) + count
                    self.rounds[-1][value] = self.rounds[-1].get(value, 0) + count
        except FileNotFoundError:
            pass

    def rate(self):
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0


KINDS = ("database", "healthsync", "apache", "load", "rest")


def cpu_of(path):
    """Microseconds per kind of process, summed over the rounds; None
    without the file."""
    totals = dict.fromkeys(KINDS, 0)
    try:
        with open(path, encoding="ascii") as lines:
            for line in lines:
                fields = line.split()
                if fields and fields[0] == "cpu":
                    for kind, value in zip(KINDS, fields[1:]):
                        totals[kind] += int(value)
    except FileNotFoundError:
        return None
    return totals


def per_request(totals, side):
    if totals is None or side.requests == 0:
        return None
    return {kind: value / side.requests for kind, value in totals.items()}


def percentile(counts, fraction):
    """wrk's rule: the smallest value whose cumulative count reaches
    round(fraction * total + 0.5). In milliseconds; None when empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = math.floor(fraction * total + 1.0)
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value / 1000
    return max(counts) / 1000


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def ms(value):
    return "-" if value is None else f"{value:.2f}"


def table(header, rows, left):
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            out.append(str(cell).ljust(widths[i]) if i in left else str(cell).rjust(widths[i]))
        return "  ".join(out).rstrip()

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))


def main():
    rows = []
    cpu_rows = []
    for spec in sys.argv[1:]:
        prefix, label, connections, path = spec.split("|", 3)
        a, b = Side(prefix + ".A"), Side(prefix + ".B")
        a50, b50 = percentile(a.counts, 0.50), percentile(b.counts, 0.50)
        a99, b99 = percentile(a.counts, 0.99), percentile(b.counts, 0.99)
        by_round = " ".join(
            ratio(percentile(ra, 0.50), percentile(rb, 0.50)) for ra, rb in zip(a.rounds, b.rounds)
        )
        rows.append([
            label, connections, path,
            ms(a50), ms(b50), ratio(a50, b50),
            ms(a99), ms(b99), ratio(a99, b99),
            f"{a.rate():.1f}", f"{b.rate():.1f}", ratio(a.rate(), b.rate()),
            f"{a.bad}/{b.bad}", by_round,
        ])
        cpu_a = per_request(cpu_of(prefix + ".A.cpu"), a)
        cpu_b = per_request(cpu_of(prefix + ".B.cpu"), b)
        if cpu_a is not None and cpu_b is not None:
            cells = [label, connections]
            for kind in KINDS:
                cells += [f"{cpu_a[kind]:.0f}", f"{cpu_b[kind]:.0f}"]
            total_a, total_b = sum(cpu_a.values()), sum(cpu_b.values())
            cells += [f"{total_a:.0f}", f"{total_b:.0f}", ratio(total_a, total_b)]
            cpu_rows.append(cells)
    header = ["workload / mode", "conns", "path", "A p50", "B p50", "A/B", "A p99", "B p99", "A/B",
              "A req/s", "B req/s", "A/B", "bad A/B", "p50 A/B by round"]
    table(header, rows, {0, 2, 13})
    if cpu_rows:
        print()
        print("CPU per request (initialsync: per chain), microseconds, all rounds of each build:")
        header = ["workload / mode", "conns"]
        for kind in KINDS:
            header += [f"{kind} A", "B"]
        header += ["total A", "B", "A/B"]
        table(header, cpu_rows, {0})
        print("database: mariadbd; healthsync: its FastCGI workers (a CGI run is in rest: the kernel")
        print("reaps it and keeps no account); load: wrk or the chain of requests; rest: the machine's")
        print("other busy time (/proc/stat), the kernel's threads included. bench.d/cpu.py says more.")


if __name__ == "__main__":
    main()
