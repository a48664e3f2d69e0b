"""Torch tensors <-> the weight plane.

Tensors cross into C++ as uint8 views of their own memory (no copy); the one copy is into the
publisher's registered slot, or out of the reader's verified buffer, with the GIL released.
CPU tensors only for now.
"""

from . import _tandem

# torch dtype name -> safetensors dtype name (the weight plane's DType).
_DTYPE_NAMES = {
    "float32": "F32",
    "bfloat16": "BF16",
    "float16": "F16",
    "float8_e4m3fn": "F8_E4M3",
    "int8": "I8",
    "int32": "I32",
    "int64": "I64",
}


def _torch():
    import torch  # imported lazily: the module works without torch for Layout.from_specs

    return torch


def _dtype_name(name, tensor):
    key = str(tensor.dtype).replace("torch.", "")
    if key not in _DTYPE_NAMES:
        raise _tandem.TandemError(
            f"tensor {name}: dtype {tensor.dtype} is not supported "
            f"(supported: {', '.join(sorted(_DTYPE_NAMES))})")
    return _DTYPE_NAMES[key]


def _torch_dtype(name):
    torch = _torch()
    for key, value in _DTYPE_NAMES.items():
        if value == name:
            return getattr(torch, key)
    raise _tandem.TandemError(f"dtype {name} has no torch equivalent")


def _check_cpu(name, tensor):
    if tensor.device.type != "cpu":
        raise _tandem.TandemError(
            f"tensor {name}: on {tensor.device}; only CPU tensors are supported so far "
            "(CUDA through DLPack is not done yet, see docs/python.md)")


def _as_bytes(name, tensor, writable):
    """A list entry for the C++ side: the tensor's bytes as a uint8 numpy view (no copy)."""
    _check_cpu(name, tensor)
    if writable and not tensor.is_contiguous():
        raise _tandem.TandemError(f"tensor {name}: must be contiguous to be filled in place")
    flat = tensor.detach().contiguous().reshape(-1)
    data = flat.view(_torch().uint8).numpy()
    return _tandem.TensorBytes(name, _dtype_name(name, tensor), list(tensor.shape), data)


def _entries(tensors, writable=False):
    return [_as_bytes(name, t, writable) for name, t in tensors.items()]


def layout_of(tensors):
    """The Layout of a dict[str, Tensor] (names in dict order, dtypes, shapes)."""
    return _tandem.Layout.from_specs(
        [(name, _dtype_name(name, t), list(t.shape)) for name, t in tensors.items()])


class Publisher:
    """Publishes versions of a dict[str, Tensor] with one fixed layout.

    `directory` is where versions are announced (an in-process `tandem.Directory` for now).
    """

    def __init__(self, directory, layout, job=1, publisher_id="job-000001/trainer-0", slots=3,
                 chunk_bytes=4 << 20, transports=""):
        if isinstance(layout, dict):
            layout = layout_of(layout)
        self._impl = _tandem.Publisher(directory, layout, job, publisher_id, slots, chunk_bytes,
                                       transports)

    @property
    def layout(self):
        return self._impl.layout

    @property
    def newest(self):
        return self._impl.newest

    def publish(self, version, tensors):
        """Copies `tensors` (the layout's names, dtypes and shapes, in order) into a slot and
        announces it as `version`. Raises LayoutMismatchError naming both fingerprints and the
        first differing tensor."""
        self._impl.publish(version, _entries(tensors))


class Reader:
    """Fetches versions published with `layout` and hands them out as tensors."""

    def __init__(self, directory, layout, job=1, reader_id="job-000001/rollout-0", transports=""):
        if isinstance(layout, dict):
            layout = layout_of(layout)
        self._impl = _tandem.Reader(directory, layout, job, reader_id, transports)

    @property
    def layout(self):
        return self._impl.layout

    def fetch(self, version=None, into=None, timeout_s=30.0):
        """Fetches `version` (the newest when None; waits up to timeout_s for a given one).

        With `into` (a dict[str, Tensor] of the layout), copies the weights into those tensors in
        place and returns the version; otherwise returns (version, state_dict) with new tensors.
        """
        fetched = self._impl.fetch(version, timeout_s)
        if into is None:
            into = self.empty_state_dict()
            self._impl.copy_into(_entries(into, writable=True))
            return fetched, into
        self._impl.copy_into(_entries(into, writable=True))
        return fetched

    def empty_state_dict(self):
        """Uninitialised CPU tensors with the layout's names, dtypes and shapes."""
        torch = _torch()
        return {t.name: torch.empty(t.shape, dtype=_torch_dtype(t.dtype))
                for t in self._impl.layout.tensors}
