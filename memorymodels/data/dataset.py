"""``TokenDataset``: the rows of a pretokenized split, memory-mapped, as training examples.

    >>> data = TokenDataset("OUT", "train", expect_tokenizer="TOKENIZER_DIR", expect_context=512)
    >>> data[0]["input_ids"].shape, data[0]["labels"][:4]        # int64 tensors of length context
    >>> data.rows(0, 64)                                         # raw token ids (numpy, int64), fast

Opening reads the manifest and each shard's header only; rows are read from the page cache when indexed.
``labels`` equal ``input_ids`` with every pad set to -100 (models shift them as their loss needs); the
``attention_mask`` is 1 for real tokens (eos included) and 0 for pads.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import torch

from memorymodels.data import shards
from memorymodels.data.errors import DataError
from memorymodels.data.pipeline import MANIFEST_FILE, PLAN_FILE
from memorymodels.data.tokenizer import fingerprint

IGNORE_INDEX = -100


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a finished dataset; a missing or unfinished one is a DataError saying what to run."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_FILE
    if not path.is_file():
        state = "an unfinished pretokenize run (rerun it to finish)" if (data_dir / PLAN_FILE).exists() else (
            "no pretokenized dataset")
        raise DataError(
            f"{data_dir}: no {MANIFEST_FILE}: {state}; make one with python -m memorymodels.data.pretokenize "
            f"--corpus CORPUS --tokenizer DIR --context N --out {data_dir}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); pretokenize again into a new directory") from None


class LazyShards:
    """The token arrays of a split's shards, ``(rows, context)`` each, memory-mapped on first use.

    Opening a dataset only checks that the files exist and are large enough, so it takes milliseconds even for
    thousands of shards; a shard's header is read and its data mapped when a row of it is first asked for.
    """

    def __init__(self, paths: list[Path], rows: list[int], context: int):
        self.paths, self.rows, self.context = paths, rows, context
        self.arrays: list[np.ndarray | None] = [None] * len(paths)
        for path, count in zip(paths, rows):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise DataError(f"{path}: shard listed in the manifest is missing; pretokenize again") from None
            if size < count * context * 2:
                raise DataError(f"{path}: truncated shard ({size} bytes for {count} rows); pretokenize again")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        array = self.arrays[index]
        if array is None:
            array = shards.open_shard(self.paths[index])
            if array.shape != (self.rows[index], self.context):
                raise DataError(f"{self.paths[index]}: shape {array.shape} disagrees with the manifest")
            self.arrays[index] = array
        return array

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getstate__(self) -> dict:
        # DataLoader workers started with spawn get a pickled copy: send paths, not the mapped data
        return {**self.__dict__, "arrays": [None] * len(self.paths)}


class TokenDataset(torch.utils.data.Dataset):
    """Rows of one split (``train`` or ``test``) of a pretokenized dataset directory."""

    def __init__(self, data_dir: str | Path, split: str = "train", *, expect_tokenizer: str | Path | None = None,
                 expect_context: int | None = None):
        self.data_dir = Path(data_dir)
        self.split = split
        self.manifest = read_manifest(self.data_dir)
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise DataError(f"{self.data_dir}: no split '{split}' (it has {', '.join(splits) or 'none'})")
        self.context = int(self.manifest["context"])
        self.pad_id = int(self.manifest["tokenizer"]["pad_id"])
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        self.check(expect_tokenizer=expect_tokenizer, expect_context=expect_context)
        entries = splits[split]["shards"]
        paths = [self.data_dir / e["file"] for e in entries]
        self.tokens = LazyShards(paths, [e["rows"] for e in entries], self.context)
        self.offsets = np.cumsum([0] + [e["rows"] for e in entries]).tolist()  # first row of each shard

    def check(self, *, expect_tokenizer=None, expect_context=None) -> None:
        """Fail when the dataset was made with another tokenizer or context than the experiment expects."""
        if expect_context is not None and int(expect_context) != self.context:
            raise DataError(
                f"{self.data_dir}: dataset context is {self.context} tokens per row, but the experiment expects "
                f"{expect_context}; pretokenize with --context {expect_context} or set the experiment's context to "
                f"{self.context}"
            )
        if expect_tokenizer is not None:
            made_with = self.manifest["tokenizer"]
            wanted = fingerprint(expect_tokenizer)
            if wanted != made_with["fingerprint"]:
                raise DataError(
                    f"{self.data_dir}: dataset was pretokenized with tokenizer {made_with['path']} (fingerprint "
                    f"{made_with['fingerprint']}), but the experiment expects tokenizer {expect_tokenizer} "
                    f"(fingerprint {wanted}); pretokenize again with --tokenizer {expect_tokenizer}"
                )

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows in {self.data_dir} ({self.split})")
        shard = bisect.bisect_right(self.offsets, index) - 1
        return shard, index - self.offsets[shard]

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Raw token ids of rows ``start:stop`` as an int64 array ``(n, context)`` (pads included)."""
        stop = len(self) if stop is None else min(stop, len(self))
        parts = []
        while start < stop:
            shard, local = self._locate(start)
            take = min(stop - start, len(self.tokens[shard]) - local)
            parts.append(np.asarray(self.tokens[shard][local: local + take], dtype=np.int64))
            start += take
        return np.concatenate(parts) if parts else np.zeros((0, self.context), dtype=np.int64)

    def example(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and ``labels`` (pads -> -100) for token ids of any leading shape."""
        # numpy, not torch: torch runs ops on batches this size on its thread pool, which costs far more than the
        # work itself on a busy machine (40 ms instead of 0.1 ms for 128 x 512 rows)
        input_ids = np.asarray(ids, dtype=np.int64)
        real = input_ids != self.pad_id
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
            "labels": torch.from_numpy(np.where(real, input_ids, IGNORE_INDEX)),
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, local = self._locate(int(index))
        return self.example(self.tokens[shard][local])

    def __getitems__(self, indices) -> list[dict[str, torch.Tensor]]:
        """Many rows at once (what ``DataLoader`` calls for a batch when the dataset has it): built as one batch,
        handed back as rows for the collate function."""
        batch = self.batch(indices)
        return [{key: value[i] for key, value in batch.items()} for i in range(len(indices))]

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Stacked rows ``[len(indices), context]`` for the given row indices."""
        located = [self._locate(int(i)) for i in indices]
        ids = np.stack([self.tokens[s][r] for s, r in located]) if located else np.zeros((0, self.context))
        return self.example(ids)

    def verify(self) -> None:
        """Read every shard of the split and compare its SHA-256 with the manifest (reads all the data)."""
        for entry in self.manifest["splits"][self.split]["shards"]:
            path = self.data_dir / entry["file"]
            if shards.file_sha256(path) != entry["sha256"]:
                raise DataError(f"{path}: checksum differs from {self.data_dir / 'manifest.json'}; the shard is damaged,"
                                " pretokenize again into a new directory")

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.data_dir)!r}, {self.split!r}: {len(self)} rows x {self.context}, "
                f"{self.manifest['mode']}, {self.manifest['padding_side']} padding)")
