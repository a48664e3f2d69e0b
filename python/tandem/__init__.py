"""Tandem's Python SDK: the actor runtime, the weight plane (publish and read versions of a dict of
tensors) and the trajectory plane.

See docs/python.md for what exists and what does not yet.
"""

from .checkpoints import Checkpoint, Checkpoints
from ._tandem import Directory, Layout, LayoutMismatchError, TandemError, TensorInfo
from .runtime import Runtime, runtime
from .trajectories import TrajectoryInbox, TrajectoryOutbox
from .weights import Publisher, Reader, layout_of

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Directory",
    "Layout",
    "LayoutMismatchError",
    "Publisher",
    "Reader",
    "Runtime",
    "TandemError",
    "TensorInfo",
    "TrajectoryInbox",
    "TrajectoryOutbox",
    "layout_of",
    "runtime",
]
