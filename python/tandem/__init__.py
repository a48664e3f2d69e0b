"""Tandem's Python SDK: the weight plane (publish and read versions of a dict of tensors).

See docs/python.md for what exists and what does not yet.
"""

from ._tandem import Directory, Layout, LayoutMismatchError, TandemError, TensorInfo
from .runtime import Runtime, runtime
from .weights import Publisher, Reader, layout_of

__all__ = [
    "Directory",
    "Layout",
    "LayoutMismatchError",
    "Publisher",
    "Reader",
    "Runtime",
    "TandemError",
    "TensorInfo",
    "layout_of",
    "runtime",
]
