"""How node 0 judges a failed attempt: whom to blame, the cause in one line, whether to retry.

Pure functions over the ``fault`` events every node writes (``launch.node.task``, ``memorymodels.attempts``) and the
run directory; the node task acts on their answers (requeue, exclude, fail). Blame: a rank killed by a signal, else a
stopped process, else the rank whose last heartbeat is oldest (``launch.node.watchdog.culprit_key``); a node that
only ended because another failed (``peer``) is never blamed. Not retried: the trainer's own refusals (exit 2, 65,
73, 74), an error raised while every rank was still in setup (data, model, configuration), a run outside Slurm, and
a run whose attempts failed ``max_failure_retries`` times in a row without a newer checkpoint.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from launch.node import watchdog
from memorymodels.fileio import tail_lines
from memorymodels.metrics import run_progress
from memorymodels.rundir import exit_meaning
NODE_EVIDENCE = ("hang", "killed")
"""Causes that point at a node (it is excluded from the retry when the partition can spare it); not program errors."""


def blame(faults: list[dict], own: dict | None) -> tuple[dict | None, dict | None]:
    """(the fault that names the cause, the fault whose node is to blame or None) among one attempt's faults;
    ``own`` (this node's) when no node reported anything but ``peer``."""
    blamed = sorted((f for f in faults if f.get("cause") != "peer"), key=watchdog.culprit_key)
    if not blamed:
        return own, None
    return blamed[0], blamed[0] if blamed[0].get("cause") in NODE_EVIDENCE else None


def why_not_retried(faults: list[dict], cause: str, code: int, *, slurm: bool, again: int, budget: int,
                    checkpoint: int | None, step: int | None) -> str | None:
    """Why this failed attempt ends the job, in words after ``cause``; None: retry it."""
    failed = [f for f in faults if f.get("cause") == "trainer-exit"]
    blamed = [f for f in faults if f.get("cause") != "peer"]
    if failed:
        exit_code = failed[0].get("code", code)
        return (f"training failed with exit code {exit_code}{exit_meaning(exit_code)} on "
                f"{failed[0].get('host')}; not retried")
    if blamed and all(f.get("cause") == "error" and f.get("in_setup") for f in blamed):
        return f"{cause}; it failed before training began (data, model or configuration), so it is not retried"
    if not slurm:
        return f"{cause}; not under Slurm, so not requeued: run the same command again to resume"
    if again >= budget:
        return (f"{cause}; {again + 1} attempt(s) in a row failed after checkpoint {checkpoint or 0} (this one at "
                f"step {step or 0}), not retried (max_failure_retries: {budget})")
    return None


def fault_cause(fault: dict | None, code: int) -> str:
    """A fault event in one line: what failed, where."""
    if not fault:
        return f"training failed with exit code {code}"
    host, kind = fault.get("host"), fault.get("cause")
    if kind == "hang":
        return (f"rank {fault.get('rank')} on {host} hung: no heartbeat for {fault.get('silent_s', 0):.0f} s in phase "
                f"{fault.get('phase')} at step {fault.get('step')} (limit {fault.get('timeout_s', 0):.0f} s); stacks "
                f"in {Path(next(iter((fault.get('stacks') or {'': '?'}).values()))).parent}")
    if kind == "killed":
        dead = (fault.get("killed") or [{}])[0]
        sig = dead.get("signal")
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        return f"local rank {dead.get('local_rank')} on {host} was killed by {name}"
    if kind == "peer":
        return f"training on {host} was ended because {fault.get('of')} failed"
    if kind == "trainer-exit":
        return f"the trainer exited {fault.get('code')}{exit_meaning(fault.get('code'))} on {host}"
    error = f": {fault['error']}" if fault.get("error") else ""
    return f"training failed with exit code {fault.get('code', code)} on {host}{error}"


_ERROR = re.compile(r"^(?:\[[^\]]*\]:)?\s*((?:[\w.]+(?:Error|Exception)|error): .*)$")


def error_line(log: Path | None) -> str | None:
    """The last exception line a training process wrote to this node's log in this attempt (one line)."""
    lines = tail_lines(log, 400) if log is not None else []
    found = [m.group(1) for line in lines if (m := _ERROR.match(line.strip()))]
    return found[-1][:300] if found else None


def checkpoint_step(run_dir: Path) -> int | None:
    """The newest complete checkpoint's step (the progress a retry keeps), or None."""
    try:
        return run_progress(run_dir).get("checkpoint_step")
    except Exception:  # noqa: BLE001
        return None
