"""pip / setuptools build of the Python package cqwire (POSIX).

  pip install --no-build-isolation .

compiles the library's POSIX sources (the lists CMakeLists.txt gives) into
the extension module cqwire.connection with the defines CMake uses, and
needs only Debian's setuptools, a C compiler, python3-dev and libssl-dev
(liburing-dev too, if present, for the io_uring backend; the module itself
uses the synchronous API only). CMake builds the same module for every
interpreter it finds (python/CMakeLists.txt).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def cmake_text():
    with open(os.path.join(HERE, "CMakeLists.txt")) as f:
        return f.read()


def version():
    m = re.search(r"project\(cqwire VERSION ([0-9.]+)", cmake_text())
    return m.group(1) if m else "0"


def library_sources():
    # The common and POSIX files of CMakeLists.txt's cqw_sources lists
    # (the Windows list and the backends are left to the code below).
    srcs = []
    for block in re.findall(r"(?:set|APPEND)\s*\(?\s*cqw_sources\b([^)]*)\)",
                            cmake_text()):
        if "win" in block:
            continue
        for s in re.findall(r"src/(?:common|posix)/\w+\.c", block):
            if s not in srcs:
                srcs.append(s)
    if not srcs:
        sys.exit("setup.py: no library sources found in CMakeLists.txt")
    return srcs


def pkg_config(pkg):
    """(cflags, libs) for pkg, or None when pkg-config does not know it."""
    if shutil.which("pkg-config") is None:
        return None
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags", pkg],
                                         stderr=subprocess.DEVNULL)
        libs = subprocess.check_output(["pkg-config", "--libs", pkg],
                                       stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        return None
    return shlex.split(cflags.decode()), shlex.split(libs.decode())


def extension():
    sources = library_sources() + ["src/poll/loop.c"]
    defines = [("CQW_HAVE_POLL", "1")]
    cflags, ldflags = [], []
    crypto = pkg_config("libcrypto")
    if crypto:
        cflags += crypto[0]
        ldflags += crypto[1]
    else:
        ldflags.append("-lcrypto")
    uring = pkg_config("liburing") if sys.platform.startswith("linux") else None
    if uring and os.environ.get("CQWIRE_NO_URING") != "1":
        sources.append("src/uring/loop.c")
        defines.append(("CQW_HAVE_URING", "1"))
        cflags += uring[0]
        ldflags += uring[1]
    return Extension(
        "cqwire.connection",
        sources=sources + ["python/_connection.c"],
        include_dirs=["include", "src", "src/posix"],
        define_macros=defines,
        extra_compile_args=["-std=c11", "-fvisibility=hidden"] + cflags,
        extra_link_args=ldflags + ["-pthread"],
    )


class BuildPy(build_py):
    """Also puts cqwire-install.pth at the top of the install: with it,
    CQWIRE_INSTALL=1 in the environment installs cqwire in every
    interpreter that starts."""

    def run(self):
        super().run()
        self.copy_file(os.path.join("python", "cqwire-install.pth"),
                       os.path.join(self.build_lib, "cqwire-install.pth"))


# setuptools' own build products (and the egg-info pip asks for) under
# build/pip, not next to the sources.
BUILD_BASE = os.path.join("build", "pip")
os.makedirs(os.path.join(HERE, BUILD_BASE), exist_ok=True)

setup(
    options={"build": {"build_base": BUILD_BASE},
             "egg_info": {"egg_base": BUILD_BASE}},
    name="cqwire",
    version=version(),
    description="multiprocessing.connection's wire format, in C",
    packages=["cqwire"],
    package_dir={"": "python"},
    ext_modules=[extension()],
    cmdclass={"build_py": BuildPy},
    python_requires=">=3.11",
    zip_safe=False,
)
