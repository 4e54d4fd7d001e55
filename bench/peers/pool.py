"""Pool(2).map of tiny tasks, with cqwire.install() and without.

    python3 pool.py [--tasks N] [--rounds R] [--chunksize C]

Each round runs both variants, each in a fresh interpreter (this script
with --one stdlib|cqwire), in alternating order; a variant times
Pool(2).map(f, range(N), chunksize=C) with perf_counter_ns(), the pool
already started, and prints the seconds. The figures are the medians of
the rounds. cqwire must be importable (PYTHONPATH=<build>/python/py311,
say); without cqwire.install() the cqwire variant is reported as not run.
The fork start method, and no pinning: the parent and both workers share
the machine's CPUs as a Python program's would.
"""

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time


def task(x):
    return x


def one(variant, tasks, chunksize):
    if variant == "cqwire":
        import cqwire

        cqwire.install()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        kind = type(pool._inqueue._reader).__module__
        if (variant == "cqwire") != kind.startswith("cqwire"):
            sys.exit("the pool's connections are %s's" % kind)
        pool.map(task, range(100), chunksize=1)  # workers up and warm
        t0 = time.perf_counter_ns()
        out = pool.map(task, range(tasks), chunksize=chunksize)
        t1 = time.perf_counter_ns()
    if out[-1] != tasks - 1 or len(out) != tasks:
        sys.exit("wrong results")
    print((t1 - t0) / 1e9)


def run(variant, tasks, chunksize):
    cmd = [sys.executable, os.path.abspath(__file__), "--one", variant]
    cmd += ["--tasks", str(tasks), "--chunksize", str(chunksize)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s variant failed:\n%s" % (variant, r.stderr))
    return float(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunksize", type=int, default=1)
    ap.add_argument("--one", choices=("stdlib", "cqwire"))
    a = ap.parse_args()
    if a.one:
        one(a.one, a.tasks, a.chunksize)
        return
    try:
        import cqwire

        have = hasattr(cqwire, "install")
        where = os.path.dirname(cqwire.__file__)
    except ImportError:
        have, where = False, None
    variants = ["stdlib", "cqwire"] if have else ["stdlib"]
    times = {v: [] for v in variants}
    for i in range(a.rounds):
        order = variants if i % 2 == 0 else variants[::-1]
        for v in order:
            times[v].append(run(v, a.tasks, a.chunksize))
    print(
        "Pool(2).map, %d tasks, chunksize=%d, %d rounds, Python %s (%s)"
        % (
            a.tasks,
            a.chunksize,
            a.rounds,
            sys.version.split()[0],
            sys.executable,
        )
    )
    med = {}
    for v in variants:
        med[v] = statistics.median(times[v])
        print(
            "  %-7s median %.3f s (%.0f tasks/s); rounds: %s"
            % (
                v,
                med[v],
                a.tasks / med[v],
                " ".join("%.3f" % t for t in times[v]),
            )
        )
    if have:
        ratio = med["stdlib"] / med["cqwire"]
        print("  with cqwire.install(): %.2fx the stdlib's speed" % ratio)
        print("  cqwire from %s" % where)
    else:
        print("  cqwire: not run (no cqwire.install() importable)")


if __name__ == "__main__":
    main()
