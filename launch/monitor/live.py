"""The live view: the dashboard on the terminal's alternate screen, with keys (q, arrows, l, c, ?).

    python launch/status.py                  # q quits, arrows select, l follows the job's log, c cancels, ? help

Built on rich's ``Live`` (the views stay the pure renderables of ``launch.monitor.dashboard`` and
``launch.monitor.screen``) with the keys read here: the terminal in cbreak mode (no echo, no line buffering, Ctrl-C
still a signal), ``select`` on stdin with a short timeout, escape sequences decoded by :func:`decode_keys`. The
queue is asked in a background thread, so a slow controller never delays a key. Whatever ends the view (``q``,
Ctrl-C, SIGTERM, SIGHUP, an exception) leaves the alternate screen and restores the terminal's settings.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live

from launch.monitor.dashboard import scancel_ids
from launch.monitor.logs import LogFile, attempt_parts, read_lines, run_logs
from launch.monitor.queue import Collector, read_journal
from launch.monitor.rows import JobRow, Snapshot
from launch.monitor.screen import ScreenState, handle_key, render_screen, visible_rows
from launch.slurm.client import SlurmError, run_slurm

SEQUENCES = {"\x1b[A": "up", "\x1bOA": "up", "\x1b[B": "down", "\x1bOB": "down", "\x1b[H": "home", "\x1b[F": "end",
             "\x1b[1~": "home", "\x1b[4~": "end", "\x1b[5~": "home", "\x1b[6~": "end"}
SINGLE = {"\r": "enter", "\n": "enter", "\t": "tab", "\x1b": "esc", "\x03": "ctrl-c"}
POLL_S = 0.2  # how often keys and the terminal's size are looked at
LOG_POLL_S = 0.5  # how often a followed log is read again


def decode_keys(data: str) -> list[str]:
    """Raw terminal input -> key names (``up``, ``down``, ``enter``, ``esc``, ``tab``, or the character)."""
    keys, i = [], 0
    while i < len(data):
        if data[i] == "\x1b" and i + 1 < len(data) and data[i + 1] in "[O":
            j = i + 2
            while j < len(data) and not ("@" <= data[j] <= "~"):
                j += 1
            keys.append(SEQUENCES.get(data[i:j + 1], "unknown"))
            i = j + 1
        else:
            keys.append(SINGLE.get(data[i], data[i]))
            i += 1
    return keys


def read_keys(fd: int, timeout: float) -> list[str]:
    """The keys typed within ``timeout`` seconds ([] when none)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return []
    data = os.read(fd, 1024)
    if not data:  # the terminal is gone
        return ["q"]
    return decode_keys(data.decode("utf-8", "replace"))


def _leave(signum, frame):
    raise SystemExit(128 + signum)


@contextmanager
def keyboard(fd: int) -> Iterator[None]:
    """Cbreak mode on ``fd`` for the duration; its settings are restored however the block ends (SIGTERM and
    SIGHUP become SystemExit so that they end it too)."""
    saved = termios.tcgetattr(fd)
    handlers = {sig: signal.signal(sig, _leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class Refresher:
    """``collector.refresh()`` in a background thread: ``start()`` when none is running, ``take()`` the result."""

    def __init__(self, collector: Collector):
        self.collector = collector
        self._result: Snapshot | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self._result = self.collector.refresh()

    def take(self) -> Snapshot | None:
        result, self._result = self._result, None
        return result


def log_files(row: JobRow, jobs: list[dict]) -> list[LogFile]:
    """The selected row's log files: what the journal names for it, else every log of its run directory."""
    files = [LogFile(row.job_id, stream, path) for stream, path in (("stdout", row.stdout), ("stderr", row.stderr))
             if path]
    return files or (run_logs(row.run_dir, jobs) if row.run_dir else [])


def read_log(state: ScreenState, rows: list[JobRow], jobs: list[dict]) -> ScreenState:
    """Fill ``state`` with the current log file's title and tail (the selected job's, ``log_index`` of them)."""
    row = next((r for r in rows if r.job_id == state.selected), None)
    files = log_files(row, jobs) if row is not None else []
    if not files:
        state.log_title = f"job {state.selected}: no log known (not in the journal, or never started)"
        state.log_lines = []
        return state
    log = files[state.log_index % len(files)]
    if not os.path.exists(log.path):
        state.log_title, state.log_lines = log.title, ["(no such file yet: the job has not started)"]
        return state
    parts = attempt_parts(read_lines(log.path, 1 << 18))
    numbered = len([n for n, _ in parts if n is not None]) > 1
    state.log_lines = []
    for number, part in parts:
        if numbered and number is not None:
            state.log_lines.append(f"--- attempt {number} ---")
        state.log_lines.extend(part)
    which = f"  [file {state.log_index % len(files) + 1} of {len(files)}]" if len(files) > 1 else ""
    state.log_title = f"{log.title}{which}"
    return state


def cancel_row(collector: Collector, row: JobRow | None, every: list[JobRow]) -> str:
    """scancel the row's job (one call); the message for the footer."""
    if row is None:
        return "nothing selected"
    if row.source == "local":
        return f"{row.job_id} runs here, not on Slurm: python launch/status.py --cancel {row.job_id}"
    try:
        run_slurm(["scancel", *scancel_ids([row], every)], env=collector.environ())
    except SlurmError as exc:
        return f"scancel failed: {exc}"
    collector.forget_shared()
    return f"cancelled {row.job_id}"


def run_live(collector: Collector, interval: float, console: Console,
             select_rows: Callable[[Snapshot], tuple[Snapshot, int]]) -> int:
    """The live view until ``q`` or Ctrl-C; ``select_rows`` applies the command line's filters to each snapshot."""
    fd = sys.stdin.fileno()
    refresher = Refresher(collector)
    state = ScreenState()
    snapshot, hidden = select_rows(collector.refresh())
    next_refresh = time.monotonic() + interval
    next_log = 0.0
    try:
        with keyboard(fd), Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                                redirect_stderr=False) as view:
            drawn_size, dirty = None, True
            while True:
                rows = visible_rows(snapshot)
                if state.selected not in {row.job_id for row in rows}:
                    state.selected = rows[0].job_id if rows else None
                now = time.monotonic()
                if state.mode == "log" and now >= next_log:
                    state, next_log, dirty = read_log(state, rows, read_journal(collector.journal_dir)[0]), \
                        now + LOG_POLL_S, True
                if dirty or console.size != drawn_size:
                    drawn_size = console.size
                    view.update(render_screen(snapshot, state, now=time.time(), width=drawn_size.width,
                                              height=drawn_size.height, interval=interval, hidden=hidden),
                                refresh=True)
                    dirty = False
                for key in read_keys(fd, POLL_S):
                    state, action = handle_key(state, key, rows)
                    dirty = True
                    if action == "quit":
                        return 0
                    if action == "log":
                        next_log = 0.0
                    if action == "cancel":
                        state.message = cancel_row(collector, next((r for r in rows if r.job_id == state.selected),
                                                                   None), snapshot.rows)
                        next_refresh = time.monotonic()
                if time.monotonic() >= next_refresh:
                    refresher.start()
                    next_refresh = time.monotonic() + interval
                fresh = refresher.take()
                if fresh is not None:
                    snapshot, hidden = select_rows(fresh)
                    dirty = True
    except KeyboardInterrupt:
        return 0
