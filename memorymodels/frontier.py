"""Compression per compute: held-out bits per byte against cumulative training FLOPs, over any set of runs.

    python -m memorymodels.frontier runs/ -o frontier.png --csv frontier.csv      # every run under runs/
    python -m memorymodels.frontier 'runs/language_mixer_*' runs/llama_clm_d224_n6_c256_b16x1_stdlib-v4096 -o f.png

Arguments are run directories, folders holding run directories (a sweep's, a checkpoint root) or globs of either.
Every evaluation of every run is a point (``eval_bits_per_byte`` and ``flops`` of its metrics.jsonl record, written
by the trainer: ``memorymodels.accounting``); each run is a curve, coloured by model family, with a marker and line
style per size within its family. The black staircase is the best-so-far frontier over all runs: the lowest bits per
byte reached with at most that much training compute. gzip -9, xz -9 and zstd -19 on the same held-out bytes are
horizontal lines. ``--csv`` writes the same points: run, family, params, step, flops, device_seconds,
eval_bits_per_byte. It then prints each run's last evaluation as a Markdown table (steps, FLOPs, device-seconds,
bits per byte and its ratio to xz -9). Every argument is checked before anything is written; a bad one is named in
one line (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import glob
import math
import sys
from pathlib import Path

from memorymodels import metrics
from memorymodels.fileio import CorruptFileError, exits_on_full_disk, read_json, write_text_atomic
from memorymodels.rundir import RunPaths
from memorymodels.plot import (IMAGE_SUFFIXES, OutputError, baselines, check_output, default_title, draw_baselines,
                               legend_outside, save_figure)

CSV_FIELDS = ("run", "family", "params", "step", "flops", "device_seconds", "eval_bits_per_byte")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


class InputError(Exception):
    """A bad argument: the message names the path and what is wrong with it."""


def find_runs(arguments: list[str]) -> list[Path]:
    """The run directories named by ``arguments`` (run dirs, folders of them, globs), each once, in order."""
    found: dict[Path, Path] = {}
    for argument in arguments:
        matches = sorted(glob.glob(argument)) if glob.has_magic(argument) else [argument]
        if not matches:
            raise InputError(f"{argument}: matches no file or directory")
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise InputError(f"{path}: no such file or directory")
            run_dirs = metrics.find_run_dirs([path])
            if not run_dirs:
                raise InputError(f"{path}: not a run directory (no run.json or metrics.jsonl) and holds none")
            for run_dir in run_dirs:
                found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def run_info(run_dir: Path) -> dict:
    """The run's run.json ({} when it has none); a damaged one is a bad argument, named with what to do."""
    try:
        return read_json(RunPaths(run_dir).run_json) or {}
    except CorruptFileError as exc:
        raise InputError(f"{exc}; restore it from {RunPaths(run_dir).run_json_backup.name} beside it, or leave this run out") from None


def run_points(run_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """The run's evaluations as CSV rows (``CSV_FIELDS``); empty when it recorded none in bits per byte (what was
    unreadable in its metrics is described in ``problems``)."""
    info = run_info(run_dir)
    family = ((info.get("config") or {}).get("model") or {}).get("name") or (info.get("model") or {}).get("class")
    params = (info.get("model") or {}).get("parameters")
    return [{"run": Path(run_dir).name, "family": family, "params": params, "step": r.get("step"),
             "flops": r.get("flops"), "device_seconds": r.get("device_seconds"),
             "eval_bits_per_byte": r["eval_bits_per_byte"]}
            for r in metrics.read_metrics(run_dir, problems)
            if r.get("eval_bits_per_byte") is not None and r.get("flops") is not None]


def best_so_far(points: list[dict]) -> list[dict]:
    """The points that lower the best bits per byte seen at their compute or less (the lower-left frontier)."""
    frontier, best = [], float("inf")
    for point in sorted(points, key=lambda p: (p["flops"], p["eval_bits_per_byte"])):
        if point["eval_bits_per_byte"] < best:
            best = point["eval_bits_per_byte"]
            frontier.append(point)
    return frontier


def styles(points: list[dict]) -> dict[str, dict]:
    """run -> colour (by family), marker and line style (by size rank within the family)."""
    families = sorted({p["family"] or "?" for p in points})
    sizes: dict[str, list] = {}
    for p in points:
        sizes.setdefault(p["family"] or "?", [])
        if p["params"] not in sizes[p["family"] or "?"]:
            sizes[p["family"] or "?"].append(p["params"])
    out = {}
    for p in points:
        family = p["family"] or "?"
        rank = sorted(sizes[family], key=lambda v: (v is None, v)).index(p["params"])
        out[p["run"]] = {"color": f"C{families.index(family) % 10}", "marker": MARKERS[rank % len(MARKERS)],
                         "linestyle": LINESTYLES[rank % len(LINESTYLES)]}
    return out


def params_label(params: int | None) -> str:
    """6836224 -> '6.8M', 57888 -> '58k'."""
    if not params:
        return "?"
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.0f}k"


def log_ticks(ax, low: float, high: float) -> None:
    """Labelled ticks on the log compute axis that never collide: 1, 1.5, 2, 3, 4, 5, 7 x 10^k within a decade (at
    least a tenth of a decade apart), 1, 2, 5 x 10^k over a few, powers of ten beyond; compact labels (``1.5e14``);
    no labels on minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.2g}".replace("e+", "e")))
    ax.xaxis.set_minor_formatter(NullFormatter())


def frontier_figure(run_dirs: list[Path], points: list[dict], *, title: str | None = None):
    """Bits per byte against cumulative training FLOPs (log x): a curve per run, the frontier, the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 6.5), constrained_layout=True)  # room for the axes beside a long legend
    style = styles(points)
    reach = {}  # run -> its furthest compute: the legend lists each family's runs by size, then by budget
    for p in points:
        reach[p["run"]] = max(reach.get(p["run"], 0), p["flops"])
    order = sorted(reach, key=lambda run: next((p["family"] or "", p["params"] or 0, reach[run])
                                               for p in points if p["run"] == run))
    for run in order:
        mine = sorted((p for p in points if p["run"] == run), key=lambda p: p["flops"])
        first = mine[0]
        size = params_label(first["params"])
        ax.plot([p["flops"] for p in mine], [p["eval_bits_per_byte"] for p in mine], **style[run], markersize=5,
                label=f"{first['family']} {size} ({run})")
    front = best_so_far(points)
    ax.step([p["flops"] for p in front], [p["eval_bits_per_byte"] for p in front], where="post", color="black",
            linewidth=2.0, alpha=0.7, label="best so far (all runs)")
    draw_baselines(ax, baselines(run_dirs), names=("gzip", "xz", "zstd"))
    ax.set_xscale("log")
    log_ticks(ax, min(p["flops"] for p in points), max(p["flops"] for p in points))
    ax.set_xlabel("cumulative training compute (FLOPs)")
    ax.set_ylabel("held-out bits per byte (bits/byte)")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax)
    last = max(p["step"] for p in points)
    fig.suptitle(title or default_title(run_dirs, last, "bits per byte against training compute"))
    return fig


def final_table(run_dirs: list[Path], points: list[dict]) -> str:
    """Each run's last evaluation as a Markdown table, by family then compute, with its ratio to xz -9 on the same
    held-out bytes; then the compressors' bits per byte when every run has the same held-out bytes."""
    xz = {}
    for run_dir in run_dirs:
        values = run_info(run_dir).get("heldout") or {}
        xz[Path(run_dir).name] = (values.get("baselines") or {}).get("xz")
    last = {}
    for point in points:
        if point["run"] not in last or point["step"] > last[point["run"]]["step"]:
            last[point["run"]] = point
    lines = ["| run | family | params | steps | training FLOPs | device-seconds | bits/byte | / xz -9 |",
             "|---|---|---|---|---|---|---|---|"]
    for p in sorted(last.values(), key=lambda p: (p["family"] or "", p["flops"])):
        ratio = f"{p['eval_bits_per_byte'] / xz[p['run']]:.3f}" if xz.get(p["run"]) else "-"
        seconds = f"{p['device_seconds']:,.0f}" if p["device_seconds"] is not None else "-"
        lines.append(f"| {p['run']} | {p['family']} | {params_label(p['params'])} | {p['step']:,} | "
                     f"{p['flops']:.3g} | {seconds} | {p['eval_bits_per_byte']:.3f} | {ratio} |")
    sets = baselines(run_dirs)
    if len(sets) == 1:
        lines.append("\nthe same held-out bytes: " + ", ".join(f"{label} {sets[0][name]:.3f}" for name, label in
                                                             (("xz", "xz -9"), ("zstd", "zstd -19"), ("gzip", "gzip -9"))
                                                             if name in sets[0]) + " bits/byte")
    return "\n".join(lines)


def write_csv(points: list[dict], path: Path) -> Path:
    """The points as CSV (``CSV_FIELDS``), by run then step; written to a temporary name, then renamed."""
    path = Path(path)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(sorted(points, key=lambda p: (p["run"], p["step"])))
    write_text_atomic(path, text.getvalue())
    return path


def collect(arguments: list[str], out: Path, csv_path: Path | None) -> tuple[list[Path], list[dict]]:
    """Every check, before anything is written: outputs, inputs, and at least one evaluation point."""
    try:
        check_output(out, IMAGE_SUFFIXES, "image")
        if csv_path is not None:
            check_output(csv_path, (".csv",), "CSV file")
    except OutputError as exc:
        raise InputError(str(exc)) from None
    run_dirs = find_runs(arguments)
    points, used = [], []
    for run_dir in run_dirs:
        problems: list[str] = []
        mine = run_points(run_dir, problems)
        for problem in problems:
            print(f"note: {problem}", file=sys.stderr)
        if not mine:
            print(f"note: {run_dir}: no evaluation in bits per byte in metrics.jsonl (train.eval_steps 0, no "
                  f"evaluation yet, or trained before eval_bits_per_byte was recorded); left out", file=sys.stderr)
            continue
        points += mine
        used.append(run_dir)
    if not points:
        raise InputError(f"{', '.join(arguments)}: no run with an evaluation in bits per byte")
    return used, points


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.frontier", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories, folders holding them, or globs of either")
    parser.add_argument("-o", "--out", type=Path, required=True, help="image to write (.png, .pdf, .svg)")
    parser.add_argument("--csv", type=Path, help="also write the points as CSV")
    parser.add_argument("--title", help="figure title (default: the runs' folder or name, and the last step)")
    args = parser.parse_args(argv)
    try:
        run_dirs, points = collect(args.runs, args.out, args.csv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_figure(frontier_figure(run_dirs, points, title=args.title), args.out)
    written = [str(args.out)]
    if args.csv is not None:
        written.append(str(write_csv(points, args.csv)))
    front = best_so_far(points)
    print(f"wrote {' and '.join(written)}: {len(points)} evaluations of {len(run_dirs)} runs; frontier "
          f"{front[-1]['eval_bits_per_byte']:.3f} bits/byte at {front[-1]['flops']:.3g} FLOPs ({front[-1]['run']})")
    print(final_table(run_dirs, points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
