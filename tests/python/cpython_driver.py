"""CPython's own connection tests (test/_test_multiprocessing.py, from the
interpreter's test package) run against cqwire.connection.

The classes that take a mixin get one whose `connection` and `Pipe` are
cqwire's, as install_tests_in_module_dict builds them for the stdlib (the
'processes' type only: 'threads' tests multiprocessing.dummy). The plain
TestCase classes reach the module through multiprocessing.connection, so
its Connection, Pipe, Listener, Client and wait are replaced by cqwire's
for the run (in spawned children too: they import this file again).

  CQW_START_METHOD=fork|spawn python cpython_driver.py [unittest args]

Exits 77 (skip) when the interpreter has no test package.
"""
import os
import sys
import unittest

import multiprocessing.connection as mpc


MIXIN_CLASSES = ["_TestConnection", "_TestListener", "_TestListenerClient",
                 "_TestPoll", "_TestPicklingConnections"]
PLAIN_CLASSES = ["TestWait", "TestInvalidHandle", "OtherTest",
                 "ChallengeResponseTest", "TestInvalidFamily", "TestTimeouts",
                 "TestIgnoreEINTR", "TestCloseFds"]
REPLACED = ["Connection", "Pipe", "Listener", "Client", "wait"]
# Tests known to fail, each with its reason. They run as expected
# failures: one that starts to pass fails the run (unexpected success), so
# this list cannot go stale.
KNOWN_FAILURES = {
    # Connection(44977608): Python accepts any non-negative int and fails
    # on first use; cqw_conn_from_fd checks the descriptor and says EBADF
    # at once (the C library has no "unchecked" wrap). The test then also
    # sets the private attribute conn._handle, which cqwire does not have.
    "TestInvalidHandle.test_invalid_handles",
}

from cqwire import connection as cqw  # noqa: E402

# Before the test module is imported: it takes `wait` by name at import.
for _name in REPLACED:
    setattr(mpc, _name, getattr(cqw, _name))

try:
    import test._test_multiprocessing as T
except ImportError as e:
    print("skip: no test._test_multiprocessing here (%s)" % e)
    sys.exit(77)
assert T.wait is cqw.wait


class CqwireMixin(T.ProcessesMixin):
    connection = cqw
    Pipe = staticmethod(cqw.Pipe)


def install(globs, start_method):
    module = globs["__name__"]
    tmp = {"__name__": module}
    T.install_tests_in_module_dict(tmp, start_method)
    globs["setUpModule"] = tmp["setUpModule"]
    globs["tearDownModule"] = tmp["tearDownModule"]
    for name in MIXIN_CLASSES:
        base = getattr(T, name, None)
        if base is None:
            continue

        class Temp(base, CqwireMixin, unittest.TestCase):
            pass

        Temp.__name__ = Temp.__qualname__ = "WithCqwire" + name[1:]
        Temp.__module__ = module
        globs[Temp.__name__] = Temp
    for name in PLAIN_CLASSES:
        base = getattr(T, name, None)
        if base is None:
            continue  # not in this version (ChallengeResponseTest: 3.12+)

        class Temp(base):
            pass

        Temp.__name__ = Temp.__qualname__ = name
        Temp.__module__ = module
        globs[name] = Temp
    for key in KNOWN_FAILURES:
        cls_name, test_name = key.split(".")
        cls = globs.get(cls_name)
        if cls is not None and hasattr(cls, test_name):
            setattr(cls, test_name,
                    unittest.expectedFailure(getattr(cls, test_name)))


install(globals(), os.environ.get("CQW_START_METHOD", "fork"))

if __name__ == "__main__":
    unittest.main(verbosity=2)
