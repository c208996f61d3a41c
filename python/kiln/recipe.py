"""kiln contexts (target, kernel cache, threads) and recipes, as Python objects."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from ._lib import KilnError, ctx_error, ffi, lib, text


class Context:
    """A kiln context: the target kernels are compiled for (CPU JIT through kiln's
    on-disk kernel cache), and the thread pool they run on. Shared by every layer made
    from it; freed with the last one."""

    def __init__(self, target: Optional[str] = None, threads: int = 0,
                 cache_dir: Optional[str] = None) -> None:
        keep = []

        def c_str(s: Optional[str]) -> Any:
            if s is None:
                return ffi.NULL
            b = ffi.new("char[]", s.encode())
            keep.append(b)
            return b

        opts = ffi.new("kiln_options *")
        opts.target = c_str(target)
        opts.cache_dir = c_str(cache_dir)
        opts.num_threads = int(threads)
        out = ffi.new("kiln_ctx **")
        st = lib.kiln_ctx_create(opts, out)
        if st:
            raise ctx_error(ffi.NULL, st)
        self.ptr = ffi.gc(out[0], lib.kiln_ctx_destroy)
        self.target = text(lib.kiln_ctx_target(self.ptr))
        if self.target.startswith("sm_"):  # KilnLinear hands kiln CPU tensors' memory
            raise KilnError("target %s: the Python package runs kiln's CPU kernels; give a CPU "
                            "target (cpu, avx2, avx512, zen3, zen4) or none" % self.target)

    def error(self, status: int) -> KilnError:
        """The KilnError for a failed call on this context."""
        return ctx_error(self.ptr, status)


_contexts: Dict[Tuple[Optional[str], int, Optional[str]], Context] = {}


def context(target: Optional[str] = None, threads: int = 0,
            cache_dir: Optional[str] = None) -> Context:
    """The shared context for these options (made on first use)."""
    key = (target, int(threads), cache_dir)
    if key not in _contexts:
        _contexts[key] = Context(target, threads, cache_dir)
    return _contexts[key]


class Recipe:
    """A kiln recipe (a ``.lua`` file: docs/recipes.md), loaded and checked now.

    >>> r = kiln.Recipe("recipes/w8a8-int8-dynamic.lua")

    A recipe with an error raises :class:`kiln.KilnError` whose message starts with
    ``FILE:LINE:``. The recipe is loaded once per context (target) that uses it."""

    def __init__(self, path: "str | os.PathLike[str]", *, target: Optional[str] = None) -> None:
        self.path = os.fspath(path)
        self._open: Dict[int, Any] = {}
        self.handle(context(target))

    def handle(self, ctx: Context) -> Any:
        """The ``kiln_recipe *`` of this recipe on ctx."""
        h = self._open.get(id(ctx))
        if h is None:
            out = ffi.new("kiln_recipe **")
            st = lib.kiln_recipe_open(ctx.ptr, self.path.encode(), out)
            if st:
                raise ctx.error(st)
            h = ffi.gc(out[0], lib.kiln_recipe_close)
            self._open[id(ctx)] = (ctx, h)
            return h
        return h[1]

    def weight_format(self, name: str, n: int, k: int, ctx: Optional[Context] = None) -> str:
        """The weight format this recipe gives layer ``name`` of shape [n, k]
        (``"int8 sym channel"``; ``"f32"`` when the recipe keeps it in f32)."""
        ctx = ctx or context()
        buf = ffi.new("char[]", 256)
        st = lib.kiln_layer_plan_format(ctx.ptr, self.handle(ctx), name.encode(), n, k, buf, 256)
        if st:
            raise ctx.error(st)
        return text(buf)

    def __repr__(self) -> str:
        return "kiln.Recipe(%r)" % self.path
