"""The Python side of test-interop.c.

Run by every interpreter under test (CPython 3.11-3.13, and /usr/bin/python3
with billiard), so it sticks to what all of them have.  Usage:

    peer.py [--lib mp|billiard] MODE ARGS...

Addresses use cqwire's syntax ("tcp:host:port", "unix:/path", "unix:@name")
and are converted here.  Keys are hex ("--key HEX"; "--key ''" is the empty
key, no --key means authkey=None).

Exit codes: 0 success, 3 authentication failed (AuthenticationError, the
line "AUTHFAIL ..." on stdout), 4 a check failed (details on stderr),
anything else a crash.  The C side reads the stdout lines.
"""

import os
import signal
import struct
import subprocess
import sys

LIB = 'mp'
if len(sys.argv) > 2 and sys.argv[1] == '--lib':
    LIB = sys.argv[2]
    del sys.argv[1:3]

if LIB == 'billiard':
    import billiard.connection as mpc
    import billiard.reduction as red
    from billiard.exceptions import AuthenticationError
else:
    import multiprocessing.connection as mpc
    import multiprocessing.reduction as red
    from multiprocessing import AuthenticationError

# The message sizes of the byte-for-byte checks (must match the C side):
# empty, one byte, the largest single-write frame (WIRE 2.2), the smallest
# split one, and 1 MiB.
SIZES = [0, 1, 16384, 16385, 1 << 20]

# The object whose pickle WIRE 2.9 lists; the C side sends those bytes.
PING = {'op': 'ping', 'n': 42}

WIRE_HELLO = bytes.fromhex('0000000568656c6c6f')


def fail(msg):
    sys.stderr.write('peer.py[%s %s]: %s\n' % (LIB, sys.version.split()[0],
                                               msg))
    sys.stderr.flush()
    sys.exit(4)


def out(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def pattern(n, k):
    """Byte i of message k is (i*31 + k*7) & 0xff (as cqwire-echo)."""
    base = bytes(((i * 31 + k * 7) & 0xff) for i in range(256))
    reps = n // 256 + 1
    return (base * reps)[:n]


def parse_address(s):
    if s.startswith('tcp:'):
        host, _, port = s[4:].rpartition(':')
        if host.startswith('['):
            host = host[1:-1]
        return (host, int(port))
    if s.startswith('unix:'):
        s = s[5:]
    if s.startswith('@'):
        return '\0' + s[1:]
    return s


def format_address(a):
    if isinstance(a, tuple):
        return 'tcp:%s:%d' % (a[0], a[1])
    if isinstance(a, bytes):
        a = a.decode('latin-1')
    if a.startswith('\0'):
        return 'unix:@' + a[1:]
    return 'unix:' + a


def take_key(args):
    """Remove "--key HEX" from args; return the key (None if absent)."""
    if '--key' in args:
        i = args.index('--key')
        key = bytes.fromhex(args[i + 1])
        del args[i:i + 2]
        return key
    return None


# Lengths of the handshake frames this side sent ("s") and received ("r"),
# so that the C side can check which variant of the protocol was spoken
# (WIRE 4.3-4.5): e.g. "r59 s40 r9 s59 r40 s9".
AUTHLOG = []
_logging = [False]


def _install_auth_log():
    cls = mpc.Connection
    orig_send = cls.send_bytes
    orig_recv = cls.recv_bytes

    def send_bytes(self, buf, offset=0, size=None):
        if _logging[0]:
            n = len(memoryview(buf).cast('B'))
            if size is not None:
                n = size
            else:
                n -= offset
            AUTHLOG.append('s%d' % n)
        return orig_send(self, buf, offset, size)

    def recv_bytes(self, maxlength=None):
        b = orig_recv(self, maxlength)
        if _logging[0]:
            AUTHLOG.append('r%d' % len(b))
        return b

    cls.send_bytes = send_bytes
    cls.recv_bytes = recv_bytes


_install_auth_log()


def recv_exact_raw(fd, n):
    b = b''
    while len(b) < n:
        chunk = os.read(fd, n - len(b))
        if not chunk:
            fail('EOF after %d of %d raw bytes' % (len(b), n))
        b += chunk
    return b


def send_raw(conn, data):
    """Write bytes to the connection's descriptor, bypassing framing."""
    fd = conn.fileno()
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def conversation(conn):
    """The Python half of the C side's run_conversation()."""
    # 1. Python -> C: exact bytes of every size.
    for k, n in enumerate(SIZES):
        conn.send_bytes(pattern(n, k))
    # 2. C -> Python: exact bytes of every size.
    for k, n in enumerate(SIZES):
        got = conn.recv_bytes()
        want = pattern(n, k + 100)
        if got != want:
            fail('message %d: got %d bytes, want %d (equal prefix? %s)' %
                 (k, len(got), n, got[:64] == want[:64]))
    # 3. Pickles: C compares them with WIRE 2.9.
    conn.send(None)
    conn.send('ok')
    conn.send(PING)
    # 4. A pickle built by C is an object here.
    obj = conn.recv()
    if obj != PING:
        fail('recv() of the C-sent pickle gave %r' % (obj,))
    # 5. Frames with the large-frame marker (CPython only writes them for
    #    payloads over 2 GiB; here they are written by hand, small).
    send_raw(conn, b'\xff\xff\xff\xff' + struct.pack('!Q', 5) + b'large')
    send_raw(conn, b'\xff\xff\xff\xff' + struct.pack('!Q', 0))
    # A negative length other than -1 reads as an empty message (WIRE 2.3).
    send_raw(conn, b'\xff\xff\xff\xfe')
    # 6. The exact wire bytes of a C send_bytes(b'hello').
    raw = recv_exact_raw(conn.fileno(), len(WIRE_HELLO))
    if raw != WIRE_HELLO:
        fail('C send_bytes(b"hello") on the wire: %s' % raw.hex())
    # 7. A C batch (one gather write) is ordinary frames.
    for want in (b'', b'batch', pattern(20000, 7)):
        if conn.recv_bytes() != want:
            fail('cqw_send_batch() message of %d bytes differs' % len(want))
    # 8. Three for cqw_recv_batch().
    conn.send_bytes(b'x')
    conn.send_bytes(b'')
    conn.send_bytes(b'yz')
    # 9. The loop API: C has a SEND and a RECV op in flight together.
    got = conn.recv_bytes()
    if got != b'loop-send':
        fail('loop SEND op delivered %r' % got)
    conn.send_bytes(b'loop-reply')
    # 10. Goodbye; C then sees EOF.
    conn.send_bytes(b'bye')
    out('DONE')


def report_auth():
    out('AUTH ' + ' '.join(AUTHLOG))


def connect(address, key):
    _logging[0] = True
    try:
        conn = mpc.Client(parse_address(address), authkey=key)
    except AuthenticationError as e:
        out('AUTHFAIL %s' % e)
        sys.exit(3)
    finally:
        _logging[0] = False
    report_auth()
    return conn


def listen_accept(address, key):
    listener = mpc.Listener(parse_address(address), authkey=key)
    out('ADDR ' + format_address(listener.address))
    _logging[0] = True
    try:
        conn = listener.accept()
    except AuthenticationError as e:
        out('AUTHFAIL %s' % e)
        sys.exit(3)
    except (EOFError, OSError) as e:
        out('DROPPED %s: %s' % (type(e).__name__, e))
        sys.exit(5)
    finally:
        _logging[0] = False
    report_auth()
    return listener, conn


def close_listener(listener):
    try:
        listener.close()
    except ValueError:
        pass  # billiard cannot unlink abstract names (WIRE 3.2)


def mode_client(args):
    key = take_key(args)
    conn = connect(args[0], key)
    conversation(conn)
    conn.close()


def mode_listen(args):
    key = take_key(args)
    listener, conn = listen_accept(args[0], key)
    conversation(conn)
    conn.close()
    close_listener(listener)


def mode_echo_listen(args):
    """Accept one connection and echo until EOF (for cqwire-echo call)."""
    key = take_key(args)
    listener, conn = listen_accept(args[0], key)
    n = 0
    while True:
        try:
            b = conn.recv_bytes()
        except EOFError:
            break
        conn.send_bytes(b)
        n += 1
    out('ECHOED %d' % n)
    conn.close()
    close_listener(listener)


def mode_echo_client(args):
    """Talk to cqwire-echo serve: echo checks, or an oversized message."""
    key = take_key(args)
    oversize = None
    if '--oversize' in args:
        i = args.index('--oversize')
        oversize = int(args[i + 1])
        del args[i:i + 2]
    conn = connect(args[0], key)
    if oversize is not None:
        # The server drops us after the header: the rest of the payload
        # may already meet a closed socket.
        try:
            conn.send_bytes(b'x' * oversize)
            b = conn.recv_bytes()
            fail('oversized message came back (%d bytes)' % len(b))
        except (EOFError, OSError) as e:
            out('DROPPED %s' % type(e).__name__)
        return
    for k, n in enumerate(SIZES):
        msg = pattern(n, k)
        conn.send_bytes(msg)
        if conn.recv_bytes() != msg:
            fail('echo of %d bytes differs' % n)
    conn.send(PING)
    if conn.recv() != PING:
        fail('echo of a pickle differs')
    conn.close()
    out('ECHO OK %d' % (len(SIZES) + 1))


def handles(conn):
    """Descriptors both ways (WIRE 8.1), between framed messages."""
    # Python -> C: the read end of a pipe holding a message, at fd >= 256
    # as in test_large_fd_transfer.
    r, w = os.pipe()
    os.write(w, b'from python')
    os.close(w)
    big = os.dup2(r, 300)
    os.close(r)
    conn.send_bytes(b'fd-next')
    red.send_handle(conn, big, os.getpid())
    os.close(big)
    # C -> Python.
    if conn.recv_bytes() != b'fd-next':
        fail('expected fd-next from C')
    fd = red.recv_handle(conn)
    data = b''
    while True:
        chunk = os.read(fd, 100)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    if data != b'from c':
        fail('the descriptor from C reads %r' % data)
    conn.send_bytes(b'done')
    out('HANDLES OK')


def mode_handles_client(args):
    conn = connect(args[0], None)
    handles(conn)
    conn.close()


def mode_handles_listen(args):
    listener, conn = listen_accept(args[0], None)
    handles(conn)
    conn.close()
    close_listener(listener)


def mode_worker(args):
    """A pool worker on an inherited descriptor (the C parent forked us)."""
    fd = int(args[0])
    conn = mpc.Connection(fd)
    pid = os.getpid()
    # The first message is written with the large-frame marker: the C
    # parent must accept it even with CQW_NO_LARGE_FRAMES set.
    ready = b'ready %d' % pid
    send_raw(conn, b'\xff\xff\xff\xff' + struct.pack('!Q', len(ready)) +
             ready)
    n = 0
    while True:
        try:
            task = conn.recv_bytes()
        except EOFError:
            break
        conn.send_bytes(b'%d:' % pid + task[::-1])
        n += 1
    conn.close()
    sys.exit(0 if n > 0 else 4)


def mode_pool(args):
    """A Python parent with Pipe() pairs and C worker processes."""
    exe = args[0]
    nworkers = int(args[1])
    ntasks = int(args[2])
    workers = []
    for i in range(nworkers):
        if i % 2 == 0:
            parent, child = mpc.Pipe()
            fds = [child.fileno()]
            cmd = [exe, 'worker', str(fds[0])]
            ends = [child]
            rd = wr = parent
        else:
            # Two one-way pipes, as Pipe(duplex=False) gives (reader, writer).
            task_r, task_w = mpc.Pipe(duplex=False)
            res_r, res_w = mpc.Pipe(duplex=False)
            fds = [task_r.fileno(), res_w.fileno()]
            cmd = [exe, 'worker', str(fds[0]), str(fds[1])]
            ends = [task_r, res_w]
            rd, wr = res_r, task_w
        proc = subprocess.Popen(cmd, pass_fds=fds)
        for e in ends:
            e.close()
        workers.append({'proc': proc, 'rd': rd, 'wr': wr, 'busy': None})
    for w in workers:
        if not w['rd'].poll(10):
            fail('no ready message from C worker %d' % w['proc'].pid)
        msg = w['rd'].recv_bytes()
        if msg != b'ready %d' % w['proc'].pid:
            fail('bad ready message %r' % msg)
    # One task in flight per worker, as billiard's pool does.
    sent = 0
    done = 0
    by_reader = {}
    for w in workers:
        by_reader[w['rd']] = w
    while done < ntasks:
        for w in workers:
            if w['busy'] is None and sent < ntasks:
                task = pattern(1000 + sent * 997, sent)
                w['wr'].send_bytes(task)
                w['busy'] = task
                sent += 1
        ready = mpc.wait(list(by_reader), 10)
        if not ready:
            fail('C workers stopped answering')
        for r in ready:
            w = by_reader[r]
            reply = r.recv_bytes()
            want = b'%d:' % w['proc'].pid + w['busy'][::-1]
            if reply != want:
                fail('worker %d: wrong reply' % w['proc'].pid)
            w['busy'] = None
            done += 1
    for w in workers:
        w['wr'].close()
        if w['rd'] is not w['wr']:
            w['rd'].close()
    for w in workers:
        rc = w['proc'].wait(10)
        if rc != 0:
            fail('C worker %d exited %d' % (w['proc'].pid, rc))
    out('POOL OK %d %d' % (nworkers, done))


def mode_abstract_reject(args):
    """billiard cannot use abstract addresses (WIRE 3.2): show how."""
    name = '\0' + args[0]
    listener = mpc.Listener(name)
    addr = listener.address
    try:
        mpc.Client(addr)
        out('CLIENT ACCEPTED %r' % (addr,))
    except ValueError:
        out('CLIENT REJECTED')
    try:
        listener.close()
        out('CLOSE OK')
    except ValueError:
        out('CLOSE REJECTED')


def mode_version(args):
    out('%d.%d %s' % (sys.version_info[0], sys.version_info[1], LIB))


MODES = {
    'client': mode_client,
    'listen': mode_listen,
    'echo-listen': mode_echo_listen,
    'echo-client': mode_echo_client,
    'handles-client': mode_handles_client,
    'handles-listen': mode_handles_listen,
    'worker': mode_worker,
    'pool': mode_pool,
    'abstract-reject': mode_abstract_reject,
    'version': mode_version,
}


def main():
    # Nothing here may hang the test: SIGALRM's default action kills us.
    signal.alarm(30)
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        sys.stderr.write('usage: peer.py [--lib mp|billiard] MODE ARGS\n')
        sys.exit(2)
    MODES[sys.argv[1]](sys.argv[2:])


if __name__ == '__main__':
    main()
