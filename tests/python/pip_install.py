"""pip install --no-build-isolation --no-deps --target TMP of the source
tree (a copy of what setup.py reads, so that the build leaves nothing in
the tree), then the installed package imported and used from TMP.

  python pip_install.py SOURCE_DIR

Exits 77 (skip) when this interpreter has no pip or no setuptools.
"""
import os
import shutil
import subprocess
import sys
import tempfile

ITEMS = ["setup.py", "pyproject.toml", "CMakeLists.txt", "include", "src",
         "python"]
CHECK = r"""
import os, sys, multiprocessing
import cqwire
from cqwire import connection as c
assert c.__file__.startswith(sys.argv[1]), c.__file__
a, b = c.Pipe()
a.send({"x": 1}); assert b.recv() == {"x": 1}
a.send_batch([b"1", b"22"]); assert b.recv_batch(5, 5) == [b"1", b"22"]
cqwire.install()
with multiprocessing.get_context("spawn").Pool(1) as p:
    assert type(p._inqueue._reader) is c.Connection
    mod = p.apply(eval, ("__import__('multiprocessing.connection')"
                         ".connection.Pipe.__module__",))
    assert mod == "cqwire.connection", mod
print("ok", c.__file__)
"""


def main():
    src = os.path.abspath(sys.argv[1])
    for mod in ("pip", "setuptools"):
        if subprocess.call([sys.executable, "-c", "import " + mod],
                           stderr=subprocess.DEVNULL) != 0:
            print("skip: no %s for %s" % (mod, sys.executable))
            return 77
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "src")
        target = os.path.join(tmp, "target")
        os.mkdir(tree)
        for item in ITEMS:
            s = os.path.join(src, item)
            if os.path.isdir(s):
                shutil.copytree(s, os.path.join(tree, item),
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(s, tree)
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        subprocess.check_call([sys.executable, "-m", "pip", "install",
                               "--no-build-isolation", "--no-deps",
                               "--target", target, tree], env=env)
        names = sorted(os.listdir(target))
        print("installed:", names)
        assert "cqwire" in names and "cqwire-install.pth" in names, names
        env["PYTHONPATH"] = target
        subprocess.check_call([sys.executable, "-c", CHECK, target], env=env,
                              cwd=tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
