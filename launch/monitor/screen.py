"""The live view's screens, pure: the job table with a selected row, a job's log, the help, and the key footer.

    python launch/status.py        # the live view (``launch.monitor.live`` runs it)

:func:`render_screen` takes the snapshot, the view's :class:`ScreenState` and the terminal's size and returns a
renderable of at most that many lines; :func:`handle_key` turns a key into the next state and an action for the
loop to carry out (quit, cancel, open or read a log). Tests drive both without a terminal.
"""

from __future__ import annotations

import dataclasses

from rich.console import Group
from rich.layout import Layout
from rich.table import Table
from rich.text import Text

from launch.monitor.dashboard import COLUMN_HELP, fit_rows, render_view
from launch.monitor.rows import JobRow, Snapshot
from launch.slurm.output import ACTIVE_STATES

KEYS = "q quit  ↑↓ select  l log  c cancel  ? help"
LOG_KEYS = "q/esc back  tab stdout/stderr  ↑↓ another job"


@dataclasses.dataclass
class ScreenState:
    """What the live view shows: ``mode`` table | log | help | confirm, the selected job, the log being followed
    (``log_index`` into the selected job's files, ``log_lines`` their tail), and a one-line ``message``."""

    mode: str = "table"
    selected: str | None = None
    log_index: int = 0
    log_title: str = ""
    log_lines: list[str] = dataclasses.field(default_factory=list)
    message: str = ""


def visible_rows(snapshot: Snapshot) -> list[JobRow]:
    """The rows the arrow keys move through, as the screen shows them (queued tasks as ranges); the selected one
    is always kept on the screen, so moving past the last row shown brings the next one in."""
    return fit_rows(snapshot.rows, None, collapse=True)[0]


def handle_key(state: ScreenState, key: str, rows: list[JobRow]) -> tuple[ScreenState, str | None]:
    """The next state after ``key`` and the action the loop must carry out: "quit", "cancel" (confirmed),
    "log" (read the selected job's log), or None."""
    state = dataclasses.replace(state, message="")
    ids = [row.job_id for row in rows]
    if state.mode == "help":
        return dataclasses.replace(state, mode="table"), None
    if state.mode == "confirm":
        if key in ("y", "Y"):
            return dataclasses.replace(state, mode="table"), "cancel"
        return dataclasses.replace(state, mode="table", message="nothing cancelled"), None
    if key in ("up", "down", "k", "j", "home", "end"):
        index = ids.index(state.selected) if state.selected in ids else -1
        step = -1 if key in ("up", "k") else 1
        index = 0 if key == "home" else len(ids) - 1 if key == "end" else max(0, min(len(ids) - 1, index + step))
        state.selected = ids[index] if ids else None
        return state, "log" if state.mode == "log" else None
    if state.mode == "log":
        if key in ("q", "esc", "l"):
            return dataclasses.replace(state, mode="table", log_lines=[]), None
        if key == "tab":
            return dataclasses.replace(state, log_index=state.log_index + 1), "log"
        return state, None
    if key in ("q", "ctrl-c"):
        return state, "quit"
    if key == "?":
        return dataclasses.replace(state, mode="help"), None
    if key in ("l", "enter", "c") and state.selected not in ids:
        return dataclasses.replace(state, message="select a job first (arrow keys)"), None
    if key in ("l", "enter"):
        return dataclasses.replace(state, mode="log", log_index=0), "log"
    if key == "c":
        row = rows[ids.index(state.selected)]
        if row.state not in ACTIVE_STATES:
            return dataclasses.replace(state, message=f"{row.job_id} is {row.state.lower()}: nothing to cancel"), None
        return dataclasses.replace(state, mode="confirm"), None
    return state, None


def footer(state: ScreenState, snapshot: Snapshot, rows: list[JobRow], interval: float) -> Text:
    """The one-line footer: the keys of this mode, then a message or the refresh time."""
    if state.mode == "confirm":
        row = next((r for r in rows if r.job_id == state.selected), None)
        name = f" ({row.label or row.name})" if row is not None and (row.label or row.name) else ""
        return Text(f"cancel {state.selected}{name}? y = yes, any other key = no", style="bold reverse")
    text = Text(LOG_KEYS if state.mode == "log" else "any key: back" if state.mode == "help" else KEYS,
                style="reverse")
    text.append("  ")
    text.append(state.message or f"every {interval:g}s", style="bold" if state.message else "dim")
    return text


HELP_KEYS = (("↑ ↓  k j", "select a job (the selected row always stays on the screen)"),
             ("l  enter", "its log, followed as it grows (tab: the other file)"),
             ("c", "cancel it (asks first)"), ("?", "this help"), ("q  ctrl-c", "quit"))


def render_help(width: int) -> Group:
    """The keys, then what each column means (plain text: no markup is read in them)."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(max_width=max(20, width - 13))
    for key, words in HELP_KEYS:
        table.add_row(Text(key), Text(words))
    table.add_row(Text(""), Text(""))
    for name, words in COLUMN_HELP.items():
        table.add_row(Text(name), Text(words))
    return Group(Text("keys, then the columns", style="bold underline"), table)


def render_log(state: ScreenState, height: int) -> Group:
    """The followed log: its title (job, stream, full path, attempt) and the lines that fit."""
    lines = state.log_lines[-max(1, height - 1):]
    return Group(Text(state.log_title, style="bold", no_wrap=True, overflow="ellipsis"),
                 *(Text(line, no_wrap=True, overflow="ellipsis") for line in lines))


def render_screen(snapshot: Snapshot, state: ScreenState, *, now: float, width: int, height: int,
                  interval: float, hidden: int = 0) -> Layout:
    """The whole screen: the table (or the log, or the help) in ``height - 1`` lines, the footer on the last."""
    body_height = max(1, height - 1)
    if state.mode == "log":
        body = render_log(state, body_height)
    elif state.mode == "help":
        body = render_help(width)
    else:
        body = render_view(snapshot, now=now, width=width, max_rows=body_height, selected=state.selected,
                           hidden=hidden)
    layout = Layout()
    layout.split_column(Layout(body, name="body"), Layout(footer(state, snapshot, visible_rows(snapshot), interval),
                                                          name="footer", size=1))
    return layout
