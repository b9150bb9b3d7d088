"""Token shards: one safetensors file per shard holding ``input_ids`` of shape ``(rows, context)``.

Shards are written under a temporary name and renamed, so a file named ``NNNNN.safetensors`` is always complete.
They are read by memory-mapping the tensor straight from the file (the safetensors layout is an 8-byte header
length, a JSON header, then the raw little-endian data), so opening one reads only its header.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from memorymodels.data.errors import DataError
from memorymodels.data.tokenizer import PAD_ID
from memorymodels.fileio import atomic_file

TENSOR = "input_ids"
DTYPES = {"U16": np.dtype("<u2"), "I32": np.dtype("<i4")}
DTYPE_NAMES = {"uint16": "U16", "int32": "I32"}


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when every id fits in 16 bits, else ``"int32"``."""
    return "uint16" if vocab_size <= 2**16 else "int32"


def shard_name(index: int) -> str:
    return f"{index:05d}.safetensors"


def write_shard(path: Path, rows: np.ndarray, metadata: dict[str, str]) -> str:
    """Write ``rows`` (2-D token ids) to ``path`` atomically in the safetensors format; return the file's SHA-256.

    The header is written with sorted keys (the ``safetensors`` package orders metadata at random), so the same
    rows and metadata always give the same bytes and the same checksum.
    """
    rows = np.ascontiguousarray(rows)
    name = next((n for n, dt in DTYPES.items() if dt == rows.dtype), None)
    if name is None or rows.ndim != 2:
        raise ValueError(f"shards hold 2-D uint16 or int32 token ids, not {rows.dtype} of shape {rows.shape}")
    header = {
        "__metadata__": {k: str(v) for k, v in metadata.items()},
        TENSOR: {"dtype": name, "shape": list(rows.shape), "data_offsets": [0, rows.nbytes]},
    }
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    digest = hashlib.sha256()
    with atomic_file(path, fsync=True) as handle:
        for part in (struct.pack("<Q", len(blob)), blob, memoryview(rows).cast("B")):
            digest.update(part)
            handle.write(part)
    return digest.hexdigest()


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
    """Memory-map the ``input_ids`` of a shard: a read-only ``(rows, context)`` array whose data stays on disk
    (in the page cache) until rows are indexed. A plain ndarray over ``mmap``, not ``np.memmap``, whose per-row
    indexing costs several times more."""
    header, start = read_header(path)
    info = header.get(TENSOR)
    if info is None or info.get("dtype") not in DTYPES or len(info.get("shape", ())) != 2:
        raise DataError(f"{path}: expected a 2-D '{TENSOR}' tensor of uint16 or int32 ids")
    begin, end = info["data_offsets"]
    dtype = DTYPES[info["dtype"]]
    rows, context = info["shape"]
    size = os.path.getsize(path)
    if end - begin != rows * context * dtype.itemsize or size < start + end:
        raise DataError(f"{path}: truncated shard ({size} bytes); pretokenize again")
    if rows == 0:
        return np.zeros((0, context), dtype=dtype)
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # stays valid after the file closes
    return np.frombuffer(mapped, dtype=dtype, count=rows * context, offset=start + begin).reshape(rows, context)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ writing a split


class ShardWriter:
    """Collects rows into shards of ``shard_rows`` rows and writes each one atomically when full."""

    def __init__(self, split_dir: Path, *, context: int, dtype, shard_rows: int, index: int, plan_hash: str):
        self.split_dir, self.shard_rows, self.index, self.plan_hash = split_dir, shard_rows, index, plan_hash
        self.buffer = np.empty((shard_rows, context), dtype=dtype)
        self.count = self.docs = self.nbytes = self.tokens = 0
        self.resume = (0, 0)
        self.records: list[dict] = []

    def add(self, rows) -> None:
        """Append rows (a ``memorymodels.data.rows.Rows``), writing every shard that fills up."""
        done = 0
        while done < len(rows):
            take = min(self.shard_rows - self.count, len(rows) - done)
            part = slice(done, done + take)
            self.buffer[self.count: self.count + take] = rows.ids[part]
            self.docs += int(rows.docs[part].sum())
            self.nbytes += int(rows.nbytes[part].sum())
            self.tokens += int(np.count_nonzero(rows.ids[part] != PAD_ID))  # per batch: no shard-sized temporary
            self.resume = (int(rows.next_doc[done + take - 1]), int(rows.next_offset[done + take - 1]))
            self.count += take
            done += take
            if self.count == self.shard_rows:
                self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        ids = self.buffer[: self.count]
        meta = {
            "rows": self.count,
            "docs": self.docs,
            "bytes": self.nbytes,
            "tokens": self.tokens,
            "next_doc": self.resume[0],
            "next_offset": self.resume[1],
            "plan": self.plan_hash,
        }
        path = self.split_dir / shard_name(self.index)
        sha = write_shard(path, ids, meta)
        self.records.append(_record(path, meta, sha))
        self.index += 1
        self.count = self.docs = self.nbytes = self.tokens = 0


def _record(path: Path, meta: dict, sha: str) -> dict:
    return {
        "file": f"{path.parent.name}/{path.name}",
        "rows": int(meta["rows"]),
        "docs": int(meta["docs"]),
        "tokens": int(meta["tokens"]),
        "bytes": int(meta["bytes"]),
        "sha256": sha,
        "next_doc": int(meta["next_doc"]),
        "next_offset": int(meta["next_offset"]),
    }


def finished_shards(split_dir: Path, plan_hash: str) -> list[dict]:
    """Records of the shards already complete in ``split_dir`` (consecutive from 00000), checked against the plan."""
    records = []
    while (path := split_dir / shard_name(len(records))).is_file():
        meta = shard_metadata(path)
        if meta.get("plan") != plan_hash:
            raise DataError(f"{path}: written for a different dataset; delete {split_dir.parent} or use another --out")
        open_shard(path)  # checks the size
        records.append(_record(path, meta, file_sha256(path)))
    return records
