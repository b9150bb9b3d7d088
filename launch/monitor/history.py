"""A run's attempts as every view shows them, settled with Slurm's accounting first.

    python launch/status.py --history JOB_ID

An attempt that ended by SIGKILL, ``scancel`` or with its node cannot record how it ended; Slurm's accounting knows
(its state, and the allocation's start and end, by which node time is counted). :func:`settled_attempts` asks
``sacct`` once for the attempts of a run whose accounting is not in its history yet, records what it says there
(``memorymodels.attempts.record_reconciled``: the history keeps one writer and is read by everyone afterwards) and
returns the attempts. Where accounting does not run (``MEMORYMODELS_SACCT=off``, no slurmdbd) the history is shown
as recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from launch.slurm.jobcontrol import attempt_accounting
from memorymodels.attempts import attempts, record_reconciled, unsettled


def settle_runs(run_dirs: list[str | Path], env: dict[str, str] | None = None) -> int:
    """Record Slurm's word on the attempts of these runs that lack it, from one ``sacct`` call for all of them;
    returns how many attempts were settled."""
    if os.environ.get("MEMORYMODELS_SACCT", "").lower() == "off":
        return 0
    histories = {run_dir: attempts(run_dir) for run_dir in dict.fromkeys(run_dirs) if Path(run_dir).is_dir()}
    jobs = [job for history in histories.values() for job, _ in unsettled(history)]
    if not jobs:
        return 0
    accounting = attempt_accounting(jobs, env)
    return sum(record_reconciled(run_dir, history, accounting) for run_dir, history in histories.items())


def settled_attempts(run_dir: str | Path, env: dict[str, str] | None = None) -> list[dict]:
    """The run's attempts (:func:`memorymodels.attempts.attempts`) after recording Slurm's word on those it lacks."""
    settle_runs([run_dir], env)
    return attempts(run_dir)
