#!/usr/bin/env python3
"""Pins the servers that a bench script starts to one CPU.

    pin.py --root PID --cpu N [--names pharos,otelcol,...]

bench/run starts the existing bench scripts (which start their servers themselves) with
`taskset -c LOAD_CPU`, so that they and the load generator they run use that CPU. This watcher
moves every thread of every server process among the descendants of PID to CPU N (the
server's CPU) as soon as it appears, and keeps doing so (for threads started later on another
CPU) until PID exits. It reads /proc only and sets affinities with sched_setaffinity, the
call taskset makes.
"""

import argparse
import os
import sys
import time


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        # pid (comm) state ppid ...: the command name may hold spaces and parentheses.
        rest = stat[stat.rfind(")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def descendants(root):
    kids, out, todo = children_map(), [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=int, required=True)
    p.add_argument("--cpu", type=int, required=True)
    p.add_argument("--names", default="pharos,otelcol,prometheus,victoria-metric,rotel-agent")
    a = p.parse_args()
    # /proc/PID/comm holds at most 15 characters.
    names = {n[:15] for n in a.names.split(",")}
    want = {a.cpu}
    seen = set()
    while os.path.exists(f"/proc/{a.root}"):
        for pid in descendants(a.root):
            if comm(pid) not in names:
                continue
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                try:
                    if os.sched_getaffinity(tid) != want:
                        os.sched_setaffinity(tid, want)
                except OSError:
                    pass  # the thread ended
            if pid not in seen:
                seen.add(pid)
                print(f"pin: {comm(pid)} (pid {pid}) on CPU {a.cpu}", file=sys.stderr, flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
