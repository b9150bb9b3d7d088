"""The results of a sweep: one row per cell with its axis values, state, steps, losses and bits per byte.

    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml              # the file's cells, as submitted last
    python launch/sweep_report.py 20261127-211500-ab12cd                      # a submission id from the journal
    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml --plot model.params.kernel --metric eval_loss
    python launch/sweep_report.py SWEEP --evaluate     # first run memorymodels.evaluate on complete cells

It prints the table (cell, axis values, state, steps, final training loss, eval loss, bits per byte from the run's
eval.json and, for autoencoders and memory models, bits per byte with the stored embedding, and the GPU hours, or CPU
hours, each cell's Slurm jobs used over all their attempts: one ``sacct`` call, where accounting runs) and what the
whole sweep used and lost in attempts that failed or were cancelled, writes it as CSV
(``--csv``, default ``<sweep folder>/report.csv``) and, with ``--plot AXIS``, draws ``--metric`` against that axis,
one line per combination of the other axes (default ``<sweep folder>/<metric>_vs_<axis>.png``). Metrics: step,
max_steps, loss, eval_loss, bits_per_byte, total_bits_per_byte, attempts, gpu_hours, cpu_hours, lost_gpu_hours,
lost_cpu_hours. A sweep file that was never submitted is read with
``--profile`` (or the file's ``profile``) to find its run directories.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memorymodels.configuration import ConfigError

USAGE = ("attempts", "gpu_hours", "cpu_hours", "lost_gpu_hours", "lost_cpu_hours")
METRICS = ("step", "max_steps", "loss", "eval_loss", "bits_per_byte", "total_bits_per_byte", *USAGE)
STATE_STYLE = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def read_cell(run_dir: Path) -> dict[str, Any]:
    """State and final numbers of one cell's run directory (``run_progress`` plus ``eval.json``'s bits per byte)."""
    row: dict[str, Any] = {m: None for m in METRICS}
    if not (run_dir / "run.json").exists() and not (run_dir / "metrics.jsonl").exists():
        return {**row, "status": "not started"}
    from memorymodels.runs import run_progress

    progress = run_progress(run_dir)
    row.update({k: progress.get(k) for k in METRICS if k in progress})
    row["status"] = progress.get("status") or "not started"  # run.json claimed at submission, no attempt yet
    evaluation = _read_json(run_dir / "eval.json")
    if evaluation:
        row["bits_per_byte"] = evaluation.get("bits_per_byte")
        # autoencoders and memory models: the model's bits plus those of storing the embedding (digest §6.3)
        row["total_bits_per_byte"] = (evaluation.get("embedding") or {}).get("total_bits_per_byte")
        if row["eval_loss"] is None:
            row["eval_loss"] = evaluation.get("loss")
    return row


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_rows(cells: list[dict], axes: list[str]) -> list[dict[str, Any]]:
    """One row per cell (``{"index", "overrides", "run_dir"}`` mappings): axis values, then state and metrics."""
    rows = []
    for i, cell in enumerate(cells):
        overrides = cell["overrides"]
        row = {"cell": cell.get("index", i), **{a: overrides.get(a) for a in axes}}
        row.update(read_cell(Path(cell["run_dir"])))
        row["run_dir"] = str(cell["run_dir"])
        rows.append(row)
    return rows


def sweep_jobs(cells: list[dict]) -> list[dict]:
    """The journal's Slurm jobs of these cells, from every submission of the sweep (a resubmitted cell has several)."""
    from launch import journal

    run_dirs = {str(cell["run_dir"]) for cell in cells}
    return [{**job, "profile": submission.get("profile")}
            for submission in journal.load_all() if submission.get("kind") == "sweep"
            for job in submission["jobs"] if job["run_dir"] in run_dirs and job.get("executor", "slurm") == "slurm"]


def _slurm_env(profile: str | None) -> dict[str, str]:
    """The environment for Slurm commands about jobs submitted with ``profile`` (its ``slurm_conf``, if it has one)."""
    from launch.cluster_info import slurm_environ
    from launch.jobqueue import slurm_env
    from launch.profiles import load_profile

    try:
        conf = load_profile(profile).slurm_conf if profile else None
    except (ConfigError, OSError):  # a profile file that has gone since: the default cluster
        conf = None
    return slurm_environ(conf) if conf else slurm_env()


def resource_usage(jobs: list[dict], run=None) -> tuple[dict[str, dict], str | None]:
    """``({run_dir: {attempts, gpu_hours, cpu_hours, lost_gpu_hours, lost_cpu_hours}}, None)`` over every attempt of
    these Slurm jobs (:func:`sweep_jobs`), from one ``sacct`` call on the cluster of the newest submission's profile
    (``run``: argv -> stdout, for tests); ``({}, why)`` where sacct fails
    (no accounting). "Lost" hours are those of attempts that ended failed, cancelled or on a failed node: an upper
    bound on the waste, since a later attempt resumes from their last periodic checkpoint."""
    from launch.cluster_info import SlurmError, run_slurm
    from launch.slurm_output import LOST_STATES, parse_usage, usage_command

    if not jobs:
        return {}, None
    run = run or (lambda argv: run_slurm(argv, _slurm_env(jobs[-1].get("profile"))))
    run_dir_of = {job["job_id"]: job["run_dir"] for job in jobs}
    try:
        text = run(usage_command(list(dict.fromkeys(job["job_id"].split("_")[0] for job in jobs))))
    except SlurmError as exc:
        return {}, str(exc)
    usage: dict[str, dict] = {}
    for attempt in parse_usage(text):
        run_dir = run_dir_of.get(attempt["job_id"])
        if run_dir is None:
            continue
        cell = usage.setdefault(run_dir, dict.fromkeys(USAGE, 0))
        hours = attempt["elapsed_s"] / 3600
        cell["attempts"] += 1
        cell["gpu_hours"] += hours * attempt["gpus"]
        cell["cpu_hours"] += hours * attempt["cpus"]
        if attempt["state"] in LOST_STATES:
            cell["lost_gpu_hours"] += hours * attempt["gpus"]
            cell["lost_cpu_hours"] += hours * attempt["cpus"]
    return usage, None


def add_usage(rows: list[dict[str, Any]], usage: dict[str, dict]) -> None:
    """Put each cell's :func:`resource_usage` into its row (cells without a Slurm attempt keep None)."""
    for row in rows:
        row.update(usage.get(row["run_dir"], {}))


def usage_summary(rows: list[dict[str, Any]], error: str | None = None) -> str | None:
    """One line on what the sweep used and lost; None where no cell has accounting data and nothing failed."""
    if error:
        return f"resources: unknown ({error})"
    counted = [row for row in rows if row.get("attempts")]
    if not counted:
        return None
    unit = "gpu" if any(row["gpu_hours"] for row in counted) else "cpu"
    used = sum(row[f"{unit}_hours"] for row in counted)
    lost = sum(row[f"lost_{unit}_hours"] for row in counted)
    share = f" ({lost / used:.0%})" if used else ""
    return (f"resources: {used:.4g} {unit.upper()}-h used by {sum(row['attempts'] for row in counted)} attempt(s) of "
            f"{len(counted)} cell(s); {lost:.4g} {unit.upper()}-h{share} in attempts that failed or were cancelled")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def render(rows: list[dict[str, Any]], axes: list[str], title: str = "") -> Table:
    """The report table (pure: no files, no cluster)."""
    from launch.sweep_file import short_keys

    table = Table(title=title or None)
    table.add_column("cell", justify="right")
    for axis in axes:
        table.add_column(short_keys(axes)[axis])  # kernel, not model.params.kernel (the CSV has the full keys)
    columns = ["state", "steps", "loss", "eval loss", "bits/byte"]
    with_embedding = any(row["total_bits_per_byte"] is not None for row in rows)
    if with_embedding:
        columns.append("+embedding")
    hours = next((unit for unit in ("gpu", "cpu") if any(row.get(f"{unit}_hours") for row in rows)), None)
    if hours:
        columns.append(f"{hours.upper()}-h")
    for col in columns:
        table.add_column(col, justify="left" if col == "state" else "right")
    for row in rows:
        steps = "-" if row["step"] is None else f"{row['step']}/{_fmt(row['max_steps'])}"
        state = row["status"]
        style = STATE_STYLE.get(state)
        values = [_fmt(row["loss"]), _fmt(row["eval_loss"]), _fmt(row["bits_per_byte"])]
        if with_embedding:
            values.append(_fmt(row["total_bits_per_byte"]))
        if hours:
            values.append(_fmt(row.get(f"{hours}_hours")))
        table.add_row(str(row["cell"]), *(_fmt(row[a]) for a in axes),
                      f"[{style}]{state}[/]" if style else state, steps, *values)
    return table


def write_csv(rows: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    """The rows as CSV (written to a temporary name, then renamed)."""
    columns = ["cell", *axes, "status", *METRICS, "run_dir"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else _csv_value(row[c]) for c in columns})
    os.replace(tmp, path)


def _csv_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def plot(rows: list[dict[str, Any]], axes: list[str], axis: str, metric: str, path: Path) -> int:
    """Draw ``metric`` against ``axis``, one line per combination of the other axes; returns the points drawn."""
    if axis not in axes:
        raise ConfigError(f"--plot {axis}: not an axis of this sweep; axes: {', '.join(axes)}")
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric}: unknown metric; choose one of {', '.join(METRICS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [a for a in axes if a != axis]
    series: dict[str, list[tuple[Any, float]]] = {}
    for row in rows:
        if row[metric] is None or row[axis] is None:
            continue
        label = ", ".join(f"{a.rsplit('.', 1)[-1]}={_fmt(row[a])}" for a in others) or metric
        series.setdefault(label, []).append((row[axis], float(row[metric])))
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) for points in series.values() for x, _ in points)
    categories = sorted({str(x) for points in series.values() for x, _ in points})
    for label, points in series.items():
        points.sort(key=lambda p: p[0] if numeric else str(p[0]))
        xs = [x if numeric else categories.index(str(x)) for x, _ in points]
        ax.plot(xs, [y for _, y in points], marker="o", label=label)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
    elif 0 < len(categories) <= 12:
        ax.set_xticks(sorted({x for points in series.values() for x, _ in points}))  # the swept values
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return sum(len(p) for p in series.values())


def evaluate_missing(rows: list[dict[str, Any]]) -> None:
    """Run ``python -m memorymodels.evaluate`` on every completed cell that has no ``eval.json`` yet."""
    for row in rows:
        run_dir = Path(row["run_dir"])
        if row["status"] == "completed" and not (run_dir / "eval.json").exists():
            print(f"evaluating cell {row['cell']}: {run_dir}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "memorymodels.evaluate", str(run_dir)], check=True,
                           stdout=subprocess.DEVNULL)


def find_submission(sweep: str) -> dict | None:
    """The journal entry of a sweep: by submission id, or the latest submission of a sweep file; else None."""
    from launch import journal

    submissions = [s for s in journal.load_all() if s.get("kind") == "sweep" and isinstance(s.get("sweep"), dict)]
    for submission in submissions:
        if submission.get("submission_id") == sweep:
            return submission
    if not Path(sweep).is_file():
        return None
    path = str(Path(sweep).resolve())
    matching = [s for s in submissions if s["sweep"].get("file") == path]
    return matching[-1] if matching else None


def load_cells(sweep: str, profile: str | None) -> tuple[str, list[str], list[dict]]:
    """``(title, axes, cells)`` of a submission id (the cells it recorded) or of a sweep file (its cells as the file
    says now, under the checkpoint root of its latest submission, else of ``profile`` or the file's profile)."""
    from launch import sweeps

    from launch.journal import journal_dir

    path = Path(sweep)
    record = find_submission(sweep)
    if record is not None and not path.is_file():
        info = record["sweep"]
        return f"{info['name']} ({record['submission_id']})", info["axes"], info["cells"]
    if not path.is_file():
        raise ConfigError(f"{sweep}: neither a sweep file nor a sweep submission id in the journal "
                          f"({journal_dir()}); list sweeps with: ls {journal_dir()}")
    config = sweeps.load_sweep(sweep)
    if record is not None and profile is None:
        root, title = Path(record["sweep"]["root"]).parent, f"{config.name} ({record['submission_id']})"
    elif profile or config.profile:
        from launch.profiles import load_profile

        root = sweeps.checkpoint_root(config, load_profile(profile or config.profile))
        title = f"{config.name} ({'submitted' if record else 'not submitted'})"
    else:
        raise ConfigError(f"{sweep}: never submitted and no profile to find its run directories; pass --profile")
    cells = sweeps.plan_cells(config, root)
    return title, config.axes, [{"index": c.index, **c.as_json()} for c in cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep file (sweeps/NAME.yaml) or a submission id from the journal")
    parser.add_argument("--profile", help="profile giving the checkpoint root of a sweep file never submitted")
    parser.add_argument("--csv", type=Path, help="CSV output (default <sweep folder>/report.csv)")
    parser.add_argument("--plot", metavar="AXIS", help="plot --metric against this axis (a dotted key of the sweep)")
    parser.add_argument("--metric", default="eval_loss", help=f"one of {', '.join(METRICS)} (default eval_loss)")
    parser.add_argument("--out", type=Path, help="plot file (default <sweep folder>/<metric>_vs_<axis>.png)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate completed cells lacking eval.json first")
    args = parser.parse_args(argv)
    try:
        title, axes, cells = load_cells(args.sweep, args.profile)
        rows = collect_rows(cells, axes)
        if args.evaluate:
            evaluate_missing(rows)
            rows = collect_rows(cells, axes)
        usage, error = resource_usage(sweep_jobs(cells))
        add_usage(rows, usage)
        folder = Path(cells[0]["run_dir"]).parent  # <checkpoint root>/<sweep name>
        console = Console()
        console.width = max(console.width, 100)  # a pipe reports 80 columns; the table needs about 100
        console.print(render(rows, axes, title))
        summary = usage_summary(rows, error)
        if summary:
            print(summary)
        csv_path = args.csv or folder / "report.csv"
        write_csv(rows, axes, csv_path)
        print(f"csv: {csv_path}")
        if args.plot:
            out = args.out or folder / f"{args.metric}_vs_{args.plot.rsplit('.', 1)[-1]}.png"
            points = plot(rows, axes, args.plot, args.metric, out)
            print(f"plot: {out} ({points} points{'; no cell has this metric yet' if not points else ''})")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
