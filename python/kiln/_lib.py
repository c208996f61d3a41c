"""The C library under the package: libkiln.so (include/kiln.h and python/csrc/kiln_py.h)
opened through cffi's ABI mode; the declarations are read from those two headers as the
package installed them, so there is one source of truth."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cffi

_DATA = Path(__file__).resolve().parent / "_data"


class KilnError(Exception):
    """A kiln error, carrying kiln's located message: ``FILE:LINE: message`` for recipe
    errors, the layer's name and numbers for shapes, the checkpoint file for model files.
    ``status`` is kiln's exit code (2 bad input, 3 no device, 4 internal)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _cdef_text(header: Path) -> str:
    """A kiln header as cffi's cdef reads it: no comments, preprocessor lines or the
    C++ guard."""
    text = header.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    keep = []
    skip = 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#ifdef __cplusplus"):
            skip = 1
            continue
        if skip:
            if s.startswith("#endif"):
                skip = 0
            continue
        if s.startswith("#"):
            continue
        keep.append(line)
    return "\n".join(keep)


def _find(name: str, env: str) -> Path:
    """The packaged file, or the one the environment names."""
    p = os.environ.get(env)
    if p:
        return Path(p)
    return _DATA / name


ffi = cffi.FFI()
ffi.cdef(_cdef_text(_find("kiln.h", "KILN_HEADER")))
ffi.cdef(_cdef_text(_find("kiln_py.h", "KILN_PY_HEADER")))

_path = _find("libkiln.so", "KILN_LIB")
try:
    lib: Any = ffi.dlopen(str(_path))
except OSError as e:  # no library: say where it was looked for
    raise ImportError("kiln: cannot open %s (%s): build kiln (cmake --build build) and "
                      "reinstall the package, or set KILN_LIB" % (_path, e)) from e

# kiln_layer_run with its pointers as integers (same calling convention on every ABI
# kiln runs on), so the hot path passes data_ptr() without building cdata per call.
run_layer_raw = ffi.cast("kiln_status (*)(intptr_t, intptr_t, int64_t, intptr_t)",
                         ffi.addressof(lib, "kiln_layer_run"))


def text(p: Any) -> str:
    """A C string from kiln as str ("" for NULL)."""
    return ffi.string(p).decode("utf-8", "replace") if p != ffi.NULL else ""


def py_error(status: int, what: str = "") -> KilnError:
    """The KilnError of a failed kiln_py_* call."""
    msg = text(lib.kiln_py_error()) or what or "kiln failed (status %d)" % status
    return KilnError(msg, int(status))


def ctx_error(ctx: Any, status: int) -> KilnError:
    """The KilnError of a failed call on a context (NULL: the last kiln_ctx_create)."""
    msg = text(lib.kiln_error(ctx)) or "kiln failed (status %d)" % status
    return KilnError(msg, int(status))


def data_file(name: str) -> Path:
    """A file the package installed beside the library (recipes)."""
    return _DATA / name
