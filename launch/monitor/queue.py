"""The state of the project's jobs, for the dashboard: one ``squeue`` and at most one ``sacct`` call per refresh.

    from launch.monitor.queue import Collector
    snapshot = Collector().refresh()                  # the jobs in .state/journal/ (and local runs)
    snapshot = Collector(all_jobs=True).refresh()     # every job of this user
    Collector(accounting="off")                       # never call sacct (clusters that restrict it)

Where the rows come from:
- ``squeue -r`` (one call, array tasks expanded) for every queued or running job of the user; with ``-t all``
  (jobs that ended within the controller's MinJobAge too) where sacct is off or failed, and for ``all_jobs``;
- ``sacct -X -D`` (at most one call) for journal jobs that have left the queue; terminal answers are cached, so a
  finished job is asked about once. ``-D`` keeps the records of earlier requeues, which counts restarts. With
  ``all_jobs``, sacct is asked at most once a minute, for what changed since its last answer;
- where accounting is off or ``sacct`` fails, finished jobs are inferred from their run directories
  (``run.json`` status) and the ``slurmstepd`` line in their logs (CANCELLED / TIME LIMIT / PREEMPTION);
- progress (step, loss, tokens/s, checkpoint age, ETA) from each run's ``run.json``/``metrics.jsonl``/checkpoints.

When the controller does not answer, the last good rows are returned with ``stale=True`` and the error; a refresh
never raises for a cluster problem. Parsing is defensive: unknown states pass through, odd lines are skipped and
counted, missing columns become ``None``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from launch.records.journal import journal_dir as default_journal_dir
from launch.slurm.client import SlurmError, run_slurm, slurm_environ
from launch.slurm.output import (ACTIVE_STATES, FAILED_STATES, TERMINAL_STATES, explain_reason, parse_sacct,
                                 parse_squeue, sacct_command, squeue_command)
from memorymodels.experiment import REPO_ROOT
from memorymodels.fileio import tail_lines, write_text_atomic
from memorymodels.runs import run_progress as progress

@dataclasses.dataclass(slots=True)
class JobRow:
    """One job or array task, as the dashboard shows it (``--json`` prints these fields)."""

    job_id: str
    state: str
    name: str = ""
    submission: str | None = None
    sweep: str | None = None
    cell: dict | None = None
    reason: str | None = None
    reason_text: str = ""
    elapsed_s: float | None = None
    time_limit_s: float | None = None
    node: str | None = None
    restarts: int = 0
    exit_code: str | None = None
    end: float | None = None
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
    """Share of the run's allocated node time that went into training it keeps (run.json, written by the node
    launcher). Data only: the dashboard's view does not show it yet."""
    excluded_nodes: list[str] | None = None
    """Nodes the launcher left out of a retry after they hung or lost a rank (data only, like ``goodput``)."""

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


@dataclasses.dataclass
class SweepSummary:
    """One sweep submission: how many cells are in each state and the best eval loss so far."""

    name: str
    submission: str
    total: int
    counts: dict[str, int]
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
    accounting: bool = True
    calls: dict[str, int] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


def cluster_environ(jobs: list[dict]) -> dict[str, str]:
    """The environment for the dashboard's Slurm calls: ``SLURM_CONF`` as set, else the cluster the newest
    submission went to (the journal records the profile's ``slurm_conf``), else Slurm's default."""
    if os.environ.get("SLURM_CONF"):
        return dict(os.environ)
    conf = next((job["slurm_conf"] for job in reversed(jobs) if job.get("slurm_conf")), None)
    return slurm_environ(conf)


# ---------------------------------------------------------------- journal and run directories

LOCAL_EXECUTORS = {"local", "debug", "process", "subprocess"}


def read_journal(directory: Path, cache: dict | None = None) -> tuple[list[dict], list[str]]:
    """Every job of every submission in ``directory`` (``<submission_id>.json``), oldest submission first.

    Each job dict carries its submission's id, kind, sweep name and profile; unreadable files become warnings.
    ``cache`` (path -> (mtime, jobs)) skips files that have not changed since the last call.
    """
    cache = {} if cache is None else cache
    found: list[tuple[float, str, list[dict]]] = []
    warnings: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            mtime = path.stat().st_mtime
            if path in cache and cache[path][0] == mtime:
                created, jobs = cache[path][1:]
            else:
                created, jobs = _journal_jobs(path)
                cache[path] = (mtime, created, jobs)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            warnings.append(f"{path}: unreadable journal entry ({exc}); fix or remove the file")
            continue
        found.append((created, path.stem, jobs))
    found.sort(key=lambda item: (item[0], item[1]))
    return [job for _, _, jobs in found for job in jobs], warnings


def _journal_jobs(path: Path) -> tuple[float, list[dict]]:
    data = json.loads(path.read_text())
    submission = str(data.get("submission_id") or path.stem)
    sweep = data.get("sweep") if data.get("kind") == "sweep" else None
    sweep_name = None
    if data.get("kind") == "sweep":
        sweep = sweep if isinstance(sweep, dict) else {}
        sweep_name = str(sweep.get("name") or (Path(sweep["file"]).stem if sweep.get("file") else submission))
    executor = str(data.get("executor") or data.get("scheduler") or "").lower()
    jobs = []
    profile = data.get("profile")
    for job in data.get("jobs") or []:
        job_id = str(job.get("job_id") or "").strip()
        if not job_id:
            continue
        job_executor = str(job.get("executor") or executor).lower()
        local = not job_id.replace("_", "", 1).isdigit() or job_executor in LOCAL_EXECUTORS
        pid = job.get("pid")
        if local and pid is None and job_id.isdigit():
            pid = int(job_id)  # submitit's local executor uses the process id as the job id
        run_dir = job.get("run_dir")
        split = None
        if run_dir:
            if not os.path.isabs(run_dir):  # os.path and str, not Path: 10,000 cells per journal file
                run_dir = os.path.join(REPO_ROOT, run_dir)
            parent, _, name = run_dir.rstrip("/").rpartition("/")
            split = (parent or "/", name)
        cell = job.get("cell")
        row = {"job_id": job_id, "name": str(job.get("name") or ""), "run_dir": run_dir,
               "cell": cell if isinstance(cell, dict) else None, "stdout": job.get("stdout"),
               "stderr": job.get("stderr"), "submission": submission, "sweep": sweep_name}
        jobs.append({**row, "row": row, "pid": pid, "profile": profile, "slurm": not local, "run_parent": split,
                     "slurm_conf": data.get("slurm_conf")})
    return _epoch(data.get("created")) or path.stat().st_mtime, jobs


def _epoch(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO-8601 string; None when neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def run_progress(run_dir: str | None, listings: dict[str, set[str]] | None = None,
                 split: tuple[str, str] | None = None) -> dict:
    """``memorymodels.runs.run_progress`` for ``run_dir``; {} when there is no run directory or it is unreadable.

    ``listings`` (parent directory -> names in it, filled as needed) saves a file-system call per row for the run
    directories that do not exist yet: a 10,000-cell sweep lists its one parent directory instead. ``split`` is
    ``os.path.split(run_dir)`` when the caller has it.
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
    if not os.path.exists(os.path.join(run_dir, "run.json")):
        return {}
    try:
        return progress(run_dir) or {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"error": f"{run_dir}: {exc}"}


def step_rate(run_dir: str, window: int = 20) -> float | None:
    """Steps per second over the last ``window`` logged steps of ``metrics.jsonl`` (reads only the file's tail)."""
    points = []
    for line in tail_lines(Path(run_dir, "metrics.jsonl"), window + 1, 16384):
        try:
            entry = json.loads(line)
            points.append((float(entry["step"]), _epoch(entry["time"])))
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


def infer_state(progress: dict, logs: list[str | None]) -> tuple[str, str]:
    """The state of a job that is no longer queued, from its run directory and logs (no accounting needed).

    Returns (state, plain-words note). The ``slurmstepd`` line in the log wins (it is written when Slurm ends the
    job); then ``run.json`` status; a job with neither never started.
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
    if status == "interrupted":
        return "INTERRUPTED", "saved a checkpoint to be requeued, but is no longer queued"
    if status == "running":
        return "UNKNOWN", "no longer queued, but run.json still says running (killed?)"
    return "UNKNOWN", "no longer queued and never started (cancelled while pending?)"


# ---------------------------------------------------------------- the collector


ALL_SACCT_INTERVAL_S = 60.0  # --all asks sacct at most this often (squeue -t all covers the minutes between)


class Collector:
    """Builds a Snapshot per ``refresh()``: one ``squeue``, at most one ``sacct``, the journal and run directories.

    ``accounting``: "auto" (use ``sacct``; after it fails, use run directories and retry it a minute later), "on"
    (always try it), "off" (never call it). ``$MEMORYMODELS_SACCT=off`` sets "off" for every dashboard.
    ``squeue_states``: None (default) asks squeue for the queued and running jobs while sacct works, and for
    ``"all"`` states once it does not (jobs that ended within the controller's MinJobAge then keep their exact
    end state); a string is passed to ``squeue -t`` as it is.
    ``shared_cache``: a folder where squeue's answer is kept for ``min_interval`` seconds, so that several
    dashboards and status commands of one user cost the controller one squeue call per interval together.
    ``run`` runs a Slurm command (argv -> stdout, raising SlurmError); tests replay captured output through it.
    """

    def __init__(self, *, all_jobs: bool = False, accounting: str | None = None, journal_dir: Path | None = None,
                 user: str | None = None, since: str = "now-1days", failure_tails: int = 5, tail_lines: int = 12,
                 squeue_states: str | None = None, shared_cache: Path | None = None, min_interval: float = 2.0,
                 run: Callable[[list[str]], str] | None = None, timeout: float = 10.0):
        accounting = accounting or os.environ.get("MEMORYMODELS_SACCT", "auto").lower()
        if accounting not in ("auto", "on", "off"):
            raise ValueError(f"accounting={accounting!r} (or $MEMORYMODELS_SACCT): use auto, on or off")
        self.all_jobs, self.accounting, self.since, self.squeue_states = all_jobs, accounting, since, squeue_states
        self.shared_cache, self.min_interval = (Path(shared_cache) if shared_cache else None), min_interval
        self.journal_dir = Path(journal_dir) if journal_dir is not None else default_journal_dir()
        self.user = user or getpass.getuser()
        self.failure_tails, self.tail_lines = failure_tails, tail_lines
        self._env: dict[str, str] = dict(os.environ)
        self._run = run or (lambda argv: run_slurm(argv, env=self._env, timeout=timeout))
        self._journal_cache: dict = {}
        self._finished: dict[str, dict] = {}  # records in a terminal state: they never change
        self._sacct_retry_at = 0.0
        self._sacct_asked: float | None = None  # when sacct last answered (--all asks only for changes since)
        self.last: Snapshot | None = None

    def refresh(self) -> Snapshot:
        """Collect once. Never raises for a cluster problem: a failed squeue gives the last rows, marked stale."""
        now = time.time()
        jobs, warnings = read_journal(self.journal_dir, self._journal_cache)
        self._env = cluster_environ(jobs)
        calls = {"squeue": 0, "sacct": 0}
        try:
            wanted = None if self.all_jobs else {j["job_id"].split("_")[0] for j in jobs if j["slurm"]}
            queue, bad = parse_squeue(self._squeue(calls, now), wanted)
        except SlurmError as exc:
            return self._stale(str(exc), jobs, warnings, calls, now)
        if bad:
            warnings.append(f"squeue: {bad} line(s) not understood (Slurm version?); those jobs are missing")
        finished = self._finished
        for job_id, record in queue.items():
            if job_id not in finished and record["state"] in TERMINAL_STATES:
                finished[job_id] = dict(record, source="squeue")
        accounted, ranges, accounting = self._accounting(jobs, queue, calls, warnings, now)
        listings: dict[str, set[str]] = {}
        fields_of: dict[tuple, dict] = {}
        rows = [self._journal_row(job, queue, accounted, ranges, listings, now, fields_of) for job in jobs]
        if self.all_jobs:
            rows += self._other_rows({row.job_id for row in rows}, queue, accounted, fields_of)
        self._add_tails(rows)
        self.last = Snapshot(rows=rows, sweeps=summarize_sweeps(rows), time=now, accounting=accounting,
                             calls=calls, warnings=warnings)
        return self.last

    def _squeue(self, calls: dict, now: float) -> str:
        """squeue's answer: from the shared cache when another dashboard asked less than ``min_interval`` ago."""
        states = self.squeue_states
        if states is None and (self.all_jobs or not self._accounting_usable(now)):
            states = "all"  # recent endings from squeue: without sacct, or between --all's sacct calls
        argv = squeue_command(self.user, states)
        path = None
        if self.shared_cache is not None:
            key = json.dumps([argv, self._env.get("SLURM_CONF")]).encode()
            path = self.shared_cache / f"squeue-{hashlib.sha1(key).hexdigest()[:16]}.txt"
            try:
                if now - path.stat().st_mtime < self.min_interval:
                    calls["shared"] = 1
                    return path.read_text()
            except OSError:
                pass
        calls["squeue"] += 1
        text = self._run(argv)
        if path is not None:
            try:  # atomic: another reader never sees half an answer
                write_text_atomic(path, text)
            except OSError:
                pass
        return text

    def environ(self) -> dict[str, str]:
        """The environment of this collector's Slurm calls (the cluster of the journal's newest submission)."""
        if self.last is None:
            self._env = cluster_environ(read_journal(self.journal_dir, self._journal_cache)[0])
        return dict(self._env)

    def forget_shared(self) -> None:
        """Drop the shared squeue answers (after scancel: the next refresh must ask the controller)."""
        if self.shared_cache is not None:
            for path in self.shared_cache.glob("squeue-*.txt"):
                path.unlink(missing_ok=True)

    def _accounting_usable(self, now: float) -> bool:
        return self.accounting == "on" or (self.accounting == "auto" and now >= self._sacct_retry_at)

    def _accounting(self, jobs, queue, calls, warnings, now) -> tuple[dict, dict, bool]:
        """sacct records for the jobs that left the queue (one call, or none when nothing is missing)."""
        if not self._accounting_usable(now):
            return dict(self._finished), {}, False
        since = self.since
        if self.all_jobs:  # every job of the user: after the first answer, only what changed since the last one
            job_ids = None
            if self._sacct_asked is not None:
                if now - self._sacct_asked < ALL_SACCT_INTERVAL_S:  # squeue -t all shows the recent endings
                    return dict(self._finished), {}, True
                since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._sacct_asked - 120))
        else:
            missing = {j["job_id"].split("_")[0] for j in jobs
                       if j["slurm"] and j["job_id"] not in queue and j["job_id"] not in self._finished}
            if not missing:
                return dict(self._finished), {}, True
            job_ids = sorted(missing, key=int)
        try:
            calls["sacct"] += 1
            records, ranges, bad = parse_sacct(self._run(sacct_command(job_ids, self.user, since)))
        except SlurmError as exc:
            self._sacct_retry_at = now + 60.0
            warnings.append(f"{exc}; finished jobs are inferred from their run directories and logs "
                            f"(set MEMORYMODELS_SACCT=off to stop asking)")
            return dict(self._finished), {}, False
        self._sacct_asked = now
        if bad:
            warnings.append(f"sacct: {bad} line(s) not understood (Slurm version?)")
        for job_id, record in records.items():
            if record["state"] in TERMINAL_STATES:
                self._finished[job_id] = record
        return {**self._finished, **records}, ranges, True

    def _journal_row(self, job, queue, accounted, ranges, listings, now, fields_of) -> JobRow:
        job_id = job["job_id"]
        record = queue.get(job_id) if job["slurm"] else None
        source = "squeue"
        if record is None and job["slurm"]:
            record = accounted.get(job_id) or _in_ranges(job_id, ranges)
            source = record.get("source", "sacct") if record else "sacct"
        if record is None and job["slurm"] and "_" in job_id:
            # tasks that never started have no record of their own once the array ends (all cancelled while
            # queued): Slurm keeps one record under the bare array id, which stands for them
            base = job_id.split("_")[0]
            record, source = queue.get(base), "squeue"
            if record is None:
                record = accounted.get(base)
                source = record.get("source", "sacct") if record else "sacct"
            if record is not None and record["state"] in TERMINAL_STATES:
                self._finished[job_id] = dict(record, source=source)  # settled: sacct is not asked again
        progress = run_progress(job["run_dir"], listings, job["run_parent"])
        if record is not None:
            key = (id(record), source)  # a queued array's tasks share one record: its fields are worked out once
            if key not in fields_of:
                fields_of[key] = record_fields(record, source)
            row = JobRow(**job["row"], **fields_of[key])
            if not row.name:
                row.name = record.get("slurm_name") or ""
        else:
            row = JobRow(**job["row"], state="UNKNOWN")
            if job["slurm"]:
                row.state, row.reason_text = infer_state(progress, [job["stderr"], job["stdout"]])
                row.source = "rundir"
            else:
                row.state, row.reason_text = _local_state(progress, job.get("pid"))
                row.source = "local"
        _apply_progress(row, progress, now)
        return row

    def _other_rows(self, known: set[str], queue: dict, accounted: dict, fields_of: dict) -> list[JobRow]:
        """Rows for the user's jobs outside the journal (``all_jobs``), by job id; squeue's record wins."""
        rows = []
        for job_id in sorted(accounted.keys() | queue.keys(), key=_id_order):
            if job_id in known:
                continue
            record = queue.get(job_id)
            source = "squeue"
            if record is None:
                record = accounted[job_id]
                source = record.get("source", "sacct")
            key = (id(record), source)
            if key not in fields_of:
                fields_of[key] = record_fields(record, source)
            rows.append(JobRow(job_id=job_id, name=record.get("slurm_name") or "", **fields_of[key]))
        return rows

    def _add_tails(self, rows: list[JobRow]) -> None:
        """The last log lines of the most recent failures (newest end time first)."""
        failed = [row for row in rows if row.failed and (row.stderr or row.stdout)]
        failed.sort(key=lambda row: row.end or 0.0, reverse=True)
        for row in failed[: self.failure_tails]:
            row.log_tail = tail_lines(row.stderr, self.tail_lines) or tail_lines(row.stdout, self.tail_lines)

    def _stale(self, error, jobs, warnings, calls, now) -> Snapshot:
        if self.last is not None:
            rows, sweeps = self.last.rows, self.last.sweeps
        else:  # nothing good yet: what the journal and run directories say, states unknown
            rows = []
            for job in jobs:
                row = JobRow(**job["row"], state="UNKNOWN", source="rundir")
                _apply_progress(row, run_progress(job["run_dir"]), now)
                rows.append(row)
            sweeps = summarize_sweeps(rows)
        since = self.last.time if self.last is not None else None
        return Snapshot(rows=rows, sweeps=sweeps, time=since or now, stale=True, error=error,
                        accounting=self.last.accounting if self.last else False, calls=calls, warnings=warnings)


def _id_order(job_id: str) -> tuple[int, int]:
    base, _, task = job_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(task) if task.isdigit() else -1)


def _in_ranges(job_id: str, ranges: dict) -> dict | None:
    base, _, task = job_id.partition("_")
    if task.isdigit():
        for tasks, record in ranges.get(base, []):
            if int(task) in tasks:
                return record
    return None


def record_fields(record: dict, source: str) -> dict:
    """The JobRow fields that a squeue/sacct record gives."""
    state, reason = record["state"], record.get("reason")
    explain = state in ACTIVE_STATES or state in FAILED_STATES  # a cancelled job's last reason is history
    fields = {"source": source, "state": state, "reason": reason,
              "reason_text": explain_reason(reason) if explain else "", "restarts": record.get("restarts") or 0}
    fields.update((key, record[key]) for key in ("elapsed_s", "time_limit_s", "node", "exit_code", "end")
                  if record.get(key) is not None)
    return fields


def _local_state(progress: dict, pid: Any) -> tuple[str, str]:
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


def _apply_progress(row: JobRow, progress: dict, now: float) -> None:
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
    checkpoint_time, updated = _epoch(progress.get("checkpoint_time")), _epoch(progress.get("updated"))
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


def summarize_sweeps(rows: list[JobRow]) -> list[SweepSummary]:
    """One summary per sweep submission, in the order the rows come."""
    sweeps: dict[str, SweepSummary] = {}
    for row in rows:
        if row.sweep is None:
            continue
        summary = sweeps.setdefault(row.submission or row.sweep, SweepSummary(
            name=row.sweep, submission=row.submission or row.sweep, total=0, counts={}))
        summary.total += 1
        summary.counts[row.state] = summary.counts.get(row.state, 0) + 1
        if row.eval_loss is not None and (summary.best_eval_loss is None or row.eval_loss < summary.best_eval_loss):
            summary.best_eval_loss, summary.best_job_id, summary.best_cell = row.eval_loss, row.job_id, row.cell
    return list(sweeps.values())
