"""metrics.jsonl (one JSON object per logging step) and what the dashboard and the sweep report show of a run.

    tail -n 3 RUN_DIR/metrics.jsonl

The trainer appends a line per logging step (:func:`append_metrics`, one write call so lines never interleave); on a
resume the lines logged after the checkpoint move aside (:func:`roll_back_metrics`), so the curve continues from it.
A loss that is NaN or infinite is never a number to log or a result to report: it is :class:`NonFiniteLoss`, a
failure at its step (the trainer stops there, ``python -m memorymodels.evaluate`` exits non-zero).
:func:`run_progress` is what every view shows of a run: the run record, the tail of the metrics, the checkpoint
markers and the attempts' history (``memorymodels.attempts``), read quickly and tolerantly.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from memorymodels import attempts as history
from memorymodels.checkpoints import COMPLETE, checkpoint_step, checkpoints
from memorymodels.fileio import CorruptFileError, read_json, read_json_lines, write_text_atomic
from memorymodels.rundir import RunPaths


class NonFiniteLoss(ArithmeticError):
    """A training or evaluation loss (``what``) that is NaN or infinite at ``step``: the run failed there."""

    def __init__(self, what: str, value: float | str, step: int | None, advice: str = ""):
        self.what, self.value, self.step, self.advice = what, value, step, advice
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{what} is {value}{at}" + (f"; {advice}" if advice else ""))


def check_finite(what: str, value: float, step: int | None) -> None:
    """Raise :class:`NonFiniteLoss` when ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise NonFiniteLoss(what, value, step)


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one line to metrics.jsonl (one write call, so a line is never interleaved)."""
    with open(RunPaths(run_dir).metrics, "a") as f:
        f.write(json.dumps(record) + "\n")


NUMBERS = ("step", "loss", "eval_loss", "eval_bits_per_byte", "learning_rate", "grad_norm", "tokens_per_s", "tokens",
           "flops", "device_seconds", "time")
"""The fields of a metrics line that hold numbers (what the figures and the frontier read)."""


def read_metrics(run_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """All parsable lines of metrics.jsonl (a torn last line is skipped), each holding only numbers in
    :data:`NUMBERS` (a string or a boolean there is dropped from its line). What was left out is described in
    ``problems`` (a figure says so) when given."""
    path = RunPaths(run_dir).metrics
    skipped: list[int] = []
    records, dropped = [], []
    for record in read_json_lines(path, skipped):
        if not isinstance(record, dict):
            dropped.append(f"a JSON {type(record).__name__}, not an object")
            continue
        for key in NUMBERS:
            value = record.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                dropped.append(f"'{key}': {json.dumps(value)[:40]} is not a number")
                record[key] = None
        records.append(record)
    if problems is not None and (skipped or dropped):
        unreadable = f"{len(skipped)} unreadable line(s) (line {', '.join(map(str, skipped[:5]))}); " if skipped \
            else ""
        odd = f"{len(dropped)} value(s) left out ({'; '.join(list(dict.fromkeys(dropped))[:3])})" if dropped else ""
        problems.append(f"{path}: {unreadable}{odd}".rstrip("; "))
    return records


def roll_back_metrics(run_dir: Path, step: int) -> int:
    """On resume from ``step``: move lines logged after it (by an attempt killed before saving) aside.

    They go to ``metrics.rolledback.jsonl`` (appended; nothing is lost) and metrics.jsonl is rewritten atomically
    with the rest, so the curve continues from the checkpoint. Returns how many lines moved.
    """
    path = RunPaths(run_dir).metrics
    if not path.exists():
        return 0
    keep, drop = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            drop.append(line)
            continue
        (drop if record.get("step", 0) > step else keep).append(line)
    if drop:
        with open(RunPaths(run_dir).metrics_rolled_back, "a") as f:
            f.write("".join(line + "\n" for line in drop))
        write_text_atomic(path, "".join(line + "\n" for line in keep))
    return len(drop)


def tail_records(path: Path, max_bytes: int = 65536) -> list[dict]:
    """The JSON lines in the last ``max_bytes`` of a file (a cut first line is skipped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            blob = f.read()
    except OSError:
        return []
    lines = blob.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


STATUS_OF_OUTCOME = {"completed": "completed", "failed": "failed", "refused": "failed", "no-progress": "failed",
                     "running": "running"}
"""run.json's status words for an attempt's outcome (the rest: interrupted, the run resumes when submitted again)."""


def run_progress(run_dir: Path, job_id: str | None = None) -> dict:
    """What the dashboard and the sweep report show about a run; fast and tolerant of missing files.

    Keys: status, step, max_steps, loss, eval_loss, tokens_per_s, checkpoint_step, checkpoint_time, updated,
    goodput (the share of the allocated node time that went into training kept, from the attempts' history),
    excluded_nodes (nodes the launcher left out of a retry) and outcome (the newest attempt's; unknown values are
    None). With ``job_id``, a job that is not the run's newest shows its own attempt: its status and the last step
    it reached, never a later job's progress. Reads run.json, the history, the tail of metrics.jsonl and the
    checkpoint markers only.
    """
    paths = RunPaths(run_dir)
    try:
        info = read_json(paths.run_json) or {}
    except CorruptFileError:
        info = {}
    progress: dict[str, Any] = {key: None for key in ("status", "step", "max_steps", "loss", "eval_loss",
                                                       "tokens_per_s", "checkpoint_step", "checkpoint_time",
                                                       "updated", "goodput", "excluded_nodes", "outcome")}
    progress["status"] = info.get("status")
    progress["max_steps"] = ((info.get("config") or {}).get("train") or {}).get("max_steps")
    attempts = history.attempts(run_dir)
    _from_history(progress, info, attempts)
    own = history.attempts_of_job(attempts, job_id) if job_id is not None else []
    if own and own[-1] is not attempts[-1]:  # an earlier job of this run: its own attempt, not the newest one's
        progress.update(status=STATUS_OF_OUTCOME.get(own[-1]["outcome"], "interrupted"), step=own[-1]["step"],
                        outcome=own[-1]["outcome"])
        return progress
    for window in (1 << 16, 1 << 19, 1 << 22):  # widen only while the last eval is further back than the tail
        records = tail_records(paths.metrics, window)
        for record in records:  # oldest to newest: later lines win
            progress["step"] = record.get("step", progress["step"])
            for key in ("loss", "eval_loss", "tokens_per_s"):
                if record.get(key) is not None:
                    progress[key] = record[key]
        if progress["eval_loss"] is not None or len(records) * 200 < window:
            break
    complete = checkpoints(run_dir)[0]
    if complete:
        try:
            marker = read_json(complete[-1] / COMPLETE) or {}
        except CorruptFileError:
            marker = {}
        progress["checkpoint_step"] = checkpoint_step(complete[-1])
        progress["checkpoint_time"] = marker.get("time")
        if progress["step"] is None or progress["checkpoint_step"] > progress["step"]:
            progress["step"] = progress["checkpoint_step"]
    times = [p.stat().st_mtime for p in (paths.run_json, paths.metrics, paths.events) if p.exists()]
    progress["updated"] = max(times) if times else None
    return progress


def _from_history(progress: dict, info: dict, attempts: list[dict]) -> None:
    """Goodput, excluded nodes and the newest attempt's outcome; a run.json left saying ``running`` by an attempt
    that ended without the trainer's word (killed, lost node, failed on another node) takes the history's status."""
    progress["goodput"] = history.goodput(attempts, kept_training_s(info))["ratio"] if attempts else None
    excluded = [a["excluded"]["node"] for a in attempts if (a["excluded"] or {}).get("excluded")]
    progress["excluded_nodes"] = excluded or None
    if attempts:
        outcome = attempts[-1]["outcome"]
        progress["outcome"] = outcome
        if progress["status"] == "running" and outcome != "running":
            progress["status"] = STATUS_OF_OUTCOME.get(outcome, "interrupted")


def kept_training_s(info: dict) -> float | None:
    """The wall seconds of training the run keeps: run.json's device seconds (wall seconds in the training loop x
    processes, counted to the last checkpoint) over its world size."""
    device_s = (info.get("compute") or {}).get("device_seconds")
    return device_s / (info.get("world_size") or 1) if device_s is not None else None


def run_goodput(run_dir: Path, now: float | None = None) -> dict:
    """:func:`memorymodels.attempts.goodput` of the run, with the training time it keeps."""
    try:
        info = read_json(RunPaths(run_dir).run_json) or {}
    except CorruptFileError:
        info = {}
    return history.goodput(history.attempts(run_dir), kept_training_s(info), now)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories among ``paths`` (a path holding run.json, or the run directories directly under it)."""
    found = []
    for path in map(Path, paths):
        if RunPaths(path).is_run():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if RunPaths(p).run_json.exists()))
    return found
