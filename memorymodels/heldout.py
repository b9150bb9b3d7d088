"""The bytes a held-out loss is averaged over, so that every ``eval_loss`` converts to bits per byte.

    >>> summary = heldout_summary(test_set, tokenizer, rows=512, build=build_args)
    >>> summary["bytes_per_target"], summary["baselines"]["xz"]
    >>> eval_bits_per_byte(eval_loss, summary["bytes_per_target"])

A loss in nats per target token becomes bits per byte by ``loss / ln 2 / (bytes per target)``, where the targets
are exactly the tokens the loss averages over (``LOSS_TARGETS``): an autoencoder reconstructs every real token of the
row (position t reconstructs token t); a causal model predicts every token but the first of the row; chunked memory
models every token but the first of each chunk. A target's bytes are the bytes its byte-level BPE symbol stands for
(one per symbol; none for ``<|endoftext|>``, which is a target but no text), so the conversion is exact for the
tokens scored, including rows cut inside a multi-byte character. The held-out split is fixed, so this is computed
once per run (``run.json`` ``heldout``) and applied to every evaluation.

Exact when every evaluation batch holds the same number of targets (packed data, the default): the Trainer's
``eval_loss`` is the row-weighted mean of batch means, which is then the token mean. Copy objectives
(``copy: true``) score half the row and divide by all chunks: no conversion is offered (None).

``baselines`` are gzip -9, bz2 -9, xz -9 and zstd -19 on the held-out text (:func:`heldout_bytes`: the same rows,
decoded), the numbers ``python -m memorymodels.evaluate`` prints beside the model; that command converts its loss
with this module too, so its bits per byte and the last ``eval_bits_per_byte`` of the same rows agree.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math

from memorymodels.models.registry import model_config

LN2 = math.log(2)

SAME_POSITION, NEXT_TOKEN, NEXT_TOKEN_IN_CHUNKS = "same-position", "next-token", "next-token-in-chunks"

LOSS_TARGETS = {
    "autoencoding_mixer": SAME_POSITION,
    "transformer_autoencoder": SAME_POSITION,
    "autoencoding_transfixer": SAME_POSITION,
    "language_mixer": NEXT_TOKEN,
    "llama_clm": NEXT_TOKEN,
    "memory_mixer": NEXT_TOKEN,
    "proj_memory_mixer": NEXT_TOKEN,
    "frozen_memory_mixer": NEXT_TOKEN,
    "memory_transformer": NEXT_TOKEN,
    "variable_memory_mixer": NEXT_TOKEN_IN_CHUNKS,
    "variable_memory_transformer": NEXT_TOKEN_IN_CHUNKS,
    "recurrent_memory_mixer": NEXT_TOKEN_IN_CHUNKS,
    "recurrent_memory_transformer": NEXT_TOKEN_IN_CHUNKS,
}
"""Registry name -> which tokens of a row its loss averages over (tests/models check each against the model)."""


def compression_baselines(data: bytes) -> dict:
    """Bits per byte of gzip -9, bz2 -9, xz -9 and zstd -19 on ``data``: ``8 * len(compressed) / len(data)``."""
    import zstandard

    if not data:
        raise ValueError("no held-out bytes to compress")
    sizes = {
        "gzip": len(gzip.compress(data, 9)),
        "bz2": len(bz2.compress(data, 9)),
        "xz": len(lzma.compress(data, preset=9)),
        "zstd": len(zstandard.ZstdCompressor(level=19).compress(data)),
    }
    return {name: 8 * size / len(data) for name, size in sizes.items()}


def heldout_bytes(dataset, tokenizer, rows: int) -> tuple[bytes, int]:
    """The held-out text of the first ``rows`` rows (non-pad tokens decoded, UTF-8) and its token count."""
    pieces, tokens = [], 0
    for i in range(min(rows, len(dataset))):
        row = dataset[i]
        ids = row["input_ids"][row["attention_mask"].bool()] if "attention_mask" in row else row["input_ids"]
        tokens += int(ids.numel())
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        pieces.append(text.encode("utf-8"))
    return b"".join(pieces), tokens


def token_byte_lengths(tokenizer) -> list[int]:
    """Bytes each token id stands for: byte-level BPE writes one symbol per byte; special tokens stand for none."""
    special = set(tokenizer.all_special_ids)
    lengths = [0] * len(tokenizer)
    for symbol, token_id in tokenizer.get_vocab().items():
        lengths[token_id] = 0 if token_id in special else len(symbol)
    return lengths


def scored_positions(length: int, objective: str, n_chunks: int = 1) -> list[tuple[int, int]]:
    """(logit position, label position) of every prediction a row of ``length`` tokens is scored on."""
    if objective == SAME_POSITION:
        return [(t, t) for t in range(length)]
    if objective == NEXT_TOKEN:
        return [(t, t + 1) for t in range(length - 1)]
    if objective == NEXT_TOKEN_IN_CHUNKS:
        chunk = length // n_chunks
        return [(c * chunk + t, c * chunk + t + 1) for c in range(n_chunks) for t in range(chunk - 1)]
    raise ValueError(f"unknown loss objective {objective!r}; one of {sorted(set(LOSS_TARGETS.values()))}")


def targets_of_row(labels: list[int], objective: str, n_chunks: int = 1) -> list[int]:
    """The token ids a row's loss is averaged over, from its labels (-100: not scored)."""
    scored = (labels[j] for _, j in scored_positions(len(labels), objective, n_chunks))
    return [t for t in scored if t != -100]


def objective_of(build: dict) -> tuple[str, int] | None:
    """(objective, n_chunks) of a model from its build arguments; None where no per-token conversion holds."""
    config = model_config(build["name"], preset=build.get("preset"), **build.get("params", {}))
    if getattr(config, "copy", False):
        return None
    return LOSS_TARGETS[build["name"]], getattr(config, "n_chunks", 1)


def target_bytes(dataset, rows: int, token_bytes: list[int], objective: str, n_chunks: int = 1) -> tuple[int, int]:
    """(targets, bytes of those targets) over the first ``rows`` rows of ``dataset`` (rows of ``labels``)."""
    targets = nbytes = 0
    for i in range(min(rows, len(dataset))):
        scored = targets_of_row(dataset[i]["labels"].tolist(), objective, n_chunks)
        targets += len(scored)
        nbytes += sum(token_bytes[t] for t in scored)
    return targets, nbytes


def eval_bits_per_byte(loss: float | None, bytes_per_target: float | None) -> float | None:
    """Bits per byte of a mean loss in nats per target token."""
    if loss is None or not bytes_per_target:
        return None
    return loss / LN2 / bytes_per_target


def heldout_summary(dataset, tokenizer, rows: int, build: dict) -> dict:
    """What run.json records as ``heldout``: rows, tokens, targets, their bytes, bytes per target and the baselines."""
    rows = min(rows, len(dataset))
    text, tokens = heldout_bytes(dataset, tokenizer, rows)
    summary = {"rows": rows, "tokens": tokens, "text_bytes": len(text), "baselines": compression_baselines(text) if text else None,
               "objective": None, "targets": None, "target_bytes": None, "bytes_per_target": None}
    objective = objective_of(build)
    if objective is not None:
        targets, nbytes = target_bytes(dataset, rows, token_byte_lengths(tokenizer), *objective)
        summary.update(objective=objective[0], targets=targets, target_bytes=nbytes,
                       bytes_per_target=nbytes / targets if targets and nbytes else None)
    return summary
