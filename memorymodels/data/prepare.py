"""``prepare_data``: a trained tokenizer plus pretokenized shards for a corpus, made once and cached.

    >>> prepared = prepare_data("stdlib-small", vocab_size=512, context=128, cache_dir=".state/cache")
    >>> TokenDataset(prepared.data_dir, "train", expect_tokenizer=prepared.tokenizer_dir, expect_context=128)

The cache entry is ``CACHE_DIR/<corpus>-v<vocab>-c<context>-<mode>-<side>-<hash>/`` with ``tokenizer/`` and
``data/``; the hash covers what determines the prepared data: every argument, the corpus's identity, the pipeline
format and the version of the code that prepares it (:func:`code_version`, a hash of this package's source files),
so different settings or changed data code never share an entry, while the same code anywhere (a checkout, any
code snapshot of a job) finds the same one. Where the cache lives is the caller's choice: jobs use the profile's
``data_root``, outside every code snapshot (``memorymodels.experiment.load_data``).
An exclusive ``fcntl`` lock on ``<entry>.lock`` makes concurrent callers (torchrun ranks, parallel tests, two jobs
on a shared filesystem that supports locks) wait for the one that builds it; afterwards everyone reuses it. An
interrupted build resumes where it stopped (the tokenizer appears atomically; shards resume).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from memorymodels.data.corpus import Corpus, FileCorpus, open_corpus
from memorymodels.data.pipeline import FORMAT, MANIFEST_FILE, pretokenize
from memorymodels.data.tokenizer import train_tokenizer
from memorymodels.fileio import disk_full_error


TOKENIZER_MAX_DOCS = 2_000_000  # enough for a BPE vocabulary; a hub corpus of billions of tokens is not read whole
DATA_PACKAGE = Path(__file__).resolve().parent
"""The code that prepares data (:func:`code_version` hashes it)."""


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared corpus lives: the tokenizer directory, the dataset directory and its manifest."""

    tokenizer_dir: Path
    data_dir: Path
    manifest: dict


def default_cache_dir() -> Path:
    """``$MEMORYMODELS_STATE/cache``, else ``.state/cache`` in the working directory."""
    return Path(os.environ.get("MEMORYMODELS_STATE", ".state")) / "cache"


def code_version(package: Path | None = None) -> str:
    """A hash of the data package's source files (``memorymodels/data/*.py``: names and contents), the code that
    trains tokenizers and pretokenizes. It depends on the code alone, not on where it lies: a checkout and every
    code snapshot of it agree, and a change anywhere else in the project leaves it as it is."""
    package = Path(package) if package is not None else DATA_PACKAGE
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix().encode()
        content = path.read_bytes()
        digest.update(name + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()[:16]


def cache_name(corpus: Corpus, *, vocab_size: int, context: int, mode: str, padding_side: str) -> str:
    """The cache entry name for these arguments: a readable prefix and a hash of all of them, of the corpus's
    identity (for local files their names under the corpus root, sizes and times; for ``stdlib`` the Python
    installation) and of the data code (:func:`code_version`)."""
    key = json.dumps([FORMAT, code_version(), corpus.identity(), vocab_size, context, mode, padding_side,
                      TOKENIZER_MAX_DOCS])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    readable = Path(corpus.spec).name if isinstance(corpus, FileCorpus) else corpus.spec
    slug = re.sub(r"[^A-Za-z0-9]+", "-", readable).strip("-")[-40:] or "corpus"
    return f"{slug}-v{vocab_size}-c{context}-{mode}-{padding_side}-{digest}"


def prepare_data(
    corpus: str | Corpus,
    *,
    vocab_size: int,
    context: int,
    mode: str = "packed",
    padding_side: str = "left",
    cache_dir: str | Path | None = None,
    progress: bool | None = False,
) -> PreparedData:
    """Train the tokenizer and pretokenize ``corpus`` once under ``cache_dir``; reuse the entry when complete."""
    corpus = open_corpus(corpus)  # checks the spec before taking any lock
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = cache_name(corpus, vocab_size=vocab_size, context=context, mode=mode, padding_side=padding_side)
    entry = cache_dir / name
    tokenizer_dir, data_dir = entry / "tokenizer", entry / "data"
    try:
        with open(cache_dir / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if not (tokenizer_dir / "tokenizer.json").is_file():
                entry.mkdir(exist_ok=True)
                train_tokenizer(corpus, vocab_size, tokenizer_dir, max_docs=TOKENIZER_MAX_DOCS,
                                progress=bool(progress))
            if (data_dir / MANIFEST_FILE).is_file():
                manifest = json.loads((data_dir / MANIFEST_FILE).read_text())
            else:
                manifest = pretokenize(corpus, tokenizer_dir, data_dir, context=context, mode=mode,
                                       padding_side=padding_side, progress=progress)
    except OSError as exc:  # the cache is full, not the run directory: say where
        if full := disk_full_error(exc, entry, "nothing was left half-written"):
            raise full from None
        raise
    return PreparedData(tokenizer_dir=tokenizer_dir, data_dir=data_dir, manifest=manifest)
