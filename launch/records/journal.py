"""The submission journal: one JSON file per submission, so later commands find jobs after the shell is gone.

    python -c "from launch.records import journal; print(*[s['submission_id'] for s in journal.load_all()])"

Files live in ``<state>/journal/<submission_id>.json`` (``<state>`` is ``$MEMORYMODELS_STATE`` or ``.state``)::

    {"submission_id": "20261127-211500-3f9a1c", "created": 1795900000.0, "profile": "local-slurm",
     "kind": "job" | "sweep", "sweep": {...} | null,
     "jobs": [{"job_id": "123", "name": "...", "run_dir": "...", "cell": {...} | null,
               "stdout": ".../123_0_log.out", "stderr": ".../123_0_log.err"}]}

Writer: ``launch.submission.submit``. A sweep's entry is written ahead (``status: "pending"``, with the planned
``arrays``: each one's exactly-once tag and cells) before the first ``sbatch``, updated after each one, and
``"confirmed"`` at the end; a single job's entry after sbatch accepted it (its tag finds it in the queue should the
submitter die first). The entry names the cluster (``slurm_conf``) so later readers ask the same one. Readers: the dashboard
(``launch.monitor.queue``), ``--dependency`` (``launch.planning.dependency``) and the sweep report (``load_all``).
Files are written atomically (``memorymodels.fileio``), so a reader never sees half a file; a file that cannot be
parsed is skipped with a warning.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from memorymodels.experiment import state_dir
from memorymodels.fileio import CorruptFileError, make_private_dir, read_json, refuse_links, write_json

JOB_KEYS = ("job_id", "name", "run_dir", "cell", "stdout", "stderr")


def journal_dir() -> Path:
    """``<state>/journal`` (``$MEMORYMODELS_STATE`` overrides ``<repo>/.state``)."""
    return state_dir() / "journal"


def refuse_linked_journal() -> None:
    """Raise ``fileio.LinkedPathError`` when the journal folder (or a folder between it and the state directory) is
    a symbolic link: submissions would be recorded elsewhere, and found by nobody."""
    refuse_links(state_dir(), [journal_dir()])


def new_submission_id() -> str:
    """A sortable, unique id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def record(*, profile: str, jobs: Iterable[dict[str, Any]], kind: str = "job", sweep: dict | None = None,
           submission_id: str | None = None, created: float | None = None, slurm_conf: str | None = None,
           status: str = "confirmed", arrays: list[dict] | None = None) -> dict:
    """Write one submission's journal file and return its content.

    ``jobs``: dicts with ``job_id``, ``name``, ``run_dir``, ``stdout``, ``stderr`` and optionally ``cell`` (the
    sweep cell's overrides); extra keys are kept. ``kind`` is ``"job"`` or ``"sweep"``; ``sweep`` describes the sweep
    (``launch.planning.sweep_file.sweep_summary``); ``slurm_conf`` the cluster's configuration file when the
    profile names one; ``status`` "pending" for an entry written ahead of its ``sbatch`` calls, with the planned
    ``arrays`` (``[{"tag", "cells": [run_dir, ...]}]``). An existing ``submission_id`` is never overwritten.
    """
    if kind not in ("job", "sweep"):
        raise ValueError(f"journal.record: kind must be 'job' or 'sweep', got {kind!r}")
    submission_id = submission_id or new_submission_id()
    data = {"submission_id": submission_id, "created": created if created is not None else time.time(),
            "profile": profile, "kind": kind, "sweep": sweep, "jobs": _entries(jobs), "status": status,
            **({"slurm_conf": str(slurm_conf)} if slurm_conf else {}), **({"arrays": arrays} if arrays else {})}
    folder = journal_dir()
    refuse_linked_journal()
    make_private_dir(folder)  # it names every run and log of the user: theirs alone
    path = folder / f"{submission_id}.json"
    if path.exists():
        raise FileExistsError(f"{path}: a submission with this id is already recorded; use a new id")
    write_json(path, data)
    return data


def _entries(jobs: Iterable[dict[str, Any]]) -> list[dict]:
    entries = []
    for job in jobs:
        missing = [k for k in ("job_id", "run_dir") if not job.get(k)]
        if missing:
            raise ValueError(f"journal.record: a job lacks {', '.join(missing)}: {job}")
        entry = {k: job.get(k) for k in JOB_KEYS}
        entry.update({k: v for k, v in job.items() if k not in JOB_KEYS})
        entry["job_id"] = str(entry["job_id"])
        entry["run_dir"] = str(entry["run_dir"])
        for key in ("stdout", "stderr"):
            entry[key] = None if entry[key] is None else str(entry[key])
        entries.append(entry)
    return entries


def update(submission_id: str, *, jobs: Iterable[dict[str, Any]] | None = None, add: Iterable[dict] = (),
           status: str | None = None) -> dict:
    """Rewrite a recorded submission (atomically): its ``jobs`` replaced or ``add``-ed to, its ``status`` set."""
    data = load(submission_id)
    if jobs is not None:
        data["jobs"] = _entries(jobs)
    known = {job["job_id"] for job in data["jobs"]}
    data["jobs"] += [job for job in _entries(add) if job["job_id"] not in known]
    if status is not None:
        data["status"] = status
    refuse_linked_journal()
    write_json(journal_dir() / f"{submission_id}.json", data)
    return data


def read_entry(path: Path) -> dict:
    """One journal file, checked: the one parser every reader uses (the dashboard's too). CorruptFileError names the
    file when it is not a submission (damaged, or not written by this journal)."""
    data = read_json(path)
    if data is None:
        raise FileNotFoundError(f"{path}: no such submission; see {path.parent} for recorded ones")
    if not isinstance(data.get("jobs"), list) or not all(isinstance(job, dict) for job in data["jobs"]):
        raise CorruptFileError(path, "not a journal entry (its 'jobs' is not a list of jobs)")
    return data


def load(submission_id: str) -> dict:
    """One submission by id (FileNotFoundError names the journal folder)."""
    return read_entry(journal_dir() / f"{submission_id}.json")


def load_all() -> list[dict]:
    """Every recorded submission, oldest first. Unreadable files are skipped with a warning on stderr."""
    folder = journal_dir()
    if not folder.is_dir():
        return []
    submissions = []
    for path in sorted(folder.glob("*.json")):
        try:
            submissions.append(read_entry(path))
        except (OSError, CorruptFileError) as exc:
            print(f"journal: skipping {path}: {exc}", file=sys.stderr)
    return sorted(submissions, key=lambda s: (s.get("created") or 0, s.get("submission_id", "")))


def find_job(job_id: str) -> tuple[dict, dict] | None:
    """(submission, job) of a Slurm job id (an array task ``123_4`` or its array ``123``), newest first; or None."""
    job_id = str(job_id)
    for submission in reversed(load_all()):
        for job in submission["jobs"]:
            if job["job_id"] == job_id or job["job_id"].split("_")[0] == job_id:
                return submission, job
    return None
