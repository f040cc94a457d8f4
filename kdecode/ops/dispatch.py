"""The one place that decides between the CUDA kernels (``csrc/``) and the torch reference ops.

A fused op runs its kernel when all its tensors are on a CUDA device, the op supports their
dtypes, CuPy can run on that device, and nothing forces the reference: the environment
variable ``KDECODE_FORCE_TORCH=1`` (read at every call) or the :func:`force_torch` context.
Otherwise it runs the torch reference, which gives the same numbers on any device.
"""
from __future__ import annotations

import contextlib
import os
import threading
from functools import lru_cache

import torch

FORCE_TORCH_ENV = "KDECODE_FORCE_TORCH"
_local = threading.local()


@contextlib.contextmanager
def force_torch(enabled: bool = True):
    """Run the torch reference ops inside this block (for comparing and debugging)."""
    previous = getattr(_local, "forced", False)
    _local.forced = enabled
    try:
        yield
    finally:
        _local.forced = previous


@lru_cache(maxsize=None)
def cupy_problem() -> str | None:
    """Why CuPy cannot run kernels here (None when it can). Checked once per process."""
    try:
        import cupy
    except ImportError:
        return "cupy is not installed (pip install 'kdecode[cuda]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy sees no CUDA device"
    except Exception as exc:  # cupy imports without a GPU and raises on first use
        return f"cupy cannot use CUDA: {exc}"
    return None


def device_has_kernels(device: torch.device) -> bool:
    """Whether kernels can run on ``device`` (a CUDA device with a working CuPy)."""
    return device.type == "cuda" and cupy_problem() is None


def why_not_kernels(*tensors: torch.Tensor, supported: bool = True) -> str | None:
    """The reason the reference runs for these tensors, or None when the kernel runs."""
    if not supported:
        return why_not_kernels_on(None) or "the kernel does not support these dtypes or shapes"
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        return why_not_kernels_on(None) or f"tensors are on several devices: {sorted(map(str, devices))}"
    return why_not_kernels_on(devices.pop())


def why_not_kernels_on(device) -> str | None:
    """The reason the reference runs for tensors on ``device`` (None: the kernels run; a device
    of None checks only what forces the reference)."""
    if os.environ.get(FORCE_TORCH_ENV, "") not in ("", "0"):
        return f"{FORCE_TORCH_ENV} is set"
    if getattr(_local, "forced", False):
        return "force_torch() is active"
    if device is None:
        return None
    device = torch.device(device)
    if not device_has_kernels(device):
        return f"tensors are on {device}" if device.type != "cuda" else cupy_problem()
    return None


def use_kernels(*tensors: torch.Tensor, supported: bool = True) -> bool:
    """True when a fused op given ``tensors`` should run its CUDA kernel."""
    return why_not_kernels(*tensors, supported=supported) is None
