"""What the launcher's tests that run real jobs share: waiting for a condition, reading a run's progress, and
starting a requeued Slurm job without the hold Slurm puts on it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3):
    """``predicate()``'s first truthy value within ``timeout`` seconds; AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_json(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def last_step(run_dir: str | Path) -> int:
    from memorymodels.metrics import run_progress

    return run_progress(Path(run_dir))["step"] or 0


def job_line(job_id: str, env: dict) -> str:
    """``scontrol show job -o`` for ``job_id`` ("" once the controller has forgotten it)."""
    return subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout


def release_requeued(job_id: str, env: dict, *updates: str) -> None:
    """Start a requeued, pending job now (with ``updates`` such as ``TimeLimit=10``): Slurm holds a requeued job back
    for about two minutes (BeginTime). Not within the second of the requeue: slurmd refuses credentials issued in
    the second they were revoked."""
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now", *updates], env=env, check=False)
