"""cqwire: multiprocessing.connection's wire format, in C (libcqwire).

The extension module cqwire.connection has the names and behaviour of
multiprocessing.connection. install() puts it in their place, so that
Pool, ProcessPoolExecutor, Queue, SimpleQueue and managers use it without
a code change; uninstall() puts the stdlib's back.

Children: install() sets CQWIRE_INSTALL=1 in os.environ and makes the
spawn start method's command line import cqwire and install it before
anything is unpickled; a forkserver started after install() preloads
cqwire, which installs itself when CQWIRE_INSTALL=1 is set. Forked
children inherit the parent's state. With the package installed by pip,
CQWIRE_INSTALL=1 in the environment installs it in every interpreter
that starts (cqwire-install.pth), without a code change at all.
"""
import os
import sys

ENV = "CQWIRE_INSTALL"
# multiprocessing.connection's names that install() replaces.
NAMES = ("Connection", "Pipe", "Listener", "Client", "wait", "XmlListener",
         "XmlClient")

_saved = None  # what install() replaced: [(owner, key, old, is_item)]


def installed():
    """Whether install() is in effect."""
    return _saved is not None


def _spawn_prefix():
    # The child imports cqwire before multiprocessing's preparation data
    # restores sys.path, so the directory it came from goes first.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ("import sys; sys.path.insert(0, %r); import cqwire; "
            "del sys.path[0]; cqwire.install(); " % here)


def _wrap_get_command_line(original):
    def get_command_line(**kwds):
        cmd = list(original(**kwds))
        if "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd[i] = _spawn_prefix() + cmd[i]
        return cmd

    get_command_line.cqwire_original = original
    return get_command_line


def install():
    """Put cqwire.connection in place of multiprocessing.connection's
    classes and functions, in this process and in the children it starts.
    Idempotent."""
    global _saved
    if _saved is not None:
        return
    import multiprocessing.connection as mpc
    import multiprocessing.managers as managers
    import multiprocessing.pool as pool
    import multiprocessing.spawn as spawn
    from . import connection as cqw

    saved = []

    def put(owner, key, new, item=False):
        old = owner[key] if item else getattr(owner, key)
        saved.append((owner, key, old, item))
        if item:
            owner[key] = new
        else:
            setattr(owner, key, new)

    for name in NAMES:
        put(mpc, name, getattr(cqw, name))
    # Taken by name when these modules were imported.
    put(pool, "wait", cqw.wait)
    put(managers.listener_client, "pickle", (cqw.Listener, cqw.Client), True)
    put(managers.listener_client, "xmlrpclib",
        (cqw.XmlListener, cqw.XmlClient), True)
    put(spawn, "get_command_line",
        _wrap_get_command_line(spawn.get_command_line))
    if sys.platform != "win32":
        import multiprocessing.forkserver as forkserver
        fs = forkserver._forkserver
        preload = list(fs._preload_modules)
        if "cqwire" not in preload:
            put(fs, "_preload_modules", ["cqwire"] + preload)
    saved.append((os.environ, ENV, os.environ.get(ENV), True))
    os.environ[ENV] = "1"
    _saved = saved


def uninstall():
    """Put multiprocessing.connection's own classes and functions back (in
    this process; children already started keep what they have)."""
    global _saved
    if _saved is None:
        return
    for owner, key, old, item in reversed(_saved):
        if item:
            if old is None and owner is os.environ:
                owner.pop(key, None)
            else:
                owner[key] = old
        else:
            setattr(owner, key, old)
    _saved = None


if os.environ.get(ENV) == "1":
    install()
