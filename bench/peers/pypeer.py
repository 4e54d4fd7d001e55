"""Python peers for cqwire's benchmarks: multiprocessing, billiard, or
cqwire.connection (the project's Python module) under multiprocessing.

Both sides of a scenario are Python here, as in a Python program: this
process is the parent and forks its echo peer, receiver or workers with
the library's own Process and Pipe (cqwire: multiprocessing's Process,
cqwire.connection's Pipe and wait). The C harness drives it through
stdin/stdout (it is embedded in the binary and run with python3 -c):

    argv: LIB SCENARIO SIZE WORKERS INFLIGHT [PEER-CPUS [API [MODDIR
          [CHANNEL]]]]
          LIB is multiprocessing, billiard or cqwire; SCENARIO rtt,
          stream, fanout, or check (only import LIB's modules: exit 0, or
          print why not and exit 1);
          PEER-CPUS "1" or "1,2,3": pin the peers there (the harness has
          pinned this process to the parent's CPU already), "-": do not;
          API per-message (the default) or batch: stream with
          send_batch/recv_batch (cqwire only);
          MODDIR a build tree's python/ directory: its py<MAJOR><MINOR>
          subdirectory, if there is one, goes first on sys.path, "-": none;
          CHANNEL socket (Pipe(), the default) or pipe: rtt and stream
          over two Pipe(duplex=False), one each way
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


class Lib:
    """Process, Pipe and wait of one library."""

    def __init__(self, name, moddir):
        if name == "billiard":
            import billiard as mp
            from billiard.connection import Pipe, wait
        elif name == "cqwire":
            if moddir != "-":
                tag = "py%d%d" % sys.version_info[:2]
                if os.path.isdir(os.path.join(moddir, tag, "cqwire")):
                    sys.path.insert(0, os.path.join(moddir, tag))
            import multiprocessing as mp
            from cqwire.connection import Pipe, wait
        else:
            import multiprocessing as mp
            from multiprocessing.connection import Pipe, wait
        self.Process = mp.get_context("fork").Process
        self.Pipe, self.wait = Pipe, wait


PEER_CPUS = []


def pinned(idx, fn, *args):
    """Run fn(*args) in a peer, on its CPU if pinning (as the C peers)."""
    if PEER_CPUS:
        os.sched_setaffinity(0, {PEER_CPUS[idx % len(PEER_CPUS)]})
    fn(*args)


def pair(lib, pipes):
    """(parent's receiving end, parent's sending end), and the child's.

    With pipes, two Pipe(duplex=False) as billiard's pool uses them;
    else one duplex Pipe(), whose ends both send and receive.
    """
    if not pipes:
        conn, child = lib.Pipe()
        return (conn, conn), (child, child)
    up_r, up_w = lib.Pipe(duplex=False)  # child to parent
    down_r, down_w = lib.Pipe(duplex=False)  # parent to child
    return (up_r, down_w), (down_r, up_w)


def close_ends(ends):
    for c in set(ends):
        c.close()


def echo(rconn, wconn, size):
    buf = bytearray(size)
    try:
        while True:
            n = rconn.recv_bytes_into(buf)
            wconn.send_bytes(buf, 0, n)
    except (EOFError, OSError):
        pass


def receiver(rconn, wconn, size):
    buf = bytearray(max(size, 8))
    count = 0
    try:
        while True:
            n = rconn.recv_bytes_into(buf)
            if n:
                count += 1
            else:
                wconn.send_bytes(count.to_bytes(8, "little"))
    except (EOFError, OSError):
        pass


def batch_len(size):
    """Messages per batch, as the C transports (CQWB_BATCH_MAX, _BYTES)."""
    return max(1, min(256, (4 << 20) // max(size, 1)))


def batch_receiver(rconn, wconn, size):
    """recv_batch() of what is there; the empty message ends a step.

    The sender waits for the count after its empty message, so that
    message is always the last one a recv_batch() returns.
    """
    recv, most = rconn.recv_batch, batch_len(size)
    count = 0
    try:
        while True:
            got = recv(most)
            count += len(got)
            if not got[-1]:
                count -= 1
                wconn.send_bytes(count.to_bytes(8, "little"))
    except (EOFError, OSError):
        pass


class Rtt:
    def __init__(self, lib, size, workers, inflight, pipes=False):
        (self.rconn, self.wconn), child = pair(lib, pipes)
        self.procs = [
            lib.Process(
                target=pinned, args=(0, echo, *child, size), daemon=True
            )
        ]
        self.procs[0].start()
        close_ends(child)
        self.payload = bytes(size)
        self.buf = bytearray(size)

    def run(self, max_ops, max_ns, lat):
        send, recv = self.wconn.send_bytes, self.rconn.recv_bytes_into
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
    def __init__(self, lib, size, workers, inflight, pipes=False):
        (self.rconn, self.wconn), child = pair(lib, pipes)
        self.procs = [
            lib.Process(
                target=pinned, args=(0, receiver, *child, size), daemon=True
            )
        ]
        self.procs[0].start()
        close_ends(child)
        self.payload = bytes(size)
        self.every = 64 if size < 65536 else 1

    def run(self, max_ops, max_ns, lat):
        send, now = self.wconn.send_bytes, time.perf_counter_ns
        payload, every = self.payload, self.every
        start = now()
        n = 0
        while n < max_ops:
            send(payload)
            n += 1
            if n % every == 0 and now() - start >= max_ns:
                break
        send(b"")
        self.rconn.recv_bytes()
        return n, now() - start


class BatchStream:
    """The stream with send_batch() of batch_len() messages at a time."""

    def __init__(self, lib, size, workers, inflight, pipes=False):
        (self.rconn, self.wconn), child = pair(lib, pipes)
        self.procs = [
            lib.Process(
                target=pinned,
                args=(0, batch_receiver, *child, size),
                daemon=True,
            )
        ]
        self.procs[0].start()
        close_ends(child)
        self.msgs = [bytes(size)] * batch_len(size)

    def run(self, max_ops, max_ns, lat):
        send, now = self.wconn.send_batch, time.perf_counter_ns
        msgs, most = self.msgs, len(self.msgs)
        start = now()
        n = 0
        while n < max_ops:
            m = min(most, max_ops - n)
            send(msgs if m == most else msgs[:m])
            n += m
            if now() - start >= max_ns:
                break
        self.wconn.send_bytes(b"")
        self.rconn.recv_bytes()
        return n, now() - start


class Fanout:
    """A pool parent: wait() on every worker, one response then one request."""

    def __init__(self, lib, size, workers, inflight, pipes=False):
        self.wait = lib.wait
        self.conns, self.procs, self.sent = [], [], {}
        self.payload = bytes(size)
        self.buf = bytearray(size)
        for i in range(workers):
            conn, child = lib.Pipe()
            p = lib.Process(
                target=pinned, args=(i, echo, child, child, size), daemon=True
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
    args = sys.argv[1:]
    args += ["-", "per-message", "-", "socket"][len(args) - 5 :]
    name, scenario = args[0], args[1]
    size, workers, inflight = (int(a) for a in args[2:5])
    if args[5] != "-":
        PEER_CPUS.extend(int(c) for c in args[5].split(","))
    batch = args[6] == "batch"
    if scenario == "check":
        try:
            lib = Lib(name, args[7])
            if batch and not hasattr(lib.Pipe()[0], "send_batch"):
                raise ImportError("no send_batch/recv_batch in this build")
        except ImportError as e:
            print(e)
            sys.exit(1)
        return
    lib = Lib(name, args[7])
    kinds = {
        "rtt": Rtt,
        "stream": BatchStream if batch else Stream,
        "fanout": Fanout,
    }
    s = kinds[scenario](lib, size, workers, inflight, args[8] == "pipe")
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
