"""Ablation sweeps: planned, submitted as Slurm job arrays, resumable, followed.

    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml --dry-run --json
    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml [--wait]
    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml --profile local-slurm

The sweep file (its keys, how cells are expanded and named) is ``launch/sweep_file.py``. Here a sweep is planned
(:func:`plan_sweep`: every cell's job and validated experiment, reading files only), submitted (:func:`submit_sweep`)
and followed (``--wait``). Each cell runs in its own directory ``<checkpoint root>/<sweep name>/<cell name>``. A
submission sends only the cells whose run is not complete (``run.json`` status ``completed``) and not queued from an
earlier submission, as arrays of at most ``max_array_size`` tasks (one ``sbatch`` each, ``array_parallelism`` tasks at
once); an incomplete cell resumes from its newest checkpoint because it runs in the same directory again. With an
``executor: local`` profile the cells run here one after the other.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.sweep_file import (Cell, SweepConfig, cell_items, chunk, dry_run_json, load_sweep, plan_cells,
                               resolve_experiment_path, sweep_summary)
from memorymodels.configuration import ConfigError

# ---- planning a submission ------------------------------------------------------------------------------------------


@dataclass
class SweepPlan:
    """A whole sweep submission, decided before anything is submitted."""

    sweep: SweepConfig
    """The sweep file."""
    profile: Any
    """The resolved ``launch.profiles.Profile``."""
    cells: list[Cell]
    """Every cell, in sweep order (complete ones included)."""
    jobs: list[Any]
    """One ``launch.plan.JobPlan`` per cell (same order)."""
    experiments: list[Any]
    """One validated ``memorymodels.experiment.Experiment`` per cell (same order)."""
    complete: list[int]
    """Indices of cells whose run is complete (never run again)."""
    arrays: list[list[int]]
    """Indices of the cells to submit, one list per Slurm array (at most ``max_array_size`` each)."""
    log_folder: Path
    """Folder of the sweep's array logs (``<submission id>/array-K/%A_%a_0_log.out``)."""

    @property
    def root(self) -> Path:
        """``<checkpoint root>/<sweep name>``: the folder of the cells' run directories."""
        return self.log_folder.parent

    def dry_run_json(self) -> dict:
        return dry_run_json(self.cells, self.arrays)


def checkpoint_root(sweep: SweepConfig, profile, overrides: list[str] = ()) -> Path:
    """The checkpoint root the sweep's cells go under: the profile's, unless the sweep or ``--set`` say otherwise."""
    from launch.plan import profile_experiment_overrides
    from memorymodels.experiment import load_experiment

    experiment = resolve_experiment_path(sweep).resolve()
    items = profile_experiment_overrides(profile, experiment) + cell_items(sweep.overrides) + list(overrides)
    return Path(load_experiment(experiment, items).output.checkpoint_root).resolve()



def _read_run_json(run_dir: Path) -> dict | None:
    """``run_dir/run.json`` (None when missing or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def plan_sweep(sweep: SweepConfig, profile, *, overrides: list[str] = (), launcher: str | None = None,
               nodes: int | None = None, dependency: str | None = None) -> SweepPlan:
    """Plan every cell of ``sweep`` on ``profile`` and the arrays of the cells still to run. Reads files only.

    ``overrides`` are experiment ``KEY=VALUE`` items from ``--set`` (applied in every cell, after the sweep's own
    ``overrides``); setting an axis of the sweep there is an error. Cell 0 is planned by ``launch.plan.plan_job``;
    the others are that plan with the cell's overrides, run directory and command swapped in (the same result as
    ``plan_job`` for each, which the tests check, at a fraction of the cost for thousands of cells); every cell's
    experiment is still validated. ``dependency`` (``--dependency``) holds for every array of the sweep.
    """
    from launch.plan import plan_job
    from memorymodels.configuration import parse_override

    experiment = resolve_experiment_path(sweep).resolve()
    overrides = list(overrides)
    for item in overrides:
        key = parse_override(item)[0]
        if key in sweep.axes:
            raise ConfigError(f"--set {item}: '{key}' is an axis of {sweep.source}; every cell sets it")
    common = cell_items(sweep.overrides) + overrides
    try:
        root = checkpoint_root(sweep, profile, overrides)
    except ConfigError as exc:  # the sweep's overrides or --set do not fit the experiment
        raise ConfigError(f"{sweep.source}: {exc}") from None
    cells = plan_cells(sweep, root)
    jobs, experiments = [], []
    template = base_items = base_data = None
    for cell in cells:
        try:
            items = cell_items(cell.overrides)
            if template is None:
                template = plan_job(profile, experiment, overrides=common + items, launcher=launcher, nodes=nodes,
                                    run_dir=cell.run_dir, dependency=dependency)
                base_items = template.overrides[:len(template.overrides) - len(items)]
                base_data = _experiment_data(experiment, base_items)
            jobs.append(cell_job(template, base_items + items, cell.run_dir))
            experiments.append(_cell_experiment(base_data, cell.overrides, experiment, jobs[-1].overrides))
        except ConfigError as exc:
            raise ConfigError(f"{sweep.source}: cell {cell.index} ({', '.join(cell_items(cell.overrides))}): "
                              f"{exc}") from None
    runs = {c.index: info for c in cells if (info := _read_run_json(c.run_dir)) is not None}
    check_run_dirs(sweep, cells, jobs, experiments, runs)
    complete = [i for i, info in runs.items() if info.get("status") == "completed"]
    done = set(complete)
    pending = [c.index for c in cells if c.index not in done]
    return SweepPlan(sweep=sweep, profile=template.profile if template else profile, cells=cells, jobs=jobs,
                     experiments=experiments, complete=complete, arrays=chunk(pending, profile.max_array_size),
                     log_folder=root / sweep.name / "slurm-logs")


def check_run_dirs(sweep: SweepConfig, cells: list[Cell], jobs: list, experiments: list,
                   runs: dict[int, dict]) -> None:
    """Refuse cells whose run directory holds a run of another config (the sweep changed since it ran there):
    the trainer would refuse them one by one inside the job; here they are all named before anything is queued."""
    from memorymodels.experiment import NOT_IDENTITY, experiment_dict, identity

    ignored = {f"{section}.{key}" for section, keys in NOT_IDENTITY.items() for key in keys}
    clashes = []
    for cell, job, experiment in zip(cells, jobs, experiments):
        info = runs.get(cell.index)
        if info is None:
            continue
        if info.get("identity") not in (None, identity(experiment, job.world_size)):
            changed = [d for d in _differences(info.get("config") or {}, experiment_dict(experiment))
                       if d.split(":", 1)[0] not in ignored]
            clashes.append(f"cell {cell.index} ({cell.run_dir}): {'; '.join(changed[:3]) or 'world size'}")
    if clashes:
        raise ConfigError(f"{sweep.source}: {len(clashes)} cell(s) ran before with a different config; their run "
                          f"directories cannot be reused. Give the sweep a new 'name:' to train them afresh, or move "
                          f"those directories away:\n  " + "\n  ".join(clashes))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings: ``train.max_steps: 6 -> 10``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _experiment_data(experiment: Path, items: list[str]) -> dict:
    from memorymodels.configuration import apply_overrides, load_yaml

    return apply_overrides(load_yaml(experiment), items)


def _cell_experiment(base_data: dict, overrides: dict, experiment: Path, items: list[str]):
    """The cell's validated Experiment (what ``load_experiment(experiment, items)`` returns, without re-reading)."""
    from memorymodels.configuration import apply_overrides
    from memorymodels.experiment import experiment_from_dict

    source = f"{experiment} (with --set {' '.join(items)})"
    return experiment_from_dict(apply_overrides(base_data, list(overrides.items())), source)


def cell_job(template, overrides: list[str], run_dir: Path):
    """``template`` (a JobPlan from ``plan_job``) for another cell: its overrides, run directory, name, command."""
    from launch.plan import LOG_FOLDER, launch_command, launch_dir, render_sbatch

    run_dir = Path(run_dir).resolve()
    if run_dir == template.run_dir and overrides == template.overrides:
        return template
    log_folder = launch_dir(run_dir) / LOG_FOLDER
    sbatch = {**template.sbatch, "job_name": run_dir.name}
    python = _python_of(template.command)
    return dataclasses.replace(
        template, name=run_dir.name, overrides=list(overrides), run_dir=run_dir, log_folder=log_folder,
        sbatch=sbatch, script=render_sbatch(sbatch, folder=log_folder, python=python),
        command=launch_command(template.profile, template.launcher, template.nodes, python=python,
                               experiment=template.experiment, overrides=list(overrides), run_dir=run_dir))


@functools.lru_cache(maxsize=8)
def _python_of(command: str) -> str:
    """The interpreter a planned command starts with (its first shell word)."""
    import shlex

    return shlex.split(command)[0]


# ---- the journal and the live queue ---------------------------------------------------------------------------------


def sweep_record(plan: SweepPlan) -> dict:
    """The ``sweep`` field of a ``kind: "sweep"`` journal entry: :func:`sweep_summary`, the folder of the cells'
    run directories (``root``), every cell (``cells``: index, overrides, run_dir) and those already complete."""
    return {**sweep_summary(plan.sweep), "root": str(plan.root),
            "cells": [{"index": c.index, **c.as_json()} for c in plan.cells], "complete": plan.complete}


def active_cells(plan: SweepPlan) -> dict[int, str]:
    """Cells of ``plan`` whose job from an earlier submission is still queued or running: index -> job id.

    One ``squeue`` call (array tasks expanded, with job names); only when some queued job carries this sweep's name
    (arrays are named after the sweep) is the journal read to map job ids to cells.
    """
    from launch import journal
    from launch.cluster_info import run_slurm, slurm_environ

    text = run_slurm(["squeue", "-h", "-r", "-o", "%i %j"], slurm_environ(plan.profile.slurm_conf))
    queued = {}
    for line in text.splitlines():
        job_id, _, name = line.strip().partition(" ")
        if job_id:
            queued[job_id] = name
    names = {plan.sweep.name} | {c.run_dir.name for c in plan.cells}  # a one-cell chunk is named after its cell
    if not any(name in names for name in queued.values()):
        return {}
    by_dir = {str(c.run_dir): c.index for c in plan.cells}
    busy: dict[int, str] = {}
    for submission in journal.load_all():
        for job in submission.get("jobs", []):
            if job.get("run_dir") in by_dir and str(job.get("job_id")) in queued:
                busy[by_dir[job["run_dir"]]] = str(job["job_id"])
    return busy


# ---- the command ----------------------------------------------------------------------------------------------------


def run_sweep_command(args) -> int:
    """``python launch/submit.py --sweep FILE [--profile P] [--set K=V] [--dry-run] [--json]``; returns the exit code.

    ``args`` is submit.py's argparse namespace (``sweep``, ``profile``, ``overrides``, ``launcher``, ``nodes``,
    ``dry_run``, ``json``, ``no_preflight``, ``wait``: follow the cells until none is queued or running; exit code 1
    when one did not complete).
    """
    import sys

    from launch.cluster_info import SlurmError, explain
    from launch.submit import SubmitError

    out = sys.stdout
    try:
        plan = plan_from_args(args)
        if args.dry_run:
            if getattr(args, "json", False):
                print(json.dumps(plan.dry_run_json(), indent=1), file=out)
            else:
                print(describe(plan), file=out)
            return 0
        result = submit_sweep(plan, run_preflight=not getattr(args, "no_preflight", False),
                              log=sys.stderr if getattr(args, "json", False) else out)
        if getattr(args, "json", False):
            print(json.dumps({k: v for k, v in result.items() if k != "failed"}, indent=1), file=out, flush=True)
        failed = result.get("failed", [])
        if getattr(args, "wait", False) and plan.profile.executor == "slurm" and result["arrays"]:
            failed = follow(plan, log=sys.stderr if getattr(args, "json", False) else out)
    except (ConfigError, SubmitError, SlurmError) as exc:
        print(f"error: {explain(exc) if isinstance(exc, SlurmError) else exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


main = run_sweep_command  # launch/submit.py calls ``launch.sweeps.main(args)``


def follow(plan: SweepPlan, *, log, poll_s: float = 5.0) -> list[int]:
    """``--wait``: one ``squeue`` every ``poll_s`` seconds until no cell of the sweep is queued or running, printing
    the counts as they change, then the report table. Returns the cells that did not complete."""
    import time

    from rich.console import Console

    from launch.sweep_report import collect_rows, render

    last = ""
    while True:
        busy = active_cells(plan)
        statuses = [(_read_run_json(c.run_dir) or {}).get("status") for c in plan.cells]
        line = (f"{statuses.count('completed')} of {len(plan.cells)} cells complete, {len(busy)} queued or running, "
                f"{statuses.count('failed')} failed")
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", file=log, flush=True)
            last = line
        if not busy:
            break
        time.sleep(poll_s)
    cells = [{"index": c.index, **c.as_json()} for c in plan.cells]
    Console(file=log, width=max(100, Console(file=log).width)).print(
        render(collect_rows(cells, plan.sweep.axes), plan.sweep.axes, plan.sweep.name))
    return [i for i, status in enumerate(statuses) if status != "completed"]


def plan_from_args(args) -> SweepPlan:
    """The sweep plan the command line asks for."""
    from launch.plan import split_overrides
    from launch.profiles import load_profile

    sweep = load_sweep(args.sweep)
    if getattr(args, "experiment", None):
        raise ConfigError(f"--experiment {args.experiment}: a sweep names its experiment ({sweep.source}: "
                          f"'experiment: {sweep.experiment}'); drop --experiment")
    name = getattr(args, "profile", None) or sweep.profile
    if not name:
        from launch.profiles import list_profiles

        raise ConfigError(f"{sweep.source}: no profile; pass --profile or set 'profile:' in the file "
                          f"(profiles: {', '.join(list_profiles())})")
    profile_items, experiment_items = split_overrides(getattr(args, "overrides", None) or [])
    profile = load_profile(name, profile_items)
    return plan_sweep(sweep, profile, overrides=experiment_items, launcher=getattr(args, "launcher", None),
                      nodes=getattr(args, "nodes", None), dependency=getattr(args, "dependency", None))


def describe(plan: SweepPlan) -> str:
    """The plan for people (``--dry-run`` without ``--json``)."""
    n, todo = len(plan.cells), sum(len(a) for a in plan.arrays)
    first = plan.jobs[0] if plan.jobs else None
    lines = [f"sweep       {plan.sweep.name} ({plan.sweep.source}): {n} cells, {len(plan.complete)} complete, "
             f"{todo} to submit in {len(plan.arrays)} array(s) of at most {plan.profile.max_array_size} "
             f"(profile {plan.profile.name}, {plan.profile.array_parallelism} at once)",
             f"experiment  {first.experiment if first else plan.sweep.experiment}",
             f"run dirs    {plan.root}/<cell>", ""]
    done = set(plan.complete)
    for cell in plan.cells:
        mark = "complete" if cell.index in done else "submit"
        lines.append(f"  {cell.index:>4}  {mark:<8}  {cell.run_dir.name}")
    if first is not None:
        lines += ["", "# command of cell 0 (one per node)", first.command]
    return "\n".join(lines)


def submit_sweep(plan: SweepPlan, *, run_preflight: bool = True, log=None) -> dict:
    """Submit the cells of ``plan`` that are neither complete nor already queued; one ``sbatch`` per array.

    Returns ``{"sweep_id", "arrays": [{"job_id", "cells": [index, ...]}, ...]}`` (``sweep_id`` None and ``arrays``
    empty when there is nothing to do) and records the submission in the journal (``kind: "sweep"``, each job's
    ``cell`` its overrides).
    """
    import sys

    from launch.submit import preflight, submit_plans

    log = log or sys.stdout
    todo = [i for array in plan.arrays for i in array]
    if todo and plan.profile.executor == "slurm":
        busy = active_cells(plan)
        if busy:
            print(f"{len(busy)} cell(s) still queued or running from an earlier submission, not submitted again: "
                  + ", ".join(f"{i} (job {j})" for i, j in sorted(busy.items())), file=log)
            todo = [i for i in todo if i not in busy]
    if not todo:
        print(f"sweep {plan.sweep.name}: nothing to do: {len(plan.complete)} of {len(plan.cells)} cells complete, "
              f"the rest queued or running. Report: python launch/sweep_report.py {plan.sweep.source}", file=log)
        return {"sweep_id": None, "arrays": []}
    if run_preflight:
        preflight(representatives(plan, todo), array_size=min(len(todo), plan.profile.max_array_size))
    claim_run_dirs(plan, todo)
    if plan.profile.executor == "local":
        return run_here(plan, todo, log)
    submission = submit_plans([plan.jobs[i] for i in todo], kind="sweep", sweep=sweep_record(plan),
                              cells=[plan.cells[i].overrides for i in todo], array_name=plan.sweep.name,
                              log_root=plan.log_folder, run_preflight=False)
    arrays: dict[str, list[int]] = {}
    for i, job in zip(todo, submission["jobs"]):
        arrays.setdefault(str(job["job_id"]).split("_")[0], []).append(i)
    result = {"sweep_id": submission["submission_id"],
              "arrays": [{"job_id": job_id, "cells": cells} for job_id, cells in arrays.items()]}
    print(f"sweep {plan.sweep.name}: submitted {len(todo)} cell(s) in {len(arrays)} array(s) "
          f"({', '.join(f'{j}: {len(c)} cells' for j, c in arrays.items())}); {len(plan.complete)} already complete",
          file=log)
    print(f"  run dirs  {plan.root}/<cell>\n  logs      {plan.log_folder}/{submission['submission_id']}/\n"
          f"  watch     python launch/status.py\n"
          f"  report    python launch/sweep_report.py {submission['submission_id']}", file=log)
    return result


def representatives(plan: SweepPlan, todo: list[int]) -> list:
    """The jobs the preflight must see: the first, and one per distinct data section (cells may vary the data);
    the sbatch parameters and the checkpoint root are the same for every cell."""
    seen, chosen = set(), []
    for i in todo:
        key = json.dumps(dataclasses.asdict(plan.experiments[i].data), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            chosen.append(plan.jobs[i])
    return chosen


def claim_run_dirs(plan: SweepPlan, todo: list[int]) -> None:
    """Write each new cell's stub ``run.json`` (identity and config, no status), as ``launch.submit.claim_run_dir``
    does, from the experiment already validated in planning rather than by reading the experiment file again."""
    import time

    from memorymodels.experiment import experiment_dict, identity

    for i in todo:
        job, experiment = plan.jobs[i], plan.experiments[i]
        path = job.run_dir / "run.json"
        if path.exists():
            continue
        stub = {"identity": identity(experiment, job.world_size), "name": job.run_dir.name,
                "config": experiment_dict(experiment), "source": experiment.source, "world_size": job.world_size,
                "created": time.time(), "attempts": []}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".run.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(stub, sort_keys=True, default=str))
        tmp.replace(path)


def run_here(plan: SweepPlan, todo: list[int], log) -> dict:
    """An ``executor: local`` profile: run the cells on this machine one after the other, following each."""
    from launch.follow import follow_local
    from launch.submit import _jobs_in_flight, submit_plans

    arrays, failed, sweep_id = [], [], None
    for n, i in enumerate(todo, 1):
        print(f"sweep {plan.sweep.name}: cell {i} ({n} of {len(todo)}): {plan.cells[i].run_dir}", file=log)
        submission = submit_plans([plan.jobs[i]], kind="sweep", sweep=sweep_record(plan),
                                  cells=[plan.cells[i].overrides], run_preflight=False)
        entry = submission["jobs"][0]
        sweep_id = submission["submission_id"]
        arrays.append({"job_id": entry["job_id"], "cells": [i]})
        if follow_local(_jobs_in_flight[entry["job_id"]], entry, out=log) != 0:
            failed.append(i)
    print(f"sweep {plan.sweep.name}: {len(todo) - len(failed)} cell(s) completed"
          + (f", failed: {', '.join(map(str, failed))}" if failed else "")
          + f". Report: python launch/sweep_report.py {plan.sweep.source}", file=log)
    return {"sweep_id": sweep_id, "arrays": arrays, "failed": failed}
