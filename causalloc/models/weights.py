"""Exact identity of model weights without keeping a copy: per-tensor digests, fingerprints
of saved checkpoints, and memory-mapped reading of saved tensors a slice at a time.

The hard-constraint check of every run and the relearning attack's restore need theta_o's
values only for the tensors that changed (normally none), so they read them from the saved
checkpoint (safetensors, memory-mapped by the ``safetensors`` library) instead of keeping a
second full copy of the model in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch

from causalloc.errors import DataError

#: bytes of one chunk read or compared at a time (rows of a tensor)
CHUNK_BYTES = 64 * 2**20


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes: equal digests mean bitwise-equal
    tensors. A tensor on an accelerator is copied to the CPU first (one tensor at a time)."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def row_chunks(shape: torch.Size | tuple, element_size: int) -> Iterable[slice]:
    """Row ranges of a tensor of ``shape`` holding at most about :data:`CHUNK_BYTES` each
    (one range for a 0-d or 1-d tensor)."""
    if len(shape) < 2:
        yield slice(None)
        return
    row_bytes = max(1, element_size * int(torch.Size(shape[1:]).numel()))
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, int(shape[0]), step):
        yield slice(start, min(start + step, int(shape[0])))


class SavedWeights:
    """The tensors of a safetensors checkpoint (a file, or a folder of one or more
    ``*.safetensors`` shards as ``save_pretrained`` writes them), read on demand through
    ``safetensors.safe_open`` (memory-mapped; a file is mapped only while it is read)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise DataError(f"{path}: no safetensors checkpoint (*.safetensors) there")
        from safetensors import safe_open

        self.path = path
        self._open = safe_open
        self.files: dict[str, Path] = {}
        for file in files:
            with safe_open(file, framework="pt") as handle:
                self.files.update(dict.fromkeys(handle.keys(), file))

    def names(self) -> list[str]:
        return sorted(self.files)

    def rows(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        """Tensor ``name`` (rows ``rows`` of it), copied out of the mapped file."""
        if name not in self.files:
            raise DataError(f"{self.path}: the checkpoint has no tensor {name!r}")
        with self._open(self.files[name], framework="pt") as handle:
            part = handle.get_slice(name)
            return part[rows] if part.get_shape() else handle.get_tensor(name)

    def shape(self, name: str) -> list[int]:
        with self._open(self.files[name], framework="pt") as handle:
            return list(handle.get_slice(name).get_shape())


def weights_fingerprint(path: str | Path) -> str:
    """sha256 identifying a saved checkpoint's weights exactly: over its tensors in sorted
    name order, each entering as its name and :func:`tensor_digest` (so dtype, shape and
    every bit count; file layout, sharding and metadata do not)."""
    saved = SavedWeights(path)
    digest = hashlib.sha256()
    for name in saved.names():
        digest.update(f"{name}\t{tensor_digest(saved.rows(name))}\n".encode())
    return digest.hexdigest()
