"""Submission: write the plan's files and hand sbatch the plan's scripts, byte for byte; record it in the journal.

    python launch/submit.py --profile local-slurm --experiment configs/experiments/debug.yaml
    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml

:func:`submit_job` submits one planned job (:class:`launch.planning.plan.JobPlan`): it writes ``RUN_DIR/launch/``
(the sbatch script, the resolved experiment the trainer reads, the accelerate config, ``plan.json``) and a stub
``run.json`` naming the run's identity, then submits the plan's script through submitit
(``launch.slurm.submitit_adapter.PlannedSlurmExecutor``), or runs the job here with submitit's local executor for an
``executor: local`` profile. :func:`submit_arrays` submits planned sweep arrays
(:class:`launch.planning.sweep.ArrayPlan`), one ``sbatch`` each. Both return a :class:`Submission`: the journal
entry and submitit's job handles (the local executor's caller follows them). Nothing here re-derives the plan.

The plan's code snapshot (``plan.code``) is copied under the checkpoint root before ``sbatch`` runs
(``launch.submission.snapshot``), and its hash goes into ``plan.json`` and run.json's ``code``; a run whose
run.json names other code is refused unless ``new_code`` (``--new-code``) says to continue it with this code.
Run directories (a sweep's folder too) and snapshots are made readable by the user alone, or also by the
profile's ``group`` (``memorymodels.fileio.make_private_dir``); the trainer's files inside inherit that.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from launch.node.task import NodeLaunch
from launch.planning.command import TAG_PREFIX, job_tag, run_tag
from launch.planning.options import TAG_FIELDS, blame_sbatch_extra
from launch.planning.plan import MAX_TIMEOUT_REQUEUES, JobPlan, code_json
from launch.planning.profiles import Profile
from launch.planning.sweep import ArrayPlan, SweepPlan
from launch.records import journal
from launch.slurm.client import SlurmError, explain, run_slurm, slurm_environ, slurm_reason, without_allocation
from launch.slurm.submitit_adapter import PlannedSlurmExecutor
from launch.submission.preflight import NothingLeftError, SubmitError, nothing_left
from launch.submission.snapshot import SnapshotError, checkout_code, code_problem, materialize, recorded_code
from memorymodels.experiment import experiment_dict, identity
from memorymodels.fileio import (DiskFullError, LinkedPathError, locked, make_private_dir, read_json, write_json,
                                 write_text_atomic)
from memorymodels.rundir import SCRIPT, RunDirError, RunPaths
from memorymodels.runrecord import claim, record_code
from memorymodels.tracking import tracker_identity

"""The lock file (in ``RUN_DIR/launch/``, or a sweep's folder) that makes queue check, sbatch and journal one step."""


@dataclass
class Submission:
    """What one submission queued: its journal entry and submitit's handle of each job (by job id)."""

    record: dict
    """The journal entry (``launch.records.journal``): ``submission_id`` and one ``jobs`` entry per job."""
    handles: dict[str, Any] = field(default_factory=dict)
    """Job id -> ``submitit.Job`` (the local executor's jobs are followed through these)."""

    @property
    def submission_id(self) -> str:
        return self.record["submission_id"]

    @property
    def jobs(self) -> list[dict]:
        return self.record["jobs"]


def write_launch_files(plan: JobPlan, script_file: Path | None = None, *, new_code: bool = False,
                       group: int | None = None) -> None:
    """``RUN_DIR/launch/``: the plan's files and ``plan.json`` (the profile, the overrides, the sbatch parameters and
    the command that plans it again). A job in an array names the array's script (``script_file``, written once for
    all its cells) instead of a copy of its own: a thousand cells are a thousand files fewer. A new run directory
    is readable by the user alone, or also by ``group`` (a gid: the profile's ``group``)."""
    make_private_dir(plan.run_dir, group)
    claim_run_dir(plan, new_code=new_code)
    paths = RunPaths(plan.run_dir)
    files = plan.files()
    if script_file is not None:
        files.pop(paths.script)
    for path, text in files.items():
        write_text_atomic(path, text)
    write_json(paths.plan, {"sbatch": plan.sbatch, "command": plan.command, "precision": plan.precision,
                                      "run_dir": str(plan.run_dir), "profile": plan.profile.as_dict(),
                                      "experiment_file": str(plan.experiment), "overrides": plan.overrides,
                                      "launcher": plan.launcher, "nodes": plan.nodes,
                                      "procs_per_node": plan.procs_per_node, "request": plan.request,
                                      "script_file": str(script_file or paths.script),
                                      "code": code_json(plan.code), "submitted": time.time(),
                                      "extension": plan.extension.record() if plan.extension else None})


def claim_run_dir(plan: JobPlan, *, new_code: bool = False) -> None:
    """Write a stub ``RUN_DIR/run.json`` holding the run's identity when there is none yet.

    The trainer refuses a ``--run-dir`` that holds files but no run.json of the same config, and the launcher's
    own files (``launch/``) are there before the trainer starts; the stub says whose directory it is. It has no
    ``status`` (the trainer writes that when it starts) and the trainer keeps its other keys. It records the code
    the run is submitted with (``code``: hash, snapshot folder, git); a run that has one keeps it, unless
    ``new_code``, which records this plan's instead (the earlier ones in ``code_history``). A plan whose code
    differs from the run's without ``new_code`` is refused (:func:`launch.submission.snapshot.code_problem`).
    """
    problem = code_problem(plan, new_code)
    if problem:
        raise SubmitError(f"{problem}; nothing was submitted")
    code = code_json(plan.code)
    if code is None and new_code and recorded_code(plan.run_dir) is not None:
        code = checkout_code()  # --no-snapshot --new-code: the run goes on with the checkout, recorded as such
    if RunPaths(plan.run_dir).run_json.exists():
        info = read_json(RunPaths(plan.run_dir).run_json) or {}
        if code is not None and (info.get("code") or {}).get("hash") != code["hash"]:
            record_code(plan.run_dir, info, code)
        return
    claim(plan.run_dir, ident=identity(plan.settings, plan.world_size), config=experiment_dict(plan.settings),
          source=plan.settings.source, world_size=plan.world_size, code=code)


def refuse_links(plans: list[JobPlan]) -> None:
    """Refuse, before anything is written, run directories whose folders are symbolic links out of them
    (``RunPaths.refuse_links``) and a linked journal folder."""
    try:
        journal.refuse_linked_journal()
        for plan in plans:
            RunPaths(plan.run_dir).refuse_links()
    except (LinkedPathError, RunDirError) as exc:
        raise SubmitError(f"{exc}; nothing was submitted") from None


def snapshot_code(plans: list[JobPlan], group: int | None = None) -> None:
    """Copy every distinct code snapshot the plans run from (one for a whole sweep) before anything is queued;
    ``group``: the gid that may read them besides the user."""
    for code in {plan.code.path: plan.code for plan in plans if plan.code is not None}.values():
        try:
            materialize(code, group=group)
        except SnapshotError as exc:
            raise SubmitError(str(exc)) from None


def make_job(plan: JobPlan) -> NodeLaunch:
    """The callable submitit runs in each node's task."""
    return NodeLaunch(name=plan.name, command=plan.command, run_dir=plan.run_dir, env=plan.env,
                      time_limit_s=plan.time_limit_s, signal_before_end_s=plan.profile.signal_before_end_s,
                      hang_timeout_s=plan.profile.hang_timeout_s, max_failure_retries=plan.profile.max_failure_retries)


def _slurm_executor(plan: JobPlan, folder, sbatch: dict, script: str) -> PlannedSlurmExecutor:
    executor = PlannedSlurmExecutor(folder, script=script, python=plan.python, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    params = {k: v for k, v in sbatch.items() if k != "map_count"}
    mem = params.pop("mem")
    executor.update_parameters(**params)
    executor.parameters["mem"] = mem  # as planned ("64G"): submitit would write "64GB", which Slurm 22.05 rejects
    return executor


def _local_executor(plan: JobPlan) -> submitit.LocalExecutor:
    executor = submitit.LocalExecutor(folder=plan.log_folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    # gpus_per_node sets CUDA_VISIBLE_DEVICES for the task (0 hides every GPU)
    executor.update_parameters(timeout_min=plan.time_limit_s / 60, signal_delay_s=plan.profile.signal_before_end_s,
                               tasks_per_node=1, nodes=1, gpus_per_node=plan.profile.gpus_per_node,
                               setup=list(plan.profile.setup))
    return executor


@contextlib.contextmanager
def _cluster_environment(plan: JobPlan):
    """``os.environ`` while sbatch runs (submitit passes no environment of its own): the profile's cluster, and
    none of an enclosing allocation's variables (submitting from inside ``salloc`` must not give the new job the
    old one's ids and node list)."""
    saved = dict(os.environ)
    env = without_allocation(slurm_environ(plan.profile.slurm_conf_path(), base=saved))  # before the environment goes
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _refused(plan: JobPlan, exc: Exception) -> SubmitError:
    profile = plan.profile
    reason = slurm_reason(str(exc))
    return SubmitError(f"sbatch refused the job ({profile.source}): {blame_sbatch_extra(reason, profile.sbatch_extra)}")


@contextlib.contextmanager
def _sbatch_quietly():
    """submitit prints sbatch's error output before raising it; the refusal says it in one line instead."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


SUBMIT_ERRORS = (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
                 subprocess.CalledProcessError)
"""What submitit raises when sbatch refuses a script (the message holds sbatch's words)."""


def _entry(plan: JobPlan, job, cell: dict | None) -> dict:
    paths = job.paths
    return {"job_id": str(job.job_id), "name": plan.name, "run_dir": str(plan.run_dir), "cell": cell,
            "stdout": str(paths.stdout), "stderr": str(paths.stderr), "executor": plan.executor}


def queued_tags(profile: Profile) -> dict[str, list[str]]:
    """This user's queued and running jobs by exactly-once tag (``launch.planning.command.run_tag`` /
    ``array_tag``, in the profile's ``tag_field``): tag -> job ids (array tasks one by one). One ``squeue`` call."""
    env = slurm_environ(profile.slurm_conf_path())
    text = run_slurm(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", f"%i|{TAG_FIELDS[profile.tag_field]}"],
                     env)
    tags: dict[str, list[str]] = {}
    for line in text.splitlines():
        job_id, _, tag = line.strip().partition("|")
        if tag.startswith(TAG_PREFIX):
            tags.setdefault(tag, []).append(job_id)
    return tags


def _journaled(job_id: str) -> bool:
    return journal.find_job(job_id) is not None


def _already_queued(plan: JobPlan) -> None:
    """Refuse a job whose run directory is queued or running already (found by its tag, journaled or not: a
    submitter killed between sbatch and the journal left it unrecorded; it is recorded now)."""
    try:
        ids = queued_tags(plan.profile).get(run_tag(plan.run_dir), [])
    except SlurmError as exc:
        raise SubmitError(f"cannot ask the queue whether {plan.run_dir} is queued already: {explain(exc)}") from None
    if not ids:
        return
    for job_id in ids:
        if not _journaled(job_id):
            journal.record(profile=plan.profile.name, kind="job", slurm_conf=plan.profile.slurm_conf_path(),
                           jobs=[{"job_id": job_id, "name": plan.name, "run_dir": str(plan.run_dir), "cell": None,
                                  "stdout": str(plan.log_folder / f"{job_id}_0_log.out"),
                                  "stderr": str(plan.log_folder / f"{job_id}_0_log.err"), "executor": "slurm",
                                  "adopted": True}])
    raise SubmitError(f"{plan.run_dir} is already queued as job {', '.join(ids)}; nothing was submitted. Follow it "
                      f"with `python launch/status.py`, or cancel it first (`python launch/status.py --cancel "
                      f"{ids[0]}`) to submit again")


def submit_job(plan: JobPlan, *, kind: str = "job", sweep: dict | None = None, cell: dict | None = None,
               submission_id: str | None = None, new_code: bool = False) -> Submission:
    """Submit one planned job (the preflight is the caller's: ``launch.submission.preflight``).

    Exactly once per run directory: checking the queue, writing the run's files, ``sbatch`` and the journal are one
    step under the run's submission lock, and a run already queued (by anyone's submission of it) is refused, as is
    a run with nothing left to do (``launch.submission.preflight.nothing_left``: its result instead).
    ``new_code``: continue a run submitted with other code with this plan's (``--new-code``)."""
    problem = code_problem(plan, new_code)
    if problem:
        raise SubmitError(f"{problem}; nothing was submitted")
    refuse_links([plan])
    group = plan.profile.gid()
    # Before the lock: the copy takes a moment, and the run directory (its launch/ folder, made by the lock) must not
    # stand without run.json meanwhile (a planner would take it for another's). Copies of one hash meet safely.
    snapshot_code([plan], group)
    fresh = _absent([plan.run_dir])
    make_private_dir(plan.run_dir, group)
    with locked(RunPaths(plan.run_dir).submit_lock), _removed_on_failure(fresh):
        done = nothing_left(plan)  # under the lock: a job of this run that just finished counts
        if done:
            raise NothingLeftError(done)
        if plan.executor == "slurm":
            _already_queued(plan)
        write_launch_files(plan, new_code=new_code, group=group)  # checks the run's code again, under the lock
        try:
            if plan.executor == "local":
                job = _local_executor(plan).submit(make_job(plan))
            else:
                with _cluster_environment(plan), _sbatch_quietly():
                    job = _slurm_executor(plan, plan.log_folder, plan.sbatch, plan.script).submit(make_job(plan))
        except SUBMIT_ERRORS as exc:
            raise _refused(plan, exc) from None
    with _queued_already(job):
        record = journal.record(profile=plan.profile.name, jobs=[_entry(plan, job, cell)], kind=kind, sweep=sweep,
                                submission_id=submission_id, slurm_conf=plan.profile.slurm_conf_path())
    return Submission(record, {str(job.job_id): job})


def _absent(folders: list[Path]) -> list[Path]:
    """The folders that do not exist yet (this submission will make them)."""
    return [folder for folder in folders if not folder.exists()]


@contextlib.contextmanager
def _removed_on_failure(fresh: list[Path]):
    """Folders this submission made (:func:`_absent` before it) are removed again when the block fails (sbatch
    refused the job, the disk filled up): a submission that queued nothing leaves no run directory holding only a
    lock and half a plan. Used inside the submission lock, so no other submitter is writing there."""
    try:
        yield
    except BaseException:
        for folder in fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def _queued_already(*jobs):
    """The journal write after ``sbatch``: a full disk there must not hide that the job is queued."""
    try:
        yield
    except DiskFullError as exc:
        ids = ", ".join(str(job.job_id) for job in jobs)
        raise DiskFullError(exc.path, exc.free, f"job {ids} is queued all the same but not in the journal (a "
                                                f"resubmission finds it by its tag and records it)") from None


def submit_arrays(plan: SweepPlan, arrays: list[ArrayPlan], *, sweep: dict, submission_id: str,
                  new_code: bool = False) -> Submission:
    """Submit planned arrays of a sweep, one ``sbatch`` each, with exactly their planned scripts.

    The journal entry is written ahead (pending, with each array's tag and cells), updated after every ``sbatch``
    and confirmed at the end: a submitter killed between two ``sbatch`` calls leaves a record that, with the tags
    in the queue, tells a rerun which cells are queued (``launch.submission.sweep.active_cells``). Every cell's
    code is checked and the snapshot copied before the first ``sbatch``."""
    cells = [plan.jobs[i] for array in arrays for i in array.cells]
    problems = [p for p in (code_problem(job, new_code) for job in cells) if p]
    if problems:
        raise SubmitError(f"{len(problems)} cell(s) ran with other code; nothing was submitted:\n  - "
                          + "\n  - ".join(problems[:5]))
    refuse_links(cells)
    group = plan.profile.gid()
    snapshot_code(cells, group)
    journal.record(profile=plan.profile.name, jobs=[], kind="sweep", sweep=sweep, submission_id=submission_id,
                   slurm_conf=plan.profile.slurm_conf_path(), status="pending",
                   arrays=[{"tag": job_tag(plan.profile, array.sbatch), "cells": [str(plan.cells[i].run_dir) for i in
                                                                          array.cells]} for array in arrays])
    entries, handles = [], {}
    for array in arrays:
        jobs = [plan.jobs[i] for i in array.cells]
        script_file = array.folder / SCRIPT
        with _removed_on_failure(_absent([array.folder, *(job.run_dir for job in jobs)])):
            write_text_atomic(script_file, array.script)
            for job in jobs:
                write_launch_files(job, script_file, new_code=new_code, group=group)
                if job.settings.train.report_to:  # the sweep's cells share one tracker group
                    tracker_identity(job.run_dir, group=plan.sweep.name)
            executor = _slurm_executor(jobs[0], array.folder, array.sbatch, array.script)
            try:
                with _cluster_environment(jobs[0]), _sbatch_quietly(), executor.batch():
                    submitted = [executor.submit(make_job(job)) for job in jobs]
            except SUBMIT_ERRORS as exc:
                raise _refused(jobs[0], exc) from None
        for i, job, handle in zip(array.cells, jobs, submitted):
            entries.append(_entry(job, handle, plan.cells[i].overrides))
            handles[str(handle.job_id)] = handle
        with _queued_already(*submitted):
            journal.update(submission_id, jobs=entries)
    with _queued_already(*handles.values()):
        return Submission(journal.update(submission_id, status="confirmed"), handles)
