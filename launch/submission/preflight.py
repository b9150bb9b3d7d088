"""The preflight: what can go wrong with a plan, found before anything is queued.

Two kinds of checks, run by a submission and by ``--dry-run`` alike:

- first, whether the run has anything left to do (:func:`nothing_left`): a completed, evaluated run is refused
  with its result in one line, not queued to re-evaluate;
- on this machine (:func:`local_problems`): the experiment's data exist (explicit tokenizer/data directories, or
  a local corpus path or glob) and a corpus can be prepared under the profile's ``data_root``, the checkpoint root
  is writable, the profile's ``group`` is one of the user's, and a run submitted before ran the same code (or ``--new-code`` says to continue it with this code:
  ``launch.submission.snapshot.code_problem``); the model and every config value were checked when the job was
  planned;
- against the live cluster (:func:`cluster_problems`): the partition exists, one node offers the GPUs, CPUs and
  memory, the time limit fits the partition, an array fits MaxArraySize, every job a ``--dependency`` names exists
  and can still satisfy it, and ``sbatch --test-only`` accepts the script (asked also when an earlier check found a
  problem, so Slurm's reason stands beside ours). A dry run with no cluster answering says
  plainly that these were not run.

:class:`SubmitError` lists every problem found, one per line, and says that nothing was submitted.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from launch.planning.dependency import dependency_jobs
from launch.planning.plan import JobPlan
from launch.planning.options import blame_sbatch_extra
from launch.planning.profiles import Profile, format_minutes
from launch.slurm.client import SlurmError, explain, job_states, run_slurm, slurm_environ
from launch.slurm.cluster import ClusterInfo, mem_mb
from launch.slurm.output import ACTIVE_STATES
from launch.submission.snapshot import code_problem
from memorymodels.configuration import ConfigError
from memorymodels.data import corpus_problem
from memorymodels.extension import finished_result
from memorymodels.rundir import RunDirError, RunPaths
from memorymodels.tracking import tracker_problems


class SubmitError(RuntimeError):
    """Preflight or submission failed; the message lists every problem and what to do."""


class NothingLeftError(SubmitError):
    """The run has nothing left to do (:func:`nothing_left`); the message holds its result."""


@dataclass
class Preflight:
    """What the preflight found: the cluster's picture (None when it was not asked), the problems, and a note
    when the cluster checks could not run (a dry run without a cluster)."""

    info: ClusterInfo | None = None
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None

    def raise_problems(self) -> None:
        if self.problems:
            unique = list(dict.fromkeys(self.problems))
            raise SubmitError("preflight found problems; nothing was submitted:\n  - " + "\n  - ".join(unique))


def nothing_left(plan: JobPlan) -> str | None:
    """One line when the planned run has nothing left to do (completed at its max_steps, that checkpoint
    evaluated): its result, that nothing was submitted, and how to evaluate it again or train it longer; None when
    the job would train or evaluate (``memorymodels.extension.finished_result``)."""
    if plan.extension is not None:
        return None
    steps = plan.settings.train.max_steps
    result = finished_result(plan.run_dir, steps)
    if result is None:
        return None
    return (f"{plan.run_dir} has nothing left to do: {result}; nothing was submitted. Evaluate it again with "
            f"`python -m memorymodels.evaluate {plan.run_dir}`, or train it longer with --extend --set "
            f"train.max_steps=N (N > {steps})")


def check_data(plan: JobPlan) -> list[str]:
    """The experiment's data exist, so a typo fails here rather than in the queue."""
    data = plan.settings.data
    problems = []
    for key in ("tokenizer", "train_dir", "test_dir"):
        value = getattr(data, key)
        if value is not None and not Path(value).exists():
            problems.append(f"{plan.experiment}: 'data.{key}': {value} does not exist (relative paths are taken "
                            f"under the profile's data_root: {plan.profile.data_root})")
    corpus = data.corpus
    if corpus and not corpus.startswith("hf:") and not corpus.startswith("stdlib"):
        if not glob.glob(os.path.expanduser(corpus)):
            problems.append(f"{plan.experiment}: 'data.corpus: {corpus}' matches no file")
        elif problem := corpus_problem(os.path.expanduser(corpus)):  # the job's own rules (memorymodels.data)
            problems.append(f"{plan.experiment}: 'data.corpus': {problem}")
    if corpus and data.cache_dir and (existing := unwritable(Path(data.cache_dir))):
        problems.append(f"{plan.profile.source}: 'data_root': cannot prepare '{corpus}' in {data.cache_dir} "
                        f"({existing} is not a writable folder)")
    return problems


def unwritable(folder: Path) -> Path | None:
    """The nearest existing folder of ``folder`` when files cannot be made there (nothing is created); None when
    they can."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) else None


def check_writable(plan: JobPlan) -> list[str]:
    """The checkpoint root exists or can be made, and accepts files (asked of the nearest existing folder; nothing
    is created)."""
    root = plan.run_dir.parent
    if existing := unwritable(root):
        return [f"{plan.profile.source}: 'checkpoint_root': cannot write in {root} ({existing} is not a writable "
                "folder)"]
    return []


def check_links(plan: JobPlan) -> list[str]:
    """No folder of the run directory is a symbolic link out of it (``RunPaths.refuse_links``)."""
    try:
        RunPaths(plan.run_dir).refuse_links()
    except RunDirError as exc:
        return [str(exc)]
    return []


def check_trackers(plan: JobPlan) -> list[str]:
    """``train.report_to``'s trackers can run in the job (``memorymodels.tracking.tracker_problems``): the job's
    environment is this one (sbatch exports it) with the profile's ``env`` on top."""
    report_to = plan.settings.train.report_to
    if not report_to:
        return []
    found = tracker_problems(report_to, {**os.environ, **plan.env}, packages=plan.profile.container is None)
    return [f"{plan.experiment}: {problem}" for problem in found]


def local_problems(plans: list[JobPlan], new_code: bool = False) -> list[str]:
    """The checks that need no cluster, for every plan."""
    problems = []
    for plan in plans:
        problems += check_data(plan) + check_writable(plan) + check_group(plan) + check_links(plan)
        problems += check_trackers(plan)
        problems += [p for p in [code_problem(plan, new_code)] if p]
    return problems


def check_group(plan: JobPlan) -> list[str]:
    """The profile's ``group`` exists here and the user belongs to it (run directories and snapshots are given to
    it)."""
    try:
        plan.profile.gid()
    except ConfigError as exc:
        return [str(exc)]
    return []


def check_dependency(dependency: str, states: dict[str, list[str]]) -> list[str]:
    """Problems of a resolved ``--dependency`` given :func:`job_states` of its jobs, in words. Slurm itself counts a
    job it does not know as done and starts the dependent job at once, and leaves a job whose condition can no
    longer hold pending forever (DependencyNeverSatisfied)."""
    problems = []
    for job, kind in dependency_jobs(dependency).items():
        if job not in states:
            problems.append(f"--dependency {dependency}: Slurm knows no job {job} (not queued, not in accounting); "
                            "Slurm would count it as done and start this job at once. Check the id with "
                            "`python launch/status.py --all`")
            continue
        failed = sorted(set(states[job]) - ACTIVE_STATES - {"COMPLETED"})
        if kind == "afterok" and failed:
            problems.append(f"--dependency {dependency}: job {job} already ended {'/'.join(failed)}; 'afterok' can "
                            f"never hold and this job would wait forever (use afterany, or resubmit {job} first)")
        elif kind == "afternotok" and all(state == "COMPLETED" for state in states[job]):
            problems.append(f"--dependency {dependency}: job {job} already COMPLETED; 'afternotok' can never hold "
                            "and this job would wait forever")
    return problems


def check_plan(plan: JobPlan, info: ClusterInfo, array_size: int = 1) -> list[str]:
    """Problems of a planned job on this cluster, in words naming the profile file and key; [] when it fits."""
    profile, sbatch = plan.profile, plan.sbatch
    src = profile.source
    problems: list[str] = []
    if profile.partition:
        partition = info.partitions.get(profile.partition)
        if partition is None:
            return [f"{src}: 'partition: {profile.partition}' does not exist on this cluster; partitions: "
                    f"{', '.join(sorted(info.partitions)) or 'none'}"]
    else:
        partition = next((p for p in info.partitions.values() if p.default), None)
        if partition is None:
            return [f"{src}: no 'partition' set and the cluster has no default partition; set partition: to one of "
                    f"{', '.join(sorted(info.partitions)) or 'none'}"]
    if partition.state != "UP":
        problems.append(f"{src}: partition '{partition.name}' is {partition.state}; jobs will wait until it is UP")
    nodes = [info.nodes[n] for n in partition.nodes if n in info.nodes]
    if profile.constraint:
        wanted = set(re.split(r"[&,|]", profile.constraint))
        nodes = [n for n in nodes if wanted & set(n.features)]
        if not nodes:
            problems.append(f"{src}: 'constraint: {profile.constraint}' matches no node of partition "
                            f"'{partition.name}'")
            return problems
    need_gpus = sbatch.get("gpus_per_node", 0)
    need_cpus = sbatch["cpus_per_task"]
    need_mem = mem_mb(sbatch["mem"])
    fit = [n for n in nodes if n.gpus >= need_gpus and n.cpus >= need_cpus and n.memory_mb >= need_mem
           and not (need_gpus and profile.gpu_type and n.gpu_type and n.gpu_type != profile.gpu_type.upper())]
    if not fit:
        biggest = max(nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb), default=None)
        offer = (f"the largest has {biggest.gpus} GPU(s){' ' + biggest.gpu_type if biggest.gpu_type else ''}, "
                 f"{biggest.cpus} CPUs, {biggest.memory_mb} MB" if biggest else "it has no nodes")
        problems.append(f"{src}: one node must offer {need_gpus} GPU(s){' ' + profile.gpu_type if need_gpus else ''}, "
                        f"{need_cpus} CPUs and {sbatch['mem']} (gpus_per_node, cpus_per_gpu, mem_per_gpu_gb), but no "
                        f"node of partition '{partition.name}' does: {offer}")
    elif len(fit) < plan.nodes:
        problems.append(f"{src}: the job needs {plan.nodes} nodes but partition '{partition.name}' has only "
                        f"{len(fit)} that fit; use --nodes {len(fit)} or fewer")
    if partition.max_time_min is not None and sbatch["time"] > partition.max_time_min:
        problems.append(f"{src}: 'time_limit: {profile.time_limit}' exceeds partition '{partition.name}''s limit "
                        f"{format_minutes(partition.max_time_min)}; lower time_limit (the job requeues and resumes)")
    if array_size > info.max_array_size:
        problems.append(f"an array of {array_size} tasks exceeds this cluster's MaxArraySize {info.max_array_size}; "
                        f"set 'max_array_size: {info.max_array_size}' in {src} to split it")
    return problems


def test_only(script: str, env: dict[str, str], profile: Profile) -> list[str]:
    """``sbatch --test-only`` on the planned script: Slurm's own verdict, without queueing anything (with the
    profile's ``sbatch_extra`` item it names)."""
    try:
        run_slurm(["sbatch", "--test-only"], env, input=script)
    except SlurmError as exc:
        return [f"sbatch --test-only refused the planned script ({profile.source}): "
                f"{blame_sbatch_extra(str(exc), profile.sbatch_extra)}"]
    return []


def cluster_problems(plans: list[JobPlan], info: ClusterInfo, env: dict[str, str], *, array_size: int = 1,
                     scripts: list[str] = ()) -> list[str]:
    """The checks against the live cluster (``info`` already queried); SlurmError when Slurm does not answer."""
    problems: list[str] = []
    for dependency in dict.fromkeys(plan.dependency for plan in plans if plan.dependency):
        problems += check_dependency(dependency, job_states(list(dependency_jobs(dependency)), env))
    seen = set()
    for plan in plans:
        key = repr(sorted((k, repr(v)) for k, v in plan.sbatch.items() if k != "job_name"))
        if key not in seen:
            seen.add(key)
            problems += check_plan(plan, info, array_size=array_size)
    # Slurm's own verdict, also when ours found problems: the two reasons side by side (which key, and Slurm's words)
    for script in dict.fromkeys(scripts or [plans[0].script]):
        problems += test_only(script, env, plans[0].profile)
    return problems


def preflight(plans: list[JobPlan], *, array_size: int = 1, scripts: list[str] = (), dry_run: bool = False,
              info: ClusterInfo | None = None, new_code: bool = False) -> Preflight:
    """Every check for planned jobs (all of one profile). A submission raises :class:`SubmitError` on any problem,
    a Slurm that does not answer included; a dry run reports what it found and, when no cluster answers, that the
    cluster checks were not run. ``scripts`` are the sbatch scripts to test (default: the first plan's)."""
    result = Preflight(problems=local_problems(plans, new_code))
    profile = plans[0].profile
    if profile.executor == "slurm":
        env = slurm_environ(profile.slurm_conf_path())
        try:
            result.info = info or ClusterInfo.query(env)
            result.problems += cluster_problems(plans, result.info, env, array_size=array_size, scripts=scripts)
        except SlurmError as exc:
            if not dry_run:
                raise SubmitError(f"preflight: {explain(exc)}") from None
            result.skipped = f"the cluster checks were not run: {exc}"
    return result
