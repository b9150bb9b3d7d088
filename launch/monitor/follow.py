"""Following submitted jobs until they end (``launch/submit.py``, ``--wait``, and the local executor).

A job of the ``local`` executor is followed in the foreground (:func:`follow_local`): a progress line whenever it
changes, Ctrl-C asks the training processes to checkpoint and stop, and the evaluation table at the end. A Slurm job
(``--wait``, :func:`wait_slurm`) is followed across its requeues, and how each attempt ended is printed from the
run's ``launch/events.jsonl``; a sweep (:func:`follow_sweep`) until none of its cells is queued. Both ask Slurm the
way the dashboard does (``launch.monitor.queue.queue_states``: one ``squeue`` for this user's jobs, through
``run_slurm``, its answer shared with the dashboards and other pollers for two seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console

from launch.monitor.report import collect_rows, render
from launch.planning.sweep import SweepPlan
from memorymodels.attempts import attempts, describe_attempts
from launch.monitor.queue import default_shared_cache, queue_states, read_journal
from launch.records.journal import journal_dir
from launch.slurm.client import SlurmError, slurm_environ
from launch.slurm.output import ACTIVE_STATES, TERMINAL_STATES
from memorymodels.configuration import count
from memorymodels.fileio import CorruptFileError, read_json, tail_lines
from memorymodels.metrics import run_progress
from memorymodels.rundir import RunPaths

def _progress_line(run_dir: Path) -> str:
    p = run_progress(run_dir)
    parts = [f"{p.get('status') or 'starting'}", f"step {p.get('step') or 0}/{p.get('max_steps') or '?'}"]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.3f}")
    if p.get("eval_loss") is not None:
        parts.append(f"eval {p['eval_loss']:.3f}")
    if p.get("tokens_per_s"):
        parts.append(f"{p['tokens_per_s']:.0f} tok/s")
    return "  ".join(parts)


def _log_tail(path: str | None, lines: int = 15) -> str:
    return "\n".join(tail_lines(path, lines)) or "(no log yet)"


def follow_local(job, entry: dict, out=sys.stdout) -> int:
    """Follow a local-executor job in the foreground: progress lines, then the evaluation table. Returns 0 on
    success, 1 on failure (with the log's last lines)."""
    run_dir = Path(entry["run_dir"])
    last = ""
    try:
        while not job.done():
            line = _progress_line(run_dir)
            if line != last:
                print(f"  {time.strftime('%H:%M:%S')}  {line}", file=out, flush=True)
                last = line
            time.sleep(1.0)
    except KeyboardInterrupt:
        return _stop_local(job, entry, out)
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error as text
        text = str(exc)
        reason = text[text.rfind("LaunchFailed:") + len("LaunchFailed:"):].strip() if "LaunchFailed:" in text else ""
        if reason:
            print(f"job {entry['job_id']}: {reason}", file=out)
        else:
            print(f"job {entry['job_id']} failed; --- last lines of {entry['stderr']} ---\n"
                  f"{_log_tail(entry['stderr'])}", file=out)
        return 1
    print(f"  {time.strftime('%H:%M:%S')}  {_progress_line(run_dir)}", file=out)
    _print_evaluation(run_dir, out)
    print(f"run dir: {run_dir}", file=out)
    return 0


def _stop_local(job, entry: dict, out) -> int:
    """Ctrl-C: the job's task asks the training processes to checkpoint (``launch.node.task``); wait for that."""
    run_dir = Path(entry["run_dir"])
    print("\nCtrl-C: the training processes save a checkpoint and stop (Ctrl-C again to kill them)", file=out,
          flush=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run_progress(run_dir).get("status") == "running":
            time.sleep(0.5)
    except KeyboardInterrupt:
        job.cancel(check=False)
        print(f"killed; the run resumes from its last complete checkpoint in {run_dir}", file=out)
        return 130
    progress = run_progress(run_dir)
    print(f"{progress.get('status')} at step {progress.get('step')}: {run_dir}\nrun the same command again to "
          f"resume", file=out)
    return 130


def _print_evaluation(run_dir: Path, out) -> None:
    path = RunPaths(run_dir).eval_json
    if not path.exists():
        return
    try:
        # The launcher's one import of a torch-using library module, kept inside the function on purpose: the
        # launcher plans, submits and watches without loading torch; the table is printed once, after a local run.
        from memorymodels.evaluate import format_table

        print(format_table(json.loads(path.read_text())), file=out)
    except Exception as exc:  # noqa: BLE001 - the table is a courtesy; the run itself succeeded
        print(f"(evaluation in {path}; could not format it: {exc})", file=out)


def wait_slurm(entry: dict, *, env: dict[str, str] | None = None, timeout: float | None = None,
               out=sys.stdout) -> str:
    """Follow a Slurm job until it ends (requeues included); print progress and how each attempt ended. ``env``:
    the Slurm environment (default: SLURM_CONF as set). Returns the final Slurm state (COMPLETED,
    FAILED, ...)."""
    env = env if env is not None else slurm_environ()
    run_dir = Path(entry["run_dir"])
    deadline = None if timeout is None else time.monotonic() + timeout
    last, state = "", "UNKNOWN"
    while True:
        try:
            state = queue_states([entry["job_id"]], env=env, shared_cache=default_shared_cache()).get(
                entry["job_id"], "UNKNOWN")  # absent: the controller forgot the job (MinJobAge)
        except SlurmError:
            state = "UNKNOWN"  # no answer: decide from the run directory
        line = f"{state:<10} {_progress_line(run_dir)}"
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", file=out, flush=True)
            last = line
        if state in TERMINAL_STATES - {"PREEMPTED"}:  # a preempted job is requeued
            break
        if state == "UNKNOWN":
            if run_progress(run_dir).get("status") in ("completed", "failed"):
                break
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {entry['job_id']} still {state} after {timeout:.0f} s; logs {entry['stdout']}")
        time.sleep(2.0)
    history = describe_attempts(run_dir)
    if history:
        print(history, file=out)
    explained = any(a.get("log_tail") for a in attempts(run_dir)[-1:])
    if state not in ("COMPLETED", "UNKNOWN") and not explained:
        print(f"--- last lines of {entry['stderr']} ---\n{_log_tail(entry['stderr'])}", file=out)
    return state


def _status(run_dir: Path) -> str | None:
    """run.json's status; "damaged" when it cannot be read (the trainer refuses such a directory, naming it)."""
    try:
        return (read_json(RunPaths(run_dir).run_json) or {}).get("status")
    except CorruptFileError:
        return "damaged"


def busy_cells(plan: SweepPlan, env: dict[str, str] | None = None) -> list[int]:
    """The cells of ``plan`` with a job (of any submission in the journal) still queued or running: one squeue."""
    cells = {str(cell.run_dir): cell.index for cell in plan.cells}
    jobs = [job for job in read_journal(journal_dir())[0] if job["slurm"] and job["run_dir"] in cells]
    if not jobs:
        return []
    states = queue_states([job["job_id"] for job in jobs], env=env, shared_cache=default_shared_cache())
    return sorted({cells[job["run_dir"]] for job in jobs if states.get(job["job_id"]) in ACTIVE_STATES})


def follow_sweep(plan: SweepPlan, *, log, poll_s: float = 5.0) -> list[int]:
    """``--wait`` for a sweep: one ``squeue`` every ``poll_s`` seconds until no cell of the sweep is queued or
    running, printing the counts as they change, then the report table. Returns the cells that did not complete."""
    last = ""
    env = slurm_environ(plan.profile.slurm_conf_path())
    while True:
        busy = busy_cells(plan, env)
        statuses = [_status(c.run_dir) for c in plan.cells]
        line = (f"{statuses.count('completed')} of {count(len(plan.cells), 'cell')} complete, {len(busy)} queued or running, "
                f"{statuses.count('failed')} failed")
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", file=log, flush=True)
            last = line
        if not busy:
            break
        time.sleep(poll_s)
    cells = [{"index": c.index, **c.as_json()} for c in plan.cells]
    Console(file=log, width=max(100, Console(file=log).width)).print(
        render(collect_rows(cells, plan.sweep.axes), plan.sweep.axes, plan.sweep.name))
    return [i for i, status in enumerate(statuses) if status != "completed"]
