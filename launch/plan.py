"""Planning: a cluster profile and an experiment become one whole job, without touching the cluster.

    python launch/submit.py --profile v100x8 --dry-run            # the plan, readable
    python launch/submit.py --profile a100x8 --launcher fsdp --nodes 2 --dry-run --json

``plan_job(profile, experiment)`` returns a :class:`JobPlan`: the sbatch parameters (submitit's names), the sbatch
script submitit will submit, the launch command each node runs (one ``torchrun`` or ``accelerate launch`` per node,
started by one Slurm task per node), the accelerate config generated from ``configs/fsdp_config.yaml`` or
``configs/zero_config.yaml`` (the templates are never edited), and the run directory under the profile's
checkpoint root. It reads files (the experiment, the templates, existing run.json files) and nothing else.

Inside the job (``launch/job.py``) three variables are set before the command runs, from Slurm's environment:
``HEAD_NODE`` (first host of ``SLURM_JOB_NODELIST``), ``HEAD_PORT`` (derived from the job id and restart count) and
``NODE_RANK`` (``SLURM_NODEID``). The command refers to them as shell variables, so what ``--dry-run`` prints is
exactly what runs.

Which settings win, lowest first: the experiment file; what the profile decides for the experiment
(``train.precision`` from ``precision``, ``output.checkpoint_root`` from ``checkpoint_root``, relative
``data.tokenizer`` / ``data.train_dir`` / ``data.test_dir`` taken relative to ``data_root``); then ``--set`` keys.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from launch.profiles import REPO_ROOT, Profile, expand_path
from memorymodels.configuration import ConfigError, parse_override

TEMPLATES = {"fsdp": REPO_ROOT / "configs" / "fsdp_config.yaml", "deepspeed": REPO_ROOT / "configs" / "zero_config.yaml"}
DEFAULT_EXPERIMENT = REPO_ROOT / "configs" / "experiments" / "autoencoder.yaml"
LAUNCH_DIR = "launch"
"""The launcher's files inside a run directory: job.sbatch, accelerate_config.yaml, plan.json, events.jsonl and
submitit's folder slurm/ (pickles and the job's stdout/stderr logs). The trainer owns everything else."""
ACCELERATE_CONFIG = "accelerate_config.yaml"
SBATCH_SCRIPT = "job.sbatch"
LOG_FOLDER = "slurm"
MAX_TIMEOUT_REQUEUES = 100
"""How many times one run may be requeued after hitting its time limit (preemptions are not counted)."""
DEPENDENCY_TYPES = ("after", "afterany", "afterok", "afternotok", "aftercorr")
"""Slurm's job-to-job dependency types that ``--dependency`` accepts (``singleton`` too, which names no job)."""
_JOB_ID = re.compile(r"\d+(?:_\d+)?")
_SUBMISSION_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


def launch_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/launch``: where the launcher keeps its files for a run."""
    return Path(run_dir) / LAUNCH_DIR


@dataclass
class JobPlan:
    """Everything about one job, decided before anything is submitted."""

    name: str
    """Slurm job name (the run directory's name)."""
    profile: Profile
    """The resolved profile (after ``--set profile.*``, ``--nodes``, ``--launcher``)."""
    experiment: Path
    """The experiment file (absolute)."""
    overrides: list[str]
    """``KEY=VALUE`` experiment overrides the trainer receives (profile-derived first, then ``--set``)."""
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
    """The sbatch script submitit submits for this job (also saved as RUN_DIR/launch/job.sbatch)."""
    command: str
    """The launch command one node runs (shell; uses $HEAD_NODE, $HEAD_PORT, $NODE_RANK set inside the job)."""
    accelerate_config: str | None
    """The generated accelerate YAML (None for torchrun); saved as RUN_DIR/launch/accelerate_config.yaml."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the launch command."""
    time_limit_s: int = 0
    """Seconds one attempt may run (the profile's time limit)."""
    dependency: str | None = None
    """Slurm's ``--dependency`` (job ids only, submission ids resolved), or None."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def executor(self) -> str:
        return self.profile.executor

    def to_json(self) -> dict:
        """What ``--dry-run --json`` prints."""
        return {"sbatch": self.sbatch, "script": self.script, "command": self.command,
                "accelerate_config": self.accelerate_config, "run_dir": str(self.run_dir)}

    def describe(self) -> str:
        """The plan for people (``--dry-run``)."""
        p = self.profile
        hardware = (f"{self.nodes} node(s) x {p.gpus_per_node} {p.gpu_type}" if p.gpu_type
                    else f"{self.nodes} node(s) x {self.procs_per_node} CPU process(es)")
        lines = [f"profile     {p.name} ({p.source}): {hardware}, {p.precision}, {self.launcher}, "
                 f"time limit {p.time_limit}",
                 f"experiment  {self.experiment}" + (f" --set {' '.join(self.overrides)}" if self.overrides else ""),
                 f"run dir     {self.run_dir}",
                 *([f"starts      when {self.dependency} holds (Slurm --dependency)"] if self.dependency else []),
                 f"logs        {self.log_folder}/%j_0_log.out / .err",
                 "", "# command (one per node)", self.command]
        if self.accelerate_config is not None:
            lines += ["", f"# {ACCELERATE_CONFIG}", self.accelerate_config.rstrip()]
        if p.executor == "slurm":
            lines += ["", f"# {SBATCH_SCRIPT}", self.script.rstrip()]
        return "\n".join(lines)


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


def profile_experiment_overrides(profile: Profile, experiment_path: Path) -> list[str]:
    """The experiment keys a profile decides (see the module docstring), as ``KEY=VALUE`` items."""
    from memorymodels.configuration import load_yaml

    items = [f"train.precision={profile.precision}",
             f"output.checkpoint_root={expand_path(profile.checkpoint_root, where=f'{profile.source}: checkpoint_root')}"]
    data = (load_yaml(experiment_path).get("data") or {})
    data_root = None
    for key in ("tokenizer", "train_dir", "test_dir"):
        value = data.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            data_root = data_root or expand_path(profile.data_root, where=f"{profile.source}: data_root")
            items.append(f"data.{key}={data_root / value}")
    return items


def dependency_spec(spec: str, *, flag: str = "--dependency") -> str:
    """A dependency in Slurm's syntax, checked, with journal submission ids replaced by their job ids.

    ``afterok:1234``, ``afterany:1234:1240``, ``afterok:1234,afternotok:1250`` (all must hold), ``afterok:1?afterok:2``
    (either), ``after:1234+10`` (10 minutes after 1234 started), ``singleton``; a job id may be an array task
    (``1234_7``) or a submission id from ``.state/journal/`` (``afterok:20261128-001917-559a6a``: every job of that
    submission). ConfigError names the flag and what is wrong. Reads the journal, nothing else.
    """
    from launch import journal

    text = spec.strip()
    if "," in text and "?" in text:
        raise ConfigError(f"{flag} {spec}: mix of ',' (all of) and '?' (any of); Slurm takes one or the other")
    separator = "?" if "?" in text else ","
    terms = []
    for term in text.split(separator):
        kind, _, refs = term.strip().partition(":")
        if kind == "singleton" and not refs:
            terms.append(kind)
            continue
        if kind not in DEPENDENCY_TYPES or not refs:
            raise ConfigError(f"{flag} {spec}: '{term}' is not TYPE:JOB[:JOB...] with TYPE one of "
                              f"{', '.join(DEPENDENCY_TYPES)} (or 'singleton'); e.g. afterok:1234")
        ids = []
        for ref in refs.split(":"):
            job, plus, delay = ref.partition("+")
            if plus and not (kind == "after" and delay.isdigit()):
                raise ConfigError(f"{flag} {spec}: '+{delay}' (minutes after the start) goes with 'after' only")
            if _SUBMISSION_ID.fullmatch(job):
                try:
                    jobs = journal.load(job)["jobs"]
                except FileNotFoundError as exc:
                    raise ConfigError(f"{flag} {spec}: {exc}") from None
                ids += [entry["job_id"].split("_")[0] + plus + delay for entry in jobs
                        if entry.get("executor", "slurm") == "slurm"]  # a local run's id is a process id
                if not ids:
                    raise ConfigError(f"{flag} {spec}: submission {job} has no Slurm job (it ran here)")
            elif _JOB_ID.fullmatch(job):
                ids.append(ref)
            else:
                raise ConfigError(f"{flag} {spec}: '{ref}' is neither a Slurm job id (1234, 1234_7) nor a submission "
                                  f"id from {journal.journal_dir()} (YYYYmmdd-HHMMSS-xxxxxx)")
        terms.append(":".join([kind, *dict.fromkeys(ids)]))
    return separator.join(terms)


def dependency_jobs(spec: str | None) -> dict[str, str]:
    """Job id -> dependency type for every job a resolved ``spec`` names (``+minutes`` left off)."""
    jobs = {}
    for term in re.split(r"[,?]", spec or ""):
        kind, *refs = term.split(":")
        jobs.update({ref.partition("+")[0]: kind for ref in refs})
    return jobs


def sbatch_parameters(profile: Profile, *, name: str, nodes: int, dependency: str | None = None) -> dict[str, Any]:
    """The profile in scheduler terms (submitit's parameter names); ``dependency`` a resolved spec. Pure."""
    procs = profile.procs_per_node
    mem_gb = profile.mem_per_gpu_gb * procs
    params: dict[str, Any] = {"job_name": name}
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    params.update({"nodes": nodes, "ntasks_per_node": 1})
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    params.update({"cpus_per_task": profile.cpus_per_gpu * procs,
                   "mem": f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}M",  # Slurm 22.05 rejects "GB"
                   "time": profile.time_minutes,
                   "signal_delay_s": profile.signal_before_end_s,
                   "additional_parameters": {"requeue": True, **profile.sbatch_extra,
                                             **({"dependency": dependency} if dependency else {})},
                   # srun does not inherit --cpus-per-task from sbatch in Slurm 22.05-23.02: without this the step, so
                   # torchrun and all its workers, may be bound to one core
                   "srun_args": ["--cpus-per-task", str(profile.cpus_per_gpu * procs)]})
    if profile.setup:
        params["setup"] = list(profile.setup)
    return params


def accelerate_config(profile: Profile, launcher: str, nodes: int) -> str:
    """The accelerate YAML for ``fsdp``/``deepspeed``: the template with the profile's values filled in. Pure."""
    template = TEMPLATES[launcher]
    data = yaml.safe_load(template.read_text())
    data.update({"num_processes": nodes * profile.procs_per_node, "num_machines": nodes, "machine_rank": 0,
                 "mixed_precision": "no" if profile.precision == "fp32" else profile.precision})
    data.pop("use_cpu", None)  # the seed's zero_config.yaml asked for CPU by mistake
    header = (f"# Generated by launch/plan.py from {template.relative_to(REPO_ROOT)} for profile {profile.name}:\n"
              f"# num_processes = {nodes} node(s) x {profile.procs_per_node} GPU(s). Each node passes its own\n"
              f"# --machine_rank and the head node's --main_process_ip/--main_process_port (flags win over keys).\n")
    return header + yaml.safe_dump(data, sort_keys=True)


def launch_command(profile: Profile, launcher: str, nodes: int, *, python: str, experiment: Path,
                   overrides: list[str], run_dir: Path) -> str:
    """One node's launch command (shell). Pure."""
    procs = profile.procs_per_node
    q = shlex.quote
    train = ["-m", "memorymodels.train", "--experiment", str(experiment), "--run-dir", str(run_dir)]
    for item in overrides:
        train += ["--set", item]
    train_args = " ".join(q(a) for a in train)
    if launcher == "torchrun":
        if nodes == 1:
            rdzv = f"--standalone --nnodes 1 --nproc_per_node {procs}"
        else:
            rdzv = (f"--nnodes {nodes} --nproc_per_node {procs} --rdzv_backend c10d "
                    f"--rdzv_endpoint \"$HEAD_NODE:$HEAD_PORT\" --rdzv_id \"$RDZV_ID\"")
        return f"{q(python)} -m torch.distributed.run {rdzv} {train_args}"
    config = launch_dir(run_dir) / ACCELERATE_CONFIG
    mixed = "no" if profile.precision == "fp32" else profile.precision
    return (f"{q(python)} -m accelerate.commands.launch --config_file {q(str(config))} "
            f"--num_processes {nodes * procs} --num_machines {nodes} --machine_rank \"$NODE_RANK\" "
            f"--main_process_ip \"$HEAD_NODE\" --main_process_port \"$HEAD_PORT\" --mixed_precision {mixed} "
            f"{train_args}")


def render_sbatch(sbatch: dict[str, Any], *, folder: Path, python: str, array: int | None = None,
                  array_parallelism: int = 1) -> str:
    """The sbatch script submitit writes for these parameters (submitit's own renderer). Pure."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    params = dict(sbatch)
    if array is not None:
        params.update(map_count=array, array_parallelism=array_parallelism)
    return _make_sbatch_string(command=command, folder=folder, **params)


def plan_job(profile: Profile, experiment: str | Path | None = None, *, overrides: Iterable[str] = (),
             launcher: str | None = None, nodes: int | None = None, run_dir: str | Path | None = None,
             log_folder: str | Path | None = None, python: str | None = None,
             dependency: str | None = None) -> JobPlan:
    """Plan one job of ``experiment`` (default ``configs/experiments/autoencoder.yaml``) on ``profile``.

    ``overrides`` are experiment ``KEY=VALUE`` items (``--set`` without ``profile.``); ``launcher`` and ``nodes``
    replace the profile's defaults; ``run_dir`` replaces the derived run directory (sweeps name their cells' own);
    ``log_folder`` replaces ``RUN_DIR/launch/slurm``; ``dependency`` is ``--dependency`` (:func:`dependency_spec`).
    Pure: reads files, never contacts the cluster.
    """
    from memorymodels.experiment import load_experiment
    from memorymodels.runs import run_dir_for

    launcher = launcher or profile.launcher
    nodes = nodes if nodes is not None else profile.nodes
    changes = {k: v for k, v in (("launcher", launcher), ("nodes", nodes)) if getattr(profile, k) != v}
    if changes:
        try:
            profile = dataclasses.replace(profile, **changes)
        except ConfigError as exc:
            flags = " ".join(f"--{k} {v}" for k, v in changes.items())
            raise ConfigError(f"{flags}: {exc}") from None
    experiment = Path(experiment or DEFAULT_EXPERIMENT).resolve()
    if not experiment.is_file():
        raise ConfigError(f"--experiment {experiment}: no such file; experiments: "
                          f"{', '.join(sorted(p.name for p in (REPO_ROOT / 'configs' / 'experiments').glob('*.yaml')))}")
    all_overrides = profile_experiment_overrides(profile, experiment) + list(overrides)
    loaded = load_experiment(experiment, all_overrides)  # validates every override, naming the file and key
    world = nodes * profile.procs_per_node
    run_dir = Path(run_dir).resolve() if run_dir is not None else run_dir_for(loaded, world).resolve()
    name = run_dir.name
    log_folder = Path(log_folder) if log_folder is not None else launch_dir(run_dir) / LOG_FOLDER
    python = python or sys.executable
    if dependency is not None:
        if profile.executor != "slurm":
            raise ConfigError(f"--dependency {dependency}: profile '{profile.name}' runs jobs on this machine at once; "
                              "dependencies need a Slurm profile (e.g. local-slurm)")
        dependency = dependency_spec(dependency)
    sbatch = sbatch_parameters(profile, name=name, nodes=nodes, dependency=dependency)
    return JobPlan(
        name=name, profile=profile, experiment=experiment, overrides=all_overrides, launcher=launcher,
        nodes=nodes, procs_per_node=profile.procs_per_node, run_dir=run_dir, log_folder=log_folder, sbatch=sbatch,
        script=render_sbatch(sbatch, folder=log_folder, python=python),
        command=launch_command(profile, launcher, nodes, python=python, experiment=experiment,
                               overrides=all_overrides, run_dir=run_dir),
        accelerate_config=None if launcher == "torchrun" else accelerate_config(profile, launcher, nodes),
        env={"OMP_NUM_THREADS": str(profile.cpus_per_gpu), "PYTHONUNBUFFERED": "1"},
        time_limit_s=profile.time_minutes * 60, dependency=dependency,
    )


def diff_plans(first: JobPlan, second: JobPlan) -> str:
    """What changes when the same experiment runs on ``second``'s profile instead of ``first``'s, for people
    (``--diff``): profile keys, sbatch parameters, trainer overrides, then line diffs of the launch command (one
    argument per line), the accelerate config and the sbatch script. Only what differs is shown. Pure."""
    import difflib

    def changes(title: str, a: dict, b: dict) -> list[str]:
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "(unset)") != b.get(k, "(unset)")]
        width = max((len(k) for k in keys), default=0)
        return [f"# {title}"] + [f"  {k:<{width}}  {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys] \
            if keys else []

    def lines(title: str, a: str | None, b: str | None) -> list[str]:
        diff = list(difflib.unified_diff((a or "").splitlines(), (b or "").splitlines(), lineterm="", n=1))[2:]
        return [f"# {title}", *diff] if diff else []

    def profile_keys(plan: JobPlan) -> dict:
        return {k: v for k, v in dataclasses.asdict(plan.profile).items() if k not in ("name", "source", "description")}

    def overrides(plan: JobPlan) -> dict:
        return dict(item.split("=", 1) for item in plan.overrides)

    def arguments(plan: JobPlan) -> str:
        return "\n".join(shlex.split(plan.command))

    sections = [
        changes("profile", profile_keys(first), profile_keys(second)),
        changes("job", {"processes per node": first.procs_per_node, "run dir": first.run_dir},
                {"processes per node": second.procs_per_node, "run dir": second.run_dir}),
        changes("sbatch parameters", {k: v for k, v in first.sbatch.items() if k != "job_name"},
                {k: v for k, v in second.sbatch.items() if k != "job_name"}),
        changes("trainer overrides (--set)", overrides(first), overrides(second)),
        lines("launch command, one argument per line", arguments(first), arguments(second)),
        lines(ACCELERATE_CONFIG, first.accelerate_config, second.accelerate_config),
        lines(SBATCH_SCRIPT, first.script, second.script)]
    head = f"--- {first.profile.name} ({first.profile.source})\n+++ {second.profile.name} ({second.profile.source})"
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return f"{head}\n\n{body}" if body else f"{head}\nno differences: the two profiles plan the same job"


def dumps(plan: JobPlan) -> str:
    """``--dry-run --json`` output."""
    return json.dumps(plan.to_json(), indent=2, sort_keys=True)
