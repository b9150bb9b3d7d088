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


def settled_attempts(run_dir: str | Path, env: dict[str, str] | None = None) -> list[dict]:
    """The run's attempts (:func:`memorymodels.attempts.attempts`) after recording Slurm's word on those it lacks."""
    history = attempts(run_dir)
    keys = unsettled(history)
    if keys and os.environ.get("MEMORYMODELS_SACCT", "").lower() != "off":
        if record_reconciled(run_dir, history, attempt_accounting([job for job, _ in keys], env)):
            history = attempts(run_dir)
    return history
