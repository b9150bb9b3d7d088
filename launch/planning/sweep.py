"""Planning a sweep: every cell's job, and the arrays that carry the cells still to run. Reads files only.

    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml --dry-run [--json]

The sweep file (its keys, how cells are expanded and named) is ``launch.planning.sweep_file``. :func:`plan_sweep`
plans every cell through :func:`launch.planning.plan.plan_job`, from the experiment file read once, so a cell whose
value does not fit (a wrong type, a model the registry refuses) is named before anything is queued. Each cell runs in
its own directory ``<checkpoint root>/<sweep name>/<cell name>``; cells whose run is complete are never run again.
:func:`plan_arrays` cuts the cells to submit into Slurm arrays of at most ``max_array_size`` tasks and renders each
array's script once; submission (``launch.submission.sweep``) sends exactly those scripts.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.planning.code import project_code
from launch.planning.command import array_tag
from launch.planning.dependency import dependency_spec
from launch.planning.plan import (JobPlan, experiment_path, launch_shape, plan_experiment, plan_job, script_header,
                                  snapshot_rules, with_header)
from launch.planning.profiles import Profile
from launch.planning.sweep_file import (Cell, SweepConfig, cell_items, chunk, dry_run_json, plan_cells,
                                        resolve_experiment_path)
from launch.slurm.submitit_adapter import render_sbatch
from memorymodels.configuration import ConfigError, count, load_yaml, one_line, parse_override
from memorymodels.experiment import NOT_IDENTITY, experiment_dict, identity
from memorymodels.fileio import CorruptFileError, read_json
from memorymodels.rundir import RunPaths


@dataclass(frozen=True)
class ArrayPlan:
    """One Slurm array of a sweep submission: which cells, where its logs go, and its script, byte for byte."""

    name: str
    """Slurm job name of the array (the sweep's name)."""
    cells: list[int]
    """Indices of the cells it runs, task ``k`` running ``cells[k]``."""
    folder: Path
    """submitit's folder for the array (logs ``%A_%a_0_log.out``, pickles)."""
    sbatch: dict[str, Any]
    """The array's Slurm parameters (submitit's names, with ``map_count`` and ``array_parallelism``)."""
    script: str
    """The sbatch script sbatch receives."""


@dataclass(frozen=True)
class SweepPlan:
    """A whole sweep, decided before anything is submitted."""

    sweep: SweepConfig
    """The sweep file."""
    profile: Profile
    """The resolved profile."""
    cells: list[Cell]
    """Every cell, in sweep order (complete ones included)."""
    jobs: list[JobPlan]
    """One plan per cell (same order); each carries the cell's validated experiment (``settings``)."""
    complete: list[int]
    """Indices of cells whose run is complete (never run again)."""
    pending: list[int]
    """Indices of the other cells: the ones a submission sends unless they are queued already."""
    log_folder: Path
    """Folder of the sweep's array logs (``<submission id>/array-K/%A_%a_0_log.out``)."""
    request: str
    """The command that plans this sweep again."""

    @property
    def root(self) -> Path:
        """``<checkpoint root>/<sweep name>``: the folder of the cells' run directories."""
        return self.log_folder.parent

    @property
    def arrays(self) -> list[list[int]]:
        """The pending cells cut into arrays of at most ``max_array_size`` (before the queue is asked)."""
        return chunk(self.pending, self.profile.max_array_size)

    def dry_run_json(self) -> dict:
        return dry_run_json(self.cells, self.arrays)


def plan_sweep(sweep: SweepConfig, profile: Profile, *, overrides: list[str] = (), launcher: str | None = None,
               nodes: int | None = None, dependency: str | None = None, request: str | None = None,
               snapshot: bool = True) -> SweepPlan:
    """Plan every cell of ``sweep`` on ``profile``. Reads files only.

    ``overrides`` are experiment ``KEY=VALUE`` items from ``--set`` (applied in every cell, after the sweep's own
    ``overrides``); setting an axis of the sweep there is an error. ``dependency`` (``--dependency``) holds for
    every array of the sweep. The project's code is hashed once for all cells (``snapshot=False``: the cells run
    from the checkout, ``--no-snapshot``).
    """
    experiment = experiment_path(resolve_experiment_path(sweep))
    overrides = list(overrides)
    for item in overrides:
        key = parse_override(item)[0]
        if key in sweep.axes:
            raise ConfigError(f"--set {item}: '{key}' is an axis of {sweep.source}; every cell sets it")
    common = cell_items(sweep.overrides) + overrides
    data = load_yaml(experiment)
    request = request or shlex.join(["python", "launch/submit.py", "--profile", profile.name, "--sweep", sweep.source,
                                     *[a for item in overrides for a in ("--set", item)]])
    profile = launch_shape(profile, launcher, nodes)
    try:
        settings = plan_experiment(profile, experiment, data, common)[2]
    except ConfigError as exc:  # the sweep's overrides or --set do not fit the experiment
        raise ConfigError(f"{sweep.source}: {exc}") from None
    dependency = dependency_spec(dependency) if dependency is not None else None
    root = Path(settings.output.checkpoint_root).resolve()
    cells = plan_cells(sweep, root)
    code = project_code(rules=snapshot_rules(profile)) if snapshot else None
    jobs = []
    for cell in cells:
        try:
            jobs.append(plan_job(profile, experiment, overrides=common + cell_items(cell.overrides), data=data,
                                 run_dir=cell.run_dir, dependency=dependency, request=request, snapshot=snapshot,
                                 code=code))
        except ConfigError as exc:
            raise ConfigError(f"{sweep.source}: cell {cell.index} ({', '.join(cell_items(cell.overrides))}): "
                              f"{exc}") from None
    runs = {}
    for cell in cells:
        try:
            info = read_json(RunPaths(cell.run_dir).run_json)
        except CorruptFileError as exc:  # never plan over a run whose manifest cannot be read: it would start over
            raise ConfigError(f"{sweep.source}: cell {cell.index}: {one_line(exc)}; repair it (run.json.bak holds the "
                              "previous version) or move the run directory away") from None
        if info is not None:
            runs[cell.index] = info
    check_run_dirs(sweep, cells, jobs, runs)
    complete = [i for i, info in runs.items() if info.get("status") == "completed"]
    done = set(complete)
    folder = root / (sweep.name or Path(sweep.source).stem)
    return SweepPlan(sweep=sweep, profile=profile, cells=cells, jobs=jobs, complete=complete,
                     pending=[c.index for c in cells if c.index not in done], log_folder=folder / "slurm-logs",
                     request=request)


def sweep_root(sweep: SweepConfig, profile: Profile, overrides: list[str] = ()) -> Path:
    """The checkpoint root the sweep's cells go under: the profile's, unless the sweep or ``--set`` say otherwise."""
    experiment = experiment_path(resolve_experiment_path(sweep))
    items = cell_items(sweep.overrides) + list(overrides)
    settings = plan_experiment(profile, experiment, load_yaml(experiment), items)[2]
    return Path(settings.output.checkpoint_root).resolve()


def plan_arrays(plan: SweepPlan, todo: list[int], submission_id: str) -> list[ArrayPlan]:
    """The arrays that carry cells ``todo`` of ``plan`` in submission ``submission_id``: at most
    ``max_array_size`` tasks each, ``array_parallelism`` at once, logs under ``<log folder>/<submission id>/array-K``.
    Every cell of a sweep has the same sbatch parameters but its name, so one script serves an array. Pure."""
    profile = plan.profile
    python = plan.jobs[0].python if plan.jobs else sys.executable
    arrays = []
    for k, cells in enumerate(chunk(list(todo), profile.max_array_size)):
        folder = plan.log_folder / submission_id / f"array-{k}"
        name = plan.sweep.name if len(cells) > 1 else plan.jobs[cells[0]].name
        sbatch = {**plan.jobs[cells[0]].sbatch, "job_name": name, profile.tag_field: array_tag(submission_id, k)}
        if len(cells) > 1:
            sbatch.update(map_count=len(cells), array_parallelism=profile.array_parallelism)
        whose = "" if len(cells) == 1 else f" (cell {cells[0]}'s; the other cells differ in their run directory)"
        header = script_header(plan.request, profile, plan.jobs[cells[0]].command, whose)
        script = with_header(render_sbatch(sbatch, folder=folder, python=python), header)
        arrays.append(ArrayPlan(name=name, cells=list(cells), folder=folder, sbatch=sbatch, script=script))
    return arrays


def check_run_dirs(sweep: SweepConfig, cells: list[Cell], jobs: list[JobPlan], runs: dict[int, dict]) -> None:
    """Refuse cells whose run directory holds a run of another config (the sweep changed since it ran there):
    the trainer would refuse them one by one inside the job; here they are all named before anything is queued."""
    ignored = {f"{section}.{key}" for section, keys in NOT_IDENTITY.items() for key in keys}
    clashes = []
    for cell, job in zip(cells, jobs):
        info = runs.get(cell.index)
        if info is None:
            continue
        if info.get("identity") not in (None, identity(job.settings, job.world_size)):
            changed = [d for d in _differences(info.get("config") or {}, experiment_dict(job.settings))
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


def describe(plan: SweepPlan) -> str:
    """The plan for people (``--dry-run`` without ``--json``)."""
    n, todo = len(plan.cells), len(plan.pending)
    first = plan.jobs[0] if plan.jobs else None
    lines = [f"sweep       {plan.sweep.name} ({plan.sweep.source}): {count(n, 'cell')}, {len(plan.complete)} complete, "
             f"{todo} to submit in {count(len(plan.arrays), 'array')} of at most {plan.profile.max_array_size} "
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
