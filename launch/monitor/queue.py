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

When the controller does not answer, the rows are built from the last answer really received (this collector's, or
the one several dashboards share in ``.state/cache/queue``) and marked ``stale`` with that answer's time; a run whose
``run.json`` says completed or failed is shown so whatever the old answer said. With no answer at all, states come
from the run directories alone. A refresh never raises for a cluster problem.

Every poller of the queue (this collector, ``submit.py --wait``, ``--sweep ... --wait``) asks through
:func:`ask_queue`: one ``squeue`` for this user's jobs (the command spelled in ``launch.slurm.output``), through
``launch.slurm.client.run_slurm``, shared between processes for ``min_interval`` seconds. Parsing is defensive: unknown states pass through, odd lines are skipped and
counted, missing columns become ``None``.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from launch.monitor.rows import (JobRow, Snapshot, apply_progress, epoch_of, explain_array_limits, infer_state, label_rows,
                                 local_state, record_fields, run_json_wins, run_progress, summarize_sweeps)
from launch.records import journal
from launch.records.journal import journal_dir as default_journal_dir
from launch.slurm.client import SlurmError, run_slurm, slurm_environ
from launch.slurm.output import TERMINAL_STATES, parse_sacct, parse_squeue, sacct_command, squeue_command
from memorymodels.experiment import REPO_ROOT, state_dir
from memorymodels.fileio import tail_lines, write_text_atomic







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
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # CorruptFileError is a ValueError
            warnings.append(f"{path}: unreadable journal entry ({exc}); fix or remove the file")
            continue
        found.append((created, path.stem, jobs))
    found.sort(key=lambda item: (item[0], item[1]))
    return [job for _, _, jobs in found for job in jobs], warnings


def _journal_jobs(path: Path) -> tuple[float, list[dict]]:
    data = journal.read_entry(path)
    submission = str(data.get("submission_id") or path.stem)
    sweep = data.get("sweep") if data.get("kind") == "sweep" else None
    sweep_name = sweep_key = None
    if data.get("kind") == "sweep":
        sweep = sweep if isinstance(sweep, dict) else {}
        sweep_name = str(sweep.get("name") or (Path(sweep["file"]).stem if sweep.get("file") else submission))
        # one sweep across its resubmissions: the folder its cells live in, else its file, else this submission
        sweep_key = str(sweep.get("root") or sweep.get("file") or submission)
    executor = str(data.get("executor") or data.get("scheduler") or "").lower()
    jobs = []
    profile = data.get("profile")
    created = epoch_of(data.get("created")) or path.stat().st_mtime
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
               "stderr": job.get("stderr"), "submission": submission, "sweep": sweep_name, "sweep_key": sweep_key,
               "submitted": created}
        jobs.append({**row, "row": row, "pid": pid, "profile": profile, "slurm": not local, "run_parent": split,
                     "slurm_conf": data.get("slurm_conf")})
    return created, jobs














# ---------------------------------------------------------------- the one queue call of every poller


def default_shared_cache() -> Path:
    """Where the dashboards and pollers of one user share squeue's answer: ``<state>/cache/queue``."""
    return state_dir() / "cache" / "queue"


@dataclasses.dataclass
class QueueAnswer:
    """squeue's text and when Slurm gave it (``shared``: another process asked, less than ``min_interval`` ago)."""

    text: str
    time: float
    shared: bool = False


def _answer_path(folder: Path, argv: list[str], env: dict[str, str]) -> Path:
    key = json.dumps([argv, env.get("SLURM_CONF")]).encode()
    return folder / f"squeue-{hashlib.sha1(key).hexdigest()[:16]}.txt"


def ask_queue(user: str, states: str | None = None, *, env: dict[str, str] | None = None,
              run: Callable[[list[str]], str] | None = None, shared_cache: Path | None = None,
              min_interval: float = 2.0, now: float | None = None, timeout: float = 10.0) -> QueueAnswer:
    """``squeue`` for ``user``'s jobs (``launch.slurm.output.squeue_command``) through ``run_slurm``: the queue call
    of the dashboard and of every poller. With ``shared_cache``, an answer less than ``min_interval`` seconds old
    is read from there instead, and each new one is kept there (atomically) for the others. Raises SlurmError."""
    env = dict(os.environ) if env is None else env
    argv = squeue_command(user, states)
    now = time.time() if now is None else now
    path = _answer_path(shared_cache, argv, env) if shared_cache is not None else None
    if path is not None:
        try:
            answered = path.stat().st_mtime
            if now - answered < min_interval:
                return QueueAnswer(path.read_text(), answered, shared=True)
        except OSError:
            pass
    text = (run or (lambda argv: run_slurm(argv, env=env, timeout=timeout)))(argv)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
        except OSError:
            pass
    return QueueAnswer(text, now)


def last_answer(user: str, env: dict[str, str], shared_cache: Path | None) -> QueueAnswer | None:
    """The newest answer any poller of ``user`` received and kept in ``shared_cache`` (either squeue variant), with
    the time it was received; None when there is none."""
    found = []
    for states in (None, "all"):
        path = _answer_path(shared_cache, squeue_command(user, states), env) if shared_cache is not None else None
        try:
            found.append(QueueAnswer(path.read_text(), path.stat().st_mtime, shared=True))
        except (OSError, AttributeError):
            continue
    return max(found, key=lambda answer: answer.time, default=None)


def queue_states(job_ids: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
                 shared_cache: Path | None = None, min_interval: float = 2.0) -> dict[str, str]:
    """The state of each of ``job_ids`` (job ids, array tasks, or array ids: their tasks) that squeue knows, from
    one :func:`ask_queue` call (``-t all``: jobs that ended within MinJobAge too). Raises SlurmError."""
    wanted = {job_id.split("_")[0] for job_id in job_ids}
    answer = ask_queue(user or getpass.getuser(), "all", env=env, shared_cache=shared_cache,
                       min_interval=min_interval)
    records, _ = parse_squeue(answer.text, wanted)
    return {job_id: record["state"] for job_id, record in records.items()}


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
        self._answer: QueueAnswer | None = None  # the last squeue answer really received
        self._configs: dict[str, dict | None] = {}  # run_dir -> its run.json config (for readable names)
        self.last: Snapshot | None = None

    def refresh(self) -> Snapshot:
        """Collect once. Never raises for a cluster problem: when squeue fails, the rows come from the last answer
        really received (marked stale, with its time), or from the run directories alone."""
        now = time.time()
        jobs, warnings = read_journal(self.journal_dir, self._journal_cache)
        self._env = cluster_environ(jobs)
        calls = {"squeue": 0, "sacct": 0}
        error = None
        try:
            answer = self._squeue(calls, now)
            self._answer = answer
        except SlurmError as exc:
            error = str(exc)
            answer = max([a for a in (self._answer, last_answer(self.user, self._env, self.shared_cache)) if a],
                         key=lambda a: a.time, default=None)
        wanted = None if self.all_jobs else {j["job_id"].split("_")[0] for j in jobs if j["slurm"]}
        queue, bad = parse_squeue(answer.text, wanted) if answer is not None else ({}, 0)
        if bad:
            warnings.append(f"squeue: {bad} line(s) not understood (Slurm version?); those jobs are missing")
        finished = self._finished
        for job_id, record in queue.items():
            if job_id not in finished and record["state"] in TERMINAL_STATES:
                finished[job_id] = dict(record, source="squeue")
        if error is None:
            accounted, ranges, accounting = self._accounting(jobs, queue, calls, warnings, now)
        else:  # the controller is down: no sacct either (it would wait its own timeout); what is settled stays
            accounted, ranges, accounting = dict(finished), {}, self.last.accounting if self.last else True
        listings: dict[str, set[str]] = {}
        fields_of: dict[tuple, dict] = {}
        rows = [self._journal_row(job, queue, accounted, ranges, listings, now, fields_of, answer is not None)
                for job in jobs]
        if self.all_jobs:
            rows += self._other_rows({row.job_id for row in rows}, queue, accounted, fields_of)
        if error is not None:
            run_json_wins(rows)
        explain_array_limits(rows)
        label_rows(rows, self._configs)
        rows.sort(key=lambda row: (-(row.submitted or 0.0), _id_order(row.job_id)))  # newest submissions first
        self._add_tails(rows)
        self.last = Snapshot(rows=rows, sweeps=summarize_sweeps(rows), time=now if error is None else (
            answer.time if answer else now), accounting=accounting, calls=calls, warnings=warnings,
            stale=error is not None, error=error, answered=answer.time if answer else None)
        return self.last

    def _squeue(self, calls: dict, now: float) -> QueueAnswer:
        """squeue's answer: from the shared cache when another dashboard asked less than ``min_interval`` ago."""
        states = self.squeue_states
        if states is None and (self.all_jobs or not self._accounting_usable(now)):
            states = "all"  # recent endings from squeue: without sacct, or between --all's sacct calls
        answer = ask_queue(self.user, states, env=self._env, run=self._run, shared_cache=self.shared_cache,
                           min_interval=self.min_interval, now=now)
        if answer.shared:
            calls["shared"] = 1
        else:
            calls["squeue"] += 1
        return answer

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

    def _journal_row(self, job, queue, accounted, ranges, listings, now, fields_of, queue_known) -> JobRow:
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
        progress = run_progress(job["run_dir"], listings, job["run_parent"], job_id=job_id if job["slurm"] else None)
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
                row.state, row.reason_text = infer_state(progress, [job["stderr"], job["stdout"]], queue_known)
                row.source = "rundir"
            else:
                row.state, row.reason_text = local_state(progress, job.get("pid"))
                row.source = "local"
        apply_progress(row, progress, now)
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
            rows.append(JobRow(job_id=job_id, name=record.get("slurm_name") or "", submitted=record.get("submit"),
                               **fields_of[key]))
        return rows

    def _add_tails(self, rows: list[JobRow]) -> None:
        """The last log lines of the most recent failures (newest end time first)."""
        failed = [row for row in rows if row.failed and (row.stderr or row.stdout)]
        failed.sort(key=lambda row: row.end or 0.0, reverse=True)
        for row in failed[: self.failure_tails]:
            row.log_tail = tail_lines(row.stderr, self.tail_lines) or tail_lines(row.stdout, self.tail_lines)


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






















