"""Submit training jobs: a cluster profile and an experiment, planned, checked against the live cluster, submitted.

    python launch/submit.py --profile local                          # train here (no Slurm), follow it, evaluate
    python launch/submit.py --profile local-slurm --experiment configs/experiments/debug.yaml --wait
    python launch/submit.py --profile v100x8 --set train.max_steps=20000 --set profile.time_limit=12h
    python launch/submit.py --profile a100x8 --launcher fsdp --nodes 2 --dry-run [--json]
    python launch/submit.py --profile v100x8 --diff a100x8                  # what changes on the other node type
    python launch/submit.py --profile a100x8 --experiment configs/experiments/memory_mixer_d1024.yaml --dependency afterok:1234
    python launch/submit.py --list-profiles

Which value wins, lowest first: the experiment file; what the profile decides for the experiment (``train.precision``
from its ``precision``, ``output.checkpoint_root`` from its ``checkpoint_root``, relative data directories taken
under its ``data_root``); then ``--set``. ``--set profile.KEY=VALUE`` changes a profile key (``profile.time_limit=2h``,
``profile.partition=debug``) before the profile is validated; every other ``--set KEY=VALUE`` is an experiment key
(``train.max_steps=100``) passed to the trainer. ``--launcher`` and ``--nodes`` replace the profile's defaults.

Before submitting, a preflight asks the live cluster (``launch/cluster_info.py``) whether the partition exists, the
GPUs, CPUs and memory fit a node, the time limit fits the partition, an array fits MaxArraySize and every job a
``--dependency`` names exists and can still satisfy it; it checks that the data exist and the checkpoint root is
writable. Then submitit submits; the job id, run directory, log paths and
how to watch it are printed (``--json``: one object) and the submission is recorded in the journal
(``launch/journal.py``). With the ``local`` profile the run is followed in the foreground and evaluated at the end.

Library use (sweeps): :func:`submit_plans` submits many planned jobs, one ``sbatch`` per array chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python launch/submit.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch import journal  # noqa: E402
from launch.cluster_info import (ClusterInfo, SlurmError, check_dependency, check_plan, explain, job_states,  # noqa: E402
                                 slurm_environ)
from launch.follow import follow_local, wait_slurm  # noqa: E402
from launch.job import NodeLaunch  # noqa: E402
from launch.plan import (ACCELERATE_CONFIG, MAX_TIMEOUT_REQUEUES, SBATCH_SCRIPT, JobPlan, dependency_jobs,  # noqa: E402
                         diff_plans, launch_dir, plan_job, render_sbatch, split_overrides)
from launch.profiles import list_profiles, load_profile  # noqa: E402
from memorymodels.configuration import ConfigError  # noqa: E402


class SubmitError(RuntimeError):
    """Preflight or submission failed; the message lists every problem and what to do."""


# ---- preflight ----------------------------------------------------------------------------------------------------


def check_data(plan: JobPlan) -> list[str]:
    """The experiment's model parameters are valid and its data exist (explicit tokenizer/data directories, or a
    local corpus path/glob), so a typo fails here rather than in the queue."""
    import glob

    from memorymodels.experiment import load_experiment
    from memorymodels.models import model_config
    from memorymodels.experiment import model_build_args

    experiment = load_experiment(plan.experiment, plan.overrides)
    data = experiment.data
    problems = []
    try:
        args = model_build_args(experiment, data.vocab_size)  # the tokenizer's exact size is known only in the job
        model_config(args["name"], preset=args["preset"], **args["params"])
    except (ConfigError, TypeError, KeyError) as exc:
        problems.append(f"{plan.experiment}: 'model': {exc}")
    for key in ("tokenizer", "train_dir", "test_dir"):
        value = getattr(data, key)
        if value is not None and not Path(value).exists():
            problems.append(f"{plan.experiment}: 'data.{key}': {value} does not exist (relative paths are taken "
                            f"under the profile's data_root: {plan.profile.data_root})")
    corpus = data.corpus
    if corpus and not corpus.startswith("hf:") and not corpus.startswith("stdlib"):
        if not glob.glob(os.path.expanduser(corpus)):
            problems.append(f"{plan.experiment}: 'data.corpus: {corpus}' matches no file")
    return problems


def check_writable(plan: JobPlan) -> list[str]:
    """The checkpoint root exists (or can be made) and accepts files."""
    root = plan.run_dir.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return [f"{plan.profile.source}: 'checkpoint_root': cannot write in {root}: {exc.strerror or exc}"]
    return []


def preflight(plans: list[JobPlan], *, info: ClusterInfo | None = None, array_size: int = 1) -> ClusterInfo | None:
    """Check planned jobs against the live cluster and the file system; SubmitError lists every problem."""
    problems: list[str] = []
    if plans[0].executor == "slurm":
        env = slurm_environ(plans[0].profile.slurm_conf)
        try:
            if info is None:
                info = ClusterInfo.query(env)
            for dependency in dict.fromkeys(plan.dependency for plan in plans if plan.dependency):
                problems += check_dependency(dependency, job_states(list(dependency_jobs(dependency)), env))
        except SlurmError as exc:
            raise SubmitError(f"preflight: {explain(exc)}") from None
        seen = set()
        for plan in plans:
            key = json.dumps({k: v for k, v in plan.sbatch.items() if k != "job_name"}, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                problems += check_plan(plan, info, array_size=array_size)
    for plan in plans:
        problems += check_data(plan) + check_writable(plan)
    if problems:
        unique = list(dict.fromkeys(problems))
        raise SubmitError("preflight found problems; nothing was submitted:\n  - " + "\n  - ".join(unique))
    return info


# ---- submission ---------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_launch_files(plan: JobPlan, script: str | None = None) -> None:
    """``RUN_DIR/launch/``: the sbatch script, the accelerate config and the plan (what ``--dry-run --json`` shows)."""
    folder = launch_dir(plan.run_dir)
    claim_run_dir(plan)
    _write_atomic(folder / SBATCH_SCRIPT, script or plan.script)
    if plan.accelerate_config is not None:
        _write_atomic(folder / ACCELERATE_CONFIG, plan.accelerate_config)
    record = {**plan.to_json(), "profile": plan.profile.as_dict(), "experiment": str(plan.experiment),
              "overrides": plan.overrides, "launcher": plan.launcher, "nodes": plan.nodes,
              "procs_per_node": plan.procs_per_node, "submitted": time.time()}
    _write_atomic(folder / "plan.json", json.dumps(record, indent=1, sort_keys=True, default=str))


def claim_run_dir(plan: JobPlan) -> None:
    """Write a stub ``RUN_DIR/run.json`` holding the run's identity when there is none yet.

    The trainer refuses a ``--run-dir`` that holds files but no run.json of the same config, and the launcher's
    own files (``launch/``) are there before the trainer starts; the stub says whose directory it is. It has no
    ``status`` (the trainer writes that when it starts) and the trainer keeps its other keys.
    """
    from memorymodels.experiment import experiment_dict, identity, load_experiment

    path = plan.run_dir / "run.json"
    if path.exists():
        return
    experiment = load_experiment(plan.experiment, plan.overrides)
    stub = {"identity": identity(experiment, plan.world_size), "name": plan.run_dir.name,
            "config": experiment_dict(experiment), "source": experiment.source, "world_size": plan.world_size,
            "created": time.time(), "attempts": []}
    _write_atomic(path, json.dumps(stub, indent=1, sort_keys=True, default=str))


def make_job(plan: JobPlan) -> NodeLaunch:
    """The callable submitit runs in each node's task."""
    return NodeLaunch(name=plan.name, command=plan.command, run_dir=plan.run_dir, env=plan.env,
                      time_limit_s=plan.time_limit_s, signal_before_end_s=plan.profile.signal_before_end_s,
                      accelerate_config=plan.accelerate_config)


def _executor(plan: JobPlan, folder: Path):
    import submitit

    if plan.executor == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
        # gpus_per_node sets CUDA_VISIBLE_DEVICES for the task (0 hides every GPU)
        executor.update_parameters(timeout_min=plan.time_limit_s / 60, signal_delay_s=plan.profile.signal_before_end_s,
                                   tasks_per_node=1, nodes=1, gpus_per_node=plan.profile.gpus_per_node,
                                   setup=list(plan.profile.setup))
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    params = dict(plan.sbatch)
    mem = params.pop("mem")
    executor.update_parameters(**params)
    executor.parameters["mem"] = mem  # as planned ("64G"): submitit would write "64GB", which Slurm 22.05 rejects
    return executor


def _sbatch_key(plan: JobPlan) -> str:
    return json.dumps({k: v for k, v in plan.sbatch.items() if k != "job_name"}, sort_keys=True, default=str)


def submit_plans(plans: list[JobPlan], *, kind: str = "job", sweep: dict | None = None,
                 cells: list[dict | None] | None = None, array_name: str | None = None,
                 log_root: str | Path | None = None, run_preflight: bool = True,
                 submission_id: str | None = None) -> dict:
    """Submit planned jobs and record them in the journal; return the journal entry
    (``{"submission_id", "jobs": [{"job_id", "name", "run_dir", "cell", "stdout", "stderr"}, ...], ...}``,
    jobs in the order of ``plans``).

    One plan is one job (logs in ``RUN_DIR/launch/slurm``). Several plans are submitted as Slurm job arrays, one
    ``sbatch`` call per array (submitit's ``executor.batch()``), each array at most ``min(profile.max_array_size,
    the cluster's MaxArraySize)`` tasks; plans whose sbatch parameters differ go to separate arrays. Array logs go
    to ``log_root`` (default ``<checkpoint root>/slurm-logs``)``/<submission id>/array-<k>``; each job's journal
    entry names its own log files. ``cells`` (one per plan) are recorded as the jobs' ``cell``; ``kind``/``sweep``
    as the submission's. The preflight runs first unless ``run_preflight=False``.
    """
    if not plans:
        raise ValueError("submit_plans: no plans")
    profile = plans[0].profile
    cells = list(cells) if cells is not None else [None] * len(plans)
    if len(cells) != len(plans):
        raise ValueError(f"submit_plans: {len(cells)} cells for {len(plans)} plans")
    submission_id = submission_id or journal.new_submission_id()
    if profile.executor == "slurm":
        os.environ.update({k: v for k, v in slurm_environ(profile.slurm_conf).items() if k == "SLURM_CONF"})
    info = None
    if run_preflight:
        info = preflight(plans, array_size=min(len(plans), profile.max_array_size))
    chunk_size = min(profile.max_array_size, info.max_array_size if info else profile.max_array_size)
    try:
        entries = _submit(plans, cells, chunk_size, submission_id, array_name, log_root)
    except Exception as exc:  # noqa: BLE001 - submitit raises FailedJobError/CalledProcessError with sbatch's words
        if type(exc).__name__ not in ("FailedJobError", "CalledProcessError", "FailedSubmissionError"):
            raise
        raise SubmitError(f"sbatch refused the job ({profile.source}): {str(exc).strip()}") from None
    return journal.record(profile=profile.name, jobs=entries, kind=kind, sweep=sweep, submission_id=submission_id)


def _submit(plans, cells, chunk_size, submission_id, array_name, log_root) -> list[dict]:
    profile = plans[0].profile
    entries: list[dict | None] = [None] * len(plans)
    if len(plans) == 1:
        plan = plans[0]
        write_launch_files(plan)
        job = _executor(plan, plan.log_folder).submit(make_job(plan))
        entries[0] = _entry(plan, job, cells[0])
        _jobs_in_flight[job.job_id] = job
    else:
        groups: dict[str, list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(_sbatch_key(plan), []).append(i)
        root = Path(log_root) if log_root else plans[0].run_dir.parent / "slurm-logs"
        k = 0
        for indices in groups.values():
            for start in range(0, len(indices), chunk_size):
                chunk = indices[start:start + chunk_size]
                folder = root / submission_id / f"array-{k}"
                k += 1
                executor = _executor(plans[chunk[0]], folder)
                if profile.executor == "slurm":
                    executor.update_parameters(job_name=array_name or plans[chunk[0]].run_dir.parent.name,
                                               array_parallelism=profile.array_parallelism)
                    script = render_sbatch({**plans[chunk[0]].sbatch, "job_name": executor.parameters["job_name"]},
                                           folder=folder, python=sys.executable, array=len(chunk),
                                           array_parallelism=profile.array_parallelism)
                else:
                    script = ""
                for i in chunk:
                    write_launch_files(plans[i], script)
                with executor.batch():
                    jobs = [executor.submit(make_job(plans[i])) for i in chunk]
                for i, job in zip(chunk, jobs):
                    entries[i] = _entry(plans[i], job, cells[i])
                    _jobs_in_flight[job.job_id] = job
    return entries


_jobs_in_flight: dict[str, Any] = {}  # submitit Job objects of this process (the local executor follows them)


def _entry(plan: JobPlan, job, cell: dict | None) -> dict:
    paths = job.paths
    return {"job_id": str(job.job_id), "name": plan.name, "run_dir": str(plan.run_dir), "cell": cell,
            "stdout": str(paths.stdout), "stderr": str(paths.stderr), "executor": plan.executor}


# ---- command line -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python launch/submit.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Override rule: " + __doc__.split("\n\n")[2])
    parser.add_argument("--profile", help=f"cluster profile: {', '.join(list_profiles())}, or a .yaml path")
    parser.add_argument("--experiment", help="experiment YAML (default configs/experiments/autoencoder.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="experiment key (train.max_steps=100) or profile key (profile.time_limit=2h); repeatable")
    parser.add_argument("--launcher", choices=("torchrun", "fsdp", "deepspeed"), help="default: the profile's")
    parser.add_argument("--nodes", type=int, help="nodes per job (default: the profile's)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; submit nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--wait", action="store_true", help="follow a Slurm job until it ends (local always does)")
    parser.add_argument("--no-preflight", action="store_true", help="skip the checks against the live cluster")
    parser.add_argument("--dependency", metavar="SPEC",
                        help="start after other jobs, in Slurm's syntax: afterok:1234 (once 1234 succeeded), "
                             "afterany:1234:1240, afterok:SUBMISSION_ID (every job of a journal submission), singleton")
    parser.add_argument("--sweep", help="a sweep file (sweeps/*.yaml): submit its cells as job arrays")
    parser.add_argument("--diff", metavar="PROFILE",
                        help="show how the job planned on PROFILE differs from the one on --profile (the same "
                             "experiment, --set, --launcher and --nodes); submits nothing")
    parser.add_argument("--list-profiles", action="store_true", help="list the shipped profiles and exit")
    args = parser.parse_args(argv)
    if args.nodes is not None and args.nodes < 1:
        parser.error(f"--nodes {args.nodes}: must be 1 or more")
    if args.diff and args.sweep:
        parser.error("--diff compares the job of one experiment on two profiles; drop --sweep (a sweep's cells share "
                     "one profile: --sweep ... --dry-run shows them)")
    if not args.list_profiles and not args.profile and not args.sweep:
        parser.error(f"--profile is required; profiles: {', '.join(list_profiles())}")
    return args


def plan_from_args(args: argparse.Namespace) -> JobPlan:
    """The plan the command line asks for (``--set profile.*`` to the profile, the rest to the experiment)."""
    profile_overrides, experiment_overrides = split_overrides(args.overrides)
    profile = load_profile(args.profile, profile_overrides)
    return plan_job(profile, args.experiment, overrides=experiment_overrides, launcher=args.launcher,
                    nodes=args.nodes, dependency=args.dependency)


def _print_submitted(entry: dict, plan: JobPlan, out=sys.stdout) -> None:
    job_id = entry["job_id"]
    print(f"submitted job {job_id} ({plan.profile.name}, {plan.launcher}, {plan.nodes} node(s) x "
          f"{plan.procs_per_node} process(es))", file=out)
    print(f"  run dir  {plan.run_dir}", file=out)
    print(f"  stdout   {entry['stdout']}", file=out)
    print(f"  stderr   {entry['stderr']}", file=out)
    if plan.executor == "slurm":
        print(f"  watch    python launch/status.py   |  squeue -j {job_id}  |  tail -f {shlex.quote(entry['stdout'])}",
              file=out)
        print(f"  history  python -c \"from launch.job import describe_attempts as d; print(d('{plan.run_dir}'))\"",
              file=out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_profiles:
        for name in list_profiles():
            print(f"{name:<20} {load_profile(name).description}")
        return 0
    if args.sweep:
        from launch.sweeps import main as sweep_main

        return sweep_main(args)
    try:
        plan = plan_from_args(args)
        if args.diff:
            try:
                other = plan_from_args(argparse.Namespace(**{**vars(args), "profile": args.diff}))
            except ConfigError as exc:
                raise ConfigError(f"--diff {args.diff}: {exc}") from None
            print(diff_plans(plan, other))
            return 0
        if args.dry_run:
            print(json.dumps(plan.to_json(), indent=2, sort_keys=True) if args.json else plan.describe())
            return 0
        submission = submit_plans([plan], run_preflight=not args.no_preflight)
    except (ConfigError, SubmitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    entry = submission["jobs"][0]
    if args.json:
        print(json.dumps({"submission_id": submission["submission_id"], **entry}, sort_keys=True))
    else:
        _print_submitted(entry, plan)
    if plan.executor == "local":
        return follow_local(_jobs_in_flight[entry["job_id"]], entry, out=sys.stderr if args.json else sys.stdout)
    if args.wait:
        state = wait_slurm(entry, env=slurm_environ(plan.profile.slurm_conf),
                           out=sys.stderr if args.json else sys.stdout)
        return 0 if state in ("COMPLETED", "UNKNOWN") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
