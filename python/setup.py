"""Puts libkiln.so (the CMake target kiln_shared), the two headers cffi reads and the
checkpoint recipe into kiln/_data before setuptools packages it. The library comes from
$KILN_LIB, else the repository's build/ (built there with CMake when missing: a fresh
clone after scripts/setup.sh needs nothing else)."""
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ.get("KILN_SOURCE_DIR", HERE.parent))


def library() -> Path:
    env = os.environ.get("KILN_LIB")
    if env:
        return Path(env)
    build = Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))
    lib = build / "libkiln.so"
    if not lib.exists():
        if not (build / "CMakeCache.txt").exists():
            subprocess.check_call(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja",
                                   "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
        subprocess.check_call(["cmake", "--build", str(build), "--target", "kiln_shared"])
    return lib


class BuildWithLib(build_py):
    def run(self):
        data = HERE / "kiln" / "_data"
        data.mkdir(exist_ok=True)
        for src in (library(), REPO / "include" / "kiln.h", HERE / "csrc" / "kiln_py.h",
                    REPO / "recipes" / "checkpoint" / "stored-acts.lua"):
            shutil.copyfile(src, data / src.name)
        super().run()


class WithLibrary(Distribution):
    """A wheel carrying libkiln.so is for this platform, not pure Python."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLib}, distclass=WithLibrary)
