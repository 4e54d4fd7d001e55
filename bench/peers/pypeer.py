"""Python peers for cqwire's benchmarks: multiprocessing or billiard.

Both sides of a scenario are Python here, as in a Python program: this
process is the parent and forks its echo peer, receiver or workers with
the library's own Process and Pipe. The C harness drives it through
stdin/stdout (it is embedded in the binary and run with python3 -c):

    argv: LIB SCENARIO SIZE WORKERS INFLIGHT [PEER-CPUS]
          LIB is multiprocessing or billiard; SCENARIO rtt, stream, fanout;
          PEER-CPUS "1" or "1,2,3": pin the peers there (the harness has
          pinned this process to the parent's CPU already), "-": do not
    out:  ready PID PEER-PIDS...
    in:   run MAX_OPS MAX_NS WANT_LAT
    out:  done OPS NS
          lat NS NS ...          (only if WANT_LAT is 1)
    in:   quit

Timing is taken here with perf_counter_ns(), so the command pipe costs
nothing in the figures.
"""

import os
import sys
import time


def load(lib):
    if lib == "billiard":
        import billiard as mp
        from billiard.connection import wait
    else:
        import multiprocessing as mp
        from multiprocessing.connection import wait
    return mp.get_context("fork"), wait


PEER_CPUS = []


def pinned(idx, fn, *args):
    """Run fn(*args) in a peer, on its CPU if pinning (as the C peers)."""
    if PEER_CPUS:
        os.sched_setaffinity(0, {PEER_CPUS[idx % len(PEER_CPUS)]})
    fn(*args)


def echo(conn, size):
    buf = bytearray(size)
    try:
        while True:
            n = conn.recv_bytes_into(buf)
            conn.send_bytes(buf, 0, n)
    except (EOFError, OSError):
        pass


def receiver(conn, size):
    buf = bytearray(max(size, 8))
    count = 0
    try:
        while True:
            n = conn.recv_bytes_into(buf)
            if n:
                count += 1
            else:
                conn.send_bytes(count.to_bytes(8, "little"))
    except (EOFError, OSError):
        pass


class Rtt:
    def __init__(self, ctx, wait, size, workers, inflight):
        self.conn, child = ctx.Pipe()
        self.procs = [
            ctx.Process(target=pinned, args=(0, echo, child, size), daemon=True)
        ]
        self.procs[0].start()
        child.close()
        self.payload = bytes(size)
        self.buf = bytearray(size)

    def run(self, max_ops, max_ns, lat):
        send, recv = self.conn.send_bytes, self.conn.recv_bytes_into
        payload, buf, now = self.payload, self.buf, time.perf_counter_ns
        start = t1 = now()
        n = 0
        while n < max_ops:
            t0 = t1
            send(payload)
            recv(buf)
            t1 = now()
            lat.append(t1 - t0)
            n += 1
            if t1 - start >= max_ns:
                break
        return n, t1 - start


class Stream:
    def __init__(self, ctx, wait, size, workers, inflight):
        self.conn, child = ctx.Pipe()
        self.procs = [
            ctx.Process(
                target=pinned, args=(0, receiver, child, size), daemon=True
            )
        ]
        self.procs[0].start()
        child.close()
        self.payload = bytes(size)
        self.every = 64 if size < 65536 else 1

    def run(self, max_ops, max_ns, lat):
        send, now = self.conn.send_bytes, time.perf_counter_ns
        payload, every = self.payload, self.every
        start = now()
        n = 0
        while n < max_ops:
            send(payload)
            n += 1
            if n % every == 0 and now() - start >= max_ns:
                break
        send(b"")
        self.conn.recv_bytes()
        return n, now() - start


class Fanout:
    """A pool parent: wait() on every worker, one response then one request."""

    def __init__(self, ctx, wait, size, workers, inflight):
        self.wait = wait
        self.conns, self.procs, self.sent = [], [], {}
        self.payload = bytes(size)
        self.buf = bytearray(size)
        for i in range(workers):
            conn, child = ctx.Pipe()
            p = ctx.Process(
                target=pinned, args=(i, echo, child, size), daemon=True
            )
            p.start()
            child.close()
            self.conns.append(conn)
            self.procs.append(p)
        now = time.perf_counter_ns()
        for conn in self.conns:
            self.sent[conn] = [now] * inflight
            for _ in range(inflight):
                conn.send_bytes(self.payload)

    def run(self, max_ops, max_ns, lat):
        wait, conns, sent = self.wait, self.conns, self.sent
        payload, buf, now = self.payload, self.buf, time.perf_counter_ns
        start = t = now()
        n = 0
        while n < max_ops and t - start < max_ns:
            ready = wait(conns)
            t = now()
            for conn in ready:
                conn.recv_bytes_into(buf)
                times = sent[conn]
                lat.append(t - times.pop(0))
                times.append(t)
                conn.send_bytes(payload)
                n += 1
        return n, t - start


def main():
    lib, scenario = sys.argv[1], sys.argv[2]
    size, workers, inflight = (int(a) for a in sys.argv[3:6])
    if len(sys.argv) > 6 and sys.argv[6] != "-":
        PEER_CPUS.extend(int(c) for c in sys.argv[6].split(","))
    ctx, wait = load(lib)
    kind = {"rtt": Rtt, "stream": Stream, "fanout": Fanout}[scenario]
    s = kind(ctx, wait, size, workers, inflight)
    pids = [os.getpid()] + [p.pid for p in s.procs]
    out = sys.stdout
    out.write("ready " + " ".join(str(p) for p in pids) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        lat = []
        n, ns = s.run(int(cmd[1]), int(cmd[2]), lat)
        out.write("done %d %d\n" % (n, ns))
        if cmd[3] == "1":
            out.write("lat " + " ".join(map(str, lat)) + "\n")
        out.flush()
    for p in s.procs:
        p.terminate()
    for p in s.procs:
        p.join(5)


if __name__ == "__main__":
    main()
