"""Python servers and clients for cqwire's server benchmarks.

Plain multiprocessing.connection, written the way a Python program would
use it. The C harness runs it with python3 -c (it is embedded in the
binary):

    accept-server PATH KEY   a Listener on the unix socket PATH: accept()
                             (the handshake runs inside), one echo, close,
                             one connection at a time
    echo-server PATH KEY     a Listener with a thread per connection, each
                             echoing every message until its peer closes
    accept-client PATH KEY SIZE
                             connect with Client(), send SIZE bytes, take
                             the echo, close, over and over; driven by the
                             harness over stdin/stdout:
        out: ready PID
        in:  run MAX_OPS MAX_NS WANT_LAT
        out: done OPS NS
             lat NS NS ...          (only if WANT_LAT is 1)
        in:  quit

KEY "-" means no authkey. Servers print their address ("unix:PATH") once
they listen, then serve until they are killed. Both listeners take a
backlog of 64, as cqwire-echo does (Listener's default is 1).
"""

import os
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener

BACKLOG = 64


def listen(path, key):
    lst = Listener(path, backlog=BACKLOG, authkey=key)
    sys.stdout.write("unix:%s\n" % path)
    sys.stdout.flush()
    return lst


def accept_server(path, key):
    lst = listen(path, key)
    while True:
        try:
            conn = lst.accept()
        except (OSError, EOFError, ValueError, AuthenticationError):
            continue  # a client that failed its handshake
        with conn:
            try:
                conn.send_bytes(conn.recv_bytes())
            except (OSError, EOFError):
                pass


def echo(conn):
    with conn:
        try:
            while True:
                conn.send_bytes(conn.recv_bytes())
        except (OSError, EOFError):
            pass


def echo_server(path, key):
    lst = listen(path, key)
    while True:
        try:
            conn = lst.accept()
        except (OSError, EOFError, ValueError, AuthenticationError):
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def accept_client(path, key, size):
    payload, now = bytes(size), time.perf_counter_ns
    out = sys.stdout
    out.write("ready %d\n" % os.getpid())
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        max_ops, max_ns = int(cmd[1]), int(cmd[2])
        lat = []
        start = t1 = now()
        n = 0
        while n < max_ops:
            t0 = t1
            with Client(path, authkey=key) as conn:
                conn.send_bytes(payload)
                if len(conn.recv_bytes()) != size:
                    out.write("error python client: a short echo\n")
                    out.flush()
                    return
            t1 = now()
            lat.append(t1 - t0)
            n += 1
            if t1 - start >= max_ns:
                break
        out.write("done %d %d\n" % (n, t1 - start))
        if cmd[3] == "1":
            out.write("lat " + " ".join(map(str, lat)) + "\n")
        out.flush()


def main():
    role, path, key = sys.argv[1], sys.argv[2], sys.argv[3]
    key = None if key == "-" else key.encode()
    if role == "accept-server":
        accept_server(path, key)
    elif role == "echo-server":
        echo_server(path, key)
    elif role == "accept-client":
        accept_client(path, key, int(sys.argv[4]))
    else:
        sys.exit("pyserve: unknown role " + role)


if __name__ == "__main__":
    main()
