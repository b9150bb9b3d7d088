"""Byte-level BPE tokenizers trained on a corpus, saved so ``transformers.AutoTokenizer.from_pretrained`` loads them.

Special tokens (fixed ids, the first two of every vocabulary):

==================  ====  ==============================================================================
token               id    use
==================  ====  ==============================================================================
``<|pad|>``         0     padding; never a training target (labels -100); never produced from text
``<|endoftext|>``   1     end of document: ends every document in packed data, and is a real target
==================  ====  ==============================================================================

Ids 2..257 are the 256 byte symbols, so any text encodes (no unknown token) and decodes back exactly. The seed used
one id (1) for both pad and eos, which made eos impossible to learn; here they differ.

Text that happens to contain ``<|endoftext|>`` is encoded as ordinary characters when pretokenizing
(``encode_special_tokens``), so special ids only ever come from the pipeline itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from memorymodels.data.corpus import Corpus, open_corpus
from memorymodels.data.errors import DataError
from memorymodels.fileio import disk_full_error

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
PAD_ID = 0
EOS_ID = 1
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)
INFO_FILE = "memorymodels_tokenizer.json"
TRAIN_BATCH_BYTES = 1 << 20


def _batches(
    texts: Iterable[str], max_bytes: int = TRAIN_BATCH_BYTES, max_docs: int | None = None
) -> Iterator[list[str]]:
    """Group a stream of texts into lists of about ``max_bytes`` characters (the tokenizers trainer's input)."""
    batch, size = [], 0
    for count, text in enumerate(texts):
        if max_docs is not None and count >= max_docs:
            break
        batch.append(text)
        size += len(text)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def new_tokenizer():
    """An untrained byte-level BPE ``tokenizers.Tokenizer`` (no normalisation, no automatic special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(
    corpus: str | Corpus, vocab_size: int, out_dir: str | Path, *, max_docs: int | None = None, progress: bool = False
) -> Path:
    """Train a byte-level BPE tokenizer on the corpus's ``train`` split and save it to ``out_dir``.

    The texts stream through the trainer in batches, so memory follows the vocabulary statistics, not the corpus
    size. ``out_dir`` must not exist yet; it appears complete or not at all (written under a temporary name, then
    renamed). Returns ``out_dir``.
    """
    from tokenizers import pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = open_corpus(corpus)
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise DataError(
            f"vocab_size {vocab_size!r} is too small: a byte-level tokenizer needs at least {MIN_VOCAB} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    if vocab_size > 2**31 - 1:
        raise DataError(f"vocab_size {vocab_size} does not fit int32 token ids")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DataError(f"{out_dir}: already exists; choose another --out or delete it (nothing was overwritten)")
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    counter = {"docs": 0}

    def counted(texts):
        for text in texts:
            counter["docs"] += 1
            yield text

    tokenizer.train_from_iterator(_batches(counted(corpus.documents("train")), max_docs=max_docs), trainer)
    if counter["docs"] == 0:
        raise DataError(f"corpus '{corpus.spec}': the train split has no documents; the corpus is empty")
    assert tokenizer.token_to_id(PAD_TOKEN) == PAD_ID and tokenizer.token_to_id(EOS_TOKEN) == EOS_ID

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,  # decoding must give back the exact text
    )
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:  # the folder appears whole under its name, or not at all
        _save(wrapped, tmp, out_dir, corpus, tokenizer, vocab_size, counter["docs"])
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if full := disk_full_error(exc, out_dir, "the unfinished tokenizer was removed"):
            raise full from None
        raise
    return out_dir


def _save(wrapped, tmp: Path, out_dir: Path, corpus: Corpus, tokenizer, vocab_size: int, docs: int) -> None:
    """Write the trained tokenizer into ``tmp``, then rename it to ``out_dir``."""
    wrapped.save_pretrained(str(tmp))
    info = {
        "corpus": corpus.spec,
        "vocab_size": tokenizer.get_vocab_size(),
        "requested_vocab_size": vocab_size,
        "train_docs": docs,
        "pad_token": PAD_TOKEN,
        "pad_id": PAD_ID,
        "eos_token": EOS_TOKEN,
        "eos_id": EOS_ID,
        "fingerprint": fingerprint(tmp),
    }
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out_dir)


def load_tokenizer(tokenizer_dir: str | Path):
    """The ``tokenizers.Tokenizer`` saved in ``tokenizer_dir``, set to encode special-token text as plain text."""
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise DataError(
            f"{tokenizer_dir}: no tokenizer.json here; train one with "
            f"python -m memorymodels.data.train_tokenizer --corpus CORPUS --vocab-size N --out {tokenizer_dir}"
        )
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID or tokenizer.token_to_id(EOS_TOKEN) != EOS_ID:
        raise DataError(
            f"{tokenizer_dir}: expected {PAD_TOKEN} = {PAD_ID} and {EOS_TOKEN} = {EOS_ID}; "
            "this tokenizer was not made by memorymodels.data.train_tokenizer"
        )
    return tokenizer


def token_byte_lengths(tokenizer) -> np.ndarray:
    """``lengths[id]``: how many bytes of text the token stands for (0 for the special tokens).

    In a byte-level vocabulary every character of a token's string is one byte of text, so this is the string's
    length; summing it over the ids of a row gives the row's UTF-8 bytes exactly, even where a cut splits a character.
    """
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for token, index in tokenizer.get_vocab().items():
        lengths[index] = len(token)
    lengths[[PAD_ID, EOS_ID]] = 0
    return lengths


def fingerprint(tokenizer_dir: str | Path) -> str:
    """SHA-256 (16 hex digits) of what decides the token ids: model, vocabulary, merges, special tokens, pre-tokenizer.

    Unchanged by where the directory lives or by re-saving it with the same contents.
    """
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{tokenizer_dir}: no tokenizer.json here (not a tokenizer directory)")
    data = json.loads(path.read_text(encoding="utf-8"))
    keyed = {key: data.get(key) for key in ("model", "added_tokens", "normalizer", "pre_tokenizer")}
    blob = json.dumps(keyed, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def chars_per_token(tokenizer, texts: Iterable[str]) -> float:
    """Characters per token over ``texts`` (0.0 when there are none)."""
    chars = tokens = 0
    for batch in _batches(texts):
        tokens += sum(len(enc.ids) for enc in tokenizer.encode_batch(batch, add_special_tokens=False))
        chars += sum(len(text) for text in batch)
    return chars / tokens if tokens else 0.0


def describe(tokenizer_dir: str | Path, corpus: str | Corpus, file=sys.stdout) -> float:
    """Print and return characters per token of the tokenizer on the corpus's held-out ``test`` split."""
    corpus = open_corpus(corpus)
    value = chars_per_token(load_tokenizer(tokenizer_dir), corpus.documents("test"))
    print(f"{tokenizer_dir}: {value:.3f} characters per token on the test split of '{corpus.spec}'", file=file)
    return value
