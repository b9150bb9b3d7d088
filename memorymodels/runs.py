"""Which directory a run trains in, and the trainer's lock on it.

    python -m memorymodels.train --experiment configs/experiments/debug.yaml   # finds or makes its run directory

A run directory sits directly under the checkpoint root and is named from the config (:func:`run_dir_for`); the same
config finds the same directory, a different config whose name is taken gets ``NAME-<identity>``, so nothing is ever
overwritten. The trainer holds an exclusive ``flock`` on the directory for a whole attempt (:func:`lock_run_dir`).
Its files are named by ``memorymodels.rundir``; run.json is ``memorymodels.runrecord``'s, metrics.jsonl
``memorymodels.metrics``'s, the attempts' history ``memorymodels.attempts``'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from memorymodels.experiment import Experiment, identity, run_name
from memorymodels.fileio import disk_full_error, make_private_dir
from memorymodels.rundir import RunDirError, RunLockedError, RunPaths
from memorymodels.runrecord import read_run_json

__all__ = ["RunDirError", "RunLockedError", "run_dir_for", "collision_message", "check_run_dir", "RunLock",
           "lock_run_dir"]


# ---- naming and collisions -------------------------------------------------------------------------------------


def _owner(run_dir: Path) -> str | None:
    """The identity recorded in ``run_dir/run.json``; '' for a directory that exists but is not one of our runs.

    Raises :class:`RunDirError` for a run.json that exists but is damaged: treating it as foreign would make the
    same config choose another directory and start over without a word.
    """
    if not run_dir.exists():
        return None
    info = read_run_json(run_dir)
    if info is None:
        # Free when empty (temporary files of a run.json being written aside, the lock): another rank may be
        # creating it.
        return "" if any(not p.name.startswith(".") for p in run_dir.iterdir()) else None
    return str(info.get("identity", ""))


def run_dir_for(experiment: Experiment, world_size: int) -> Path:
    """The run directory of ``experiment`` at ``world_size`` under ``output.checkpoint_root``.

    The same config (same identity) finds the same directory; a different config whose name is taken gets
    ``NAME-<identity>`` instead, so nothing is ever overwritten. Pure apart from reading existing run.json files.
    """
    root = Path(experiment.output.checkpoint_root)
    name = run_name(experiment, world_size)
    ident = identity(experiment, world_size)
    for candidate in (root / name, root / f"{name}-{ident}"):
        owner = _owner(candidate)
        if owner is None or owner == ident:
            return candidate
    for n in range(2, 1000):  # only when a foreign directory already holds the hashed name
        candidate = root / f"{name}-{ident}-{n}"
        owner = _owner(candidate)
        if owner is None or owner == ident:
            return candidate
    raise RunDirError(f"{root}: more than 1000 directories named {name}-{ident}-N; clean up the checkpoint root")


def collision_message(experiment: Experiment, world_size: int, run_dir: Path) -> str | None:
    """Why ``run_dir`` is not the plain name (a different config holds it), or None."""
    plain = Path(experiment.output.checkpoint_root) / run_name(experiment, world_size)
    if Path(run_dir) == plain:
        return None
    return (f"run directory {plain} belongs to a different config (see its run.json); "
            f"this run uses {run_dir} instead")


def check_run_dir(run_dir: Path, ident: str) -> None:
    """Refuse a directory (given by --run-dir) that holds another config's run or foreign files, or whose folders are
    symbolic links out of it."""
    RunPaths(run_dir).refuse_links()
    owner = _owner(Path(run_dir))
    if owner is None or owner == ident:
        return
    what = "another config's run" if owner else "files that are not a run (no run.json)"
    raise RunDirError(
        f"{run_dir}: holds {what}; refusing to overwrite it. Pick another --run-dir, or omit --run-dir to let "
        f"the trainer choose a free directory."
    )


# ---- the trainer's lock -------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.trainer.lock`` held for a whole attempt by the process that writes the
    run directory. The kernel releases it when that process ends, however it ends (exit, kill -9, OOM), so a stale
    lock never blocks a rerun; the file's content (pid, host, time) only serves the message of a refused trainer.
    ``created``: the lock made the run directory; released with nothing else written in it (a corpus refused
    before training), the directory goes again instead of standing empty but for the lock."""

    def __init__(self, path: Path, fd: int, created: bool = False):
        self.path, self.fd, self.created = path, fd, created

    def release(self) -> None:
        if self.fd is None:
            return
        if self.created and [p.name for p in self.path.parent.iterdir()] == [self.path.name]:
            self.path.unlink(missing_ok=True)  # still holding the lock: no other trainer is inside
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()
        os.close(self.fd)  # closing the only descriptor drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_holder(path: Path) -> str:
    """'pid 123 on host h since 12:00:01' from the lock file (the holder may be writing it: retry briefly)."""
    for _ in range(20):
        try:
            info = json.loads(path.read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["time"]))
            return f"pid {info['pid']} on host {info['host']} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "pid unknown"


def lock_run_dir(run_dir: Path) -> RunLock:
    """Take the run directory's lock (creating the directory, for this user alone: ``fileio.make_private_dir``; the
    launcher makes it first, for the profile's group too) or raise :class:`RunLockedError` at once; a full disk is a
    ``DiskFullError`` naming the lock file, with nothing left behind."""
    run_dir = Path(run_dir)
    path = RunPaths(run_dir).trainer_lock
    created = not run_dir.exists()
    try:
        make_private_dir(run_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by subprocesses (PEP 446)
    except OSError as exc:
        if full := disk_full_error(exc, path):
            raise full from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"{run_dir}: another trainer is running in this run directory ({_lock_holder(path)}; lock {path}); "
            f"refusing to train it twice at once. Wait for that one to end, or stop it first") from None
    lock = RunLock(path, fd, created)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        lock.release()
        if full := disk_full_error(exc, path, "the lock was given up; nothing was trained"):
            raise full from None
        raise
    return lock
