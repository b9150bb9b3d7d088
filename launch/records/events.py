"""The events of a run's attempts: ``RUN_DIR/launch/events.jsonl``, one JSON line per event.

    python launch/status.py --history JOB_ID          # the attempts of a job, in words

The node task (``launch.node.task``) appends ``start``, ``signal`` (with its reason), ``exit`` (code, outcome, step,
the log's last lines) and ``requeue``; :func:`attempts` folds them into one record per attempt and
:func:`describe_attempts` says what happened to each: completed, requeued after a time limit or a preemption,
stopped from outside, a program error, or a node failure (an attempt that started and never reported an end).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

EVENTS = "launch/events.jsonl"


def record_event(run_dir: Path, event: str, **fields: Any) -> dict:
    """Append one event line to ``RUN_DIR/launch/events.jsonl`` (a single write: lines from attempts never interleave)."""
    entry = {"event": event, "time": time.time(), **fields}
    (run_dir / EVENTS).parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir / EVENTS, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def read_events(run_dir: str | Path) -> list[dict]:
    """The events of ``RUN_DIR/launch/events.jsonl`` (oldest first); unreadable lines are skipped."""
    path = Path(run_dir) / EVENTS
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a node that died mid-write
    return events


def attempts(run_dir: str | Path) -> list[dict]:
    """One dict per attempt: ``job_id``, ``restart_count``, ``host``, ``start``, ``end`` and ``outcome`` (completed,
    requeued-timeout, requeued-preemption, interrupted-outside, failed, node-failure, running) with details."""
    result: list[dict] = []
    for event in read_events(run_dir):
        kind = event.get("event")
        if kind == "start":
            if result and result[-1]["outcome"] == "running":
                result[-1]["outcome"] = "node-failure"  # a new attempt began while the last never reported an end
            result.append({"job_id": event.get("job_id"), "restart_count": event.get("restart_count", 0),
                           "host": event.get("host"), "start": event.get("time"), "end": None,
                           "outcome": "running", "reason": None, "exit_code": None, "step": None, "log_tail": None})
        elif result:
            current = result[-1]
            if kind == "signal":
                current["reason"] = event.get("reason")
            elif kind == "exit":
                current.update(end=event.get("time"), exit_code=event.get("code"), step=event.get("step"),
                               outcome=event.get("outcome"), log_tail=event.get("log_tail"))
            elif kind == "requeue":
                current["outcome"] = f"requeued-{current['reason'] or 'preemption'}"
    return result


_WORDS = {
    "completed": "completed",
    "requeued-timeout": "hit its time limit: checkpointed and requeued",
    "requeued-preemption": "was preempted: checkpointed and requeued",
    "interrupted-outside": "was stopped (Ctrl-C, or scancel without --signal): checkpointed, not requeued",
    "stopped": "was stopped by the checkpoint signal: checkpointed, not requeued",
    "failed": "failed (program error)",
    "no-progress": "was stopped again without training a step: not requeued (raise time_limit)",
    "node-failure": "ended without a word (node failure, or killed): Slurm requeued it",
    "running": "running",
}


def describe_attempts(run_dir: str | Path) -> str:
    """The attempts of a run in words, one line each (what ``submit.py --wait`` and the dashboard show)."""
    lines = []
    for i, a in enumerate(attempts(run_dir), 1):
        when = time.strftime("%H:%M:%S", time.localtime(a["start"])) if a["start"] else "?"
        step = f" at step {a['step']}" if a["step"] is not None else ""
        code = f" (exit {a['exit_code']})" if a["outcome"] == "failed" else ""
        lines.append(f"attempt {i}: job {a['job_id']} on {a['host']} from {when} "
                     f"{_WORDS.get(a['outcome'], a['outcome'])}{step}{code}")
        if a["outcome"] == "failed" and a["log_tail"]:
            lines += ["    " + line for line in a["log_tail"].splitlines()]
    return "\n".join(lines)


def attempts_without_progress(run_dir: Path, step: int | None) -> int:
    """How many attempts right before this one were also stopped at ``step`` (no optimizer step in between)."""
    count = 0
    for attempt in reversed(attempts(run_dir)[:-1]):
        if attempt["outcome"].startswith("requeued-") and (attempt["step"] or 0) == (step or 0):
            count += 1
        else:
            break
    return count
