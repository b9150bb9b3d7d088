"""Plot the loss and the held-out bits per byte of one or more runs against optimizer steps.

    python -m memorymodels.plot runs/RUN_A runs/RUN_B --out losses.png
    python -m memorymodels.plot runs/ --out all.png                      # every run directly under runs/
    python -m memorymodels.plot RUN --embedding-bits 8 --out normalised.png

The top panel is the cross entropy (nats/token) of training and of the evaluations; the bottom one, when the runs
recorded it, the evaluations in bits per byte of the held-out text, with gzip -9 and xz -9 on the same held-out
bytes as horizontal reference lines (``run.json`` ``heldout.baselines``). Runs are overlaid and labelled (by run
directory name, or ``--label``); legends sit outside the axes. ``--offset NATS`` adds a constant to every loss curve;
``--embedding-bits B`` adds each run's embedding-storage cost per token, ``embedding_values * B * ln 2 / context``
nats (the seed's "normalised loss", docs/porting.md), so autoencoders and memory models compare with causal models at
equal total bits. Compute on the x axis, over many runs: ``python -m memorymodels.frontier``.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

from memorymodels import metrics
from memorymodels.configuration import flag_number
from memorymodels.fileio import CorruptFileError, exits_on_full_disk, read_json, write_bytes_atomic
from memorymodels.rundir import RunPaths


BASELINE_LABELS = {"gzip": "gzip -9", "bz2": "bz2 -9", "xz": "xz -9", "zstd": "zstd -19"}
BASELINE_STYLES = {"gzip": ":", "bz2": "-.", "xz": "--", "zstd": (0, (5, 1, 1, 1))}


def curves(run_dir: Path, problems: list[str] | None = None) -> dict:
    """``{"train": [(step, tokens, loss)], "eval": [...], "bits_per_byte": [(step, flops, eval_bits_per_byte)]}``
    from a run's metrics.jsonl (unreadable lines and values that are not numbers are left out, and described in
    ``problems``)."""
    out: dict = {"train": [], "eval": [], "bits_per_byte": []}
    for record in metrics.read_metrics(run_dir, problems):
        step, tokens = record.get("step"), record.get("tokens")
        if step is None:
            continue
        if record.get("loss") is not None:
            out["train"].append((step, tokens, record["loss"]))
        if record.get("eval_loss") is not None:
            out["eval"].append((step, tokens, record["eval_loss"]))
        if record.get("eval_bits_per_byte") is not None:
            out["bits_per_byte"].append((step, record.get("flops"), record["eval_bits_per_byte"]))
    return out


class NothingToPlot(ValueError):
    """No run directories, or no loss values in them."""


def embedding_offset(run_dir: Path, bits: int) -> float:
    """Nats per token of storing the run's embedding at ``bits`` bits per value (0 for models without one)."""
    try:
        info = read_json(RunPaths(run_dir).run_json) or {}
    except CorruptFileError as exc:
        raise NothingToPlot(f"{exc} (its embedding size is needed for --embedding-bits)") from None
    values = (info.get("model") or {}).get("embedding_values")
    context = ((info.get("config") or {}).get("data") or {}).get("context")
    if not values or not context:
        return 0.0
    return values * bits * math.log(2) / context


def baselines(run_dirs: list[Path]) -> list[dict]:
    """The distinct compressor baselines (bits per byte) recorded in the runs' run.json, in order of first use."""
    found: list[dict] = []
    for run_dir in run_dirs:
        try:
            info = read_json(RunPaths(run_dir).run_json) or {}
        except CorruptFileError:  # the reference lines are a courtesy; the curves come from metrics.jsonl
            continue
        values = (info.get("heldout") or {}).get("baselines")
        if values and values not in found:
            found.append(values)
    return found


def draw_baselines(ax, sets: list[dict], names=("gzip", "xz")) -> None:
    """Horizontal lines at each compressor's bits per byte on the held-out bytes (numbered when runs differ)."""
    for i, values in enumerate(sets):
        suffix = f" (held-out set {i + 1})" if len(sets) > 1 else " (same held-out bytes)"
        for name in names:
            if name in values:
                ax.axhline(values[name], color="0.35", linestyle=BASELINE_STYLES[name], linewidth=1.2,
                           label=BASELINE_LABELS[name] + suffix)


def legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes, clear of the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


IMAGE_SUFFIXES = (".png", ".pdf", ".svg")
"""What a figure may be written as."""


class OutputError(ValueError):
    """An output file that cannot be written as asked (a missing folder, a folder, a suffix that is no format)."""


def check_output(path: Path, suffixes: tuple[str, ...] | None, what: str) -> None:
    """Refuse, before anything is computed or written, an output ``path`` that cannot be written as asked: a folder
    that does not exist is a typo more often than a wish (it is not made)."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: {what} must end in {', '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: no such directory for the {what}; make it first")


def save_figure(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` whole or not at all (rendered in memory, then ``fileio.write_bytes_atomic``: a full
    disk is one ``DiskFullError`` naming ``out``) and close it. The format is ``out``'s suffix (.png, .pdf, .svg)."""
    import matplotlib.pyplot as plt

    out = Path(out)
    image = io.BytesIO()
    try:
        fig.savefig(image, format=out.suffix.lstrip(".").lower() or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes_atomic(out, image.getvalue())
    return out


def default_title(run_dirs: list[Path], last_step: int, what: str) -> str:
    """``RUN: WHAT, steps 1-N`` for one run; ``FOLDER: WHAT of K runs, up to step N`` for several."""
    if len(run_dirs) == 1:
        return f"{Path(run_dirs[0]).name}: {what}, up to step {last_step}"
    parents = {Path(r).resolve().parent.name for r in run_dirs}
    where = parents.pop() if len(parents) == 1 else "runs"
    return f"{where}: {what} of {len(run_dirs)} runs, up to step {last_step}"


def loss_figure(run_dirs: list[Path], *, labels: list[str] | None = None, offset: float = 0.0,
                embedding_bits: int | None = None, title: str | None = None):
    """The figure of ``run_dirs``: loss (nats/token) against steps; eval bits/byte with gzip/xz when recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise NothingToPlot("no run directories to plot (a run directory holds run.json or metrics.jsonl)")
    labels = labels or [Path(r).name for r in run_dirs]
    problems: list[str] = []
    data = [curves(Path(r), problems) for r in run_dirs]
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    if not any(d["train"] or d["eval"] for d in data):
        raise NothingToPlot(f"no loss values in metrics.jsonl of {', '.join(map(str, run_dirs))}")
    with_bpb = any(d["bits_per_byte"] for d in data)
    fig, axes = plt.subplots(2 if with_bpb else 1, 1, figsize=(11, 8 if with_bpb else 4.5), sharex=True,
                             constrained_layout=True, squeeze=False)
    by_step = axes[0][0]
    last_step = 0
    for i, (run_dir, label, points) in enumerate(zip(run_dirs, labels, data)):
        shift = offset + (embedding_offset(run_dir, embedding_bits) if embedding_bits else 0.0)
        color = f"C{i % 10}"
        for kind, style in (("train", "-"), ("eval", "--")):
            if points[kind]:
                marker = "o" if kind == "eval" and len(points[kind]) < 30 else None
                by_step.plot([p[0] for p in points[kind]], [p[2] + shift for p in points[kind]], style, color=color,
                             marker=marker, label=f"{label} ({kind})")
                last_step = max(last_step, points[kind][-1][0])
        if points["bits_per_byte"]:
            axes[1][0].plot([p[0] for p in points["bits_per_byte"]], [p[2] for p in points["bits_per_byte"]], "--",
                            color=color, marker="o" if len(points["bits_per_byte"]) < 30 else None,
                            label=f"{label} (eval)")
    ylabel = "cross entropy (nats/token)"
    if embedding_bits or offset:
        ylabel = "normalised loss (nats/token" + (f", embedding at {embedding_bits} bits" if embedding_bits else "") + ")"
    by_step.set_ylabel(ylabel)
    if with_bpb:
        draw_baselines(axes[1][0], baselines(run_dirs))
        axes[1][0].set_ylabel("held-out bits per byte (bits/byte)")
    for (ax,) in axes:
        ax.grid(alpha=0.3)
        legend_outside(ax)
    axes[-1][0].set_xlabel("optimizer steps")
    axes[-1][0].tick_params(labelbottom=True)
    fig.suptitle(title or default_title(run_dirs, last_step, "loss" + (" and bits per byte" if with_bpb else "")))
    return fig


def plot_runs(run_dirs: list[Path], out: Path, *, labels: list[str] | None = None, offset: float = 0.0,
              embedding_bits: int | None = None, title: str | None = None) -> Path:
    """Write :func:`loss_figure` of ``run_dirs`` to ``out``; returns ``out``."""
    fig = loss_figure(run_dirs, labels=labels, offset=offset, embedding_bits=embedding_bits, title=title)
    return save_figure(fig, out)


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories, or a checkpoint root holding them")
    parser.add_argument("--out", type=Path, required=True, help="image file to write (.png, .pdf, .svg)")
    parser.add_argument("--label", action="append", help="label per run, in order (default: directory names)")
    parser.add_argument("--offset", type=flag_number(float), default=0.0, help="nats per token added to every curve")
    parser.add_argument("--embedding-bits", type=flag_number(int, minimum=1), help="add each run's embedding cost at this many bits/value")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    try:
        check_output(args.out, IMAGE_SUFFIXES, "image")
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dirs = metrics.find_run_dirs(args.run_dirs)
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
