"""kiln from Python: a PyTorch / Hugging Face model's linear layers on kiln's quantized
CPU kernels (docs/python.md).

    import kiln
    kiln.quantize_(model, kiln.Recipe("recipes/w8a8-int8-dynamic.lua"))
    model = kiln.load("dir-written-by-kiln-quantize")

A thin layer over include/kiln.h (libkiln.so, through cffi)."""
from ._lib import KilnError
from .linear import KilnLinear
from .load import load
from .numerics import kiln_numerics_
from .quantize import quantize_
from .recipe import Context, Recipe, context

__all__ = ["KilnError", "KilnLinear", "Recipe", "Context", "context", "quantize_", "load",
           "kiln_numerics_"]
__version__ = "0.1.0"
