"""The job dashboard: the jobs in the submission journal (or all of yours), live in the terminal.

    python launch/status.py                  # live view: q quits, arrows select, l follows a log, c cancels, ? help
    python launch/status.py --interval 10    # refresh less often (never more often than every 2 s)
    python launch/status.py --once           # print the table once and exit (never cut when piped: | grep works)
    python launch/status.py --json           # the rows as JSON (job_id, state, step, loss, ...)
    python launch/status.py --since 3d       # finished jobs of the last 3 days too (default: the last 24 hours)
    python launch/status.py --all            # every job of yours, of any age, journal or not
    python launch/status.py --job 123 --sweep lr-sweep --state failed   # filters (any of them)
    python launch/status.py --logs 123_4 [-f]   # a job's stdout and stderr, each attempt labelled; -f follows
    python launch/status.py --logs RUN_DIR   # the logs of every job that ran in a run directory
    python launch/status.py --history 123    # each attempt: start, end, node, how it ended, steps, startup
    python launch/status.py --cancel 123_4   # cancel a job, an array, or a whole sweep (submission id or sweep name)

Rows: queued and running jobs, and those that ended within ``--since``, newest submissions first. Each refresh
makes one ``squeue`` call and at most one ``sacct`` call for all jobs together (``launch.monitor.queue``); the views
are ``launch.monitor.dashboard`` and ``launch.monitor.screen``, the live loop ``launch.monitor.live``.
``MEMORYMODELS_SACCT=off`` never calls ``sacct``: finished jobs are then read from their run directories and logs.
``--once`` and ``--json`` exit with 1 when the controller did not answer (the rows then come from the last answer
received, whose time the header gives, and the run directories).
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

from launch.cli.args import Parser
from launch.cli.output import exit_quietly_on_a_closed_pipe, print_table, print_uncut
from launch.monitor.dashboard import MIN_INTERVAL, parse_since, render, render_history, render_view, scancel_ids, \
    select_rows
from launch.monitor.live import run_live
from launch.monitor.logs import follow, journal_logs, labelled_tail, run_logs
from launch.monitor.queue import Collector, default_shared_cache, read_journal
from launch.monitor.history import settled_attempts
from launch.slurm.client import SlurmError, run_slurm, slurm_environ
from launch.slurm.output import ACTIVE_STATES
from memorymodels.configuration import one_line

def fail(message: str) -> None:
    """An error of the dashboard's commands: one line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr)


def find_jobs(collector: Collector, target: str) -> list[dict]:
    """Journal jobs matching a job id, an array id, a run directory, a submission id, a sweep name or a run name."""
    jobs, _ = read_journal(collector.journal_dir)
    real = os.path.realpath(target) if os.path.isdir(target) else None
    for matches in (
        lambda j: j["job_id"] == target,
        lambda j: j["job_id"].split("_")[0] == target,
        lambda j: real is not None and bool(j["run_dir"]) and os.path.realpath(j["run_dir"]) == real,
        lambda j: target in (j["submission"], j["sweep"]),
        lambda j: j["name"] == target,
    ):
        found = [job for job in jobs if matches(job)]
        if found:
            return found
    return []


def show_logs(collector: Collector, target: str, lines: int, follow_them: bool) -> int:
    """``--logs``: the files of a job (or of every job of a run directory), each titled with its job, stream and
    full path, attempts marked; ``-f`` then follows them."""
    jobs = find_jobs(collector, target)
    if os.path.isdir(target):
        logs = run_logs(target, read_journal(collector.journal_dir)[0])
    elif len({job["run_dir"] for job in jobs}) == 1 and len(jobs) > 1:  # an array id or a sweep of one cell
        logs = journal_logs(jobs)
    else:
        logs = journal_logs(jobs[:1])
    if not logs and not jobs:  # not in the journal: ask Slurm where its logs are
        try:
            text = run_slurm(["scontrol", "show", "job", target], env=collector.environ())
        except SlurmError as exc:
            fail(f"--logs {target}: not in the journal ({collector.journal_dir}) and {exc}")
            return 1
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        logs = journal_logs([{"job_id": target, "stdout": fields.get("StdOut"), "stderr": fields.get("StdErr")}])
    if not logs:
        fail(f"--logs {target}: the journal names no log file for it; its run directory: "
             f"{jobs[0]['run_dir'] if jobs else 'unknown'}")
        return 1
    for log in logs:
        for line in labelled_tail(log, lines):
            print(line)
    if follow_them:
        print(f"==> following {len(logs)} file(s); Ctrl-C stops <==", flush=True)
        try:
            follow(logs, lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            pass
    return 0


def show_history(collector: Collector, target: str, console: Console) -> int:
    """How each attempt of the job(s) matching ``target`` went (``RUN_DIR/launch/events.jsonl``)."""
    jobs = find_jobs(collector, target)
    if not jobs:
        fail(f"--history {target}: no job of the journal ({collector.journal_dir}) matches (job id, array "
             "id, run directory, run name, submission id or sweep name)")
        return 1
    for run_dir in dict.fromkeys(job["run_dir"] for job in jobs):
        ids = ", ".join(job["job_id"] for job in jobs if job["run_dir"] == run_dir)
        env = slurm_environ(next((j.get("slurm_conf") for j in jobs if j["run_dir"] == run_dir), None))
        console.print(f"job {ids}  {run_dir}", style="bold", markup=False, highlight=False)
        print_table(render_history(settled_attempts(run_dir, env) if run_dir else []))
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
    parser.add_argument("--all", action="store_true",
                        help="every job of yours: of any age, and outside the journal too")
    parser.add_argument("--since", metavar="AGE", help="finished jobs of this long ago too: 90m, 36h, 3d, 2w "
                        "(default 24h)")
    parser.add_argument("--job", metavar="ID", help="only this job (a job id, an array id, or an array task)")
    parser.add_argument("--sweep", metavar="NAME|ID", help="only this sweep (its name or submission id)")
    parser.add_argument("--state", metavar="STATE", help="only these states, comma-separated: RUNNING, PENDING, "
                        "FAILED, ... or active, failed (every failure), ended")
    parser.add_argument("--logs", metavar="JOB", help="a job's stdout and stderr (job id, run name or run directory)")
    parser.add_argument("-f", "--follow", action="store_true", help="with --logs: follow the files as they grow")
    parser.add_argument("--history", metavar="JOB", help="each attempt of a job: start, end, node, how it ended, steps")
    parser.add_argument("--lines", type=int, default=40, help="lines of log for --logs (default 40)")
    parser.add_argument("--cancel", metavar="JOB|SWEEP", help="cancel a job, an array or a sweep (asks first)")
    parser.add_argument("--yes", action="store_true", help="with --cancel: do not ask")
    args = parser.parse_args(argv)
    if args.interval < MIN_INTERVAL:
        parser.error(f"--interval {args.interval:g}: at most one refresh every {MIN_INTERVAL:g} s "
                     f"(each one queries the Slurm controller); use --interval {MIN_INTERVAL:g} or more")
    if args.follow and not args.logs:
        parser.error("-f/--follow follows the logs of --logs JOB; add --logs JOB")
    try:
        args.since_s = parse_since(args.since) if args.since else None if args.all else parse_since("24h")
    except ValueError:
        parser.error(f"--since {args.since}: give an age such as 90m, 36h, 3d or 2w")
    args.states = {part.strip().lower() for part in args.state.split(",") if part.strip()} if args.state else None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    exit_quietly_on_a_closed_pipe()
    console = Console()
    # several dashboards and pollers of one user share squeue's answer for MIN_INTERVAL seconds (.state/cache/queue)
    sacct_since = f"now-{int(args.since_s or 7 * 86400)}seconds"
    collector = Collector(all_jobs=args.all, shared_cache=default_shared_cache(), min_interval=MIN_INTERVAL,
                          since=sacct_since)
    if args.logs:
        return show_logs(collector, args.logs, args.lines, args.follow)
    if args.history:
        return show_history(collector, args.history, console)
    if args.cancel:
        return cancel(collector, args.cancel, args.yes, console)

    def select(snapshot):
        return select_rows(snapshot, now=time.time(), since_s=args.since_s, job=args.job, sweep=args.sweep,
                           states=args.states)

    if args.json or args.once or not (sys.stdout.isatty() and sys.stdin.isatty()):
        full = collector.refresh()
        snapshot, hidden = select(full)
        if args.json:
            print(json.dumps([dataclasses.asdict(row) for row in snapshot.rows], indent=1))
        elif sys.stdout.isatty():
            console.print(render_view(snapshot, now=time.time(), width=console.width, hidden=hidden))
        else:
            print_uncut(render_view(snapshot, now=time.time(), hidden=hidden))
        if full.stale:
            print(f"status: stale data: {full.error}", file=sys.stderr)
        return 1 if full.stale else 0
    return run_live(collector, args.interval, console, select)
