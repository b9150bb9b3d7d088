"""Pretokenization: a corpus into fixed-length rows stored as safetensors shards, with a manifest.

The command is ``python -m memorymodels.data.pretokenize`` (``memorymodels/data/pretokenize.py``); this module holds
the work, ``pretokenize(corpus, tokenizer_dir, out, context=..., mode=..., padding_side=...)``.

Modes:

- ``padded`` (the seed's default): one row per document, truncated to ``context`` tokens or filled with ``<|pad|>``
  on the ``--padding-side`` (left by default, so the last position holds a real token). No eos is added.
- ``packed``: every document is followed by ``<|endoftext|>`` and the token stream is cut into rows of ``context``
  tokens, in one pass over the corpus; only the very last row of a split is padded, and nothing is dropped.

Output: ``OUT/manifest.json`` (written last: its presence means the dataset is complete),
``OUT/train/NNNNN.safetensors`` and ``OUT/test/NNNNN.safetensors`` (tensor ``input_ids``, uint16 when the
vocabulary fits, else int32).
``manifest["splits"][split]`` holds ``docs``, ``rows``, ``tokens`` (non-pad tokens, eos included), ``bytes`` (UTF-8
bytes of the text that went into the rows: truncated text counts only up to the cut) and ``shards`` (file, rows,
sha256).

How it runs: a reader thread streams documents in batches of about 1 MB; ``tokenizers`` encodes each batch on all
cores; the main thread cuts rows into a buffer of one shard and writes each full shard under a temporary name, then
renames it. Memory stays at about one shard plus two batches whatever the corpus size (and the encoding of the
largest single document, which is held whole: about 100 bytes per token). Each shard records where in
the corpus it ends, so a rerun after an interruption skips the finished shards and continues from there; the manifest
only appears when both splits are complete. A directory holding a different dataset is never written into.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from memorymodels.data import shards
from memorymodels.data.corpus import TEST_PERCENT, Corpus, open_corpus
from memorymodels.data.errors import DataError
from memorymodels.data.rows import Packer, padded_rows
from memorymodels.data.shards import ShardWriter, finished_shards
from memorymodels.fileio import write_json
from memorymodels.data.tokenizer import EOS_ID, PAD_ID, fingerprint, load_tokenizer, token_byte_lengths

MODES = ("packed", "padded")
PADDING_SIDES = ("left", "right")
FORMAT = "memorymodels-tokens/1"
SHARD_TOKENS = 1 << 24  # tokens per shard: 32 MB of uint16
BATCH_CHARS = 1 << 20
BATCH_DOCS = 4096
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
SETTING_KEYS = ("format", "source", "tokenizer_fingerprint", "context", "mode", "padding_side", "dtype", "shard_rows")


# ----------------------------------------------------------------------------------------- pipeline


def _read_batches(corpus: Corpus, split: str, skip: int) -> Iterator[tuple[list[int], list[str], list[int]]]:
    """Batches of (corpus positions, texts, UTF-8 byte counts); the first ``skip`` documents are passed over."""
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


def tokenize_split(
    corpus: Corpus, split: str, tokenizer, settings: dict, out: Path, progress: bool | None
) -> list[dict]:
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
    # encode_batch_fast skips character offsets, which nothing here needs. (Truncating inside tokenizers would hand
    # back every overflowing piece as an Encoding: three times slower than cutting the ids here.)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    token_bytes = token_byte_lengths(tokenizer)
    first_offset = next_offset
    with _progress(progress, split) as bar:
        for positions, texts, nbytes in _prefetched(_read_batches(corpus, split, next_doc)):
            encodings = encode(texts, add_special_tokens=False)
            if packer is None:
                rows = padded_rows(encodings, positions, nbytes, context=context, left=left, dtype=dtype,
                                   token_bytes=token_bytes)
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
    differ = [key for key in SETTING_KEYS if found.get(key) != wanted[key]]
    return [f"{key} {found.get(key)!r} there, {wanted[key]!r} asked" for key in differ]


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
            raise DataError(
                f"{out}: another pretokenize run is writing here; wait for it or use another --out"
            ) from None
        yield


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
        write_json(out / PLAN_FILE, settings)
        for stale in list(out.glob("*/.*.tmp-*")):
            stale.unlink()  # half-written shards of a killed run (we hold the lock, so no one is writing them)
        started = time.time()
        splits = {}
        for split in ("test", "train"):
            records = tokenize_split(corpus, split, tokenizer, settings, out, progress)
            docs = sum(r["docs"] for r in records)
            if docs == 0:
                hint = ""
                if split == "test" and not corpus.spec.startswith("hf:"):
                    hint = f" (the held-out {TEST_PERCENT}% of documents, chosen by a hash of their path)"
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
        write_json(out / MANIFEST_FILE, manifest)
        return manifest
