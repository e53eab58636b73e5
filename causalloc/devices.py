"""Where and in which precision models are computed: device and dtype names.

One place for the names that specs, CLI flags and testbed configs accept, and for turning
them into torch objects. The checks need no torch (experiment specs are validated without
it); :func:`resolve_device` and :func:`torch_dtype` import torch when called.

- dtype: ``float32`` | ``bfloat16`` | ``float16``
- device: ``auto`` (CUDA when ``torch.cuda.is_available()``, else CPU) | ``cpu`` | ``cuda`` |
  ``cuda:N``
"""

from __future__ import annotations

import re

from causalloc.errors import SpecError

DTYPES = ("float32", "bfloat16", "float16")
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_dtype(name, key: str = "dtype") -> str:
    """``name`` if it is a known dtype name, else SpecError naming ``key``."""
    if name not in DTYPES:
        raise SpecError(f"{key}: unknown dtype {name!r} (known: {', '.join(DTYPES)})")
    return name


def check_device(name, key: str = "device") -> str:
    """``name`` if it has a known device form, else SpecError naming ``key``."""
    if not isinstance(name, str) or not _DEVICE_PATTERN.fullmatch(name):
        raise SpecError(f"{key}: unknown device {name!r} (known forms: {', '.join(DEVICE_FORMS)})")
    return name


def resolve_device(name: str = "auto"):
    """The ``torch.device`` of a device name; ``auto`` is CUDA when present, else CPU.

    Raises SpecError for a CUDA device that this machine does not have.
    """
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(
                f"device: {name!r} requested but CUDA is not available here "
                "(use 'auto' to fall back to the CPU)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(
                f"device: {name!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def torch_dtype(name: str):
    """The ``torch.dtype`` of a dtype name (``bfloat16`` -> ``torch.bfloat16``)."""
    import torch

    return getattr(torch, check_dtype(name))


__all__ = ["DEVICE_FORMS", "DTYPES", "check_device", "check_dtype", "resolve_device", "torch_dtype"]
