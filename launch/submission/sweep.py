"""Submitting a planned sweep: the cells neither complete nor already queued, as the planned arrays.

    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml [--wait]

:func:`submit_sweep` holds the sweep's submission lock (two copies of one sweep at once queue every cell once),
asks the queue which cells still run from an earlier submission (:func:`active_cells`, one ``squeue`` for this
user's jobs, by their tags), plans the arrays of the rest (``launch.planning.sweep.plan_arrays``), runs the
preflight on them and submits exactly those scripts, one ``sbatch`` per array. An incomplete cell resumes from its
newest checkpoint because it runs in the same directory again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from launch.planning.command import TAG_PREFIX, run_tag
from launch.planning.sweep import SweepPlan, plan_arrays
from launch.planning.sweep_file import sweep_summary
from launch.records import journal
from launch.submission.preflight import SubmitError, preflight
from launch.submission.submit import queued_tags, submit_arrays
from memorymodels.configuration import count
from memorymodels.fileio import LinkedPathError, locked, make_private_dir, refuse_links
from memorymodels.rundir import SUBMIT_LOCK


def sweep_record(plan: SweepPlan) -> dict:
    """The ``sweep`` field of a ``kind: "sweep"`` journal entry: :func:`sweep_summary`, the folder of the cells'
    run directories (``root``), every cell (``cells``: index, overrides, run_dir) and those already complete."""
    return {**sweep_summary(plan.sweep), "root": str(plan.root),
            "cells": [{"index": c.index, **c.as_json()} for c in plan.cells], "complete": plan.complete}


def active_cells(plan: SweepPlan) -> dict[int, str]:
    """Cells of ``plan`` whose job from an earlier submission is still queued or running: index -> job id.

    One ``squeue`` call for this user's jobs with their exactly-once tags (``launch.submission.submit.queued_tags``).
    An array's tag names its submission and array number, whose journal entry (written ahead of its ``sbatch``)
    lists the array's cells; a task found in the queue but missing from that entry (its submitter was killed before
    recording it) is added to it, so the dashboard shows it too.
    """
    tags = queued_tags(plan.profile)
    index_of = {str(c.run_dir): c.index for c in plan.cells}
    busy: dict[int, str] = {}
    for cell in plan.cells:
        for job_id in tags.get(run_tag(cell.run_dir), []):
            busy[cell.index] = job_id
    for tag, job_ids in tags.items():
        parts = tag[len(TAG_PREFIX):].split(":")
        if len(parts) != 3 or parts[0] != "sweep":
            continue
        try:
            entry = journal.load(parts[1])
            run_dirs = entry["arrays"][int(parts[2])]["cells"]
        except (FileNotFoundError, KeyError, IndexError, ValueError, TypeError):
            continue  # another checkout's journal, or a record older than the tags
        known = {job["job_id"] for job in entry["jobs"]}
        adopted = []
        for job_id in job_ids:
            task = int(job_id.split("_")[1]) if "_" in job_id else 0
            run_dir = run_dirs[task] if task < len(run_dirs) else None
            if run_dir in index_of:
                busy[index_of[run_dir]] = job_id
            if run_dir is not None and job_id not in known:
                adopted.append({"job_id": job_id, "name": Path(run_dir).name, "run_dir": run_dir,
                                "cell": plan.cells[index_of[run_dir]].overrides if run_dir in index_of else None,
                                "stdout": None, "stderr": None, "executor": "slurm", "adopted": True})
        if adopted:
            journal.update(parts[1], add=adopted)
    return busy


def representatives(plan: SweepPlan, todo: list[int]) -> list:
    """The jobs the preflight must see: the first, and one per distinct data section (cells may vary the data);
    the sbatch parameters and the checkpoint root are the same for every cell."""
    seen, chosen = set(), []
    for i in todo:
        key = json.dumps(dataclasses.asdict(plan.jobs[i].settings.data), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            chosen.append(plan.jobs[i])
    return chosen


def submit_sweep(plan: SweepPlan, *, run_preflight: bool = True, log=None, new_code: bool = False) -> dict:
    """Submit the cells of ``plan`` (a Slurm profile) that are neither complete nor already queued.

    Returns ``{"sweep_id", "arrays": [{"job_id", "cells": [index, ...]}, ...]}`` (``sweep_id`` None and ``arrays``
    empty when there is nothing to do) and records the submission in the journal (``kind: "sweep"``, each job's
    ``cell`` its overrides). ``new_code``: cells submitted before with other code continue with this plan's.
    """
    try:  # the lock and the arrays' scripts are written in place under the sweep's folder
        refuse_links(plan.root, [plan.root / SUBMIT_LOCK, plan.log_folder])
    except LinkedPathError as exc:
        raise SubmitError(f"{exc}; nothing was submitted") from None
    make_private_dir(plan.root, plan.profile.gid())  # the cells' folders and the arrays' logs: the user's (group's)
    with locked(plan.root / SUBMIT_LOCK):  # two copies of one sweep at once: the second sees the first's jobs
        return _submit_unqueued(plan, run_preflight, log, new_code)


def _submit_unqueued(plan: SweepPlan, run_preflight: bool, log, new_code: bool = False) -> dict:
    todo = list(plan.pending)
    busy = active_cells(plan) if todo else {}
    if busy:
        print(f"{len(busy)} cell(s) still queued or running from an earlier submission, not submitted again: "
              + ", ".join(f"{i} (job {j})" for i, j in sorted(busy.items())), file=log)
        todo = [i for i in todo if i not in busy]
    if not todo:
        print(f"sweep {plan.sweep.name}: nothing to do: {len(plan.complete)} of {count(len(plan.cells), 'cell')} complete, "
              f"the rest queued or running. Report: python launch/sweep_report.py {plan.sweep.source}", file=log)
        return {"sweep_id": None, "arrays": []}
    submission_id = journal.new_submission_id()
    arrays = plan_arrays(plan, todo, submission_id)
    if run_preflight:
        preflight(representatives(plan, todo), array_size=max(len(a.cells) for a in arrays),
                  scripts=[arrays[0].script]).raise_problems()
    submission = submit_arrays(plan, arrays, sweep=sweep_record(plan), submission_id=submission_id,
                               new_code=new_code)
    by_array: dict[str, list[int]] = {}
    for i, job in zip([i for a in arrays for i in a.cells], submission.jobs):
        by_array.setdefault(str(job["job_id"]).split("_")[0], []).append(i)
    per_array = ", ".join(f"{j}: {count(len(c), 'cell')}" for j, c in by_array.items())
    print(f"sweep {plan.sweep.name}: submitted {count(len(todo), 'cell')} in {count(len(by_array), 'array')} "
          f"({per_array}); {len(plan.complete)} already complete",
          file=log)
    print(f"  run dirs  {plan.root}/<cell>\n  logs      {plan.log_folder}/{submission_id}/\n"
          f"  watch     python launch/status.py\n"
          f"  report    python launch/sweep_report.py {submission_id}", file=log)
    return {"sweep_id": submission_id, "arrays": [{"job_id": j, "cells": c} for j, c in by_array.items()]}
