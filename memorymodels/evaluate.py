"""Evaluate a run on held-out data: cross entropy, bits per byte, token accuracy, and classic compressors.

    python -m memorymodels.evaluate runs/autoencoding_mixer_d256_n4_c128_b16x1_stdlib
    python -m memorymodels.evaluate RUN_DIR --checkpoint RUN_DIR/checkpoint-200 --rows 256 --embedding-bits 4

For the held-out rows (the first ``--rows`` of the test split, by default the run's ``train.eval_rows``, the same
rows as the evaluations during training) it reports the model's cross entropy (nats/token),
bits per byte = CE / ln 2 / (bytes per scored target token: the conversion of ``eval_bits_per_byte`` during training,
``memorymodels.heldout``, so the two agree for the same checkpoint and rows), token accuracy
(the seed's "hamming" metric: argmax == target over non-ignored targets), and for the same bytes the bits per byte of
gzip -9, bz2 -9, xz -9 and zstd -19 (``8 * compressed / original``). Models that store a compressed embedding per row
(``embedding_values``: autoencoders, memory models) also get the cost of storing it at ``--embedding-bits`` bits per
value, amortised over the row's bytes (docs/porting.md), and that cost plus the model's own bits per byte.
The result is printed as a table and written to ``RUN_DIR/eval.json`` (the previous one is appended to
``RUN_DIR/eval-history.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memorymodels import checkpoints
from memorymodels.checkpoints import CheckpointError
from memorymodels.configuration import ConfigError, flag_number
from memorymodels.data.errors import DataError
from memorymodels.experiment import build, experiment_from_dict, load_data, load_fast_tokenizer
from memorymodels.fileio import CorruptFileError, exits_on_full_disk, read_json, write_json
from memorymodels.heldout import LN2, eval_bits_per_byte, heldout_summary
from memorymodels.metrics import NonFiniteLoss
from memorymodels.rundir import RunDirError, RunPaths
from memorymodels.runrecord import read_run_json


def _token_stats(logits: torch.Tensor, labels: torch.Tensor, shift: int) -> tuple[float, int, int]:
    """(sum of CE in nats, targets, correct argmaxes) when position t predicts label t + shift."""
    if shift:
        logits, labels = logits[:, :-shift], labels[:, shift:]
    mask = labels != -100
    if not mask.any():
        return 0.0, 0, 0
    flat_logits, flat_labels = logits[mask].float(), labels[mask]
    ce = F.cross_entropy(flat_logits, flat_labels, reduction="sum").item()
    correct = (flat_logits.argmax(-1) == flat_labels).sum().item()
    return ce, int(mask.sum()), int(correct)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset, *, rows: int | None = None, batch_size: int = 16,
                   device: str | torch.device = "cpu") -> dict:
    """Held-out loss (nats/token), token accuracy and target count of ``model`` on the first ``rows`` rows.

    Models return ``(loss, logits)`` with their own target alignment (autoencoders: position t reconstructs token t;
    causal decoders: position t predicts token t+1). The alignment is found by matching the model's own loss on the
    first batch; the loss is then the token-weighted mean over all targets. Where neither alignment reproduces the
    model's loss (chunked memory models), ``loss`` is the model's loss averaged over batches (weighted by rows) and
    the accuracy uses the closer alignment (``alignment`` says which).
    """
    model.eval().to(device)
    n = len(dataset) if rows is None else min(rows, len(dataset))
    shift, totals, model_loss_sum = None, {0: [0.0, 0, 0], 1: [0.0, 0, 0]}, 0.0
    matched = True
    for start in range(0, n, batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, n))]
        inputs = {key: torch.stack([row[key] for row in batch]).to(device) for key in batch[0]}
        loss, logits = model(inputs["input_ids"], labels=inputs["labels"],
                             attention_mask=inputs.get("attention_mask"))
        model_loss_sum += float(loss) * len(batch)
        for s in (0, 1):
            ce, count, correct = _token_stats(logits, inputs["labels"], s)
            totals[s][0] += ce
            totals[s][1] += count
            totals[s][2] += correct
        if shift is None:
            errors = {s: abs(totals[s][0] / max(totals[s][1], 1) - float(loss)) for s in (0, 1)}
            shift = min(errors, key=errors.get)
            matched = errors[shift] <= 1e-3 * max(1.0, abs(float(loss)))
    ce, count, correct = totals[shift]
    return {
        "loss": ce / count if matched else model_loss_sum / n,
        "token_accuracy": correct / count if count else float("nan"),
        "targets": count,
        "rows": n,
        "alignment": ("same-position" if shift == 0 else "next-token") + ("" if matched else " (approximate)"),
    }


def embedding_cost(values: int, bits: int, rows: int, nbytes: int) -> float:
    """Bits per byte of storing ``values`` numbers at ``bits`` bits for each of ``rows`` rows of ``nbytes`` bytes."""
    return values * bits * rows / nbytes


def _latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint (verified when it is loaded); CheckpointError when there is none."""
    complete, partial = checkpoints.checkpoints(run_dir)
    if not complete:
        hint = f" ({len(partial)} incomplete ones ignored)" if partial else ""
        raise CheckpointError(run_dir, f"no complete checkpoint-STEP directory{hint}; train first "
                                       f"(python -m memorymodels.train --experiment ...)")
    return complete[-1]


def _load_newest(model: torch.nn.Module, run_dir: Path, checkpoint: Path) -> None:
    """Load the run's newest complete checkpoint; when it is damaged the error names the newest intact one to ask
    for (evaluating an older one instead would be a surprise)."""
    try:
        load_checkpoint(model, checkpoint)
    except CheckpointError as exc:
        good = checkpoints.newest_usable(run_dir, set_aside=False, log=lambda line: None)
        hint = f"; evaluate the newest intact one with --checkpoint {good}" if good and good != checkpoint else ""
        raise CheckpointError(exc.path, exc.problem + hint) from None


def load_checkpoint(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a Trainer checkpoint's weights (model.safetensors, pytorch_model.bin or FSDP shards) into ``model``.

    The checkpoint's files are checked first (``checkpoints.verify_checkpoint``, or only the files present for a
    folder without a COMPLETE marker); every problem is a :class:`CheckpointError` naming the file.
    """
    from memorymodels.models import load_state_dict_file

    checkpoint = Path(checkpoint)
    if (checkpoint / checkpoints.COMPLETE).exists():
        checkpoints.verify_checkpoint(checkpoint)
    else:
        checkpoints.check_files(checkpoint)
    try:
        state = load_state_dict_file(checkpoint)
    except FileNotFoundError as exc:
        raise CheckpointError(checkpoint, f"{exc}; is it a checkpoint directory?") from None
    except Exception as exc:  # safetensors / torch.load on a file damaged in ways the cheap checks do not see
        raise CheckpointError(checkpoint, f"cannot be loaded ({type(exc).__name__}: {exc})") from None

    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = checkpoints.tied_names(model)  # saved once (see checkpoints.without_aliases); loading one restores both
    if unexpected or [k for k in missing if not k.endswith("mask") and k not in tied]:
        raise CheckpointError(checkpoint, f"weights do not fit the model in run.json "
                                          f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


def evaluate_run(run_dir: Path, *, checkpoint: Path | None = None, rows: int | None = None,
                 batch_size: int | None = None, embedding_bits: int = 8, device: str | None = None) -> dict:
    """Evaluate a run's checkpoint (newest complete by default) and write ``RUN_DIR/eval.json``.

    Raises ValueError for arguments out of range, ``RunDirError`` for a missing or damaged run.json,
    :class:`CheckpointError` for a missing or damaged checkpoint and ``NonFiniteLoss`` when the held-out loss is NaN
    or infinite (nothing is written then).
    """
    for name, value in (("embedding_bits", embedding_bits), ("rows", rows), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} {value}: must be at least 1")
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    if info is None or "config" not in info or "model" not in info:
        raise RunDirError(f"{run_dir}: no run.json with the run's config and model; is this a run directory?")
    experiment = experiment_from_dict(info["config"], source=str(RunPaths(run_dir).run_json))
    model = build(info["model"]["build"])
    # before the data: a damaged checkpoint is reported at once
    if checkpoint is None:
        checkpoint = _latest_checkpoint(run_dir)
        _load_newest(model, run_dir, checkpoint)
    else:
        checkpoint = Path(checkpoint)
        load_checkpoint(model, checkpoint)
    data = load_data(experiment)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = rows if rows is not None else experiment.train.eval_rows  # the documented subset: the first rows
    rows = len(data.test) if rows is None else min(rows, len(data.test))
    scores = evaluate_model(model, data.test, rows=rows, batch_size=batch_size or experiment.train.batch_size,
                            device=device)
    step = checkpoints.checkpoint_step(checkpoint) if checkpoints.CHECKPOINT_RE.match(checkpoint.name) else None
    if not math.isfinite(scores["loss"]):
        raise NonFiniteLoss(f"{checkpoint}: the held-out loss", scores["loss"], step, advice=(
            "nothing was written to eval.json; its weights hold NaN or infinities, or the model overflows on these "
            "rows; evaluate an earlier checkpoint with --checkpoint RUN_DIR/checkpoint-STEP"))
    held = heldout_summary(data.test, load_fast_tokenizer(data.tokenizer_dir), rows, info["model"]["build"])
    bits = eval_bits_per_byte(scores["loss"], held["bytes_per_target"])
    result = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint.name,
        "step": step,
        "loss": scores["loss"],
        # the conversion of every eval_bits_per_byte during training (heldout.py): the bytes of the scored targets;
        # objectives with no per-token conversion (copy) divide by all the text's bytes instead, and say so
        "bits_per_byte": bits if bits is not None else scores["loss"] / LN2 * held["tokens"] / held["text_bytes"],
        "bits_per_byte_basis": "scored targets" if bits is not None else "all tokens (approximate)",
        "token_accuracy": scores["token_accuracy"],
        "alignment": scores["alignment"],
        "rows": rows,
        "tokens": held["tokens"],
        "targets": held["targets"],
        "bytes": held["text_bytes"],
        "bytes_per_token": held["text_bytes"] / held["tokens"],
        "baselines": held["baselines"],
        "time": time.time(),
    }
    values = getattr(model, "embedding_values", None)
    if values:
        cost = embedding_cost(values, embedding_bits, rows, held["text_bytes"])
        result["embedding"] = {"values": values, "bits": embedding_bits, "bits_per_byte": cost,
                               "total_bits_per_byte": cost + result["bits_per_byte"]}
    _keep_previous_evaluation(run_dir)
    write_json(RunPaths(run_dir).eval_json, result)
    return result


def _keep_previous_evaluation(run_dir: Path) -> None:
    """Append the current eval.json (if readable) to eval-history.jsonl before it is replaced."""
    try:
        previous = read_json(RunPaths(run_dir).eval_json)
    except CorruptFileError:
        previous = None  # a damaged one is replaced, not kept
    if previous is not None:
        with open(RunPaths(run_dir).eval_history, "a") as f:
            f.write(json.dumps(previous) + "\n")


def format_table(result: dict) -> str:
    """The evaluation as a plain-text table (bits per byte, lower is better)."""
    lines = [f"evaluation of {result['run_dir']} ({result['checkpoint']}): {result['rows']} held-out rows, "
             f"{result['bytes']:,} bytes, {result['bytes_per_token']:.2f} bytes/token",
             f"  {'method':<44} {'bits/byte':>9}",
             f"  {'model (CE %.4f nats/token, acc %.3f)' % (result['loss'], result['token_accuracy']):<44} "
             f"{result['bits_per_byte']:>9.3f}" + ("" if result.get("bits_per_byte_basis", "scored targets")
                                                   == "scored targets" else f"  ({result['bits_per_byte_basis']})")]
    if "embedding" in result:
        e = result["embedding"]
        lines.append(f"  {'  embedding %d values x %d bits' % (e['values'], e['bits']):<44} {e['bits_per_byte']:>9.3f}")
        lines.append(f"  {'  model + embedding':<44} {e['total_bits_per_byte']:>9.3f}")
    for name, label in (("gzip", "gzip -9"), ("bz2", "bz2 -9"), ("xz", "xz -9"), ("zstd", "zstd -19")):
        lines.append(f"  {label:<44} {result['baselines'][name]:>9.3f}")
    return "\n".join(lines)


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holding run.json)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the newest complete one)")
    parser.add_argument("--rows", type=flag_number(int, minimum=1), help="held-out rows to use, the first ones of the test split (default: "
                                                 "the run's train.eval_rows; all when that is null)")
    parser.add_argument("--batch-size", type=flag_number(int, minimum=1), help="rows per forward pass (default: train.batch_size)")
    parser.add_argument("--embedding-bits", type=flag_number(int, minimum=1), default=8, help="bits per stored embedding value (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    args = parser.parse_args(argv)
    try:
        result = evaluate_run(args.run_dir, checkpoint=args.checkpoint, rows=args.rows, batch_size=args.batch_size,
                              embedding_bits=args.embedding_bits, device=args.device)
    except (CheckpointError, RunDirError, ConfigError, DataError, NonFiniteLoss) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(result))
    print(f"wrote {RunPaths(args.run_dir).eval_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
