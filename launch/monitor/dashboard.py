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

from launch.monitor.queue import JobRow, Snapshot, SweepSummary
from launch.slurm.output import ACTIVE_STATES

MIN_INTERVAL = 2.0
# when rows must be cut from the screen, these states stay longest (failures rank 1, anything else 3)
CUT_ORDER = {"RUNNING": 0, "COMPLETING": 0, "PENDING": 2, "REQUEUED": 2, "COMPLETED": 4, "CANCELLED": 4}
STATE_STYLES = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "blue", "CANCELLED": "magenta",
                "INTERRUPTED": "yellow", "UNKNOWN": "dim", "REQUEUED": "yellow", "REQUEUE_HOLD": "yellow"}
COLUMNS = ("job", "name", "cell", "state", "reason", "time/limit", "node", "rst", "step", "loss", "tok/s", "ckpt",
           "eta")
FLEXIBLE = ("name", "cell", "reason")  # these share what the fixed columns leave of the width
MIN_FLEXIBLE = 8
DROP_ORDER = ("node", "ckpt", "tok/s", "rst", "name", "time/limit", "cell", "reason", "loss")  # on narrow consoles
NUMERIC = ("rst", "step", "loss", "tok/s", "ckpt", "eta")


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
    if not cell:
        return ""
    return " ".join(f"{str(key).rsplit('.', 1)[-1]}={value}" for key, value in cell.items())


def row_cells(row: JobRow) -> list[Text | str]:
    """The table cells of one row, in ``COLUMNS`` order."""
    style = "red" if row.failed else STATE_STYLES.get(row.state, "")
    time_limit = f"{fmt_duration(row.elapsed_s)}/{fmt_duration(row.time_limit_s)}" if row.elapsed_s is not None \
        or row.time_limit_s is not None else "-"
    step = f"{row.step}/{row.max_steps if row.max_steps else '?'}" if row.step is not None else "-"
    loss = f"{row.loss:.3f}" if row.loss is not None else "-"
    eta = Text(fmt_duration(row.eta_s) if row.eta_s is not None else "-")
    if row.eta_past_limit:
        eta.append(" !", style="bold red")  # will not finish inside this allocation's time limit
    return [row.job_id, row.name, fmt_cell(row.cell), Text(row.state, style=style), row.reason_text, time_limit,
            row.node or "-", str(row.restarts) if row.restarts else "-", step, loss, fmt_rate(row.tokens_per_s),
            fmt_age(row.checkpoint_age_s), eta]


# ---------------------------------------------------------------- rendering (pure)


def render(rows: list[JobRow], *, width: int | None = None, title: str | None = None) -> Table:
    """The job table: one line per job or array task (or collapsed range, see ``fit_rows``).

    With ``width`` (the console's), ids, states and numbers are never cut: name, cell and reason share what the
    fixed columns leave, cut with an ellipsis, and on a narrow console the least useful columns are left out.
    """
    cells = [row_cells(row) for row in rows]
    widths = {name: max([len(name)] + [len(str(c[i])) for c in cells]) for i, name in enumerate(COLUMNS)}
    shown, limits = list(COLUMNS), {name: None for name in COLUMNS}
    if width is not None:
        def room() -> int:
            fixed = sum(widths[n] for n in shown if n not in FLEXIBLE) + 2 * (len(shown) - 1)
            return width - fixed - sum(min(widths[n], MIN_FLEXIBLE) for n in shown if n in FLEXIBLE)

        for name in DROP_ORDER:
            if room() >= 0:
                break
            shown.remove(name)
        spare = room() + sum(min(widths[n], MIN_FLEXIBLE) for n in shown if n in FLEXIBLE)
        flexible = sorted((n for n in shown if n in FLEXIBLE), key=lambda n: widths[n])
        for i, name in enumerate(flexible):  # smallest first: what it leaves goes to the larger ones
            limits[name] = max(min(widths[name], MIN_FLEXIBLE), min(widths[name], spare // (len(flexible) - i)))
            spare -= limits[name]
    table = Table(title=title, expand=False, pad_edge=False, box=None, header_style="bold")
    for name in shown:
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=limits[name], min_width=len(name),
                         justify="right" if name in NUMERIC else "left")
    index = [COLUMNS.index(name) for name in shown]
    for row_text in cells:
        table.add_row(*(row_text[i] for i in index))
    return table


def fit_rows(rows: list[JobRow], max_rows: int | None, *, collapse: bool = False) -> tuple[list[JobRow], int]:
    """At most ``max_rows`` rows for the screen. Array tasks without progress (queued ones, or cancelled before
    they started) collapse into one range row per array, state and reason (``123_[5-9999]``) when the rows do not
    fit (or ``collapse``); if they still do not fit, running and failed jobs are kept first and finished ones cut.
    Returns (rows, number cut)."""
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
    keep = max(0, max_rows - 1)  # one line says how many were cut
    order = sorted(range(len(fitted)), key=lambda i: CUT_ORDER.get(fitted[i].state, 3 - fitted[i].failed * 2))
    kept = sorted(order[:keep])
    return [fitted[i] for i in kept], len(fitted) - keep


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
    return dataclasses.replace(first, job_id=f"{base}_[{spans_text}]", name=f"({len(members)} tasks)", cell=None)


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
    text.append(f" ({summary.submission}): {summary.total} cells: {state_counts(summary.counts)}")
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
    """The sweep lines worth a line on a screen: sweeps with queued or running cells first, then the newest."""
    if limit is None or len(sweeps) <= limit:
        return sweeps, 0
    active = [i for i, sweep in enumerate(sweeps) if any(state in ACTIVE_STATES for state in sweep.counts)]
    ended = [i for i in reversed(range(len(sweeps))) if i not in set(active)]
    order = active[::-1] + ended
    keep = max(1, limit - 1)
    return [sweeps[i] for i in sorted(order[:keep])], len(sweeps) - keep


def render_view(snapshot: Snapshot, *, now: float, width: int | None = None, max_rows: int | None = None,
                collapse: bool = True) -> Group:
    """Everything the live view shows: header (with the stale mark), sweep lines, the table, recent failures.

    ``max_rows``: the screen's height; the sweep lines, the failures and the table then share it (see
    ``pick_sweeps``, ``render_failures``, ``fit_rows``). ``collapse``: queued array tasks as range rows even when
    everything fits (``--once``; ``--json`` gives every row)."""
    header = Text(f"jobs at {time.strftime('%H:%M:%S', time.localtime(snapshot.time))}: ", style="bold")
    header.append(state_counts(count_states(snapshot.rows))
                  or "no jobs in the journal (run launch/submit.py, or use --all)")
    shared = " (shared answer)" if snapshot.calls.get("shared") else ""
    header.append(f"  [squeue {snapshot.calls.get('squeue', 0)}{shared}, sacct {snapshot.calls.get('sacct', 0)}]",
                  style="dim")
    parts: list = [header]
    if snapshot.stale:
        parts.append(Text(f"STALE: the controller did not answer ({snapshot.error}); showing data from "
                          f"{fmt_age(now - snapshot.time)} ago", style="bold red"))
    if not snapshot.accounting:
        parts.append(Text("accounting unavailable: finished jobs inferred from run directories and logs",
                          style="yellow"))
    warnings = snapshot.warnings if max_rows is None or len(snapshot.warnings) <= 3 else \
        snapshot.warnings[:2] + [f"... {len(snapshot.warnings) - 2} more warnings (see --once)"]
    parts.extend(Text(warning, style="yellow") for warning in warnings)
    sweeps, hidden = pick_sweeps(snapshot.sweeps, None if max_rows is None else max(2, max_rows // 5))
    parts.extend(render_sweep(summary) for summary in sweeps)
    if hidden:
        parts.append(Text(f"... {hidden} more sweeps (see --once)", style="dim"))
    failures = render_failures(snapshot.rows, None if max_rows is None else max_rows // 3)
    if max_rows is not None:
        max_rows = max(3, max_rows - len(parts) - len(failures) - 1)
    rows, cut = fit_rows(snapshot.rows, max_rows, collapse=collapse)
    parts.append(render(rows, width=width))
    if cut:
        parts.append(Text(f"... {cut} more rows (use a taller terminal, --json, or --once)", style="dim"))
    parts.extend(failures)
    return Group(*parts)








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








if __name__ == "__main__":
    sys.exit(main())
