"""``python launch/submit.py --sweep FILE``: plan, check and submit a sweep, or run it here, and follow it.

    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml --dry-run [--json]
    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml [--wait]
    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml --profile local-slurm

Planning is ``launch.planning.sweep``, submission ``launch.submission.sweep``. With an ``executor: local`` profile
the cells run here one after the other, each followed in the foreground.
"""

from __future__ import annotations

import json
import sys

from launch.monitor.follow import follow_local, follow_sweep
from launch.planning.plan import split_overrides
from launch.planning.profiles import list_profiles, load_profile
from launch.planning.sweep import SweepPlan, describe, plan_arrays, plan_sweep
from launch.planning.sweep_file import expand_cells, load_sweep
from launch.slurm.client import SlurmError, explain
from launch.submission.preflight import SubmitError, preflight
from launch.submission.submit import submit_job
from launch.submission.sweep import active_cells, representatives, submit_sweep, sweep_record
from memorymodels.configuration import ConfigError, count, one_line


def plan_from_args(args, log=None) -> SweepPlan:
    """The sweep plan the command line asks for; a sweep of more cells than the profile's ``ask_above_cells`` says
    so first and, unless a dry run or ``--yes``, is planned only once the user says yes."""
    sweep = load_sweep(args.sweep)
    if getattr(args, "experiment", None):
        raise ConfigError(f"--experiment {args.experiment}: a sweep names its experiment ({sweep.source}: "
                          f"'experiment: {sweep.experiment}'); drop --experiment")
    name = getattr(args, "profile", None) or sweep.profile
    if not name:
        raise ConfigError(f"{sweep.source}: no profile; pass --profile or set 'profile:' in the file "
                          f"(profiles: {', '.join(list_profiles())})")
    profile_items, experiment_items = split_overrides(getattr(args, "overrides", None) or [])
    profile = load_profile(name, profile_items)
    confirm_size(sweep, profile, args, log or sys.stderr)
    return plan_sweep(sweep, profile, overrides=experiment_items, launcher=getattr(args, "launcher", None),
                      nodes=getattr(args, "nodes", None), dependency=getattr(args, "dependency", None),
                      request=getattr(args, "request", None), snapshot=not getattr(args, "no_snapshot", False))


def confirm_size(sweep, profile, args, log) -> None:
    """Above the profile's ``ask_above_cells``: say how many cells and arrays, then ask (a dry run only says)."""
    cells = len(expand_cells(sweep))
    if cells <= profile.ask_above_cells:
        return
    arrays = -(-cells // profile.max_array_size)
    size = (f"sweep {sweep.source}: {cells:,} cells in {count(arrays, 'array')} of at most "
            f"{profile.max_array_size:,} ({profile.array_parallelism} at once), more than the profile's "
            f"ask_above_cells: {profile.ask_above_cells:,} ({profile.source})")
    if getattr(args, "dry_run", False) or getattr(args, "yes", False):
        print(f"{size}; planning them (this takes a while)", file=log, flush=True)
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{size}; nothing was submitted: pass --yes to submit them, or raise ask_above_cells")
    if input(f"{size}. Plan and submit them? [y/N] ").strip().lower() not in ("y", "yes"):
        raise ConfigError(f"{sweep.source}: not confirmed; nothing was submitted")


def dry_run(plan: SweepPlan, args, out) -> int:
    """The checks a submission makes (cells already queued, the preflight on the planned arrays); the plan, then
    the problems found (exit 2)."""
    note = "data and checkpoint root checked; no cluster (executor: local)"
    checked = None
    todo = list(plan.pending)
    if plan.profile.executor == "slurm" and todo and not getattr(args, "no_preflight", False):
        try:
            busy = active_cells(plan)
        except SlurmError as exc:
            busy, note = {}, f"the cluster checks were not run: {exc}"
        todo = [i for i in todo if i not in busy]
    if todo and not getattr(args, "no_preflight", False):
        arrays = plan_arrays(plan, todo, "dry-run")
        checked = preflight(representatives(plan, todo), array_size=max(len(a.cells) for a in arrays),
                            scripts=[arrays[0].script] if plan.profile.executor == "slurm" else (), dry_run=True,
                            new_code=getattr(args, "new_code", False))
        if plan.profile.executor == "slurm":
            note = checked.skipped or "data, checkpoint root and cluster checked"
    if getattr(args, "json", False):
        print(json.dumps({**plan.dry_run_json(), "cluster_checks": note}, indent=1), file=out)
    else:
        print(describe(plan), file=out)
        print(f"\n# checks: {note}", file=out)
    if checked is not None:
        out.flush()  # the plan, then the problems
        checked.raise_problems()
    return 0


def run_here(plan: SweepPlan, log, new_code: bool = False) -> dict:
    """An ``executor: local`` profile: run the pending cells on this machine one after the other, following each."""
    arrays, failed, sweep_id = [], [], None
    todo = list(plan.pending)
    if not todo:
        print(f"sweep {plan.sweep.name}: nothing to do: all {len(plan.cells)} cells complete. Report: python "
              f"launch/sweep_report.py {plan.sweep.source}", file=log)
        return {"sweep_id": None, "arrays": [], "failed": []}
    if plan.complete:
        print(f"sweep {plan.sweep.name}: {len(plan.complete)} of {len(plan.cells)} cells complete, not run again",
              file=log)
    preflight(representatives(plan, todo), new_code=new_code).raise_problems()
    for n, i in enumerate(todo, 1):
        print(f"sweep {plan.sweep.name}: cell {i} ({n} of {len(todo)}): {plan.cells[i].run_dir}", file=log)
        submission = submit_job(plan.jobs[i], kind="sweep", sweep=sweep_record(plan), cell=plan.cells[i].overrides,
                                new_code=new_code)
        entry = submission.jobs[0]
        sweep_id = submission.submission_id
        arrays.append({"job_id": entry["job_id"], "cells": [i]})
        if follow_local(submission.handles[entry["job_id"]], entry, out=log) != 0:
            failed.append(i)
    print(f"sweep {plan.sweep.name}: {len(todo) - len(failed)} cell(s) completed"
          + (f", failed: {', '.join(map(str, failed))}" if failed else "")
          + f". Report: python launch/sweep_report.py {plan.sweep.source}", file=log)
    return {"sweep_id": sweep_id, "arrays": arrays, "failed": failed}


def run_sweep_command(args) -> int:
    """``python launch/submit.py --sweep FILE [--profile P] [--set K=V] [--dry-run] [--json] [--wait]``; returns the
    exit code (1 when a followed cell did not complete, 2 for a problem found before anything ran)."""
    out = sys.stdout
    log = sys.stderr if getattr(args, "json", False) else out
    try:
        plan = plan_from_args(args)
        if args.dry_run:
            return dry_run(plan, args, out)
        if plan.profile.executor == "local":
            result = run_here(plan, log, new_code=getattr(args, "new_code", False))
        else:
            result = submit_sweep(plan, run_preflight=not getattr(args, "no_preflight", False), log=log,
                                  new_code=getattr(args, "new_code", False))
        if getattr(args, "json", False):
            print(json.dumps({k: v for k, v in result.items() if k != "failed"}, indent=1), file=out, flush=True)
        failed = result.get("failed", [])
        if getattr(args, "wait", False) and plan.profile.executor == "slurm" and result["arrays"]:
            failed = follow_sweep(plan, log=log)
    except (ConfigError, SubmitError, SlurmError) as exc:
        message = one_line(exc) if isinstance(exc, ConfigError) else explain(exc) if isinstance(exc, SlurmError) else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 1 if failed else 0
