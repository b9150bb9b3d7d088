"""Pretokenization: a corpus into fixed-length rows stored as safetensors shards, with a manifest.

The command is ``python -m memorymodels.data.pretokenize`` (``memorymodels/data/pretokenize.py``); this module holds
the work, ``pretokenize(corpus, tokenizer_dir, out, context=..., mode=..., padding_side=...)``.
Modes:

- ``padded`` (the seed's default): one row per document, truncated to ``context`` tokens or filled with ``<|pad|>``
  on the ``--padding-side`` (left by default, so the last position holds a real token). No eos is added.
- ``packed``: every document is followed by ``<|endoftext|>`` and the token stream is cut into rows of ``context``
  tokens, in one pass over the corpus; only the very last row of a split is padded, and nothing is dropped.

Output: ``OUT/manifest.json`` (written last: its presence means the dataset is complete), ``OUT/train/NNNNN.safetensors``
and ``OUT/test/NNNNN.safetensors`` (tensor ``input_ids``, uint16 when the vocabulary fits, else int32).
``manifest["splits"][split]`` holds ``docs``, ``rows``, ``tokens`` (non-pad tokens, eos included), ``bytes`` (UTF-8
bytes of the text that went into the rows: truncated text counts only up to the cut) and ``shards`` (file, rows,
sha256).

How it runs: a reader thread streams documents in batches of about 1 MB; ``tokenizers`` encodes each batch on all
cores; the main thread cuts rows into a buffer of one shard and writes each full shard under a temporary name, then
renames it. Memory stays at about one shard plus two batches whatever the corpus size. Each shard records where in
the corpus it ends, so a rerun after an interruption skips the finished shards and continues from there; the manifest
only appears when both splits are complete. A directory holding a different dataset is never written into.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from memorymodels.data import shards
from memorymodels.data.corpus import SPLITS, TEST_PERCENT, Corpus, open_corpus
from memorymodels.data.errors import DataError
from memorymodels.data.tokenizer import EOS_ID, PAD_ID, fingerprint, load_tokenizer

MODES = ("packed", "padded")
PADDING_SIDES = ("left", "right")
FORMAT = "memorymodels-tokens/1"
SHARD_TOKENS = 1 << 24  # tokens per shard: 32 MB of uint16
BATCH_CHARS = 1 << 20
BATCH_DOCS = 4096
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
SETTING_KEYS = ("format", "source", "tokenizer_fingerprint", "context", "mode", "padding_side", "dtype", "shard_rows")


# --------------------------------------------------------------------------------------------- rows


@dataclass
class Rows:
    """Rows cut from one batch of documents, with what a shard ending at each row must record."""

    ids: np.ndarray  # (r, context) token ids
    next_doc: np.ndarray  # (r,) corpus position of the first document not fully used after this row
    next_offset: np.ndarray  # (r,) tokens of that document already in rows
    docs: np.ndarray  # (r,) documents that start in this row
    nbytes: np.ndarray  # (r,) UTF-8 bytes of the documents that start in this row

    def __len__(self) -> int:
        return len(self.ids)


def padded_rows(encodings, texts, positions, nbytes, *, context: int, left: bool, dtype) -> Rows:
    """One row per non-empty document, padded on the left or right. The encodings come truncated to ``context``
    tokens (``Tokenizer.enable_truncation``); a truncated document counts only the bytes up to its last kept token."""
    keep = [i for i, enc in enumerate(encodings) if enc.ids]
    ids = np.full((len(keep), context), PAD_ID, dtype=dtype)
    used_bytes = np.empty(len(keep), dtype=np.int64)
    for row, i in enumerate(keep):
        enc = encodings[i]
        tokens = enc.ids
        used_bytes[row] = nbytes[i]
        if enc.overflowing:
            used_bytes[row] = len(texts[i][: enc.offsets[-1][1]].encode("utf-8"))
        if left:
            ids[row, context - len(tokens):] = tokens
        else:
            ids[row, : len(tokens)] = tokens
    next_doc = np.asarray([positions[i] + 1 for i in keep], dtype=np.int64)
    ones = np.ones(len(keep), dtype=np.int64)
    return Rows(ids, next_doc, np.zeros(len(keep), dtype=np.int64), ones, used_bytes)


class Packer:
    """Concatenates documents, each followed by eos, and cuts the stream into rows of ``context`` tokens.

    Positions are global token indices in the split's stream; ``start`` is where this run begins (after the rows of
    already finished shards). Tokens that do not fill a row wait in ``carry`` for the next batch or ``finish``.
    """

    def __init__(self, *, context: int, left: bool, dtype, start: int = 0):
        self.context, self.left, self.dtype = context, left, dtype
        self.carry = np.zeros(0, dtype=dtype)
        self.position = start  # global index of carry[0]
        self.pending_docs = 0  # documents that start in carry
        self.pending_bytes = 0
        self.last_doc = -1

    def add(self, encodings, positions, nbytes, first_offset: int = 0) -> Rows:
        flat, lengths, counted = [], [], []
        for k, enc in enumerate(encodings):
            if not enc.ids:
                continue
            tokens = enc.ids + [EOS_ID]
            lengths.append(len(tokens))
            if k == 0 and first_offset:
                tokens = tokens[first_offset:]  # resuming inside this document: its head is in finished shards
            counted.append(not (k == 0 and first_offset))
            flat.extend(tokens)
        kept = [i for i, enc in enumerate(encodings) if enc.ids]
        if positions:
            self.last_doc = positions[-1]
        if not kept:
            return self._empty()
        lengths = np.asarray(lengths, dtype=np.int64)
        batch_start = self.position + len(self.carry)
        first_shift = first_offset if encodings[0].ids else 0
        starts = batch_start - first_shift + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ends = starts + lengths
        stream = np.concatenate([self.carry, np.asarray(flat, dtype=self.dtype)])
        n_rows = len(stream) // self.context
        ids = stream[: n_rows * self.context].reshape(n_rows, self.context)
        self.carry = stream[n_rows * self.context:].copy()

        row_ends = self.position + self.context * np.arange(1, n_rows + 1, dtype=np.int64)
        self.position += n_rows * self.context
        after = np.searchsorted(ends, row_ends, side="right")
        doc_positions = np.asarray([positions[i] for i in kept] + [self.last_doc + 1], dtype=np.int64)
        next_doc = doc_positions[after]
        next_offset = np.where(after < len(kept), row_ends - starts[np.minimum(after, len(kept) - 1)], 0)

        counted = np.asarray(counted)
        counted_starts = starts[counted]
        counted_bytes = np.concatenate([[0], np.cumsum(np.asarray([nbytes[i] for i in kept], dtype=np.int64)[counted])])
        before = np.searchsorted(counted_starts, np.concatenate([[self.position - n_rows * self.context], row_ends]))
        docs = np.diff(before)
        used_bytes = np.diff(counted_bytes[before])
        if n_rows:
            docs[0] += self.pending_docs
            used_bytes[0] += self.pending_bytes
            self.pending_docs = self.pending_bytes = 0
        self.pending_docs += int(len(counted_starts) - before[-1])
        self.pending_bytes += int(counted_bytes[-1] - counted_bytes[before[-1]])
        return Rows(ids, next_doc, next_offset.astype(np.int64), docs.astype(np.int64), used_bytes.astype(np.int64))

    def finish(self) -> Rows:
        """The last, padded row (empty when the stream filled whole rows)."""
        if not len(self.carry):
            return self._empty()
        row = np.full((1, self.context), PAD_ID, dtype=self.dtype)
        if self.left:
            row[0, self.context - len(self.carry):] = self.carry
        else:
            row[0, : len(self.carry)] = self.carry
        rows = Rows(row, np.asarray([self.last_doc + 1]), np.zeros(1, dtype=np.int64),
                    np.asarray([self.pending_docs]), np.asarray([self.pending_bytes]))
        self.carry = self.carry[:0]
        self.pending_docs = self.pending_bytes = 0
        return rows

    def _empty(self) -> Rows:
        empty = np.zeros(0, dtype=np.int64)
        return Rows(np.zeros((0, self.context), dtype=self.dtype), empty, empty, empty, empty)


# -------------------------------------------------------------------------------------------- shards


class ShardWriter:
    """Collects rows into shards of ``shard_rows`` rows and writes each one atomically when full."""

    def __init__(self, split_dir: Path, *, context: int, dtype, shard_rows: int, index: int, plan_hash: str):
        self.split_dir, self.shard_rows, self.index, self.plan_hash = split_dir, shard_rows, index, plan_hash
        self.buffer = np.empty((shard_rows, context), dtype=dtype)
        self.count = self.docs = self.nbytes = 0
        self.resume = (0, 0)
        self.records: list[dict] = []

    def add(self, rows: Rows) -> None:
        done = 0
        while done < len(rows):
            take = min(self.shard_rows - self.count, len(rows) - done)
            part = slice(done, done + take)
            self.buffer[self.count: self.count + take] = rows.ids[part]
            self.docs += int(rows.docs[part].sum())
            self.nbytes += int(rows.nbytes[part].sum())
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
            "tokens": int(np.count_nonzero(ids != PAD_ID)),
            "next_doc": self.resume[0],
            "next_offset": self.resume[1],
            "plan": self.plan_hash,
        }
        path = self.split_dir / shards.shard_name(self.index)
        sha = shards.write_shard(path, ids, meta)
        self.records.append(_record(path, meta, sha))
        self.index += 1
        self.count = self.docs = self.nbytes = 0


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
    while (path := split_dir / shards.shard_name(len(records))).is_file():
        meta = shards.shard_metadata(path)
        if meta.get("plan") != plan_hash:
            raise DataError(f"{path}: written for a different dataset; delete {split_dir.parent} or use another --out")
        shards.open_shard(path)  # checks the size
        records.append(_record(path, meta, shards.file_sha256(path)))
    return records


# ----------------------------------------------------------------------------------------- pipeline


def _read_batches(corpus: Corpus, split: str, skip: int) -> Iterator[tuple[list[int], list[str], list[int]]]:
    """Batches of (corpus positions, texts, UTF-8 byte counts), skipping the first ``skip`` documents unread."""
    positions, texts, nbytes, chars = [], [], [], 0
    for position, text in enumerate(corpus.documents(split)):
        if position < skip:
            continue
        positions.append(position)
        texts.append(text)
        nbytes.append(len(text.encode("utf-8")))
        chars += len(text)
        if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
            yield positions, texts, nbytes
            positions, texts, nbytes, chars = [], [], [], 0
    if texts:
        yield positions, texts, nbytes


def _prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a thread, ``depth`` items ahead (reading overlaps encoding; memory stays bounded)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="pretokenize-reader")
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _progress(enabled: bool | None, split: str):
    from tqdm import tqdm

    return tqdm(desc=f"pretokenize {split}", unit=" doc", disable=not enabled if enabled is not None else None,
                file=sys.stderr, dynamic_ncols=True)


def tokenize_split(corpus: Corpus, split: str, tokenizer, settings: dict, out: Path, progress: bool | None) -> list[dict]:
    """Write (or finish writing) the shards of one split; return the records of all its shards."""
    split_dir = out / split
    split_dir.mkdir(exist_ok=True)
    plan_hash = settings["plan_hash"]
    records = finished_shards(split_dir, plan_hash)
    next_doc, next_offset = (records[-1]["next_doc"], records[-1]["next_offset"]) if records else (0, 0)
    context, dtype = settings["context"], np.dtype(settings["dtype"])
    left = settings["padding_side"] == "left"
    writer = ShardWriter(split_dir, context=context, dtype=dtype, shard_rows=settings["shard_rows"],
                         index=len(records), plan_hash=plan_hash)
    packer = None
    if settings["mode"] == "packed":
        packer = Packer(context=context, left=left, dtype=dtype, start=sum(r["rows"] for r in records) * context)
    # encode_batch_fast skips character offsets, which only padded mode needs (to count truncated bytes)
    encode = tokenizer.encode_batch_fast if packer and hasattr(tokenizer, "encode_batch_fast") else tokenizer.encode_batch
    if packer is None:
        tokenizer.enable_truncation(max_length=context)  # the cut rows only: far less to hand back to Python
    first_offset = next_offset
    with _progress(progress, split) as bar:
        for positions, texts, nbytes in _prefetched(_read_batches(corpus, split, next_doc)):
            encodings = encode(texts, add_special_tokens=False)
            if packer is None:
                rows = padded_rows(encodings, texts, positions, nbytes, context=context, left=left, dtype=dtype)
            else:
                rows = packer.add(encodings, positions, nbytes, first_offset if positions[0] == next_doc else 0)
                first_offset = 0
            writer.add(rows)
            bar.update(len(texts))
        if packer is not None:
            writer.add(packer.finish())
        writer.flush()
    return records + writer.records


def _settings(corpus: Corpus, tokenizer_dir: Path, tokenizer, *, context, mode, padding_side, shard_rows) -> dict:
    if not isinstance(context, int) or isinstance(context, bool) or context < 2:
        raise DataError(f"context {context!r}: must be an integer of at least 2 (tokens per row)")
    if mode not in MODES:
        raise DataError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    if padding_side not in PADDING_SIDES:
        raise DataError(f"padding side {padding_side!r}: use one of {', '.join(PADDING_SIDES)}")
    if shard_rows is None:
        shard_rows = max(1, SHARD_TOKENS // context)
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise DataError(f"shard_rows {shard_rows!r}: must be a positive integer")
    settings = {
        "format": FORMAT,
        "source": corpus.spec,
        "tokenizer_fingerprint": fingerprint(tokenizer_dir),
        "context": context,
        "mode": mode,
        "padding_side": padding_side,
        "dtype": shards.token_dtype(tokenizer.get_vocab_size()),
        "shard_rows": shard_rows,
    }
    blob = json.dumps(settings, sort_keys=True).encode()
    settings["plan_hash"] = hashlib.sha256(blob).hexdigest()[:16]
    return settings


def _differences(found: dict, wanted: dict) -> list[str]:
    return [f"{key} {found.get(key)!r} there, {wanted[key]!r} asked" for key in SETTING_KEYS if found.get(key) != wanted[key]]


def _check_out_dir(out: Path, settings: dict) -> dict | None:
    """The finished manifest when ``out`` already holds this dataset; an error when it holds anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory; choose another --out")
    for name in (MANIFEST_FILE, PLAN_FILE):
        path = out / name
        if path.is_file():
            found = json.loads(path.read_text())
            diff = _differences(found.get("settings", found), settings)
            if diff:
                raise DataError(
                    f"{out}: holds a different dataset ({'; '.join(diff)}); nothing was overwritten. "
                    "Choose another --out, or delete the directory to rebuild it"
                )
            return found if name == MANIFEST_FILE else None
    leftovers = [p.name for p in out.iterdir() if p.name != ".lock"]
    if leftovers:
        raise DataError(
            f"{out}: not empty and not a pretokenized dataset (holds {', '.join(sorted(leftovers)[:5])}); "
            "choose an empty or new --out"
        )
    return None


@contextlib.contextmanager
def _exclusive(out: Path):
    """Hold ``out/.lock`` so that two runs never write the same directory."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{out}: another pretokenize run is writing here; wait for it or use another --out") from None
        yield


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def pretokenize(
    corpus: str | Corpus,
    tokenizer_dir: str | Path,
    out: str | Path,
    *,
    context: int,
    mode: str = "packed",
    padding_side: str = "left",
    shard_rows: int | None = None,
    progress: bool | None = False,
) -> dict:
    """Pretokenize both splits of ``corpus`` into ``out``; return the manifest. A finished ``out`` is reused as is."""
    corpus = open_corpus(corpus)
    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    tokenizer = load_tokenizer(tokenizer_dir)
    settings = _settings(corpus, tokenizer_dir, tokenizer, context=context, mode=mode, padding_side=padding_side,
                         shard_rows=shard_rows)
    if (manifest := _check_out_dir(out, settings)) is not None:
        return manifest
    with _exclusive(out):
        if (manifest := _check_out_dir(out, settings)) is not None:
            return manifest
        _write_json(out / PLAN_FILE, {k: v for k, v in settings.items()})
        for stale in list(out.glob("*/.*.tmp-*")):
            stale.unlink()  # half-written shards of a killed run (we hold the lock, so no one is writing them)
        started = time.time()
        splits = {}
        for split in ("test", "train"):
            records = tokenize_split(corpus, split, tokenizer, settings, out, progress)
            docs = sum(r["docs"] for r in records)
            if docs == 0:
                hint = f" (the held-out {TEST_PERCENT}% of documents, chosen by a hash of their path)" if split == "test" else ""
                raise DataError(
                    f"corpus '{corpus.spec}': the {split} split{hint} has no documents; the corpus is empty or too "
                    "small (give at least ~50 documents)"
                )
            splits[split] = {
                "docs": docs,
                "rows": sum(r["rows"] for r in records),
                "tokens": sum(r["tokens"] for r in records),
                "bytes": sum(r["bytes"] for r in records),
                "shards": [{k: r[k] for k in ("file", "rows", "sha256")} for r in records],
            }
        manifest = {
            **{k: settings[k] for k in SETTING_KEYS},
            "tokenizer": {"path": str(tokenizer_dir.resolve()), "fingerprint": settings["tokenizer_fingerprint"],
                          "vocab_size": tokenizer.get_vocab_size(), "pad_id": PAD_ID, "eos_id": EOS_ID},
            "splits": splits,
            "seconds": round(time.time() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_json(out / MANIFEST_FILE, manifest)
        return manifest
