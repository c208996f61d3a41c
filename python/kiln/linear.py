"""KilnLinear: a torch.nn.Module whose forward runs a kiln kernel (the recipe's
quantized GEMM, compiled at load time through kiln's kernel cache)."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch

from ._lib import KilnError, ffi, lib, run_layer_raw, text
from .recipe import Context

_F32 = torch.float32
_empty = torch.empty
_OUT_DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}
_RUN_ADDR = int(ffi.cast("intptr_t", ffi.addressof(lib, "kiln_layer_run")))


class PyLinearBase:
    """KilnLinear's forward in Python: what kiln._fast.LinearBase does in C, for a
    package built without it (no torch at build time) or a torch it does not load with."""

    fast_path = False

    def _bind(self, run: int, layer: int, K: int, N: int, fast: bool, direct: bool) -> None:
        pass

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Linear's name)
        x = input
        K = self.in_features
        if self._plain and x.dtype is _F32 and x.shape[-1] == K and x.is_cpu \
                and x.is_contiguous() and not x.is_neg():
            # the input as it is (its data_ptr), the output its only allocation
            y = _empty(x.shape[:-1] + (self.out_features,))
            M = x.numel() // K
            if M:
                st = run_layer_raw(self._lp, x.data_ptr(), M, y.data_ptr())
                if st:
                    self._fail(st)
            return y
        return self._forward_general(x)


# The check torch.nn.Module.__call__ makes before calling forward alone, as the names its
# code reads in order (torch 2.x): kiln._fast's __call__ makes the same check in C, so
# it skips Module.__call__ only while torch's check is this one.
_CALL_CHECK = ("torch", "_C", "_is_tracing", "_slow_forward", "forward", "_backward_hooks",
               "_backward_pre_hooks", "_forward_hooks", "_forward_pre_hooks",
               "_global_backward_pre_hooks", "_global_backward_hooks",
               "_global_forward_hooks", "_global_forward_pre_hooks")


def _torch_call_check_known() -> bool:
    M = torch.nn.Module
    try:
        return (M.__call__ is M._wrapped_call_impl and M._compiled_call_impl is None
                and M._wrapped_call_impl.__code__.co_names == ("_compiled_call_impl",
                                                               "_call_impl")
                and M._call_impl.__code__.co_names[:len(_CALL_CHECK)] == _CALL_CHECK)
    except AttributeError:
        return False


try:
    from ._fast import LinearBase as _Base
    from . import _fast
    FAST_PATH_ERROR = ""
    DIRECT_CALL = _torch_call_check_known()
    _fast._setup(torch.nn.Module.__call__, vars(torch.nn.modules.module), DIRECT_CALL)
except ImportError as e:  # not built, or built against another torch
    DIRECT_CALL = False
    _Base = PyLinearBase
    FAST_PATH_ERROR = str(e) or "kiln._fast is not installed"
    warnings.warn("kiln: KilnLinear's C forward is not available (%s); using the Python "
                  "one, slower per call: pip install --no-build-isolation ./python builds it"
                  % FAST_PATH_ERROR, RuntimeWarning, stacklevel=2)


class KilnLinear(_Base, torch.nn.Module):
    """y = x · Wᵀ + b on a kiln layer (``kiln_layer`` of include/kiln.h).

    Inputs of any leading shape ``[..., in_features]``; f32 contiguous inputs go to the
    kernel without a copy (their ``data_ptr``), bf16/f16 inputs are converted to f32 and
    the output converted back. The layer keeps no f32 weights: only kiln's prepacked
    ones (``weight_bytes``). ``forward`` is kiln._fast's C method (``fast_path``): a
    plain f32 contiguous CPU input is checked, given a fresh output and run there; any
    other input goes to ``_forward_general``."""

    def __init__(self, ctx: Context, layer: Any, name: str, in_features: int,
                 out_features: int, bias: Optional[torch.Tensor] = None,
                 in_perm: Optional[torch.Tensor] = None,
                 in_div: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.name = name
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._ctx = ctx  # kept alive with the layer
        self._layer = ffi.gc(layer, lib.kiln_layer_destroy)
        self._lp = int(ffi.cast("intptr_t", layer))
        self._out_dtype = _OUT_DTYPES[int(lib.kiln_layer_out_dtype(layer))]
        self.kernel = text(lib.kiln_layer_kernel(layer))
        self.description = text(lib.kiln_layer_describe(layer))
        self.weight_format = text(lib.kiln_layer_weight_format(layer))
        self.weight_bytes = int(lib.kiln_layer_weight_bytes(layer))
        self.epilogue = text(lib.kiln_layer_epilogue(layer))
        kernel_bias = bool(lib.kiln_layer_has_bias(layer))
        # plain tensors (not buffers): the hot path reads them without Module.__getattr__
        # the caller adds the bias when the kernel does not
        self.bias = None if kernel_bias or bias is None else \
            bias.detach().float().contiguous().clone()
        self.in_perm = in_perm
        self.in_div = in_div
        # f32 out, nothing before or after the kernel: forward is one call
        self._plain = (self.bias is None and in_perm is None and in_div is None
                       and self._out_dtype is _F32)
        cls = type(self)
        direct = cls.forward is _Base.forward and cls.__call__ is _Base.__call__
        self._bind(_RUN_ADDR, self._lp, self.in_features, self.out_features, self._plain,
                   direct)

    def _fail(self, status: int) -> None:
        """Raises the KilnError of a failed kiln_layer_run."""
        raise self._ctx.error(status)

    def _forward_general(self, x: torch.Tensor) -> torch.Tensor:
        """Any input: checked, converted to f32 contiguous, gathered / divided as a
        method asks; output widened from 16 bits, bias added, converted back."""
        K = self.in_features
        if x.shape[-1] != K or not x.is_cpu:
            raise KilnError("layer %s (%dx%d): input of shape %s on %s; the layer takes "
                            "[..., %d] on the CPU" % (self.name, self.out_features, K,
                                                      list(x.shape), x.device, K))
        dtype = x.dtype
        if x.is_neg():  # a negative view's memory holds the values' negation
            x = x.resolve_neg()
        if dtype is not _F32:
            x = x.float()
        x2 = x.reshape(-1, K)
        if self.in_perm is not None:
            x2 = x2.index_select(1, self.in_perm)
        if self.in_div is not None:
            x2 = x2 / self.in_div
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        M = x2.shape[0]
        y = torch.empty((M, self.out_features), dtype=self._out_dtype)
        if M:
            st = run_layer_raw(self._lp, x2.data_ptr(), M, y.data_ptr())
            if st:
                self._fail(st)
        if self._out_dtype is not _F32:
            y = y.float()
        if self.bias is not None:
            y += self.bias
        y = y.view(*x.shape[:-1], self.out_features)
        return y if dtype is _F32 else y.to(dtype)

    def extra_repr(self) -> str:
        return "%s, in_features=%d, out_features=%d, kernel=%s" % (
            self.name, self.in_features, self.out_features, self.description)

