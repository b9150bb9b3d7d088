"""The events of a run's attempts: ``RUN_DIR/launch/events.jsonl``, one JSON line per event.

    python launch/status.py --history JOB_ID          # the attempts of a job, in words

The node task (``launch.node.task``) appends ``start``, ``signal`` (with its reason), ``fault`` (from any node: a
hung rank with its stack files, a rank killed by a signal, a program error; with ``job_id`` and ``restart_count``
so the other nodes of the same attempt find it), ``exit`` (code, outcome, step, the log's last lines, the cause),
``requeue`` and ``exclude`` (the node left out of the retry, or why not); :func:`attempts` folds them into one record
per attempt and :func:`describe_attempts` says what happened to each: completed, requeued after a time limit, a
preemption, a hang or a failure, stopped from outside, a program error, or a node failure (an attempt that started
and never reported an end). :func:`goodput` weighs the node time the attempts held against the training kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from memorymodels.fileio import read_json_lines

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
    return read_json_lines(Path(run_dir) / EVENTS)  # a line cut by a node that died mid-write is skipped


def attempts(run_dir: str | Path) -> list[dict]:
    """One dict per attempt: ``job_id``, ``restart_count``, ``host``, ``start``, ``end`` and ``outcome`` (completed,
    requeued-timeout, requeued-preemption, interrupted-outside, failed, node-failure, running) with details;
    ``allocated``: when its allocation began (``memorymodels.startup``: the trainer's startup record names it)."""
    result: list[dict] = []
    for event in read_events(run_dir):
        kind = event.get("event")
        if kind == "start":
            if result and result[-1]["outcome"] == "running":
                result[-1]["outcome"] = "node-failure"  # a new attempt began while the last never reported an end
            result.append({"job_id": event.get("job_id"), "restart_count": event.get("restart_count", 0),
                           "host": event.get("host"), "start": event.get("time"), "end": None,
                           "outcome": "running", "reason": None, "exit_code": None, "step": None, "log_tail": None,
                           "nodes": len(event.get("nodes") or []) or 1, "last": event.get("time"), "cause": None,
                           "faults": [], "excluded": None, "allocated": event.get("allocated")})
        elif result:
            current = result[-1]
            current["last"] = event.get("time", current["last"])
            if kind == "fault":
                current["faults"].append(event)
            elif kind == "exclude":
                current["excluded"] = event
            elif kind == "signal":
                current["reason"] = event.get("reason")
            elif kind == "exit":
                current.update(end=event.get("time"), exit_code=event.get("code"), step=event.get("step"),
                               outcome=event.get("outcome"), log_tail=event.get("log_tail"), cause=event.get("cause"),
                               checkpoint=event.get("checkpoint"))
            elif kind == "requeue":
                current["outcome"] = f"requeued-{event.get('reason') or current['reason'] or 'preemption'}"
    return result


_WORDS = {
    "completed": "completed",
    "requeued-timeout": "hit its time limit: checkpointed and requeued",
    "requeued-preemption": "was preempted: checkpointed and requeued",
    "requeued-hang": "hung: stacks written, ended on every node, requeued to resume from its last checkpoint",
    "requeued-failure": "died: ended on every node, requeued to resume from its last checkpoint",
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
        if a["cause"]:
            lines.append(f"    cause: {a['cause']}")
        if a["excluded"]:
            lines.append(f"    {a['excluded'].get('detail')}")
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


FAILURE_OUTCOMES = ("requeued-hang", "requeued-failure")


def failures_without_progress(run_dir: Path, checkpoint: int | None) -> int:
    """How many attempts right before this one also failed (died or hung) with ``checkpoint`` as the newest complete
    checkpoint: the retry budget counts these; an attempt that saved a newer checkpoint before failing starts the
    count again (timing decides at which step a failure is noticed; the checkpoint is the progress kept)."""
    count = 0
    for attempt in reversed(attempts(run_dir)[:-1]):
        if attempt["outcome"] not in FAILURE_OUTCOMES or (attempt.get("checkpoint") or 0) != (checkpoint or 0):
            break
        count += 1
    return count


def attempt_faults(run_dir: Path, job_id: str, restart_count: int) -> list[dict]:
    """The ``fault`` events of one attempt (a job id and its restart count), from every node, oldest first."""
    return [e for e in read_events(run_dir) if e.get("event") == "fault" and str(e.get("job_id")) == str(job_id)
            and e.get("restart_count") == restart_count]


def goodput(run_dir: str | Path, kept_training_s: float | None, now: float | None = None) -> dict:
    """The run's goodput: ``allocated_node_s`` (each attempt's nodes x seconds from its start to its end, or to its
    last event when it never reported one, or to ``now`` while it runs), ``kept_node_s`` (``kept_training_s``, the
    wall seconds of training up to the last checkpoint, x the nodes) and ``ratio`` (kept / allocated, the share of
    the held node time that went into training the run keeps), and ``attempts``."""
    now = time.time() if now is None else now
    allocated, nodes = 0.0, 1
    runs = attempts(run_dir)
    for a in runs:
        nodes = a["nodes"]
        end = a["end"] or (now if a["outcome"] == "running" else a["last"]) or a["start"]
        allocated += max(0.0, end - (a["start"] or end)) * a["nodes"]
    kept = (kept_training_s or 0.0) * nodes
    return {"allocated_node_s": round(allocated, 1), "kept_node_s": round(kept, 1),
            "ratio": round(kept / allocated, 4) if allocated > 0 else None, "attempts": len(runs)}
