"""The results of a sweep (``python launch/sweep_report.py``): one row per cell with its axis values, state, steps, losses and bits per byte.

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

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
from rich.table import Table

from launch.planning.profiles import load_profile
from launch.planning.sweep import sweep_root
from launch.planning.sweep_file import load_sweep, plan_cells, short_keys
from launch.records import journal
from launch.slurm.client import SlurmError, run_slurm, slurm_environ
from launch.slurm.output import LOST_STATES, parse_usage, usage_command
from memorymodels.configuration import ConfigError
from memorymodels.fileio import CorruptFileError, read_json, write_text_atomic
from memorymodels.metrics import run_progress
from memorymodels.plot import save_figure
from memorymodels.rundir import RunPaths

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

USAGE = ("attempts", "gpu_hours", "cpu_hours", "lost_gpu_hours", "lost_cpu_hours")
METRICS = ("step", "max_steps", "loss", "eval_loss", "bits_per_byte", "total_bits_per_byte", *USAGE, "goodput")
STATE_STYLE = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def read_cell(run_dir: Path) -> dict[str, Any]:
    """State and final numbers of one cell's run directory (``run_progress`` plus ``eval.json``'s bits per byte)."""
    row: dict[str, Any] = {m: None for m in METRICS}
    if not RunPaths(run_dir).is_run():
        return {**row, "status": "not started"}
    progress = run_progress(run_dir)
    row.update({k: progress.get(k) for k in METRICS if k in progress})  # goodput: from the attempts' history
    row["status"] = progress.get("status") or "not started"  # run.json claimed at submission, no attempt yet
    try:
        evaluation = read_json(RunPaths(run_dir).eval_json)
    except CorruptFileError:
        evaluation = None  # a damaged evaluation is a missing one here: --evaluate writes it again
    if evaluation:
        row["bits_per_byte"] = evaluation.get("bits_per_byte")
        # autoencoders and memory models: the model's bits plus those of storing the embedding (docs/porting.md)
        row["total_bits_per_byte"] = (evaluation.get("embedding") or {}).get("total_bits_per_byte")
        if row["eval_loss"] is None:
            row["eval_loss"] = evaluation.get("loss")
    return row




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
    run_dirs = {str(cell["run_dir"]) for cell in cells}
    return [{**job, "profile": submission.get("profile"), "slurm_conf": submission.get("slurm_conf")}
            for submission in journal.load_all() if submission.get("kind") == "sweep"
            for job in submission["jobs"] if job["run_dir"] in run_dirs and job.get("executor", "slurm") == "slurm"]


def slurm_env_of(jobs: list[dict]) -> dict[str, str]:
    """The environment for Slurm commands about these jobs: the cluster their newest submission recorded, else the
    one its profile names now, else ``SLURM_CONF`` as set."""
    conf = jobs[-1].get("slurm_conf")
    if conf is None and jobs[-1].get("profile"):
        try:
            conf = load_profile(jobs[-1]["profile"]).slurm_conf_path()
        except (ConfigError, OSError):  # a profile file that has gone since: the default cluster
            conf = None
    return slurm_environ(conf)


def resource_usage(jobs: list[dict], run=None) -> tuple[dict[str, dict], str | None]:
    """``({run_dir: {attempts, gpu_hours, cpu_hours, lost_gpu_hours, lost_cpu_hours}}, None)`` over every attempt of
    these Slurm jobs (:func:`sweep_jobs`), from one ``sacct`` call on the cluster of the newest submission's profile
    (``run``: argv -> stdout, for tests); ``({}, why)`` where sacct fails
    (no accounting). "Lost" hours are those of attempts that ended failed, cancelled or on a failed node: an upper
    bound on the waste, since a later attempt resumes from their last periodic checkpoint."""
    if not jobs:
        return {}, None
    run = run or (lambda argv: run_slurm(argv, slurm_env_of(jobs)))
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
    with_goodput = any(row.get("goodput") is not None for row in rows)
    if with_goodput:
        columns.append("goodput")
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
        if with_goodput:
            values.append("-" if row.get("goodput") is None else f"{row['goodput']:.0%}")
        table.add_row(str(row["cell"]), *(_fmt(row[a]) for a in axes),
                      f"[{style}]{state}[/]" if style else state, steps, *values)
    return table


def write_csv(rows: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    """The rows as CSV (written atomically)."""
    columns = ["cell", *axes, "status", *METRICS, "run_dir"]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else _csv_value(row[c]) for c in columns})
    write_text_atomic(path, out.getvalue())


def _csv_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def plot_axis(axes: list[str], axis: str, metric: str) -> str:
    """The sweep axis ``--plot`` names, by its dotted key or by the short name the table shows (``kernel``);
    ConfigError naming the flag when there is none, or when ``metric`` is unknown."""
    short = short_keys(axes)
    by_name = {**{s: a for a, s in short.items()}, **{a: a for a in axes}}
    if axis not in by_name:
        names = ", ".join(f"{short[a]} ({a})" if short[a] != a else a for a in axes)
        raise ConfigError(f"--plot {axis}: not an axis of this sweep; axes: {names}")
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric}: unknown metric; choose one of {', '.join(METRICS)}")
    return by_name[axis]


def plot(rows: list[dict[str, Any]], axes: list[str], axis: str, metric: str, path: Path) -> int:
    """Draw ``metric`` against ``axis``, one line per combination of the other axes; returns the points drawn."""
    axis = plot_axis(axes, axis, metric)
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
    save_figure(fig, path)
    return sum(len(p) for p in series.values())


def evaluate_missing(rows: list[dict[str, Any]]) -> None:
    """Run ``python -m memorymodels.evaluate`` on every completed cell that has no ``eval.json`` yet."""
    for row in rows:
        run_dir = Path(row["run_dir"])
        if row["status"] == "completed" and not RunPaths(run_dir).eval_json.exists():
            print(f"evaluating cell {row['cell']}: {run_dir}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "memorymodels.evaluate", str(run_dir)], check=True,
                           stdout=subprocess.DEVNULL)


def find_submission(sweep: str) -> dict | None:
    """The journal entry of a sweep: by submission id, or the latest submission of a sweep file; else None."""
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
    path = Path(sweep)
    record = find_submission(sweep)
    if record is not None and not path.is_file():
        info = record["sweep"]
        return f"{info['name']} ({record['submission_id']})", info["axes"], info["cells"]
    if not path.is_file():
        raise ConfigError(f"{sweep}: neither a sweep file nor a sweep submission id in the journal "
                          f"({journal.journal_dir()}); list sweeps with: ls {journal.journal_dir()}")
    config = load_sweep(sweep)
    if record is not None and profile is None:
        root, title = Path(record["sweep"]["root"]).parent, f"{config.name} ({record['submission_id']})"
    elif profile or config.profile:
        root = sweep_root(config, load_profile(profile or config.profile))
        title = f"{config.name} ({'submitted' if record else 'not submitted'})"
    else:
        raise ConfigError(f"{sweep}: never submitted and no profile to find its run directories; pass --profile")
    cells = plan_cells(config, root)
    return title, config.axes, [{"index": c.index, **c.as_json()} for c in cells]



