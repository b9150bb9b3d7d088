"""How long an attempt took to train: its startup phases, from the allocation's start to the first optimizer step.

    python launch/status.py --history JOB      # "attempt 1 startup: first step 4.8 s after the start (...)"
    python benchmarks/startup.py               # the one-node debug job's start to first step (BENCHMARKS.md)

The node task (``launch.node.task``) tells the trainer about its attempt in :data:`ATTEMPT_ENV` (:func:`attempt_env`):
the job id and restart count, ``start`` (Slurm's start of the job, ``SLURM_JOB_START_TIME``, whole seconds; without
Slurm the node task's process start) and ``task`` (when the node task began: srun, submitit and its imports before
it). Without a launcher the attempt starts with the trainer's own process. Rank 0 marks the end of each phase
(:class:`Startup`) and, after the first step, records ``startup`` in the run's history of attempts
(``memorymodels.runrecord.record_startup``): ``{"job_id", "restart_count", "start", "phases": {phase: seconds after
start}}``.
The phases, in the order they end:

    task        the node task began (Slurm's batch script, srun, submitit and the launcher's imports)
    python      the trainer's process started (after torchrun and its rendezvous, where torchrun starts it)
    imports     the trainer's imports done (torch, transformers' Trainer)
    data        the tokenizer and shards opened (prepared first when not cached)
    model       the model built
    rendezvous  the Trainer's arguments made: the process group joined, the device set up
    trainer     the Trainer built (accelerator, callbacks, the held-out accounting)
    checkpoint  a resumed attempt's checkpoint loaded (weights, optimizer, scheduler, trainer state)
    first_step  the attempt's first optimizer step done

Torch-free: the launcher imports it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ATTEMPT_ENV = "MEMORYMODELS_ATTEMPT"
"""The environment variable through which the node task hands the trainer its attempt (JSON, :func:`attempt_env`)."""

PHASES = ("task", "python", "imports", "data", "model", "rendezvous", "trainer", "checkpoint", "first_step")


def process_start(pid: int | str = "self") -> float | None:
    """When a process was created (epoch seconds; the kernel counts clock ticks, so up to 10 ms early), from
    ``/proc/PID/stat``; None where /proc cannot tell. An ``exec`` keeps the time: a trainer exec'd by a shell started
    when the shell was forked."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def allocation_start(environ: dict | None = None, pid: int | str = "self") -> float:
    """When this attempt's allocation started: Slurm's ``SLURM_JOB_START_TIME`` (whole seconds; reset when the job is
    requeued) where it is set and not in the future, else the start of process ``pid``, else now."""
    environ = os.environ if environ is None else environ
    now = time.time()
    slurm = environ.get("SLURM_JOB_START_TIME", "")
    if slurm.isdigit() and int(slurm) <= now:
        return float(slurm)
    return process_start(pid) or now


def attempt_env(job_id: str, restart_count: int, start: float, task: float) -> dict[str, str]:
    """The environment entry through which the node task describes its attempt to the trainer."""
    return {ATTEMPT_ENV: json.dumps({"job_id": str(job_id), "restart_count": restart_count, "start": start,
                                     "task": task})}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Startup:
    """One attempt's startup in this process: when each phase ended (:meth:`mark`) and the record the history keeps."""

    def __init__(self, environ: dict | None = None):
        environ = os.environ if environ is None else environ
        try:
            given = json.loads(environ.get(ATTEMPT_ENV) or "{}")
        except ValueError:
            given = {}
        given = given if isinstance(given, dict) else {}
        python = process_start()
        self.attempt = {key: given[key] for key in ("job_id", "restart_count") if key in given}
        self.start = _number(given.get("start")) or python or time.time()
        self.ends: dict[str, float] = {}
        if _number(given.get("task")) is not None:
            self.ends["task"] = float(given["task"])
        if python is not None:
            self.ends["python"] = python

    def mark(self, phase: str) -> None:
        """``phase`` ended now (the first mark of a phase counts)."""
        self.ends.setdefault(phase, time.time())

    def record(self) -> dict:
        """What the history keeps: the attempt, its start and each phase's end in seconds after it, in the order of
        :data:`PHASES` (the order the code reaches them; /proc's process start is up to a clock tick early, which
        could put a directly started trainer's ``python`` before its ``task``)."""
        return {**self.attempt, "start": self.start,
                "phases": {phase: round(self.ends[phase] - self.start, 3) for phase in PHASES if phase in self.ends}}


def describe(record: dict) -> str:
    """A startup record in one line: when the first step came, then how long each phase took (from the end of the
    one before), e.g. ``first step 4.8 s after the start (task 0.4 s, python 0.0 s, imports 3.1 s, ...)``."""
    phases = record.get("phases") or {}
    parts, before = [], 0.0
    for phase, end in phases.items():
        parts.append(f"{phase.replace('_', ' ')} {max(0.0, end - before):.1f} s")
        before = max(before, end)
    first = phases.get("first_step")
    head = f"first step {first:.1f} s after the start" if first is not None else "no step yet"
    return f"{head} ({', '.join(parts)})" if parts else head
