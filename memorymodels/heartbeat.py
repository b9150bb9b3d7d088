"""Rank heartbeats: each training process keeps a small file saying what it is doing and when it last moved.

    python -m memorymodels.train --experiment X.yaml --run-dir RUN --heartbeat-dir RUN/launch/heartbeats
    cat RUN/launch/heartbeats/rank-3.json        # {"phase": "step", "step": 41, "time": ..., "host": ..., ...}

The launcher passes ``--heartbeat-dir`` (``launch.node.watchdog`` reads the files); without it nothing is written.
One file per global rank, ``rank-R.json``, replaced atomically (a temporary file renamed over it), holding the rank,
local rank, host, pid, the phase (``setup`` from the start until training begins, ``step``, ``save``, ``evaluate``,
``end``), the last finished step, whether training had begun (``trained``), the time of the beat, and the slowest
duration seen so far in each phase, from
which the launcher derives how long silence may last (``slowest``). The trainer's callback beats at every phase
change and at most every :data:`MIN_INTERVAL_S` otherwise: a rename per second per rank is nothing even on a
shared file system, and the launcher's timeouts are tens of seconds or more.

Each rank also registers :mod:`faulthandler` on :data:`STACK_SIGNAL` into ``rank-R.stack``: where ``py-spy`` cannot
read a process (no ptrace), the launcher sends that signal and copies the Python stacks the rank wrote. This torch-free
module is what both sides share.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import time
from pathlib import Path

MIN_INTERVAL_S = 1.0
"""Within a phase, beats closer together than this are skipped (a phase change is always written)."""
STACK_SIGNAL = signal.SIGQUIT
"""The signal on which a rank writes its Python stacks (faulthandler) into ``rank-R.stack``."""
PHASES = ("setup", "step", "save", "evaluate", "end")


def beat_path(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rank-{rank}.json"


def stack_path(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rank-{rank}.stack"


class Heartbeat:
    """One rank's heartbeat file. ``beat(phase, step)`` writes it (throttled within a phase) and times the phases."""

    def __init__(self, folder: str | Path, *, rank: int, local_rank: int):
        self.folder = Path(folder)
        self.rank, self.local_rank = rank, local_rank
        self.phase: str | None = None
        self.phase_start = self.last_write = 0.0
        self.step = 0
        self.trained = False  # has this process reached its first training step
        self.slowest: dict[str, float] = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stacks = open(stack_path(self.folder, rank), "w")  # kept open: faulthandler writes to its descriptor
        faulthandler.register(STACK_SIGNAL, file=self._stacks, all_threads=True)

    def beat(self, phase: str, step: int | None = None) -> None:
        now = time.time()
        changed = phase != self.phase
        if changed:
            if self.phase is not None:
                self.slowest[self.phase] = max(self.slowest.get(self.phase, 0.0), now - self.phase_start)
            self.phase, self.phase_start = phase, now
        elif phase == "step":  # each step is its own phase instance: its length is the time since the last one
            self.slowest["step"] = max(self.slowest.get("step", 0.0), now - self.phase_start)
            self.phase_start = now
        if step is not None:
            self.step = step
        self.trained = self.trained or phase == "step"
        # writes fall on whole seconds for every rank alike, so the rank that stopped first has the oldest beat
        if changed or int(now / MIN_INTERVAL_S) != int(self.last_write / MIN_INTERVAL_S):
            self.last_write = now
            self._write(now)

    def _write(self, now: float) -> None:
        record = {"rank": self.rank, "local_rank": self.local_rank, "host": socket.gethostname(), "pid": os.getpid(),
                  "phase": self.phase, "step": self.step, "time": now, "trained": self.trained,
                  "slowest": {k: round(v, 3) for k, v in self.slowest.items()}}
        path = beat_path(self.folder, self.rank)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)
        except OSError:
            pass  # a full or flaky disk must not stop training; the launcher then sees silence and says so

    def close(self) -> None:
        faulthandler.unregister(STACK_SIGNAL)
        self._stacks.close()


def read_beats(folder: str | Path) -> list[dict]:
    """Every rank's last heartbeat in ``folder`` (unreadable files skipped), with ``file`` (the path) added."""
    beats = []
    for path in sorted(Path(folder).glob("rank-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            beats.append({**record, "file": str(path)})
    return beats
