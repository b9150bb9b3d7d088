"""The history of a run's attempts: ``RUN_DIR/launch/events.jsonl``, one JSON line per event, one writer.

    python launch/status.py --history JOB_ID          # the attempts of a job, in words

Every process that knows something about an attempt appends it here through :func:`record_event` (and nowhere else):
the node task (``launch.node.task``) ``start`` (with Slurm's allocation start), ``signal``, ``fault``, ``exit``,
``requeue`` and ``exclude``; the trainer (``memorymodels.train``, rank 0) ``trainer-start`` (host, pid, world size,
Slurm ids, command, code, environment), ``trainer-resume`` (the checkpoint's step) and ``trainer-end`` (status,
step, error); and whoever reads Slurm's accounting afterwards (the dashboard, the sweep report, a later attempt)
``reconciled`` (sacct's state, start and end of an attempt that could not say how it ended: SIGKILL, scancel, a lost
node). :func:`attempts` folds the events into one record per attempt, and every view derives from those records:
run.json's summary (``memorymodels.runrecord``), ``--history``, the goodput, the dashboard's rows and the sweep
report, so two views cannot disagree.

Each attempt ends with one outcome (:data:`OUTCOMES`): completed, requeued after a time limit, a preemption, a hang
or a failure, cancelled by the user, stopped from outside, a time limit or preemption that was not requeued, a
program error, a trainer refusal, no progress, a node failure, or lost (it never reported an end and Slurm's
accounting was not there to say why).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from memorymodels.fileio import read_json_lines
from memorymodels.rundir import REFUSALS, RunPaths


def record_event(run_dir: str | Path, event: str, **fields: Any) -> dict:
    """Append one event line to the run's history (a single write: lines from nodes and attempts never interleave;
    a line cut by a process that died mid-write is ended first, so it never swallows this one)."""
    entry = {"event": event, "time": time.time(), **fields}
    path = RunPaths(run_dir).events
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as f:
        torn = f.seek(0, 2) > 0 and f.seek(-1, 2) >= 0 and f.read(1) != b"\n"
        f.write((b"\n" if torn else b"") + json.dumps(entry).encode() + b"\n")
    return entry


def read_events(run_dir: str | Path) -> list[dict]:
    """The run's events, oldest first; unreadable lines are skipped (a node that died mid-write)."""
    return read_json_lines(RunPaths(run_dir).events)


OUTCOMES = {
    "completed": "completed",
    "requeued-timeout": "hit its time limit: checkpointed and requeued",
    "requeued-preemption": "was preempted: checkpointed and requeued",
    "requeued-hang": "hung: stacks written, ended on every node, requeued to resume from its last checkpoint",
    "requeued-failure": "died: ended on every node, requeued to resume from its last checkpoint",
    "cancelled": "was cancelled (scancel)",
    "timeout": "hit its time limit and was not requeued",
    "preempted": "was preempted and not requeued",
    "interrupted-outside": "was stopped (Ctrl-C, or scancel without --signal): checkpointed, not requeued",
    "stopped": "was stopped by the checkpoint signal: checkpointed, not requeued",
    "refused": "was refused by the trainer",
    "failed": "failed (program error)",
    "no-progress": "was stopped again without training a step: not requeued (raise time_limit)",
    "node-failure": "ended with its node (Slurm: NODE_FAIL)",
    "lost": "ended without a word (killed, or its node failed; no accounting to say which)",
    "running": "running",
}
"""Every way an attempt ends, in words (``submit.py --wait``)."""

SHORT = {"completed": "completed", "requeued-timeout": "time limit: checkpointed, requeued",
         "requeued-preemption": "preempted: checkpointed, requeued", "requeued-hang": "hung: requeued",
         "requeued-failure": "died: requeued", "cancelled": "cancelled (scancel)", "timeout": "time limit",
         "preempted": "preempted", "interrupted-outside": "stopped from outside: checkpointed",
         "stopped": "stopped by the checkpoint signal", "refused": "refused by the trainer", "failed": "program error",
         "no-progress": "stopped again without a step: not requeued", "node-failure": "node failure",
         "lost": "no end reported (killed or node lost)", "running": "running"}
"""The same outcomes in a table's few words (``status.py --history``)."""

SACCT_OUTCOMES = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "PREEMPTED": "preempted",
                  "NODE_FAIL": "node-failure", "BOOT_FAIL": "node-failure", "FAILED": "failed",
                  "OUT_OF_MEMORY": "failed", "DEADLINE": "timeout", "COMPLETED": "completed"}
"""Slurm's final job states -> outcomes, for attempts that could not record their own end."""

UNSURE = ("running", "lost", "interrupted-outside")
"""Outcomes that Slurm's accounting knows better than the attempt's own events (it never said, or could not tell a
cancel from a Ctrl-C)."""


def _new_attempt(event: dict) -> dict:
    return {"job_id": _job_id(event.get("job_id")), "restart_count": int(event.get("restart_count") or 0),
            "host": event.get("host"), "nodes": len(event.get("nodes") or []) or 1,
            "start": event.get("allocated") or event.get("time"), "end": None, "last": event.get("time"),
            "outcome": "running", "reason": None, "exit_code": None, "step": None, "checkpoint": None,
            "log_tail": None, "cause": None, "faults": [], "excluded": None, "trainer": None, "reconciled": None,
            "startup": None, "slurm": event.get("event") == "start" and event.get("cluster") == "slurm"}


def _job_id(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _same_attempt(attempt: dict, event: dict) -> bool:
    """Whether a trainer's event belongs to ``attempt``: the node task's attempt it runs under (same job and restart;
    a local run's trainer has no Slurm ids) and no trainer recorded yet."""
    if attempt["trainer"] is not None or attempt["end"] is not None:
        return False
    job = _job_id(event.get("job_id"))
    return job is None or (job == attempt["job_id"] and int(event.get("restart_count") or 0) == attempt["restart_count"])


def attempts(run_dir: str | Path, events: list[dict] | None = None) -> list[dict]:
    """One dict per attempt, oldest first: ``job_id``, ``restart_count``, ``host``, ``nodes``, ``start`` (Slurm's
    allocation start where known), ``end``, ``outcome`` (a key of :data:`OUTCOMES`), ``step`` (its last step),
    ``cause``, ``exit_code``, ``faults``, ``excluded``, ``trainer`` (what the trainer recorded: pid, world size,
    Slurm ids, command, code, environment, ``resumed_from_step``, ``status``, ``error``), ``reconciled`` (sacct's
    record when it filled in the end) and ``startup`` (the phases the trainer recorded)."""
    result: list[dict] = []
    for event in read_events(run_dir) if events is None else events:
        kind = event.get("event")
        if kind == "start":
            result.append(_new_attempt(event))
            continue
        if kind == "trainer-start":
            if not result or not _same_attempt(result[-1], event):
                result.append(_new_attempt(event))
            trainer = {k: v for k, v in event.items() if k not in ("event", "time")}
            result[-1]["trainer"] = {**trainer, "start": event.get("time"), "status": "running", "end": None}
            result[-1]["host"] = result[-1]["host"] or event.get("host")
            continue
        if kind == "reconciled":
            _reconcile_into(result, event)
            continue
        if not result:
            continue
        current = result[-1]
        current["last"] = event.get("time", current["last"])
        if kind == "fault":
            current["faults"].append(event)
        elif kind == "exclude":
            current["excluded"] = event
        elif kind == "signal":
            current["reason"] = event.get("reason")
        elif kind == "exit":
            current.update(end=event.get("time"), exit_code=event.get("code"), outcome=event.get("outcome"),
                           log_tail=event.get("log_tail"), cause=event.get("cause"),
                           checkpoint=event.get("checkpoint"))
            current["step"] = event.get("step", current["step"])
        elif kind == "requeue":
            current["outcome"] = f"requeued-{event.get('reason') or current['reason'] or 'preemption'}"
        elif kind == "trainer-resume" and current["trainer"] is not None:
            current["trainer"]["resumed_from_step"] = event.get("step")
        elif kind == "trainer-end" and current["trainer"] is not None:
            current["trainer"].update(status=event.get("status"), end=event.get("time"), error=event.get("error"))
            current["step"] = event.get("step", current["step"])
        elif kind == "startup":
            current["startup"] = event.get("phases")
    for i, attempt in enumerate(result):
        _settle(attempt, last=i == len(result) - 1)
    return result


def _reconcile_into(result: list[dict], event: dict) -> None:
    """Slurm's record of an attempt (state, allocation start and end) into that attempt."""
    key = (_job_id(event.get("job_id")), int(event.get("restart_count") or 0))
    for attempt in result:
        if (attempt["job_id"], attempt["restart_count"]) == key:
            attempt["reconciled"] = {k: event.get(k) for k in ("state", "start", "end", "nodes", "source")}


def _settle(attempt: dict, *, last: bool) -> None:
    """The attempt's outcome and end from what was recorded: its own exit first, then Slurm's accounting where the
    attempt could not tell, then the trainer's own end, else running (the newest) or lost."""
    trainer, slurm = attempt["trainer"] or {}, attempt["reconciled"]
    if attempt["outcome"] == "running" and trainer.get("end"):
        status = trainer.get("status")
        attempt["outcome"] = {"completed": "completed", "interrupted": "interrupted-outside"}.get(status, "failed")
        attempt["end"] = trainer["end"]
        if status == "failed" and not attempt["cause"]:
            attempt["cause"] = trainer.get("error")
    if attempt["outcome"] == "failed" and attempt["exit_code"] in REFUSALS:
        attempt["outcome"] = "refused"
    if attempt["outcome"] == "running" and not last:
        attempt["outcome"] = "lost"  # a later attempt began while this one never reported an end
    if slurm:
        if attempt["outcome"] in UNSURE and slurm.get("state") in SACCT_OUTCOMES:
            attempt["outcome"] = SACCT_OUTCOMES[slurm["state"]]
        for key in ("start", "end", "nodes"):
            if slurm.get(key) is not None:
                attempt[key] = slurm[key]
    if attempt["end"] is None and attempt["outcome"] != "running":
        attempt["end"] = attempt["last"]


def describe_attempts(run_dir: str | Path) -> str:
    """The attempts of a run in words, one line each (what ``submit.py --wait`` prints)."""
    lines = []
    for i, a in enumerate(attempts(run_dir), 1):
        when = time.strftime("%H:%M:%S", time.localtime(a["start"])) if a["start"] else "?"
        step = f" at step {a['step']}" if a["step"] is not None else ""
        code = f" (exit {a['exit_code']})" if a["outcome"] in ("failed", "refused") else ""
        lines.append(f"attempt {i}: job {a['job_id']} on {a['host']} from {when} "
                     f"{OUTCOMES.get(a['outcome'], a['outcome'])}{step}{code}")
        if a["cause"]:
            lines.append(f"    cause: {a['cause']}")
        if a["excluded"]:
            lines.append(f"    {a['excluded'].get('detail')}")
        if a["outcome"] in ("failed", "refused") and a["log_tail"]:
            lines += ["    " + line for line in a["log_tail"].splitlines()]
    return "\n".join(lines)


def unsettled(history: list[dict]) -> list[tuple[str, int]]:
    """(job id, restart count) of the Slurm attempts whose accounting is not in the history yet: Slurm's allocation
    start and end are what the node time is counted by, and its state says how an attempt ended that could not say it
    itself (or could not tell a cancel from a Ctrl-C)."""
    return [(a["job_id"], a["restart_count"]) for a in history if a["slurm"] and a["reconciled"] is None]


def record_reconciled(run_dir: str | Path, history: list[dict], accounting: dict[tuple[str, int], dict]) -> int:
    """Record Slurm's word (``accounting``: (job id, restart count) -> ``state``, ``start``, ``end``, ``nodes``) on
    each unsettled attempt that has ended by Slurm's account; returns how many were recorded."""
    count = 0
    for key in unsettled(history):
        record = accounting.get(key)
        if record and record.get("end") and record.get("state") not in (None, "RUNNING", "PENDING"):
            record_event(run_dir, "reconciled", job_id=key[0], restart_count=key[1], source="sacct",
                         **{k: record.get(k) for k in ("state", "start", "end", "nodes")})
            count += 1
    return count


FAILURE_OUTCOMES = ("requeued-hang", "requeued-failure")


def attempts_without_progress(run_dir: str | Path, step: int | None) -> int:
    """How many attempts right before this one were also stopped at ``step`` (no optimizer step in between)."""
    count = 0
    for attempt in reversed(attempts(run_dir)[:-1]):
        if attempt["outcome"].startswith("requeued-") and (attempt["step"] or 0) == (step or 0):
            count += 1
        else:
            break
    return count


def failures_without_progress(run_dir: str | Path, checkpoint: int | None) -> int:
    """How many attempts right before this one also failed (died or hung) with ``checkpoint`` as the newest complete
    checkpoint: the retry budget counts these; an attempt that saved a newer checkpoint before failing starts the
    count again (timing decides at which step a failure is noticed; the checkpoint is the progress kept)."""
    count = 0
    for attempt in reversed(attempts(run_dir)[:-1]):
        if attempt["outcome"] not in FAILURE_OUTCOMES or (attempt.get("checkpoint") or 0) != (checkpoint or 0):
            break
        count += 1
    return count


def attempt_faults(run_dir: str | Path, job_id: str, restart_count: int) -> list[dict]:
    """The ``fault`` events of one attempt (a job id and its restart count), from every node, oldest first."""
    return [e for e in read_events(run_dir) if e.get("event") == "fault" and str(e.get("job_id")) == str(job_id)
            and e.get("restart_count") == restart_count]


def goodput(history: list[dict], kept_training_s: float | None, now: float | None = None) -> dict:
    """The run's goodput over ``history`` (:func:`attempts`): ``allocated_node_s`` (each attempt's nodes x seconds
    from its allocation start to its end, to ``now`` while it runs; cancelled and lost attempts included),
    ``kept_node_s`` (``kept_training_s``, the wall seconds of training up to the last checkpoint, x the nodes) and
    ``ratio`` (kept / allocated: the share of the held node time that went into training the run keeps), and
    ``attempts``. Kept training happened inside the allocations, so the ratio is at most 1 up to the clocks'
    agreement; it is capped there."""
    now = time.time() if now is None else now
    allocated, nodes = 0.0, 1
    for a in history:
        nodes = a["nodes"]
        end = a["end"] if a["end"] is not None else now if a["outcome"] == "running" else a["last"]
        if a["start"] is not None and end is not None:
            allocated += max(0.0, end - a["start"]) * a["nodes"]
    kept = (kept_training_s or 0.0) * nodes
    ratio = min(1.0, round(kept / allocated, 4)) if allocated > 0 else None
    return {"allocated_node_s": round(allocated, 1), "kept_node_s": round(kept, 1), "ratio": ratio,
            "attempts": len(history)}


def attempts_of_job(history: list[dict], job_id: str) -> list[dict]:
    """The attempts of one Slurm job (its requeues) in ``history``."""
    return [a for a in history if a["job_id"] == str(job_id)]
