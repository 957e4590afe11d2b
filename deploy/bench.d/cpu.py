#!/usr/bin/env python3
"""Where a run's CPU went, by kind of process: deploy/bench --compare.

Python 3 standard library only; reads /proc, talks to nothing.

  cpu.py OUT -- COMMAND [ARG ...]
      Runs COMMAND (its output and exit status are COMMAND's own) and
      appends one line to OUT:
          cpu DATABASE HEALTHSYNC APACHE LOAD REST
      the CPU time in microseconds (user + system) that each kind of
      process used on this machine while COMMAND ran:
      - DATABASE: mariadbd / mysqld;
      - HEALTHSYNC: the binary's processes (healthsync.fcgi workers), plus
        the children Apache reaped meanwhile (a FastCGI worker that
        exited): a finished child's time is only left in its parent's
        account. CGI runs are not in it: mod_cgid lets the kernel reap
        them, which keeps no account, so their time is in REST;
      - APACHE: apache2 / httpd themselves;
      - LOAD: COMMAND and its children (wrk, or a chain of requests);
      - REST: the rest of the machine's busy time (/proc/stat): the
        kernel's threads (freeing a CGI process's memory, say), processes
        that ended without an account, anything else running.
      Meant for a machine that runs one instance's traffic at a time, as
      the rounds of --compare do: the figures are of the whole machine.
"""

import os
import resource
import subprocess
import sys

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("database", "healthsync", "apache", "load", "rest")


def kind_of(name):
    if name in ("mariadbd", "mysqld"):
        return "database"
    if name.startswith("healthsync"):
        return "healthsync"
    if name in ("apache2", "httpd"):
        return "apache"
    return None


def busy():
    """The machine's busy ticks, all CPUs: /proc/stat's first line less
    idle and iowait (guest time is already in user time)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def children():
    """Seconds of CPU this process's waited-for children used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot():
    """pid -> (name, own ticks, reaped children's ticks) of the processes
    of a kind, with the machine's busy ticks."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue  # it exited meanwhile
        # The name is in parentheses and may hold spaces or parentheses.
        name = text[text.find("(") + 1:text.rfind(")")]
        if kind_of(name) is None:
            continue
        fields = text[text.rfind(")") + 2:].split()
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        found[int(entry)] = (name, utime + stime, cutime + cstime)
    return found, busy()


def spent(before, after, load_seconds):
    """Microseconds per kind between two snapshots. A process that started
    meanwhile counts from zero; one that ended is left to its parent's
    reaped-children account."""
    (processes_before, busy_before), (processes_after, busy_after) = before, after
    ticks = dict.fromkeys(("database", "healthsync", "apache"), 0)
    for pid, (name, own, reaped) in processes_after.items():
        then = processes_before.get(pid)
        if then is not None and then[0] != name:
            then = None  # the pid was reused, or the process exec'd
        own_then, reaped_then = (then[1], then[2]) if then else (0, 0)
        ticks[kind_of(name)] += own - own_then
        if kind_of(name) == "apache":
            ticks["healthsync"] += reaped - reaped_then
    totals = {kind: value * 1_000_000 // TICKS for kind, value in ticks.items()}
    totals["load"] = round(load_seconds * 1_000_000)
    machine = (busy_after - busy_before) * 1_000_000 // TICKS
    totals["rest"] = max(0, machine - sum(totals.values()))
    return totals


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: cpu.py OUT -- COMMAND [ARG ...]")
    out, command = sys.argv[1], sys.argv[3:]
    before, load_before = snapshot(), children()
    status = subprocess.call(command)
    totals = spent(before, snapshot(), children() - load_before)
    with open(out, "a", encoding="ascii") as lines:
        lines.write("cpu " + " ".join(str(totals[kind]) for kind in KINDS) + "\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
