"""One row of the dashboard per job: what Slurm said of it, what its run directory says, and how it is named.

    from launch.monitor.queue import Collector        # builds the rows (launch.monitor.queue)
    rows = Collector().refresh().rows                  # JobRow objects, read by launch.monitor.dashboard

Pure functions over records and run directories: a job's state when Slurm's answer is missing or stale
(:func:`infer_state`, :func:`run_json_wins`), its progress (step, loss, tokens/s, checkpoint age, ETA), the
explanation of its pending reason, a readable name for runs that share one (:func:`label_rows`), and the summary of
each sweep.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from typing import Any

from launch.slurm.output import ACTIVE_STATES, FAILED_STATES, explain_dependency, explain_reason
from memorymodels.fileio import CorruptFileError, read_json, tail_lines
from memorymodels.metrics import run_progress as progress
from memorymodels.rundir import RunPaths


def epoch_of(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO-8601 string; None when neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


@dataclasses.dataclass(slots=True)
class JobRow:
    """One job or array task, as the dashboard shows it (``--json`` prints these fields)."""

    job_id: str
    state: str
    name: str = ""
    label: str = ""  # what the dashboard calls it: a sweep cell's values, or the name and the settings that differ
    submitted: float | None = None
    submission: str | None = None
    sweep: str | None = None
    sweep_key: str | None = None  # the sweep across its resubmissions: its cells' folder (else file, submission)
    cell: dict | None = None
    reason: str | None = None
    reason_text: str = ""
    elapsed_s: float | None = None
    time_limit_s: float | None = None
    node: str | None = None
    restarts: int = 0
    exit_code: str | None = None
    end: float | None = None
    start_estimate: float | None = None  # a pending job's expected start (Slurm's estimate), epoch seconds
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None
    checkpoint_step: int | None = None
    checkpoint_age_s: float | None = None
    updated_age_s: float | None = None
    eta_s: float | None = None
    eta_past_limit: bool = False
    run_status: str | None = None
    run_dir: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    source: str = "squeue"
    log_tail: list[str] | None = None
    goodput: float | None = None
    """Share of the run's allocated node time that went into training it keeps (from its history of attempts)."""
    excluded_nodes: list[str] | None = None
    """Nodes the launcher left out of a retry after they hung or lost a rank."""

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


@dataclasses.dataclass
class SweepSummary:
    """One sweep across all its submissions: how many cells are in each state (each by its newest job) and the best
    eval loss so far."""

    name: str
    submission: str  # the newest submission
    total: int  # cells
    counts: dict[str, int]
    submissions: list[str] = dataclasses.field(default_factory=list)  # newest first
    best_eval_loss: float | None = None
    best_job_id: str | None = None
    best_cell: dict | None = None


@dataclasses.dataclass
class Snapshot:
    """The result of one refresh."""

    rows: list[JobRow]
    sweeps: list[SweepSummary]
    time: float
    stale: bool = False
    error: str | None = None
    answered: float | None = None  # when the queue answer the rows come from was received; None: never
    accounting: bool = True
    calls: dict[str, int] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


def run_progress(run_dir: str | None, listings: dict[str, set[str]] | None = None,
                 split: tuple[str, str] | None = None, job_id: str | None = None) -> dict:
    """``memorymodels.metrics.run_progress`` for ``run_dir``; {} when there is no run directory or it is unreadable.

    ``listings`` (parent directory -> names in it, filled as needed) saves a file-system call per row for the run
    directories that do not exist yet: a 10,000-cell sweep lists its one parent directory instead. ``split`` is
    ``os.path.split(run_dir)`` when the caller has it. ``job_id``: the row's job, whose own attempt it shows when a
    later job resumed the same run directory.
    """
    if not run_dir:
        return {}
    if listings is not None:
        parent, name = split or os.path.split(run_dir.rstrip("/"))
        if parent not in listings:
            try:
                listings[parent] = set(os.listdir(parent))
            except OSError:
                listings[parent] = set()
        if name not in listings[parent]:
            return {}
    if not RunPaths(run_dir).run_json.exists():
        return {}
    try:
        return progress(run_dir, job_id) or {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"error": f"{run_dir}: {exc}"}


def step_rate(run_dir: str, window: int = 20) -> float | None:
    """Steps per second over the last ``window`` logged steps of ``metrics.jsonl`` (reads only the file's tail)."""
    points = []
    for line in tail_lines(RunPaths(run_dir).metrics, window + 1, 16384):
        try:
            entry = json.loads(line)
            points.append((float(entry["step"]), epoch_of(entry["time"])))
        except (ValueError, KeyError, TypeError):
            continue
    points = [(s, t) for s, t in points if t is not None]
    if len(points) < 2 or points[-1][1] <= points[0][1] or points[-1][0] <= points[0][0]:
        return None
    return (points[-1][0] - points[0][0]) / (points[-1][1] - points[0][1])


STEPD_END = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))?(?: \*\*\*|$)")


STEPD_REASONS = {"TIME LIMIT": "TIMEOUT", "PREEMPTION": "PREEMPTED", "NODE FAILURE": "NODE_FAIL"}


STALLED_S = 15 * 60  # a running job whose metrics and run.json have not changed for this long may hang


RUN_STATES = {"completed": "COMPLETED", "failed": "FAILED", "running": "RUNNING", "interrupted": "INTERRUPTED"}


def infer_state(progress: dict, logs: list[str | None], queue_known: bool = True) -> tuple[str, str]:
    """The state of a job that is no longer queued, from its run directory and logs (no accounting needed).

    Returns (state, plain-words note). The ``slurmstepd`` line in the log wins (it is written when Slurm ends the
    job); then ``run.json`` status; a job with neither never started. ``queue_known=False``: Slurm has not answered
    at all, so a job absent from the queue may well be queued or running.
    """
    for log in logs:
        for line in reversed(tail_lines(log, 30)):
            match = STEPD_END.search(line)
            if match:
                state = STEPD_REASONS.get((match.group(1) or "").strip(), "CANCELLED")
                return state, "from the slurmstepd line in its log (no accounting)"
            if "oom-kill" in line or "Out Of Memory" in line:
                return "OUT_OF_MEMORY", "the log reports an out-of-memory kill"
    status = str(progress.get("status") or "")
    if status in ("completed", "failed"):
        return RUN_STATES[status], "from run.json (no accounting)"
    if not queue_known:
        said = f"run.json says {status}" if status else "no run.json yet"
        return "UNKNOWN", f"{said}; Slurm did not answer"
    if status == "interrupted":
        return "INTERRUPTED", "saved a checkpoint to be requeued, but is no longer queued"
    if status == "running":
        return "UNKNOWN", "no longer queued, but run.json still says running (killed?)"
    return "UNKNOWN", "no longer queued and never started (cancelled while pending?)"


def record_fields(record: dict, source: str) -> dict:
    """The JobRow fields that a squeue/sacct record gives."""
    state, reason = record["state"], record.get("reason")
    explain = state in ACTIVE_STATES or state in FAILED_STATES  # a cancelled job's last reason is history
    fields = {"source": source, "state": state, "reason": reason,
              "reason_text": explain_reason(reason) if explain else "", "restarts": record.get("restarts") or 0}
    if explain and reason == "Dependency" and record.get("dependency"):
        fields["reason_text"] = explain_dependency(record["dependency"])
    if state == "PENDING" and record.get("start"):
        fields["start_estimate"] = record["start"]
    fields.update((key, record[key]) for key in ("elapsed_s", "time_limit_s", "node", "exit_code", "end")
                  if record.get(key) is not None)
    return fields


def local_state(progress: dict, pid: Any) -> tuple[str, str]:
    """A run started without Slurm (``local`` profile): its run.json status, checked against its process."""
    status = str(progress.get("status") or "")
    if status in ("completed", "failed", "interrupted"):
        return RUN_STATES[status], "local run"
    alive = True
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
    if not alive:
        said = "run.json says running" if status == "running" else "it never wrote run.json"
        return "UNKNOWN", f"process {pid} is gone but {said} (killed?)"
    return ("RUNNING", "local run") if status == "running" else ("PENDING", "local run, not started yet")


def apply_progress(row: JobRow, progress: dict, now: float) -> None:
    """Step, loss, throughput, checkpoint age and ETA (with the past-the-limit mark) from ``run_progress``."""
    if not progress:
        return
    row.run_status = progress.get("status")
    row.goodput = progress.get("goodput")
    row.excluded_nodes = progress.get("excluded_nodes")
    for key in ("step", "max_steps", "checkpoint_step"):
        value = progress.get(key)
        setattr(row, key, int(value) if isinstance(value, (int, float)) else None)
    for key in ("loss", "eval_loss", "tokens_per_s"):
        value = progress.get(key)
        setattr(row, key, float(value) if isinstance(value, (int, float)) else None)
    restarts = progress.get("restarts") or progress.get("restart_count")
    if isinstance(restarts, int):
        row.restarts = max(row.restarts, restarts)
    checkpoint_time, updated = epoch_of(progress.get("checkpoint_time")), epoch_of(progress.get("updated"))
    row.checkpoint_age_s = max(0.0, now - checkpoint_time) if checkpoint_time else None
    row.updated_age_s = max(0.0, now - updated) if updated else None
    if row.state != "RUNNING":
        return
    if row.updated_age_s is not None and row.updated_age_s > STALLED_S and (row.elapsed_s or STALLED_S) >= STALLED_S:
        row.reason_text = f"no new metrics for {int(row.updated_age_s // 60)} min: hung? (--logs {row.job_id})"
    if row.step is not None and row.max_steps and row.run_dir:
        rate = progress.get("steps_per_s") or step_rate(row.run_dir)
        if rate:
            row.eta_s = max(0.0, (row.max_steps - row.step) / rate)
            if row.time_limit_s is not None and row.elapsed_s is not None:
                row.eta_past_limit = row.eta_s > row.time_limit_s - row.elapsed_s


def run_json_wins(rows: list[JobRow]) -> None:
    """Rows built from an old queue answer: a run whose run.json says it completed or failed since is shown so."""
    for row in rows:
        if row.run_status in ("completed", "failed") and row.state in ACTIVE_STATES | {"UNKNOWN"}:
            row.state = RUN_STATES[row.run_status]
            row.reason_text = f"run.json says {row.run_status} (Slurm did not answer)"
            row.eta_s, row.start_estimate = None, None


def explain_array_limits(rows: list[JobRow]) -> None:
    """Tasks held back by their array's ``%N`` limit: say how many of its tasks run (the limit squeue -r hides)."""
    running: dict[str, int] = {}
    for row in rows:
        if "_" in row.job_id and row.state in ("RUNNING", "COMPLETING"):
            base = row.job_id.split("_")[0]
            running[base] = running.get(base, 0) + 1
    for row in rows:
        if row.reason == "JobArrayTaskLimit" and row.state == "PENDING":
            count = running.get(row.job_id.split("_")[0], 0)
            row.reason_text = (f"waiting for a free slot: the array runs at most {count} task{'s' * (count != 1)} "
                               f"at once" if count else explain_reason(row.reason))


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Dotted keys by their last part (``train.learning_rate`` -> ``learning_rate``), longer where two collide."""
    short = {key: key.rsplit(".", 1)[-1] for key in keys}
    clashes = {name for name in short.values() if list(short.values()).count(name) > 1}
    return {key: key if name in clashes else name for key, name in short.items()}


def fmt_values(values: dict | None) -> str:
    """``{"train.learning_rate": 0.001, "model.dim": 512}`` -> ``learning_rate=0.001 dim=512``."""
    if not values:
        return ""
    short = _short_keys(list(values))
    return " ".join(f"{short[key]}={value}" for key, value in values.items())


BASE_NAME = re.compile(r"^(.*?)(?:-[0-9a-f]{12})?(?:-\d+)?$")  # run_dir_for's NAME-<identity>[-N]


def label_rows(rows: list[JobRow], configs: dict[str, dict | None]) -> None:
    """Each row's readable name: a sweep cell's values; for runs of one experiment under one name (the run
    directory's name, or that name with a hash), the name and the settings in which they differ. ``configs``
    caches each run directory's config (run.json's ``config``; it never changes)."""
    groups: dict[str, list[JobRow]] = {}
    for row in rows:
        if row.cell:
            row.label = fmt_values(row.cell)
        else:
            row.label = row.name
            if row.run_dir:
                groups.setdefault(BASE_NAME.match(row.name).group(1) if row.name else "", []).append(row)
    for base, group in groups.items():
        if len({row.run_dir for row in group}) < 2:
            continue
        flat = {}
        for row in group:
            if row.run_dir not in configs:
                try:
                    config = (read_json(RunPaths(row.run_dir).run_json) or {}).get("config")
                except (CorruptFileError, OSError):
                    config = None
                configs[row.run_dir] = config if isinstance(config, dict) else None
            flat[row.run_dir] = _flat(configs[row.run_dir] or {})
        keys = sorted({key for values in flat.values() for key in values
                       if len({json.dumps(v.get(key), sort_keys=True, default=str) for v in flat.values()}) > 1})
        keys = [key for key in keys if not key.startswith("output.")]  # the run's folder, not its settings
        for row in group:
            values = {key: flat[row.run_dir].get(key, "-") for key in keys}
            row.label = f"{base} {fmt_values(values)}".strip() if values else row.name


def summarize_sweeps(rows: list[JobRow]) -> list[SweepSummary]:
    """One summary per sweep, however many times it was submitted, in the order the rows come (newest first): a
    cell counts once, in the state of its newest job."""
    sweeps: dict[str, SweepSummary] = {}
    cells: set[tuple[str, str]] = set()
    for row in rows:
        if row.sweep is None:
            continue
        key = row.sweep_key or row.submission or row.sweep
        submission = row.submission or row.sweep
        summary = sweeps.setdefault(key, SweepSummary(name=row.sweep, submission=submission, total=0, counts={}))
        if submission not in summary.submissions:
            summary.submissions.append(submission)
        cell = (key, row.run_dir or row.job_id)
        if cell in cells:
            continue  # an older job of a resubmitted cell
        cells.add(cell)
        summary.total += 1
        summary.counts[row.state] = summary.counts.get(row.state, 0) + 1
        if row.eval_loss is not None and (summary.best_eval_loss is None or row.eval_loss < summary.best_eval_loss):
            summary.best_eval_loss, summary.best_job_id, summary.best_cell = row.eval_loss, row.job_id, row.cell
    return list(sweeps.values())
