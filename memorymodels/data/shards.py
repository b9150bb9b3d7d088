"""Token shards: one safetensors file per shard holding ``input_ids`` of shape ``(rows, context)``.

Shards are written under a temporary name and renamed, so a file named ``NNNNN.safetensors`` is always complete.
They are read by memory-mapping the tensor straight from the file (the safetensors layout is an 8-byte header
length, a JSON header, then the raw little-endian data), so opening one reads only its header.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from memorymodels.data.errors import DataError

TENSOR = "input_ids"
DTYPES = {"U16": np.dtype("<u2"), "I32": np.dtype("<i4")}
DTYPE_NAMES = {"uint16": "U16", "int32": "I32"}


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when every id fits in 16 bits, else ``"int32"``."""
    return "uint16" if vocab_size <= 2**16 else "int32"


def shard_name(index: int) -> str:
    return f"{index:05d}.safetensors"


def write_shard(path: Path, rows: np.ndarray, metadata: dict[str, str]) -> str:
    """Write ``rows`` (2-D token ids) to ``path`` atomically; return the file's SHA-256."""
    from safetensors.numpy import save

    blob = save({TENSOR: np.ascontiguousarray(rows)}, metadata={k: str(v) for k, v in metadata.items()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(blob).hexdigest()


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data starts."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header length out of range")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise DataError(f"{path}: not a readable safetensors shard ({exc}); pretokenize again") from None
    return header, 8 + length


def shard_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a shard (``__metadata__``)."""
    return read_header(path)[0].get("__metadata__", {}) or {}


def open_shard(path: Path) -> np.ndarray:
    """Memory-map the ``input_ids`` of a shard (no data is read until rows are indexed)."""
    header, start = read_header(path)
    info = header.get(TENSOR)
    if info is None or info.get("dtype") not in DTYPES or len(info.get("shape", ())) != 2:
        raise DataError(f"{path}: expected a 2-D '{TENSOR}' tensor of uint16 or int32 ids")
    begin, end = info["data_offsets"]
    dtype = DTYPES[info["dtype"]]
    rows, context = info["shape"]
    if end - begin != rows * context * dtype.itemsize or os.path.getsize(path) < start + end:
        raise DataError(f"{path}: truncated shard ({os.path.getsize(path)} bytes); pretokenize again")
    if rows == 0:
        return np.zeros((0, context), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(rows, context))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
