"""Planning: a cluster profile and an experiment become one whole job, without touching the cluster.

    python launch/submit.py --profile v100x8 --dry-run            # the plan, readable
    python launch/submit.py --profile a100x8 --launcher fsdp --nodes 2 --dry-run --json

:func:`plan_job` returns a frozen :class:`JobPlan` holding everything the job is: the validated experiment (read
once) and its model config (built without weights, so every model check runs here), the one precision, the sbatch
parameters, the sbatch script (with a header saying what made it and how to make it again), the launch command
each node runs (one ``torchrun`` or ``accelerate launch`` per node, started by one Slurm task per node), the
accelerate config generated from ``configs/fsdp_config.yaml`` or ``configs/zero_config.yaml`` (the templates are
never edited), the resolved experiment the trainer reads and the run directory. Submission
(``launch.submission.submit``) writes and submits exactly these bytes; the nodes read the files it wrote.
Planning reads files (the experiment, the templates, existing run.json files) and never contacts the cluster.

Inside the job (``launch.node.task``) four variables are set before the command runs, from Slurm's environment:
``HEAD_NODE`` (first host of ``SLURM_JOB_NODELIST``), ``HEAD_PORT`` (derived from the job id and restart count),
``NODE_RANK`` (``SLURM_NODEID``) and ``RDZV_ID``. The command refers to them as shell variables, so what
``--dry-run`` prints is exactly what runs.

Which settings win, lowest first: the experiment file; what the profile decides for the experiment
(``train.precision`` from ``precision``, ``output.checkpoint_root`` from ``checkpoint_root``, ``data.cache_dir``
from ``data_root``: a corpus is prepared there once, outside every code snapshot, and relative ``data.tokenizer`` /
``data.train_dir`` / ``data.test_dir`` are taken relative to it); then ``--set`` keys.
Precision has one rule, ``memorymodels.precision.resolve_precision``, which the trainer applies too; the plan's
value comes from :func:`plan_precision`: the profile's, or ``--set train.precision`` (or ``--set
profile.precision``) when the profile's GPU can do it (``auto``: the GPU's best, as in the trainer); the trainer,
the accelerate config and the launch flags all receive that one value.

The code the job runs (``launch.planning.code``): unless planned with ``snapshot=False`` (``--no-snapshot``), the
project's files are hashed here and the job runs from ``<checkpoint_root>/.code/<hash>/``, which the submission
fills: the sbatch script says ``--chdir`` to it (so submitit's task loads the launcher from it) and the launch
command starts with ``env --chdir=... PYTHONPATH=...`` (so the trainer does). Site settings of a profile reach the
job here too: ``exclusive`` (``--exclusive --mem=0``), ``srun_args``, ``wckey`` and ``container`` (pyxis:
``srun --container-image ...``; apptainer/singularity: the launch command under ``apptainer exec --nv``).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from launch.planning.code import CodeSnapshot, SnapshotRules, project_code
from launch.planning.command import accelerate_config, job_env, launch_command, run_tag, sbatch_parameters
from launch.planning.dependency import dependency_spec
from launch.planning.profiles import Profile, expand_path
from launch.slurm.submitit_adapter import render_sbatch
from memorymodels.configuration import ConfigError, apply_overrides, load_yaml, one_line, parse_override
from memorymodels.experiment import (REPO_ROOT, Experiment, data_cache_dir, experiment_dict, experiment_from_dict,
                                     model_build_args)
from memorymodels.extension import Extension, extension_target, new_run_note
from memorymodels.models import model_config
from memorymodels.precision import resolve_precision
from memorymodels.rundir import RunDirError, RunPaths
from memorymodels.runs import run_dir_for

EXPERIMENTS = REPO_ROOT / "configs" / "experiments"
DEFAULT_EXPERIMENT = EXPERIMENTS / "autoencoder.yaml"
MAX_TIMEOUT_REQUEUES = 100
"""How many times one run may be requeued after hitting its time limit (preemptions are not counted)."""




@dataclass(frozen=True)
class JobPlan:
    """Everything about one job, decided before anything is submitted."""

    name: str
    """Slurm job name (the run directory's name)."""
    profile: Profile
    """The resolved profile (after ``--set profile.*``, ``--nodes``, ``--launcher``)."""
    experiment: Path
    """The experiment file the job was planned from (absolute)."""
    overrides: list[str]
    """``KEY=VALUE`` items applied to that file: profile-derived first, then ``--set``, then the precision."""
    settings: Experiment
    """The validated experiment: the file with every override applied (what the trainer reads)."""
    model: Any
    """The model's validated config dataclass (``memorymodels.models.model_config``; no weights)."""
    precision: str
    """fp32, fp16 or bf16: the one precision of the trainer, the accelerate config and the launch flags."""
    launcher: str
    """torchrun, fsdp or deepspeed."""
    nodes: int
    """Nodes of the job; one launcher process per node."""
    procs_per_node: int
    """Training processes per node (one per GPU)."""
    run_dir: Path
    """Where the run trains, checkpoints and logs."""
    log_folder: Path
    """submitit's folder: the job's pickles and its stdout/stderr logs."""
    sbatch: dict[str, Any]
    """Slurm parameters with submitit's names (``nodes``, ``gpus_per_node``, ``ntasks_per_node``, ...)."""
    script: str
    """The sbatch script, byte for byte what sbatch receives (also saved as RUN_DIR/launch/job.sbatch)."""
    command: str
    """The launch command one node runs (shell; uses $HEAD_NODE, $HEAD_PORT, $NODE_RANK set inside the job)."""
    accelerate_config: str | None
    """The generated accelerate YAML (None for torchrun); saved as RUN_DIR/launch/accelerate_config.yaml."""
    experiment_text: str
    """The resolved experiment the trainer reads, saved as RUN_DIR/launch/experiment.yaml."""
    request: str
    """The command that makes this plan again (``python launch/submit.py --profile ...``)."""
    python: str
    """The interpreter the job runs (the launch command's and the sbatch script's)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the launch command."""
    time_limit_s: int = 0
    """Seconds one attempt may run (the profile's time limit)."""
    dependency: str | None = None
    """Slurm's ``--dependency`` (job ids only, submission ids resolved), or None."""
    code: CodeSnapshot | None = None
    """The code snapshot every attempt runs from (``.path``); None: the checkout as it is when the job starts."""
    extension: Extension | None = None
    """``--extend``: the run this job continues to a longer ``train.max_steps`` in its directory, from which
    checkpoint, and how the learning rate goes on (``memorymodels.extension``); the trainer gets ``--extend``."""
    note: str | None = None
    """A line to say before submitting: a new run that differs from an existing one only in schedule length."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def executor(self) -> str:
        return self.profile.executor

    def files(self) -> dict[Path, str]:
        """The files submission writes into ``RUN_DIR/launch/``: path -> text."""
        paths = RunPaths(self.run_dir)
        files = {paths.script: self.script, paths.experiment: self.experiment_text}
        if self.accelerate_config is not None:
            files[paths.accelerate_config] = self.accelerate_config
        return files

    def to_json(self) -> dict:
        """What ``--dry-run --json`` prints."""
        return {"sbatch": self.sbatch, "script": self.script, "command": self.command, "precision": self.precision,
                "accelerate_config": self.accelerate_config, "experiment": self.experiment_text,
                "run_dir": str(self.run_dir), "code": code_json(self.code),
                "extension": self.extension.record() if self.extension else None, "note": self.note}

    def describe(self) -> str:
        """The plan for people (``--dry-run``)."""
        p = self.profile
        hardware = (f"{self.nodes} node(s) x {p.gpus_per_node} {p.gpu_type}" if p.gpu_type
                    else f"{self.nodes} node(s) x {self.procs_per_node} CPU process(es)")
        lines = [f"profile     {p.name} ({p.source}): {hardware}, {self.precision}, {self.launcher}, "
                 f"time limit {p.time_limit}",
                 f"experiment  {self.experiment}" + (f" --set {' '.join(self.overrides)}" if self.overrides else ""),
                 f"model       {self.settings.model.name}"
                 + (f" (preset {self.settings.model.preset})" if self.settings.model.preset else ""),
                 f"run dir     {self.run_dir}",
                 *([f"extends     {self.extension.describe()}"] if self.extension else []),
                 *([f"note        {self.note}"] if self.note else []),
                 f"code        {describe_code(self.code)}",
                 f"data        {describe_data(self.settings)}",
                 *([f"container   {p.container.runtime} {p.container.image}"] if p.container else []),
                 *([f"starts      when {self.dependency} holds (Slurm --dependency)"] if self.dependency else []),
                 f"env         {' '.join(f'{k}={v}' for k, v in self.env.items())}",
                 f"faults      hang timeout {f'{p.hang_timeout_s} s' if p.hang_timeout_s else 'from step times'}, "
                 f"collective timeout "
                 f"{p.collective_timeout_s} s, {p.max_failure_retries} retries after a failure",
                 f"logs        {self.log_folder}/%j_0_log.out / .err",
                 "", "# command (one per node)", self.command]
        if self.accelerate_config is not None:
            lines += ["", f"# {RunPaths(self.run_dir).accelerate_config.name}", self.accelerate_config.rstrip()]
        if p.executor == "slurm":
            lines += ["", f"# {RunPaths(self.run_dir).script.name}", self.script.rstrip()]
        return "\n".join(lines)


def snapshot_rules(profile: Profile) -> SnapshotRules:
    """What the profile lets a code snapshot take (``snapshot_max_file_mb``, ``snapshot_include``)."""
    return SnapshotRules(max_file_mb=profile.snapshot_max_file_mb, include=tuple(profile.snapshot_include),
                         source=profile.source)


def code_json(code: CodeSnapshot | None) -> dict | None:
    """The plan's code as plain data (``--dry-run --json``, plan.json, run.json)."""
    if code is None:
        return None
    return {"hash": code.hash, "path": str(code.path), "git": code.git}


def describe_code(code: CodeSnapshot | None) -> str:
    if code is None:
        return "the checkout as it is when each attempt starts (--no-snapshot)"
    return (f"snapshot {code.hash} of {code.source} ({len(code.files)} files), every attempt runs from "
            f"{code.path}")


def describe_data(settings: Experiment) -> str:
    """The plan's data for people: the prepared directories, or the corpus and where it is prepared."""
    data = settings.data
    if data.corpus is None:
        test = f", test {data.test_dir}" if data.test_dir else ""
        return f"tokenizer {data.tokenizer}, train {data.train_dir}{test}"
    return f"{data.corpus}, prepared once under {data_cache_dir(data)} (shared by every code snapshot)"


def split_overrides(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """``--set`` items -> (profile overrides without the ``profile.`` prefix, experiment overrides)."""
    profile, experiment = [], []
    for item in items:
        key, _ = parse_override(item)
        if key.startswith("profile."):
            profile.append(item.split("=", 1)[0][len("profile."):].strip() + "=" + item.split("=", 1)[1])
        else:
            experiment.append(item)
    return profile, experiment


















def profile_items(profile: Profile, data: dict) -> list[str]:
    """The experiment keys a profile decides (see the module docstring), as ``KEY=VALUE`` items, given the
    experiment file's data."""
    checkpoint_root = expand_path(profile.checkpoint_root, where=f"{profile.source}: checkpoint_root")
    data_root = expand_path(profile.data_root, where=f"{profile.source}: data_root")
    # prepared data outside the code snapshot, shared by every job
    items = [f"output.checkpoint_root={checkpoint_root}", f"data.cache_dir={data_root}"]
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    for key in ("tokenizer", "train_dir", "test_dir"):
        value = section.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            items.append(f"data.{key}={data_root / value}")
    return items


def plan_precision(profile: Profile, overrides: Iterable[str]) -> str:
    """The job's one precision: the profile's, or ``--set train.precision`` when given, resolved for the profile's
    device by the trainer's own rule (``memorymodels.precision.resolve_precision``: ``auto`` is the device's best);
    refused, naming the key, when the profile's GPUs cannot train in it."""
    asked = None
    for item in overrides:
        key, value = parse_override(item)
        if key == "train.precision":
            asked = value
    if asked is None:
        return profile.precision  # checked against the same rule when the profile was loaded
    try:
        return resolve_precision(str(asked), profile.device)
    except ConfigError as exc:
        raise ConfigError(f"--set train.precision={asked}: {exc} (profile {profile.name}: {profile.source})") from None


def experiment_path(experiment: str | Path | None) -> Path:
    """The experiment file (default ``configs/experiments/autoencoder.yaml``), absolute; a missing one is refused."""
    path = Path(experiment or DEFAULT_EXPERIMENT).resolve()
    if not path.is_file():
        raise ConfigError(f"--experiment {path}: no such file; experiments: "
                          f"{', '.join(sorted(p.name for p in EXPERIMENTS.glob('*.yaml')))}")
    return path


def plan_experiment(profile: Profile, path: Path, data: dict, overrides: list[str]) -> tuple[str, list[str], Experiment]:
    """(precision, every override applied, the validated experiment) for the experiment file ``path`` (its content
    ``data``) on ``profile`` with ``--set`` items ``overrides``."""
    precision = plan_precision(profile, overrides)
    items = profile_items(profile, data) + list(overrides) + [f"train.precision={precision}"]
    source = f"{path} (with --set {' '.join(overrides)})" if overrides else str(path)
    return precision, items, experiment_from_dict(apply_overrides(data, items), source)


def planned_model(settings: Experiment) -> Any:
    """The model config the trainer will build (the tokenizer's exact size is only known in the job; the
    experiment's ``data.vocab_size`` stands in), validated without weights or torch."""
    args = model_build_args(settings, settings.data.vocab_size)
    return model_config(args["name"], preset=args["preset"], source=settings.source, **args["params"])


def resolved_experiment(plan_source: str, settings: Experiment) -> str:
    """The experiment the trainer reads: the validated settings as JSON (which YAML reads as it is: the trainer
    loads it with the same loader as any experiment file; JSON is written twenty times faster than YAML, which a
    thousand-cell sweep notices), under a header naming where it came from."""
    header = (f"# Resolved by launch/submit.py from {one_line(plan_source)}; the job trains exactly this.\n"
              "# Edit the experiment file and submit again rather than this file.\n")
    return header + json.dumps(experiment_dict(settings), indent=1, sort_keys=True) + "\n"


def script_header(request: str, profile: Profile, command: str | None = None, whose: str = "") -> str:
    """The comment lines after the sbatch script's shebang: what made it, how to make it again, and the command
    each node runs (the script's own last line starts submitit's task, which runs it: an administrator reading the
    script sees what will run). Control characters are escaped: a newline in an argument must not end the comment
    and run the rest in the job."""
    ran = (f"# Each node runs{whose} (started by submitit's task below, launch.node.task):\n#   {one_line(command)}\n"
           if command else "")
    return (f"# Generated by launch/submit.py for profile {one_line(profile.name)} ({one_line(profile.source)}); "
            f"do not edit.\n# Run with: {one_line(request)}\n{ran}")


def with_header(script: str, header: str) -> str:
    """``script`` with ``header`` right after its first line (the shebang), before the #SBATCH lines."""
    first, _, rest = script.partition("\n")
    return f"{first}\n{header}{rest}"


def default_request(profile: Profile, experiment: Path, overrides: Iterable[str], launcher: str | None,
                    nodes: int | None, dependency: str | None) -> str:
    """``python launch/submit.py ...`` for a plan made from these arguments."""
    args = ["python", "launch/submit.py", "--profile", profile.name, "--experiment", _relative(experiment)]
    for item in overrides:
        args += ["--set", item]
    args += (["--launcher", launcher] if launcher else []) + (["--nodes", str(nodes)] if nodes else [])
    args += ["--dependency", dependency] if dependency else []
    return shlex.join(args)


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def launch_shape(profile: Profile, launcher: str | None, nodes: int | None) -> Profile:
    """``profile`` with ``--launcher`` / ``--nodes`` applied (validated again)."""
    changes = {k: v for k, v in (("launcher", launcher), ("nodes", nodes)) if v is not None and getattr(profile, k) != v}
    if not changes:
        return profile
    try:
        return dataclasses.replace(profile, **changes)
    except ConfigError as exc:
        flags = " ".join(f"--{k} {v}" for k, v in changes.items())
        raise ConfigError(f"{flags}: {exc}") from None


def plan_job(profile: Profile, experiment: str | Path | None = None, *, overrides: Iterable[str] = (),
             launcher: str | None = None, nodes: int | None = None, run_dir: str | Path | None = None,
             log_folder: str | Path | None = None, python: str | None = None, dependency: str | None = None,
             request: str | None = None, data: dict | None = None, snapshot: bool = True,
             code: CodeSnapshot | None = None, extend: bool = False) -> JobPlan:
    """Plan one job of ``experiment`` (default ``configs/experiments/autoencoder.yaml``) on ``profile``.

    ``overrides`` are experiment ``KEY=VALUE`` items (``--set`` without ``profile.``); ``launcher`` and ``nodes``
    replace the profile's defaults; ``run_dir`` replaces the derived run directory (sweeps name their cells' own);
    ``log_folder`` replaces ``RUN_DIR/launch/slurm``; ``dependency`` is ``--dependency``
    (``launch.planning.dependency``); ``request`` the command line for the script's header; ``data`` the
    experiment file's content when the caller has read it already (a sweep reads it once for all its cells);
    ``snapshot=False`` runs the job from the checkout instead of a snapshot of the code (``--no-snapshot``), and
    ``code`` is the project's code when the caller has hashed it already (``launch.planning.code.project_code``).
    ``extend`` (``--extend``) plans the job into the run this config is except for a shorter ``train.max_steps``,
    continued from its newest complete checkpoint (``memorymodels.extension``; refused in one line when there is
    none to continue); without it a new run whose config has such a relative gets a ``note`` saying so.
    Pure: reads files, never contacts the cluster. Any problem is a ConfigError naming the file and key.
    """
    profile = launch_shape(profile, launcher, nodes)
    path = experiment_path(experiment)
    data = load_yaml(path) if data is None else data
    user = list(overrides)
    precision, items, settings = plan_experiment(profile, path, data, user)
    model = planned_model(settings)
    world = profile.nodes * profile.procs_per_node
    growing, note = None, None
    try:
        if run_dir is not None:
            run_dir = Path(run_dir).resolve()
        elif extend:
            run_dir, growing = extension_target(settings, world)
            run_dir = run_dir.resolve()
        else:
            run_dir = run_dir_for(settings, world).resolve()
            note = new_run_note(settings, world, run_dir)
    except RunDirError as exc:  # a damaged run.json where this run would go: never plan a fresh directory instead;
        raise ConfigError(str(exc)) from None  # or nothing to --extend
    log_folder = Path(log_folder) if log_folder is not None else RunPaths(run_dir).logs
    python = python or sys.executable
    if profile.container is not None and profile.container.runtime == "pyxis":
        python = profile.container.python  # the whole task runs in the image
    checkpoint_root = Path(settings.output.checkpoint_root).resolve()
    code = ((code or project_code(rules=snapshot_rules(profile))).under(checkpoint_root)) if snapshot else None
    code_dir = code.path if code is not None else None
    mounts = [checkpoint_root, expand_path(profile.data_root, where=f"{profile.source}: data_root")] \
        if profile.container is not None else []
    if dependency is not None:
        if profile.executor != "slurm":
            raise ConfigError(f"--dependency {dependency}: profile '{profile.name}' runs jobs on this machine at once; "
                              "dependencies need a Slurm profile (e.g. local-slurm)")
        dependency = dependency_spec(dependency)
    request = request or default_request(profile, path, user, launcher, nodes, dependency)
    sbatch = sbatch_parameters(profile, name=run_dir.name, nodes=profile.nodes, dependency=dependency,
                               tag=run_tag(run_dir), code_dir=code_dir, mounts=mounts)
    command = launch_command(profile, precision, python=python, run_dir=run_dir, code_dir=code_dir, mounts=mounts,
                             extend=growing is not None)
    return JobPlan(
        name=run_dir.name, profile=profile, experiment=path, overrides=items, settings=settings, model=model,
        precision=precision, launcher=profile.launcher, nodes=profile.nodes, procs_per_node=profile.procs_per_node,
        run_dir=run_dir, log_folder=log_folder, sbatch=sbatch,
        script=with_header(render_sbatch(sbatch, folder=log_folder, python=python),
                           script_header(request, profile, command)),
        command=command,
        accelerate_config=None if profile.launcher == "torchrun" else accelerate_config(profile, precision),
        experiment_text=resolved_experiment(settings.source, settings), request=request, python=python,
        env=job_env(profile),
        time_limit_s=profile.time_minutes * 60, dependency=dependency, code=code, extension=growing, note=note,
    )












