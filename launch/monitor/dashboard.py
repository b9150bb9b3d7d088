"""The dashboard's views, pure: rows of the job queue (``launch.monitor.queue``) in, rich renderables out.

    python launch/status.py --once        # what these render, once (``launch.cli.status`` runs the live view)

Each function takes the collector's :class:`~launch.monitor.queue.Snapshot` or rows and a width and returns a
``rich`` renderable; tests render them on a fixed-width console with colours off.
"""

from __future__ import annotations

import dataclasses
import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from launch.monitor.rows import JobRow, Snapshot, SweepSummary, fmt_values
from launch.slurm.output import ACTIVE_STATES, FAILED_STATES
from memorymodels.attempts import SHORT
from memorymodels.startup import describe as describe_startup

MIN_INTERVAL = 2.0
DAY = 86400.0
STATE_STYLES = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "blue", "CANCELLED": "magenta",
                "INTERRUPTED": "yellow", "UNKNOWN": "dim", "REQUEUED": "yellow", "REQUEUE_HOLD": "yellow"}
# by priority: what a narrow console keeps (the first seven) and what it drops first (the last ones)
COLUMNS = ("job", "name", "state", "reason", "step", "loss", "eta", "time/limit", "node", "requeues", "tok/s",
           "ckpt age", "goodput")
FLEXIBLE = ("name", "reason")  # these share what the fixed columns leave of the width
MIN_FLEXIBLE = {"name": 20, "reason": 12}  # narrower than this, columns of lower priority make room
SMALL_FLEXIBLE = 8  # ... and when nothing is left to drop, name and reason shrink to this
DROP_ORDER = ("goodput", "ckpt age", "tok/s", "requeues", "node", "time/limit", "eta", "loss", "step")  # on narrow consoles
NUMERIC = ("requeues", "step", "loss", "tok/s", "ckpt age", "eta", "goodput")
COLUMN_HELP = {
    "job": "Slurm job id; array task ARRAY_TASK; queued tasks ARRAY_[a-b]",
    "name": "a sweep cell's values, or the run and the settings it differs in",
    "state": "Slurm's state (once Slurm forgot it: from run.json and the log)",
    "reason": "why it waits or how it ended, in words",
    "step": "training step reached / max_steps",
    "loss": "the latest training loss",
    "eta": "time left to max_steps (! past the time limit); pending: expected start",
    "time/limit": "time used / time limit of this attempt",
    "node": "the node(s) it runs on",
    "requeues": "restarts by Slurm (time limit, preemption, node failure)",
    "tok/s": "training tokens per second",
    "ckpt age": "age of the newest complete checkpoint (a restart resumes from it)",
    "goodput": "share of the run's allocated node time that went into training it kept (faults and restarts lose it)",
}


# ---------------------------------------------------------------- formatting (pure)


def fmt_duration(seconds: float | None) -> str:
    """``3725`` -> ``1:02:05``; days as ``2d03h``; None -> ``-``."""
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_age(seconds: float | None) -> str:
    """A short age: ``45s``, ``12m``, ``3h``, ``2d``."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def fmt_cell(cell: dict | None) -> str:
    """Sweep cell axis values, ``lr=0.001 dim=512``; the last part of a dotted key is enough."""
    return fmt_values(cell)


def fmt_clock(epoch: float, now: float) -> str:
    """A time of day (``14:05``), with the date when it is not within the next day (``12-03 14:05``)."""
    fmt = "%H:%M" if abs(epoch - now) < DAY else "%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(epoch))


def row_cells(row: JobRow, now: float | None = None) -> list[Text | str]:
    """The table cells of one row, in ``COLUMNS`` order (``now`` dates a pending job's start estimate)."""
    style = "red" if row.failed else STATE_STYLES.get(row.state, "")
    time_limit = f"{fmt_duration(row.elapsed_s)}/{fmt_duration(row.time_limit_s)}" if row.elapsed_s is not None \
        or row.time_limit_s is not None else "-"
    step = f"{row.step}/{row.max_steps if row.max_steps else '?'}" if row.step is not None else "-"
    loss = f"{row.loss:.3f}" if row.loss is not None else "-"
    eta = Text(fmt_duration(row.eta_s) if row.eta_s is not None else "-")
    if row.eta_past_limit:
        eta.append(" !", style="bold red")  # will not finish inside this allocation's time limit
    if row.state == "PENDING" and row.start_estimate:
        eta = Text(f"start {fmt_clock(row.start_estimate, row.start_estimate if now is None else now)}")
    node = (row.node or "-") + (f" (excluded {','.join(row.excluded_nodes)})" if row.excluded_nodes else "")
    goodput = f"{row.goodput:.0%}" if row.goodput is not None else "-"
    return [row.job_id, row.label or row.name, Text(row.state, style=style), row.reason_text, step, loss, eta,
            time_limit, node, str(row.restarts) if row.restarts else "-", fmt_rate(row.tokens_per_s),
            fmt_age(row.checkpoint_age_s), goodput]


# ---------------------------------------------------------------- rendering (pure)


def render(rows: list[JobRow], *, width: int | None = None, title: str | None = None, selected: str | None = None,
           now: float | None = None) -> Table:
    """The job table: one line per job or array task (or collapsed range, see ``fit_rows``).

    With ``width`` (a terminal's), ids, states and numbers are never cut: name and reason share what the other
    columns leave, cut with an ellipsis, and on a narrow console the columns of least priority are left out.
    Without ``width`` nothing is ever cut (what piped output gets). ``selected``: that job's row is highlighted.
    """
    cells = [row_cells(row, now) for row in rows]
    widths = {name: max([len(name)] + [len(str(c[i])) for c in cells]) for i, name in enumerate(COLUMNS)}
    shown, limits = list(COLUMNS), {name: None for name in COLUMNS}
    if width is not None:
        mins = dict(MIN_FLEXIBLE)

        def room() -> int:
            fixed = sum(widths[n] for n in shown if n not in FLEXIBLE) + 2 * (len(shown) - 1)
            return width - 1 - fixed - sum(min(widths[n], mins[n]) for n in shown if n in FLEXIBLE)  # 1: slack rich wants

        for name in DROP_ORDER:
            if room() >= 0:
                break
            shown.remove(name)
        if room() < 0:  # only job, name, state and reason are left: name and reason make do with less
            mins = {n: SMALL_FLEXIBLE for n in FLEXIBLE}
        spare = room() + sum(min(widths[n], mins[n]) for n in shown if n in FLEXIBLE)
        flexible = sorted((n for n in shown if n in FLEXIBLE), key=lambda n: widths[n])
        for i, name in enumerate(flexible):  # smallest first: what it leaves goes to the larger ones
            limits[name] = max(min(widths[name], mins[name]), min(widths[name], spare // (len(flexible) - i)))
            spare -= limits[name]
    table = Table(title=title, expand=False, pad_edge=False, box=None, header_style="bold")
    for name in shown:
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=limits[name], min_width=len(name),
                         justify="right" if name in NUMERIC else "left")
    index = [COLUMNS.index(name) for name in shown]
    for row, row_text in zip(rows, cells):
        table.add_row(*(row_text[i] for i in index), style="reverse" if row.job_id == selected else None)
    return table


def fit_rows(rows: list[JobRow], max_rows: int | None, *, collapse: bool = False,
             keep: str | None = None) -> tuple[list[JobRow], int]:
    """At most ``max_rows`` rows for the screen. Array tasks without progress (queued ones, or cancelled before
    they started) collapse into one range row per array, state and reason (``123_[5-9999]``) when the rows do not
    fit (or ``collapse``); if they still do not fit, finished rows are cut first, those that ended longest ago
    first, then queued rows from the bottom (the oldest submissions); running ones last. The row of job ``keep``
    (the selected one) stays. Returns (rows, number cut)."""
    if not collapse and (max_rows is None or len(rows) <= max_rows):
        return rows, 0
    out: list[JobRow | list[JobRow]] = []
    groups: dict[tuple, list[JobRow]] = {}
    for row in rows:
        base, _, task = row.job_id.partition("_")
        if row.step is None and row.log_tail is None and task.isdigit():  # nothing of its own to show
            key = (base, row.state, row.reason_text, row.submission)
            if key not in groups:
                groups[key] = []
                out.append(groups[key])  # the group's place: where its first task was
            groups[key].append(row)
        else:
            out.append(row)
    fitted = [_range_row(item) if isinstance(item, list) else item for item in out]
    if max_rows is None or len(fitted) <= max_rows:
        return fitted, 0
    room = max(0, max_rows - 1)  # one line says how many were cut
    order = sorted(range(len(fitted)), key=lambda i: _cut_rank(fitted[i], i, keep), reverse=True)
    kept = sorted(order[:room])
    return [fitted[i] for i in kept], len(fitted) - room


def _cut_rank(row: JobRow, position: int, keep: str | None) -> tuple:
    """Higher stays longer: the selected row, running jobs, queued ones (newer first), finished ones (the most
    recent ending first)."""
    if row.job_id == keep:
        return (3, 0.0)
    if row.state in ACTIVE_STATES:
        return (2 if row.state != "PENDING" else 1, -position)
    return (0, row.end or row.submitted or 0.0, -position)


def _range_row(members: list[JobRow]) -> JobRow:
    if len(members) == 1:
        return members[0]
    base = members[0].job_id.split("_")[0]
    tasks = sorted(int(row.job_id.split("_")[1]) for row in members)
    spans, start = [], tasks[0]
    for previous, task in zip(tasks, tasks[1:] + [None]):
        if task != previous + 1:
            spans.append(f"{start}-{previous}" if previous != start else str(start))
            start = task
    spans_text = ",".join(spans) if len(spans) <= 3 else f"{tasks[0]}-{tasks[-1]}"
    first = members[0]
    return dataclasses.replace(first, job_id=f"{base}_[{spans_text}]", name=f"({len(members)} tasks)",
                               label=f"({len(members)} tasks)", cell=None)


def state_counts(counts: dict[str, int]) -> str:
    """``{"RUNNING": 3, "PENDING": 10}`` -> ``10 pending, 3 running`` (most first)."""
    return ", ".join(f"{count} {state.lower()}" for state, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def count_states(rows: list[JobRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return counts


def render_sweep(summary: SweepSummary) -> Text:
    text = Text(f"sweep {summary.name}", style="bold", no_wrap=True, overflow="ellipsis")
    made = f", {len(summary.submissions)} submissions" if len(summary.submissions) > 1 else ""
    cells = f"{summary.total} cell{'s' if summary.total != 1 else ''}"
    text.append(f" ({summary.submission}{made}): {cells}: {state_counts(summary.counts)}")
    if summary.best_eval_loss is not None:
        text.append(f"; best eval loss {summary.best_eval_loss:.4f} ({summary.best_job_id}"
                    f"{' ' + fmt_cell(summary.best_cell) if summary.best_cell else ''})")
    return text


def render_failures(rows: list[JobRow], budget: int | None = None) -> list[Text]:
    """Recent failures with the last lines of their logs (the collector read the tails, newest first), in at most
    ``budget`` lines: later failures get fewer log lines, then none."""
    out: list[Text] = []
    failed = [row for row in rows if row.log_tail is not None]
    failed.sort(key=lambda row: row.end or 0.0, reverse=True)
    for i, row in enumerate(failed):
        left = None if budget is None else budget - len(out)
        if left is not None and left < 2:
            break
        head = Text(f"{row.state} {row.job_id} {row.name}", style="bold red", no_wrap=True, overflow="ellipsis")
        head.append(f"  exit {row.exit_code}" if row.exit_code else "")
        head.append(f"  {row.stderr or row.stdout}", style="dim")
        tail = row.log_tail or ["(log is empty)"]
        if left is not None:  # share what is left between this failure and the ones after it
            tail = tail[-max(1, (left - 1) // (len(failed) - i) - 1):]
        out.append(head)
        out.extend(Text("  " + line, style="dim", no_wrap=True, overflow="ellipsis") for line in tail)
    return out


def pick_sweeps(sweeps: list[SweepSummary], limit: int | None) -> tuple[list[SweepSummary], int]:
    """The sweep lines worth a line on a screen (``sweeps`` come newest first): sweeps with queued or running cells
    first, then the newest; shown in their order, the newest on top."""
    if limit is None or len(sweeps) <= limit:
        return sweeps, 0
    active = [i for i, sweep in enumerate(sweeps) if any(state in ACTIVE_STATES for state in sweep.counts)]
    order = active + [i for i in range(len(sweeps)) if i not in set(active)]
    keep = max(1, limit - 1)
    return [sweeps[i] for i in sorted(order[:keep])], len(sweeps) - keep


def header_lines(snapshot: Snapshot, now: float, hidden: int = 0) -> list[Text]:
    """What the rows are and how fresh: the counts, the stale banner with the true age of the answer shown (or that
    there never was one), accounting, warnings."""
    header = Text(f"jobs at {time.strftime('%H:%M:%S', time.localtime(now if snapshot.stale else snapshot.time))}: ",
                  style="bold")
    header.append(state_counts(count_states(snapshot.rows))
                  or "no jobs in the journal (run launch/submit.py, or use --all)")
    if hidden:
        header.append(f"  ({hidden} older hidden: --since, --all)", style="dim")
    lines = [header]
    if snapshot.stale:
        if snapshot.answered is not None:
            said = (f"states from its answer of {time.strftime('%H:%M:%S', time.localtime(snapshot.answered))} "
                    f"({fmt_age(now - snapshot.answered)} ago) and the run directories")
        else:
            said = "no answer received yet: states from the run directories alone"
        lines.append(Text(f"STALE: the controller did not answer ({snapshot.error}); {said}", style="bold red"))
    elif not snapshot.accounting:
        lines.append(Text("accounting unavailable: finished jobs inferred from run directories and logs",
                          style="yellow"))
    return lines


def render_view(snapshot: Snapshot, *, now: float, width: int | None = None, max_rows: int | None = None,
                collapse: bool = True, selected: str | None = None, hidden: int = 0) -> Group:
    """Everything the dashboard shows: header (with the stale mark), sweep lines, the table, recent failures.

    ``max_rows``: the lines there are; the sweep lines, the failures and the table then share them (see
    ``pick_sweeps``, ``render_failures``, ``fit_rows``). ``collapse``: queued array tasks as range rows even when
    everything fits (``--once``; ``--json`` gives every row). ``selected``: the highlighted job, kept on screen.
    ``hidden``: how many rows the filters left out (said in the header)."""
    parts: list = header_lines(snapshot, now, hidden)
    warnings = snapshot.warnings if max_rows is None or len(snapshot.warnings) <= 3 else \
        snapshot.warnings[:2] + [f"... {len(snapshot.warnings) - 2} more warnings (see --once)"]
    parts.extend(Text(warning, style="yellow") for warning in warnings)
    sweeps, hidden_sweeps = pick_sweeps(snapshot.sweeps, None if max_rows is None else max(2, max_rows // 5))
    parts.extend(render_sweep(summary) for summary in sweeps)
    if hidden_sweeps:
        parts.append(Text(f"... {hidden_sweeps} more sweeps (see --once)", style="dim"))
    failures = render_failures(snapshot.rows, None if max_rows is None else max_rows // 3)
    if max_rows is not None:
        max_rows = max(3, max_rows - len(parts) - len(failures) - 1)
    rows, cut = fit_rows(snapshot.rows, max_rows, collapse=collapse, keep=selected)
    parts.append(render(rows, width=width, selected=selected, now=now))
    if cut:
        parts.append(Text(f"... {cut} more rows (the oldest finished go first; --once shows all)", style="dim",
                          no_wrap=True, overflow="ellipsis"))
    parts.extend(failures)
    return Group(*parts)


def parse_since(text: str) -> float:
    """``--since``: ``90m``, ``36h``, ``3d``, ``2w`` (a bare number is hours) -> seconds; ValueError otherwise."""
    units = {"m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "h")
    value = float(number)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(text)
    return value * units[unit]


def state_matches(row: JobRow, states: set[str]) -> bool:
    """``--state``: Slurm state names (``RUNNING``, ``PENDING``, ``FAILED``...), or ``active``, ``failed`` (every
    failure: FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL...), ``ended``."""
    return row.state.lower() in states or ("active" in states and row.state in ACTIVE_STATES) or \
        ("failed" in states and row.state in FAILED_STATES) or ("ended" in states and row.state not in ACTIVE_STATES)


def select_rows(snapshot: Snapshot, *, now: float, since_s: float | None = DAY, job: str | None = None,
                sweep: str | None = None, states: set[str] | None = None) -> tuple[Snapshot, int]:
    """The rows the dashboard shows (pure): queued and running jobs, and those that ended within ``since_s``
    (None: all); ``job`` (a job, array or array task id), ``sweep`` (name or submission id), ``states``
    (lower-case, see :func:`state_matches`). Returns (the snapshot with those rows and their sweeps, how many rows
    the time window alone left out)."""
    def recent(row: JobRow) -> bool:
        if since_s is None or row.state in ACTIVE_STATES or (row.state == "UNKNOWN" and snapshot.stale):
            return True
        ended = row.end or (now - row.updated_age_s if row.updated_age_s is not None else None) or row.submitted
        return ended is None or ended >= now - since_s

    rows = [row for row in snapshot.rows
            if (job is None or job in (row.job_id, row.job_id.split("_")[0]))
            and (sweep is None or sweep in (row.sweep, row.submission))
            and (not states or state_matches(row, states))]
    shown = [row for row in rows if recent(row)]
    wanted = {row.submission for row in shown if row.sweep}
    sweeps = [summary for summary in snapshot.sweeps if wanted & set(summary.submissions or [summary.submission])]
    return dataclasses.replace(snapshot, rows=shown, sweeps=sweeps), len(rows) - len(shown)


def scancel_ids(chosen: list[JobRow], every: list[JobRow]) -> list[str]:
    """The ids to hand to one ``scancel``: an array whose every live task is chosen goes as its array id."""
    live_tasks: dict[str, int] = {}
    for row in every:
        if "_" in row.job_id and row.state in ACTIVE_STATES:
            base = row.job_id.split("_")[0]
            live_tasks[base] = live_tasks.get(base, 0) + 1
    chosen_tasks: dict[str, list[str]] = {}
    ids = []
    for row in chosen:
        if "_" in row.job_id:
            chosen_tasks.setdefault(row.job_id.split("_")[0], []).append(row.job_id)
        else:
            ids.append(row.job_id)
    for base, tasks in chosen_tasks.items():
        ids.extend([base] if len(tasks) == live_tasks.get(base) else tasks)
    return ids


def render_history(attempts: list[dict], now: float | None = None) -> Group:
    """``--history``: one line per attempt (``memorymodels.attempts.attempts``): job, node, start, end, how long,
    how it ended, the step reached and the exit code; below the table each attempt's startup where the trainer
    recorded one (``memorymodels.startup``) and a failed attempt's last log lines."""
    if not attempts:
        return Group(Text("(no attempt has started yet)"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("attempt", "job", "node", "start", "end", "ran", "how it ended", "step", "exit"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("attempt", "step", "exit") else "left")
    tails, startup_lines = [], []
    for number, attempt in enumerate(attempts, 1):
        start, end = attempt.get("start"), attempt.get("end")
        ran = (end or (now if attempt["outcome"] == "running" and now else None) or 0) - start if start else None
        clock = lambda t: time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else "-"  # noqa: E731
        table.add_row(str(number), str(attempt.get("job_id") or "-"), str(attempt.get("host") or "-"), clock(start),
                      clock(end), fmt_duration(ran) if ran and ran > 0 else "-",
                      SHORT.get(attempt["outcome"], str(attempt["outcome"])),
                      "-" if attempt.get("step") is None else str(attempt["step"]),
                      "-" if attempt.get("exit_code") is None else str(attempt["exit_code"]))
        startup = attempt.get("startup")
        if startup:
            startup_lines.append(Text(f"attempt {number} startup: {describe_startup(startup)}"))
        if attempt["outcome"] in ("failed", "refused") and attempt.get("log_tail"):
            tails.append(Text(f"attempt {number}, last lines of its log:", style="bold red"))
            tails.extend(Text("    " + line) for line in str(attempt["log_tail"]).splitlines())
    return Group(table, *startup_lines, *tails)
