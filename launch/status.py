"""The job dashboard: the jobs in the submission journal (or all of yours), live in the terminal.

    python launch/status.py                  # live view of the journal's jobs, refreshed every 5 s
    python launch/status.py --interval 10    # refresh less often (never more often than every 2 s)
    python launch/status.py --once           # print the table once and exit
    python launch/status.py --json           # the rows as JSON (job_id, state, step, loss, ...)
    python launch/status.py --all            # every job of yours, not only the journal's
    python launch/status.py --logs 123_4     # the last lines of a job's logs (job id or run name)
    python launch/status.py --cancel 123_4   # cancel a job, an array, or a whole sweep (submission id or sweep name)

Each refresh makes one ``squeue`` call and at most one ``sacct`` call for all jobs together (``launch/jobqueue.py``).
``MEMORYMODELS_SACCT=off`` never calls ``sacct``: finished jobs are then read from their run directories and logs.
``--once`` and ``--json`` exit with 1 when the controller did not answer (the rows are then the last known).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python launch/status.py`: import the project from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from launch.cluster_info import SlurmError, run_slurm
from launch.jobqueue import Collector, JobRow, Snapshot, SweepSummary, read_journal, slurm_env, tail_lines
from launch.slurm_output import ACTIVE_STATES

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


# ---------------------------------------------------------------- commands


def find_jobs(collector: Collector, target: str) -> list[dict]:
    """Journal jobs matching a job id, an array id, a run name, a submission id or a sweep name."""
    jobs, _ = read_journal(collector.journal_dir)
    for matches in (
        lambda j: j["job_id"] == target,
        lambda j: j["job_id"].split("_")[0] == target,
        lambda j: target in (j["submission"], j["sweep"]),
        lambda j: j["name"] == target,
    ):
        found = [job for job in jobs if matches(job)]
        if found:
            return found
    return []


def show_logs(collector: Collector, target: str, lines: int, console: Console) -> int:
    jobs = find_jobs(collector, target)
    paths = []
    for job in jobs[:1]:
        paths = [p for p in dict.fromkeys([job["stdout"], job["stderr"]]) if p]
    if not paths:  # not in the journal: ask Slurm where its logs are
        try:
            text = run_slurm(["scontrol", "show", "job", target], env=slurm_env())
        except SlurmError as exc:
            console.print(f"--logs {target}: not in the journal ({collector.journal_dir}) and {exc}")
            return 1
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        paths = [p for p in dict.fromkeys([fields.get("StdOut"), fields.get("StdErr")]) if p]
    for path in paths:
        console.rule(str(path))
        if not os.path.exists(path):
            console.print(f"(no such file yet: {path}; the job may not have started)")
            continue
        for line in tail_lines(path, lines, 1 << 20):
            console.print(line, markup=False, highlight=False)
    return 0


def cancel(collector: Collector, target: str, yes: bool, console: Console) -> int:
    """Cancel the live jobs matching ``target`` after confirmation: one ``scancel`` for all of them."""
    snapshot = collector.refresh()
    if snapshot.stale:
        console.print(f"--cancel {target}: the controller did not answer ({snapshot.error}); nothing cancelled")
        return 1
    wanted = {job["job_id"] for job in find_jobs(collector, target)}
    rows = [row for row in snapshot.rows if row.state in ACTIVE_STATES and (
        row.job_id in wanted or row.job_id == target or row.job_id.split("_")[0] == target)]
    if not rows:
        console.print(f"--cancel {target}: no queued or running job matches (job id, array id, run name, "
                      f"submission id or sweep name); see python launch/status.py --once"
                      f"{'' if collector.all_jobs else ' (a job from outside the journal: add --all)'}")
        return 1
    console.print(render(rows, width=console.width, title=f"cancel {len(rows)} job(s)"))
    if not yes:
        if not sys.stdin.isatty():
            console.print("not a terminal: add --yes to cancel without asking")
            return 1
        if input(f"Cancel these {len(rows)} job(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("nothing cancelled")
            return 1
    slurm_ids = scancel_ids([row for row in rows if row.source != "local"], snapshot.rows)
    if slurm_ids:
        try:
            run_slurm(["scancel", *slurm_ids], env=slurm_env())
        except SlurmError as exc:
            console.print(f"scancel failed: {exc}")
            return 1
    for job in find_jobs(collector, target):
        if not job["slurm"] and isinstance(job.get("pid"), int):
            try:
                os.kill(job["pid"], signal.SIGTERM)  # the trainer checkpoints and exits
            except ProcessLookupError:
                pass
    collector.forget_shared()
    console.print(f"cancelled {len(rows)} job(s)")
    return 0


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (at least 2)")
    parser.add_argument("--once", action="store_true", help="print the table once and exit")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON and exit")
    parser.add_argument("--all", action="store_true", help="every job of this user, not only the journal's")
    parser.add_argument("--logs", metavar="JOB", help="print the last lines of a job's stdout/stderr")
    parser.add_argument("--lines", type=int, default=40, help="lines of log for --logs (default 40)")
    parser.add_argument("--cancel", metavar="JOB|SWEEP", help="cancel a job, an array or a sweep (asks first)")
    parser.add_argument("--yes", action="store_true", help="with --cancel: do not ask")
    args = parser.parse_args(argv)
    if args.interval < MIN_INTERVAL:
        parser.error(f"--interval {args.interval:g}: at most one refresh every {MIN_INTERVAL:g} s "
                     f"(each one queries the Slurm controller); use --interval {MIN_INTERVAL:g} or more")
    return args


def live(collector: Collector, interval: float, console: Console) -> int:
    from rich.live import Live

    snapshot = collector.refresh()
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as view:
        try:
            while True:
                view.update(render_view(snapshot, now=time.time(), width=console.width, max_rows=console.height - 2),
                            refresh=True)
                time.sleep(interval)
                snapshot = collector.refresh()
        except KeyboardInterrupt:
            return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console()
    from launch.journal import journal_dir

    # several dashboards of one user share squeue's answer for MIN_INTERVAL seconds (.state/cache/queue)
    collector = Collector(all_jobs=args.all, shared_cache=journal_dir().parent / "cache" / "queue",
                          min_interval=MIN_INTERVAL)
    if args.logs:
        return show_logs(collector, args.logs, args.lines, console)
    if args.cancel:
        return cancel(collector, args.cancel, args.yes, console)
    if args.json or args.once:
        snapshot = collector.refresh()
        if args.json:
            print(json.dumps([dataclasses.asdict(row) for row in snapshot.rows], indent=1))
        else:
            console.print(render_view(snapshot, now=time.time(), width=console.width))
        if snapshot.stale:
            print(f"status: stale data: {snapshot.error}", file=sys.stderr)
        return 1 if snapshot.stale else 0
    return live(collector, args.interval, console)


if __name__ == "__main__":
    sys.exit(main())
