"""Plot training and eval loss of one or more runs against steps and against tokens.

    python -m memorymodels.plot runs/RUN_A runs/RUN_B --out losses.png
    python -m memorymodels.plot runs/ --out all.png                      # every run directly under runs/
    python -m memorymodels.plot RUN --embedding-bits 8 --out normalised.png

Runs are overlaid and labelled (by run directory name, or ``--label``). ``--offset NATS`` adds a constant to every
curve; ``--embedding-bits B`` adds each run's embedding-storage cost per token, ``embedding_values * B * ln 2 /
context`` nats (the seed's "normalised loss", digest §6.3), so autoencoders and memory models compare with causal
models at equal total bits.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from memorymodels import runs
from memorymodels.fileio import CorruptFileError


def curves(run_dir: Path) -> dict:
    """``{"train": [(step, tokens, loss)], "eval": [...]}`` from a run's metrics.jsonl."""
    out: dict = {"train": [], "eval": []}
    for record in runs.read_metrics(run_dir):
        step, tokens = record.get("step"), record.get("tokens")
        if step is None:
            continue
        if record.get("loss") is not None:
            out["train"].append((step, tokens, record["loss"]))
        if record.get("eval_loss") is not None:
            out["eval"].append((step, tokens, record["eval_loss"]))
    return out


def embedding_offset(run_dir: Path, bits: int) -> float:
    """Nats per token of storing the run's embedding at ``bits`` bits per value (0 for models without one)."""
    try:
        info = runs.read_json(Path(run_dir) / runs.RUN_JSON) or {}
    except CorruptFileError as exc:
        raise NothingToPlot(f"{exc} (its embedding size is needed for --embedding-bits)") from None
    values = (info.get("model") or {}).get("embedding_values")
    context = ((info.get("config") or {}).get("data") or {}).get("context")
    if not values or not context:
        return 0.0
    return values * bits * math.log(2) / context


class NothingToPlot(ValueError):
    """No run directories, or no loss values in them."""


def plot_runs(run_dirs: list[Path], out: Path, *, labels: list[str] | None = None, offset: float = 0.0,
              embedding_bits: int | None = None, title: str | None = None) -> Path:
    """Write a two-panel figure (loss vs steps, loss vs tokens) of ``run_dirs`` to ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise NothingToPlot("no run directories to plot (a run directory holds run.json or metrics.jsonl)")
    labels = labels or [Path(r).name for r in run_dirs]
    fig, (by_step, by_tokens) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    plotted = 0
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        data = curves(Path(run_dir))
        shift = offset + (embedding_offset(run_dir, embedding_bits) if embedding_bits else 0.0)
        color = f"C{i % 10}"
        for kind, style in (("train", "-"), ("eval", "--")):
            points = data[kind]
            if not points:
                continue
            plotted += 1
            steps = [p[0] for p in points]
            losses = [p[2] + shift for p in points]
            marker = "o" if kind == "eval" and len(points) < 30 else None
            by_step.plot(steps, losses, style, color=color, marker=marker, label=f"{label} ({kind})")
            if all(p[1] is not None for p in points):
                by_tokens.plot([p[1] for p in points], losses, style, color=color, marker=marker,
                               label=f"{label} ({kind})")
    if not plotted:
        raise NothingToPlot(f"no loss values in metrics.jsonl of {', '.join(map(str, run_dirs))}")
    ylabel = "cross entropy (nats/token)"
    if embedding_bits or offset:
        ylabel = "normalised loss (nats/token" + (f", embedding at {embedding_bits} bits" if embedding_bits else "") + ")"
    for ax, xlabel in ((by_step, "optimizer steps"), (by_tokens, "tokens seen")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories, or a checkpoint root holding them")
    parser.add_argument("--out", type=Path, required=True, help="image file to write (.png, .pdf, .svg)")
    parser.add_argument("--label", action="append", help="label per run, in order (default: directory names)")
    parser.add_argument("--offset", type=float, default=0.0, help="nats per token added to every curve")
    parser.add_argument("--embedding-bits", type=int, help="add each run's embedding cost at this many bits/value")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    run_dirs = runs.find_run_dirs(args.run_dirs)
    if args.label and len(args.label) != len(run_dirs):
        parser.error(f"{len(args.label)} --label for {len(run_dirs)} runs ({', '.join(map(str, run_dirs))})")
    try:
        out = plot_runs(run_dirs, args.out, labels=args.label, offset=args.offset,
                        embedding_bits=args.embedding_bits, title=args.title)
    except NothingToPlot as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(run_dirs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
