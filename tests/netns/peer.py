"""The Python end of scripts/netns-test.sh.

Runs in one network namespace against cqwire-echo in the other, with
multiprocessing.connection and an authkey (Python 3.11 answers the legacy
MD5 challenge, 3.12 and later the {sha256} one).  Usage:

    peer.py client ADDRESS --key-env VAR [--messages N] [--pings N]
            [--window N] [--seed N] [--timeout S]
    peer.py server HOST --key-env VAR --conns N [--timeout S]

client: connect to "tcp:HOST:PORT" (cqwire-echo serve) and send --messages
    messages of many sizes (a fixed list from 0 B to 1 MiB, then sizes
    drawn log-uniformly from the same range), up to --window of them in
    flight (a sender thread and this one receiving), then --pings ping-pongs
    of 64 B, each timed.  Every echo is compared byte for byte with what was
    sent; messages of 8 bytes or more also carry their sequence number and
    the CRC-32 of the rest, checked on the echo by itself.  Prints one line:

        RESULT messages=N bytes=N intact=N rtt_min_us=F rtt_p50_us=F
               rtt_p99_us=F rtt_max_us=F seconds=F

    (bytes: payload bytes sent, each also received back).

server: listen on HOST with a port the system picks, print "LISTENING
    tcp:HOST:PORT", then serve --conns connections one after the other
    (cqwire-echo call), echoing every message after checking it is
    cqwire-echo's pattern for its position (byte i of message k is
    (i*31 + k*7) & 0xff).  Prints one line:

        SERVED conns=N messages=N bytes=N bad=N

Exit status: 0 all intact, 4 a check failed (details on stderr), 5 out of
time (--timeout, default 120 s); anything else is a crash.
"""

import collections
import math
import os
import random
import signal
import struct
import sys
import threading
import time
import zlib

import multiprocessing.connection as mpc

# Sizes every client run sends first: the edges of a frame header and of
# a 1460-byte TCP segment, of Python's one-write limit (16 KiB) and of
# the 64 KiB that many buffers use, then 1 MiB.
FIXED_SIZES = [0, 1, 2, 7, 8, 9, 63, 64, 100, 1000, 1459, 1460, 1461,
               4095, 4096, 16383, 16384, 16385, 65535, 65536, 65537,
               100000, 262144, 524288, 1 << 20]
MAX_SIZE = 1 << 20
PING_SIZE = 64


def fail(msg):
    sys.stderr.write('peer.py[%s]: %s\n' % (sys.version.split()[0], msg))
    sys.stderr.flush()


def out(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def out_of_time(signum, frame):
    fail('out of time')
    os._exit(5)


def parse(argv):
    if len(argv) < 2:
        fail('usage: peer.py client|server ADDRESS OPTIONS')
        sys.exit(2)
    opts = {'mode': argv[0], 'address': argv[1], 'key-env': None,
            'messages': '200', 'pings': '1000', 'window': '8',
            'seed': '1', 'timeout': '120', 'conns': '1'}
    i = 2
    while i < len(argv):
        k = argv[i]
        if not k.startswith('--') or k[2:] not in opts or i + 1 >= len(argv):
            fail('bad option %r' % k)
            sys.exit(2)
        opts[k[2:]] = argv[i + 1]
        i += 2
    if opts['key-env'] is None:
        fail('--key-env is required')
        sys.exit(2)
    return opts


def tcp_address(s):
    if not s.startswith('tcp:'):
        fail('not a tcp: address: %r' % s)
        sys.exit(2)
    host, _, port = s[4:].rpartition(':')
    return (host, int(port))


def make_message(rng, k, n):
    """Message k of n bytes: seq and CRC-32 of the body, then the body."""
    if n < 8:
        return rng.randbytes(n)
    body = rng.randbytes(n - 8)
    return struct.pack('<II', k & 0xffffffff, zlib.crc32(body)) + body


def check_echo(k, sent, echo):
    """None if echo is sent, intact; else what is wrong with it."""
    if len(echo) != len(sent):
        return 'length %d, sent %d' % (len(echo), len(sent))
    if len(echo) >= 8:
        seq, crc = struct.unpack_from('<II', echo)
        if seq != k & 0xffffffff:
            return 'sequence %d in the echo' % seq
        if zlib.crc32(memoryview(echo)[8:]) != crc:
            return 'CRC-32 of the echo does not match its header'
    if echo != sent:
        return 'bytes differ'
    return None


def sizes(rng, count):
    """The fixed list, then log-uniform sizes in [0, MAX_SIZE]."""
    out_sizes = FIXED_SIZES[:count]
    while len(out_sizes) < count:
        out_sizes.append(int(math.exp(rng.uniform(0, math.log(MAX_SIZE + 1))))
                         - 1)
    return out_sizes


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float('nan')
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def client(opts):
    key = os.environb[opts['key-env'].encode()]
    count = int(opts['messages'])
    pings = int(opts['pings'])
    window = threading.Semaphore(max(1, int(opts['window'])))
    rng = random.Random(int(opts['seed']))
    plan = sizes(rng, count)
    conn = mpc.Client(tcp_address(opts['address']), authkey=key)
    in_flight = collections.deque()
    lock = threading.Lock()
    send_error = []
    t0 = time.monotonic()

    def sender():
        try:
            for k, n in enumerate(plan):
                msg = make_message(rng, k, n)
                window.acquire()
                with lock:
                    in_flight.append(msg)
                conn.send_bytes(msg)
        except Exception as e:  # reported by the receiving side
            send_error.append(repr(e))

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    intact = 0
    total = 0
    bad = 0
    for k in range(count):
        try:
            echo = conn.recv_bytes()
        except Exception as e:
            fail('message %d: receive failed: %r (send: %s)'
                 % (k, e, send_error))
            return 4
        with lock:
            sent = in_flight.popleft()
        window.release()
        why = check_echo(k, sent, echo)
        if why is not None:
            fail('message %d (%d B): %s' % (k, len(sent), why))
            bad += 1
        else:
            intact += 1
        total += len(sent)
    th.join()
    if send_error:
        fail('send failed: %s' % send_error[0])
        return 4
    rtts = []
    for k in range(count, count + pings):
        msg = make_message(rng, k, PING_SIZE)
        t = time.perf_counter_ns()
        conn.send_bytes(msg)
        echo = conn.recv_bytes()
        rtts.append((time.perf_counter_ns() - t) / 1000.0)
        why = check_echo(k, msg, echo)
        if why is not None:
            fail('ping %d: %s' % (k - count, why))
            bad += 1
        else:
            intact += 1
        total += len(msg)
    conn.close()
    rtts.sort()
    out('RESULT messages=%d bytes=%d intact=%d rtt_min_us=%.1f '
        'rtt_p50_us=%.1f rtt_p99_us=%.1f rtt_max_us=%.1f seconds=%.2f'
        % (count + pings, total, intact,
           rtts[0] if rtts else float('nan'), percentile(rtts, 50),
           percentile(rtts, 99), rtts[-1] if rtts else float('nan'),
           time.monotonic() - t0))
    return 0 if bad == 0 and intact == count + pings else 4


def pattern(n, k):
    """cqwire-echo's message k of n bytes: byte i is (i*31 + k*7) & 0xff."""
    base = bytes(((i * 31 + k * 7) & 0xff) for i in range(256))
    return (base * (n // 256 + 1))[:n]


def server(opts):
    key = os.environb[opts['key-env'].encode()]
    conns = int(opts['conns'])
    listener = mpc.Listener((opts['address'], 0), authkey=key)
    host, port = listener.address
    out('LISTENING tcp:%s:%d' % (host, port))
    messages = 0
    total = 0
    bad = 0
    for c in range(conns):
        try:
            conn = listener.accept()
        except Exception as e:
            fail('connection %d: accept failed: %r' % (c, e))
            return 4
        k = 0
        while True:
            try:
                msg = conn.recv_bytes()
            except EOFError:
                break
            if msg != pattern(len(msg), k):
                fail('connection %d message %d (%d B): not the pattern'
                     % (c, k, len(msg)))
                bad += 1
            conn.send_bytes(msg)
            messages += 1
            total += len(msg)
            k += 1
        conn.close()
    listener.close()
    out('SERVED conns=%d messages=%d bytes=%d bad=%d'
        % (conns, messages, total, bad))
    return 0 if bad == 0 else 4


def main():
    opts = parse(sys.argv[1:])
    # Bounded: whatever the network does, this process ends in time.
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(opts['timeout']))
    if opts['mode'] == 'client':
        return client(opts)
    if opts['mode'] == 'server':
        return server(opts)
    fail('unknown mode %r' % opts['mode'])
    return 2


if __name__ == '__main__':
    sys.exit(main())
