"""A run's logs, wherever Slurm wrote them: found from the journal and the run directory, labelled, followed.

    python launch/status.py --logs 123_4          # a job's stdout and stderr, each attempt labelled
    python launch/status.py --logs 123_4 -f       # then follow both files (Ctrl-C stops)
    python launch/status.py --logs RUN_DIR        # every job that ran in this run directory

A single job's logs are in ``RUN_DIR/launch/slurm/`` (submitit's folder), a sweep cell's in the sweep's
``slurm-logs/SUBMISSION/array-N/``; the journal names both, so :func:`run_logs` finds a run's logs from its run
directory whichever way it was submitted, and from every submission that used it. A requeued job appends each
attempt to the same files; submitit's ``Starting with JobEnvironment(...)`` line (stderr) starts each one, which is
how :func:`attempt_parts` labels them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable

from memorymodels.fileio import tail_lines
from memorymodels.rundir import RunPaths

ATTEMPT_START = "Starting with JobEnvironment("
SUBMITIT_LOG = re.compile(r"^(\d+(?:_\d+)?)_\d+_log\.(out|err)$")  # %j_%t_log.out (single jobs)


@dataclasses.dataclass(frozen=True)
class LogFile:
    """One log file of one job: ``stream`` is "stdout" or "stderr"."""

    job_id: str
    stream: str
    path: str

    @property
    def title(self) -> str:
        return f"job {self.job_id} {self.stream}: {self.path}"


def journal_logs(jobs: Iterable[dict]) -> list[LogFile]:
    """The log files the journal names for these jobs (journal dicts, ``launch.monitor.queue.read_journal``)."""
    found: list[LogFile] = []
    for job in jobs:
        for stream in ("stdout", "stderr"):
            if job.get(stream) and not any(f.path == job[stream] for f in found):
                found.append(LogFile(str(job["job_id"]), stream, str(job[stream])))
    return found


def run_logs(run_dir: str | Path, jobs: Iterable[dict]) -> list[LogFile]:
    """Every log of the run in ``run_dir``: those the journal names for any job that used it (a sweep cell's are
    in the sweep's folder), and submitit's files in ``RUN_DIR/launch/slurm/`` (a single job's, journal or not),
    oldest job first."""
    run_dir = os.path.realpath(run_dir)
    found = journal_logs(job for job in jobs if job.get("run_dir") and os.path.realpath(job["run_dir"]) == run_dir)
    folder = RunPaths(run_dir).logs
    for path in sorted(folder.glob("*_log.*")) if folder.is_dir() else []:
        match = SUBMITIT_LOG.match(path.name)
        if match and not any(os.path.realpath(f.path) == str(path.resolve()) for f in found):
            found.append(LogFile(match.group(1), "stdout" if match.group(2) == "out" else "stderr", str(path)))
    return sorted(found, key=lambda f: (_id_key(f.job_id), f.stream != "stdout"))


def _id_key(job_id: str) -> tuple[int, int]:
    base, _, task = job_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(task) if task.isdigit() else -1)


def attempt_parts(lines: list[str]) -> list[tuple[int | None, list[str]]]:
    """The lines of a log split at each attempt's start: [(attempt number or None before the first marker,
    lines)]. A file without markers (stdout) is one part, numbered None."""
    parts: list[tuple[int | None, list[str]]] = [(None, [])]
    for line in lines:
        if ATTEMPT_START in line:
            parts.append((len(parts), []))
        parts[-1][1].append(line)
    return [part for part in parts if part[1] or part[0] is not None]


def read_lines(path: str, limit: int = 1 << 22) -> list[str]:
    """The file's last ``limit`` bytes as lines ([] when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def labelled_tail(log: LogFile, lines: int) -> list[str]:
    """The last ``lines`` lines of ``log`` under a title naming job, stream and full path, with a line where each
    attempt starts (``--- attempt 2 ---``); a missing file says so."""
    out = [f"==> {log.title} <=="]
    if not os.path.exists(log.path):
        return out + ["(no such file yet: the job has not started)"]
    parts = attempt_parts(read_lines(log.path))
    if len([n for n, _ in parts if n is not None]) <= 1:
        tail = tail_lines(log.path, lines, 1 << 20)
        return out + (tail or (["(empty)"] if os.path.getsize(log.path) == 0 else []))
    shown: list[str] = []
    for number, part in reversed(parts):  # the newest attempts first, until the line budget is spent
        if len(shown) >= lines:
            break
        take = part[-(lines - len(shown)):]
        label = [f"--- attempt {number} ---"] if number is not None else []
        shown = label + (["..."] if len(take) < len(part) else []) + take + shown
    return out + shown


def follow(logs: list[LogFile], write: Callable[[str], None], *, poll_s: float = 0.5,
           stop: Callable[[], bool] = lambda: False) -> None:
    """Print what is appended to ``logs`` from now on (like ``tail -f`` on several files: a title line whenever the
    file changes), until ``stop()`` (what was written before it said so is printed too) or KeyboardInterrupt. A
    file that appears later is read from its start."""
    positions = {log.path: os.path.getsize(log.path) if os.path.exists(log.path) else 0 for log in logs}
    partial = {log.path: b"" for log in logs}
    last = None
    while True:
        done = stop()
        for log in logs:
            try:
                with open(log.path, "rb") as f:
                    if os.fstat(f.fileno()).st_size < positions[log.path]:
                        positions[log.path] = 0  # truncated or replaced
                    f.seek(positions[log.path])
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            positions[log.path] += len(data)
            data = partial[log.path] + data
            *complete, partial[log.path] = data.split(b"\n")
            if not complete:
                continue
            if last != log.path:
                write(f"==> {log.title} <==")
                last = log.path
            for line in complete:
                write(line.decode("utf-8", "replace"))
        if done:
            return
        time.sleep(poll_s)
