"""The job dashboard: the jobs in the submission journal (or all of yours), live in the terminal.

    python launch/status.py                  # live view of the journal's jobs, refreshed every 5 s
    python launch/status.py --interval 10    # refresh less often (never more often than every 2 s)
    python launch/status.py --once           # print the table once and exit
    python launch/status.py --json           # the rows as JSON (job_id, state, step, loss, ...)
    python launch/status.py --all            # every job of yours, not only the journal's
    python launch/status.py --logs 123_4     # the last lines of a job's logs (job id or run name)
    python launch/status.py --history 123    # the attempts of a job: start, node, how each ended, steps reached
    python launch/status.py --cancel 123_4   # cancel a job, an array, or a whole sweep (submission id or sweep name)

Each refresh makes one ``squeue`` call and at most one ``sacct`` call for all jobs together (``launch.monitor.queue``);
the views are ``launch.monitor.dashboard``.
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

from rich.console import Console
from rich.live import Live

from launch.cli.args import Parser
from launch.monitor.dashboard import MIN_INTERVAL, render, render_view, scancel_ids
from launch.monitor.queue import Collector, read_journal
from launch.records.events import describe_attempts
from launch.records.journal import journal_dir
from launch.slurm.client import SlurmError, run_slurm
from launch.slurm.output import ACTIVE_STATES
from memorymodels.configuration import one_line
from memorymodels.fileio import tail_lines


def fail(message: str) -> None:
    """An error of the dashboard's commands: one line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr)


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
            text = run_slurm(["scontrol", "show", "job", target], env=collector.environ())
        except SlurmError as exc:
            fail(f"--logs {target}: not in the journal ({collector.journal_dir}) and {exc}")
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


def show_history(collector: Collector, target: str, console: Console) -> int:
    """How each attempt of the job(s) matching ``target`` ended (``RUN_DIR/launch/events.jsonl``)."""
    jobs = find_jobs(collector, target)
    if not jobs:
        fail(f"--history {target}: no job of the journal ({collector.journal_dir}) matches (job id, array "
                      "id, run name, submission id or sweep name)")
        return 1
    for job in jobs:
        console.rule(f"job {job['job_id']}  {job['run_dir']}")
        console.print(describe_attempts(job["run_dir"]) or "(no attempt has started yet)", markup=False,
                      highlight=False)
    return 0


def cancel(collector: Collector, target: str, yes: bool, console: Console) -> int:
    """Cancel the live jobs matching ``target`` after confirmation: one ``scancel`` for all of them."""
    snapshot = collector.refresh()
    if snapshot.stale:
        fail(f"--cancel {target}: the controller did not answer ({snapshot.error}); nothing cancelled")
        return 1
    wanted = {job["job_id"] for job in find_jobs(collector, target)}
    rows = [row for row in snapshot.rows if row.state in ACTIVE_STATES and (
        row.job_id in wanted or row.job_id == target or row.job_id.split("_")[0] == target)]
    if not rows:
        fail(f"--cancel {target}: no queued or running job matches (job id, array id, run name, "
                      f"submission id or sweep name); see python launch/status.py --once"
                      f"{'' if collector.all_jobs else ' (a job from outside the journal: add --all)'}")
        return 1
    console.print(render(rows, width=console.width, title=f"cancel {len(rows)} job(s)"))
    if not yes:
        if not sys.stdin.isatty():
            fail("not a terminal: add --yes to cancel without asking")
            return 1
        if input(f"Cancel these {len(rows)} job(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("nothing cancelled")
            return 1
    slurm_ids = scancel_ids([row for row in rows if row.source != "local"], snapshot.rows)
    if slurm_ids:
        try:
            run_slurm(["scancel", *slurm_ids], env=collector.environ())
        except SlurmError as exc:
            fail(f"scancel failed: {exc}")
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = Parser(prog="python launch/status.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (at least 2)")
    parser.add_argument("--once", action="store_true", help="print the table once and exit")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON and exit")
    parser.add_argument("--all", action="store_true", help="every job of this user, not only the journal's")
    parser.add_argument("--logs", metavar="JOB", help="print the last lines of a job's stdout/stderr")
    parser.add_argument("--history", metavar="JOB", help="how each attempt of a job ended (start, node, steps)")
    parser.add_argument("--lines", type=int, default=40, help="lines of log for --logs (default 40)")
    parser.add_argument("--cancel", metavar="JOB|SWEEP", help="cancel a job, an array or a sweep (asks first)")
    parser.add_argument("--yes", action="store_true", help="with --cancel: do not ask")
    args = parser.parse_args(argv)
    if args.interval < MIN_INTERVAL:
        parser.error(f"--interval {args.interval:g}: at most one refresh every {MIN_INTERVAL:g} s "
                     f"(each one queries the Slurm controller); use --interval {MIN_INTERVAL:g} or more")
    return args


def live(collector: Collector, interval: float, console: Console) -> int:
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
    # several dashboards of one user share squeue's answer for MIN_INTERVAL seconds (.state/cache/queue)
    collector = Collector(all_jobs=args.all, shared_cache=journal_dir().parent / "cache" / "queue",
                          min_interval=MIN_INTERVAL)
    if args.logs:
        return show_logs(collector, args.logs, args.lines, console)
    if args.history:
        return show_history(collector, args.history, console)
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
