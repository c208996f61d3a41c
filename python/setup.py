"""Puts libkiln.so (the CMake target kiln_shared), the two headers cffi reads and the
checkpoint recipe into kiln/_data before setuptools packages it. The library comes from
$KILN_LIB, else the repository's build/ (built there with CMake when missing: a fresh
clone after scripts/setup.sh needs nothing else). With torch importable at build time
(`pip install --no-build-isolation ./python`) it also compiles kiln._fast
(csrc/kiln_fast.cpp, KilnLinear's forward in C) against that torch; without torch the
package is pure Python over the library and says so at import."""
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


def fast_extension():
    """kiln._fast built with torch's own flags (its headers, C++ ABI, libraries), or
    nothing when torch is not importable here (an isolated build) or KILN_NO_FAST=1."""
    if os.environ.get("KILN_NO_FAST") == "1":
        return {}, []
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("kiln: torch is not importable while building, so kiln._fast (KilnLinear's "
              "forward in C) is not built; pip install --no-build-isolation ./python "
              "builds it against the installed torch")
        return {}, []
    ext = CppExtension("kiln._fast", ["csrc/kiln_fast.cpp"],
                       include_dirs=[str(REPO / "include")],
                       extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror",
                                           "-Wno-unused-parameter"])
    return {"build_ext": BuildExtension}, [ext]


class WithLibrary(Distribution):
    """A wheel carrying libkiln.so is for this platform, not pure Python."""

    def has_ext_modules(self):
        return True


cmds, exts = fast_extension()
setup(cmdclass={"build_py": BuildWithLib, **cmds}, ext_modules=exts, distclass=WithLibrary)
