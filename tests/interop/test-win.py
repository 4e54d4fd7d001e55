"""Cross-platform interop (issue 8, item 7): the Windows build's
cqwire-echo.exe under wine against Linux peers, over TCP on 127.0.0.1.

    test-win.py PEER       PEER: py311 (python3) or py312 (pyenv)

1. cqwire-echo.exe serve tcp:127.0.0.1:0 (wine) serves Linux CPython
   clients (peer.py echo-client) with an authkey: two at once, a wrong key
   (refused, the server says so once), a message over --max-size (the peer
   is dropped, the server goes on serving). The handshake lengths say which
   auth form was spoken: 3.11 answers the {sha256} challenge with a raw
   HMAC-MD5 and challenges with 20 legacy bytes, 3.12 speaks {sha256} both
   ways (WIRE.md 4.5).
2. A Linux cqwire-echo serve serves cqwire-echo.exe call (wine), with the
   right key and a wrong one.
3. A Linux Python Listener (peer.py echo-listen) serves cqwire-echo.exe
   call: the Windows side answers that interpreter's challenge form.

Environment: CQW_ECHO (the Linux cqwire-echo), CQW_WIN_ECHO (cqwire-echo.exe
of the mingw build), CQW_WINE_RUN (scripts/wine-run.sh), CQW_WINEPREFIX (a
prefix of this build's own), CQW_REQUIRE_PEERS (comma list: a missing PEER
fails instead of skipping). Exit 0 pass, 1 fail, 77 skip (reason on stdout).
"""

import glob
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_PY = os.path.join(HERE, 'peer.py')
KEY = 'secret'
KEY_HEX = KEY.encode().hex()
WRONG_HEX = b'wrong!'.hex()
KEY_ENV = 'CQW_T_KEY'
# A wine start on a loaded 2-core machine can take seconds.
PROC_TIMEOUT = 120

# The handshake frames peer.py logs (its "AUTH" line): received / sent
# lengths as a client of cqwire-echo serve (a {sha256} challenge, 59).
AUTH_AS_CLIENT = {
    'py311': 'r59 s16 r9 s31 r16 s9',
    'py312': 'r59 s40 r9 s59 r40 s9',
}
# What cqwire-echo call answers a Python Listener's challenge with (the
# server's "AUTH" line, as the listener sees it).
AUTH_AS_SERVER = {
    'py311': 's31 r16 s9 r59 s16 r9',
    'py312': 's59 r40 s9 r59 s40 r9',
}

failures = []


def note(msg):
    sys.stdout.write(msg + '\n')
    sys.stdout.flush()


def check(cond, what):
    if cond:
        note('ok: ' + what)
    else:
        note('FAIL: ' + what)
        failures.append(what)
    return cond


def skip_or_fail(peer, why):
    required = os.environ.get('CQW_REQUIRE_PEERS', '')
    if peer in [p.strip() for p in required.split(',')]:
        note('FAIL: %s is required (CQW_REQUIRE_PEERS) but %s' % (peer, why))
        sys.exit(1)
    note('SKIP: ' + why)
    sys.exit(77)


def find_python(peer):
    if peer == 'py311':
        want, exe = '3.11', shutil.which('python3')
    elif peer == 'py312':
        want = '3.12'
        root = os.environ.get('PYENV_ROOT')
        if not root:
            try:
                root = subprocess.run(['pyenv', 'root'], capture_output=True,
                                      text=True, timeout=10).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                root = ''
        if not root:
            root = os.path.expanduser('~/.pyenv')
        found = sorted(glob.glob(os.path.join(root, 'versions', want + '.*',
                                              'bin', 'python3')))
        exe = found[-1] if found else None
    else:
        note('usage: test-win.py py311|py312')
        sys.exit(2)
    if exe is None:
        skip_or_fail(peer, 'no Python %s interpreter' % want)
    got = subprocess.run([exe, '-c', 'import sys; print("%d.%d" % '
                          'sys.version_info[:2])'], capture_output=True,
                         text=True, timeout=30).stdout.strip()
    if got != want:
        skip_or_fail(peer, '%s is Python %s, not %s' % (exe, got, want))
    return exe


class Proc:
    """A child with its stdout read line by line in a thread."""

    def __init__(self, argv, env=None):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.err = b''
        self.cond = threading.Condition()
        self.t_out = threading.Thread(target=self._read_out, daemon=True)
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_out.start()
        self.t_err.start()

    def _read_out(self):
        for raw in self.p.stdout:
            # A Windows program's text-mode stdout ends lines with \r\n.
            line = raw.decode('utf-8', 'replace').rstrip('\r\n')
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def _read_err(self):
        self.err = self.p.stderr.read()

    def first_line(self, timeout=PROC_TIMEOUT):
        with self.cond:
            self.cond.wait_for(lambda: self.lines, timeout)
            return self.lines[0] if self.lines else None

    def finish(self, timeout=PROC_TIMEOUT):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
            note('timed out: ' + ' '.join(self.argv))
            rc = 'timeout'
        self.t_out.join(10)
        self.t_err.join(10)
        return rc

    def line_with(self, prefix):
        for line in self.lines:
            if line is not None and line.startswith(prefix):
                return line
        return None

    def stderr_text(self):
        return self.err.decode('utf-8', 'replace').replace('\r\n', '\n')


def env_with_key(value):
    env = dict(os.environ)
    env[KEY_ENV] = value
    return env


def wine(argv):
    return [RUN, '--prefix', PREFIX] + argv


def py(python, *args):
    return Proc([python, PEER_PY] + list(args))


def test_win_serves_python(peer, python):
    """cqwire-echo.exe serve under wine, Linux Python clients."""
    srv = Proc(wine([WIN_ECHO, 'serve', 'tcp:127.0.0.1:0', '--authkey-env',
                     KEY_ENV, '--max-size', '2000000']),
               env=env_with_key(KEY))
    addr = srv.first_line()
    if not check(addr is not None and addr.startswith('tcp:127.0.0.1:'),
                 'cqwire-echo.exe serve printed its address (%r)' % addr):
        srv.p.kill()
        srv.finish()
        note('server stderr:\n' + srv.stderr_text())
        return
    a = py(python, 'echo-client', addr, '--key', KEY_HEX)
    b = py(python, 'echo-client', addr, '--key', KEY_HEX)
    for name, c in (('first', a), ('second', b)):
        rc = c.finish()
        check(rc == 0 and c.line_with('ECHO OK ') is not None,
              '%s client at once: every size and a pickle echoed '
              '(rc %s, stderr %r)' % (name, rc, c.stderr_text()))
        auth = c.line_with('AUTH ')
        check(auth == 'AUTH ' + AUTH_AS_CLIENT[peer],
              '%s client spoke the %s auth form (%r)' % (name, peer, auth))
    bad = py(python, 'echo-client', addr, '--key', WRONG_HEX)
    rc = bad.finish()
    check(rc == 3 and bad.line_with('AUTHFAIL ') is not None,
          'a wrong key is refused (rc %s)' % rc)
    big = py(python, 'echo-client', addr, '--key', KEY_HEX, '--oversize',
             '2000001')
    rc = big.finish()
    check(rc == 0 and big.line_with('DROPPED ') is not None,
          'a message over --max-size drops the peer (rc %s, %r)' %
          (rc, big.lines))
    again = py(python, 'echo-client', addr, '--key', KEY_HEX)
    rc = again.finish()
    check(rc == 0 and again.line_with('ECHO OK ') is not None,
          'the server still serves after the bad peers (rc %s)' % rc)
    srv.p.terminate()
    srv.finish()
    text = srv.stderr_text()
    drops = text.count('cqwire-echo: dropped peer: ')
    check(drops == 2 and 'authentication failed' in text,
          'the server said one line per bad peer: %r' % text)


def test_linux_serves_win(peer):
    """Linux cqwire-echo serve, cqwire-echo.exe call under wine."""
    srv = Proc([ECHO, 'serve', 'tcp:127.0.0.1:0', '--authkey-env', KEY_ENV],
               env=env_with_key(KEY))
    addr = srv.first_line()
    if not check(addr is not None and addr.startswith('tcp:127.0.0.1:'),
                 'cqwire-echo serve printed its address (%r)' % addr):
        srv.p.kill()
        srv.finish()
        return
    for count, size in (('200', '3000'), ('4', str(1 << 20)), ('3', '0')):
        call = Proc(wine([WIN_ECHO, 'call', addr, '--authkey-env', KEY_ENV,
                          '--count', count, '--size', size]),
                    env=env_with_key(KEY))
        rc = call.finish()
        want = 'cqwire-echo: %s/%s messages of %s bytes echoed intact' % (
            count, count, size)
        check(rc == 0 and call.line_with(want) is not None,
              'cqwire-echo.exe call: %s (rc %s, out %r, err %r)' %
              (want, rc, call.lines, call.stderr_text()))
    call = Proc(wine([WIN_ECHO, 'call', addr, '--authkey-env', KEY_ENV]),
                env=env_with_key('wrong!'))
    rc = call.finish()
    check(rc == 1 and 'authentication failed' in call.stderr_text(),
          'cqwire-echo.exe call with a wrong key fails and says why '
          '(rc %s, %r)' % (rc, call.stderr_text()))
    srv.p.terminate()
    srv.finish()
    check('authentication failed' in srv.stderr_text(),
          'the Linux server dropped the wrong key (%r)' % srv.stderr_text())


def test_python_serves_win(peer, python):
    """A Linux Python Listener, cqwire-echo.exe call under wine."""
    lst = py(python, 'echo-listen', 'tcp:127.0.0.1:0', '--key', KEY_HEX)
    line = lst.first_line()
    if not check(line is not None and line.startswith('ADDR tcp:'),
                 'the Python listener printed its address (%r)' % line):
        lst.p.kill()
        lst.finish()
        return
    call = Proc(wine([WIN_ECHO, 'call', line[5:], '--authkey-env', KEY_ENV,
                      '--count', '50', '--size', '20000']),
                env=env_with_key(KEY))
    rc = call.finish()
    want = 'cqwire-echo: 50/50 messages of 20000 bytes echoed intact'
    check(rc == 0 and call.line_with(want) is not None,
          'cqwire-echo.exe call against Python %s (rc %s, %r, %r)' %
          (peer, rc, call.lines, call.stderr_text()))
    rc = lst.finish()
    auth = lst.line_with('AUTH ')
    check(rc == 0 and lst.line_with('ECHOED 50') is not None,
          'the Python listener echoed 50 (rc %s, %r)' % (rc, lst.lines))
    check(auth == 'AUTH ' + AUTH_AS_SERVER[peer],
          'cqwire-echo.exe answered the %s auth form (%r)' % (peer, auth))


def main():
    global ECHO, WIN_ECHO, RUN, PREFIX
    if len(sys.argv) != 2:
        note('usage: test-win.py py311|py312')
        return 2
    peer = sys.argv[1]
    ECHO = os.environ.get('CQW_ECHO', '')
    WIN_ECHO = os.environ.get('CQW_WIN_ECHO', '')
    RUN = os.environ.get('CQW_WINE_RUN', '')
    PREFIX = os.environ.get('CQW_WINEPREFIX', '')
    if not (ECHO and RUN and PREFIX and WIN_ECHO):
        note('FAIL: CQW_ECHO, CQW_WIN_ECHO, CQW_WINE_RUN and '
             'CQW_WINEPREFIX must be set (tests/CMakeLists.txt does)')
        return 1
    # Missing tools skip with their reason (scripts/test.sh runs this
    # step after the mingw build and does not let it skip).
    if shutil.which('wine64') is None and \
            not os.access('/usr/lib/wine/wine64', os.X_OK):
        note('SKIP: wine64 is not installed (scripts/deps.sh win)')
        return 77
    if not os.path.exists(WIN_ECHO):
        note('SKIP: %s is missing: build the mingw preset first '
             '(cmake --preset mingw && cmake --build --preset mingw)' %
             WIN_ECHO)
        return 77
    python = find_python(peer)
    note('peer: %s (%s); Windows echo: %s' % (peer, python, WIN_ECHO))
    os.environ[KEY_ENV] = KEY
    t0 = time.time()
    rc = subprocess.run([RUN, '--prefix', PREFIX, '--start'],
                        stdin=subprocess.DEVNULL, timeout=300).returncode
    if rc != 0:
        note('FAIL: wine-run.sh --start exited %d' % rc)
        return 1
    note('wine ready in %.1f s' % (time.time() - t0))
    try:
        test_win_serves_python(peer, python)
        test_linux_serves_win(peer)
        test_python_serves_win(peer, python)
    finally:
        subprocess.run([RUN, '--prefix', PREFIX, '--stop'],
                       stdin=subprocess.DEVNULL, timeout=120)
    if failures:
        note('%d check(s) failed' % len(failures))
        return 1
    note('all checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
