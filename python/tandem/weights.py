"""Torch tensors <-> the weight plane.

Tensors cross into C++ as uint8 views of their own memory (no copy); the one copy is into the
publisher's registered slot, or out of the reader's verified buffer, with the GIL released.

Tensors on a device (CUDA, through torch's own copy, which is where DLPack-capable tensors end up)
are copied by torch straight between the device and that same host memory: the C++ side hands
the registered slot (publish) or the verified buffer (fetch) to Python as a memoryview for the
length of one call, so device tensors cost one device<->host copy and no extra host copy either.
The weight plane itself moves host memory only (UCX is not given device memory).
"""

import json
import os

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


def _on_host(tensors):
    return all(t.device.type == "cpu" for t in tensors.values())


def _as_tensor(name, value):
    """A torch tensor, or anything with __dlpack__ (CuPy, JAX, ...) through torch's DLPack."""
    torch = _torch()
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":
            raise _tandem.TandemError(f"tensor {name}: on {value.device}, which holds no data")
        return value
    if hasattr(value, "__dlpack__"):
        return torch.utils.dlpack.from_dlpack(value)
    raise _tandem.TandemError(f"tensor {name}: a {type(value).__name__}, not a tensor")


def _tensors(tensors):
    return {name: _as_tensor(name, t) for name, t in tensors.items()}


def _slot_views(buf, layout, base):
    """name -> a CPU tensor over the layout's bytes of that tensor inside `buf` (no copy); byte
    `base` of the layout is buf[0]."""
    import warnings

    torch = _torch()
    with warnings.catch_warnings():  # the reader's buffer is read-only; it is only read from
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(buf, dtype=torch.uint8)
    return {t.name: raw[t.offset - base: t.offset - base + t.bytes].view(_torch_dtype(t.dtype))
            .view(t.shape) for t in layout.tensors}


def _as_bytes(name, tensor, writable):
    """A list entry for the C++ side: the tensor's bytes as a uint8 numpy view (no copy)."""
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


def _layout_file(runtime, fingerprint_text):
    return os.path.join(runtime.run_dir, "jobs", runtime.job, "layouts",
                        fingerprint_text.replace(":", "-") + ".json")


def _write_layout_file(runtime, layout):
    """Where readers of this job find a publisher's tensors by fingerprint, so that a mismatch can
    name the first differing tensor (readers on other hosts without the run directory name the
    fingerprints only)."""
    path = _layout_file(runtime, layout.fingerprint_text)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump([[t.name, t.dtype, list(t.shape)] for t in layout.tensors], f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # the message without the tensor is still right


def _mismatch(runtime, what, expected, fingerprint):
    got_text = "fp:%016x" % fingerprint
    message = f"{what}: layout mismatch: expected {expected.fingerprint_text}, got {got_text}"
    try:
        with open(_layout_file(runtime, got_text)) as f:
            got = _tandem.Layout.from_specs([tuple(t) for t in json.load(f)])
        message += "; first difference at " + expected.first_difference(got)
    except (OSError, ValueError, _tandem.TandemError):
        message += " (the publisher's tensors are not known here)"
    return _tandem.LayoutMismatchError(message)


def _is_runtime(obj):
    from .runtime import Runtime
    return isinstance(obj, Runtime)


class Publisher:
    """Publishes versions of a dict[str, Tensor] with one fixed layout.

    `where` is either the actor's `tandem.runtime()` (versions are numbered by the coordinator
    and read by the job's rollouts, built-in or not) or an in-process `tandem.Directory`.
    """

    def __init__(self, where, layout, job=1, publisher_id="job-000001/trainer-0", slots=3,
                 chunk_bytes=4 << 20, transports=None):
        if isinstance(layout, dict):
            layout = layout_of(layout)
        self._runtime = None
        if _is_runtime(where):
            trainer = where.spec["trainer"]
            self._runtime = where
            self._impl = _tandem.Publisher(
                where._impl, layout, int(trainer["weight_slots"]), int(trainer["chunk_bytes"]),
                int(trainer["lease_ttl_ms"]),
                where.weight_transports() if transports is None else transports)
            _write_layout_file(where, layout)
        else:
            self._impl = _tandem.Publisher(where, layout, job, publisher_id, slots, chunk_bytes,
                                           transports or "")

    @property
    def layout(self):
        return self._impl.layout

    @property
    def newest(self):
        return self._impl.newest

    def publish(self, version, tensors):
        """Copies `tensors` (the layout's names, dtypes and shapes, in order) into a slot and
        announces it as `version`: a number for a Directory, the dict runtime.assign_version()
        returned for a runtime. Raises LayoutMismatchError naming both fingerprints and the
        first differing tensor. CUDA tensors (or other DLPack tensors) are copied by torch
        from the device straight into the slot."""
        tensors = _tensors(tensors)
        if self._runtime is not None and not isinstance(version, dict):
            raise _tandem.TandemError(
                "publish through the runtime takes the dict runtime.assign_version() "
                "returned (or use publish_step)")
        if not _on_host(tensors):
            return self._publish_from_device(version, tensors)
        if self._runtime is not None:
            self._impl.publish_assigned(json.dumps(version), _entries(tensors))
        else:
            self._impl.publish(version, _entries(tensors))

    def _publish_from_device(self, version, tensors):
        """The path of tensors that are not in host memory (any tensor works here: the tests
        run it with CPU tensors where no GPU is present): torch copies each one into its place
        in the registered slot."""

        def fill(slot, base):
            views = _slot_views(slot, self.layout, base)
            for name, t in tensors.items():
                views[name].copy_(t)
            if any(t.device.type == "cuda" for t in tensors.values()):
                _torch().cuda.synchronize()

        got = layout_of(tensors)
        if self._runtime is not None:
            self._impl.publish_assigned_with(json.dumps(version), got, fill)
        else:
            self._impl.publish_with(version, got, fill)

    def publish_step(self, step, tensors, data_cursor=0, timeout_s=600.0, at_least=0):
        """Asks the runtime for the number of the version after `step` steps (at least
        `at_least`: a resumed checkpoint's version, so numbering continues above it), publishes
        `tensors` under it and returns its info dict."""
        info = self._runtime.assign_version(step, data_cursor, timeout_s, at_least)
        self.publish(info, tensors)
        return info


class Reader:
    """Fetches versions published with `layout` and hands them out as tensors.

    `where` is either the actor's `tandem.runtime()` (use fetch_newer) or an in-process
    `tandem.Directory` (use fetch).
    """

    def __init__(self, where, layout, job=1, reader_id="job-000001/rollout-0", transports=None):
        if isinstance(layout, dict):
            layout = layout_of(layout)
        self._runtime = None
        if _is_runtime(where):
            self._runtime = where
            self._impl = _tandem.Reader(
                where._impl, layout, where.weight_transports() if transports is None else transports)
        else:
            self._impl = _tandem.Reader(where, layout, job, reader_id, transports or "")

    def fetch_newer(self, newer_than=-1, into=None, timeout_s=60.0):
        """Waits (up to timeout_s) for a version newer than `newer_than` (-1: any) through the
        runtime, fetches the newest one and returns (info, state_dict), or info when `into` is
        given (filled in place). info: {"version", "fence", "step", "data_cursor",
        "layout_fingerprint"}. A version with another layout raises LayoutMismatchError naming
        both fingerprints and the first differing tensor."""
        info = json.loads(self._impl.wait_version(int(newer_than), float(timeout_s)))
        if info["layout_fingerprint"] != self.layout.fingerprint:
            raise _mismatch(self._runtime, f"fetch of version {info['version']}", self.layout,
                            info["layout_fingerprint"])
        self._impl.fetch_waited()
        if into is None:
            into = self.empty_state_dict()
            self._copy_into(into)
            return info, into
        self._copy_into(into)
        return info

    def _copy_into(self, into):
        if _on_host(into):
            return self._impl.copy_into(_entries(into, writable=True))
        return self._copy_to_device(into)

    def _copy_to_device(self, into):
        """The path of tensors that are not in host memory (CUDA): torch copies each one from
        its place in the verified buffer to the device (the tests run it with CPU tensors where
        no GPU is present)."""

        def fill(buf):
            views = _slot_views(buf, self.layout, 0)
            for name, t in into.items():
                t.copy_(views[name])
            if any(t.device.type == "cuda" for t in into.values()):
                _torch().cuda.synchronize()

        return self._impl.copy_out_with(layout_of(into), fill)

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
            self._copy_into(into)
            return fetched, into
        self._copy_into(into)
        return fetched

    def empty_state_dict(self, device=None):
        """Uninitialised tensors with the layout's names, dtypes and shapes (on `device`, CPU
        by default)."""
        torch = _torch()
        return {t.name: torch.empty(t.shape, dtype=_torch_dtype(t.dtype), device=device)
                for t in self._impl.layout.tensors}
