"""What the live cluster offers, for the preflight before anything is queued: partitions, nodes, MaxArraySize.

    python launch/cluster_info.py                 # print what the preflight sees (uses SLURM_CONF / the local cluster)

Three ``scontrol`` calls (``show partition -o``, ``show node -o``, ``show config``), all ``Key=Value`` text that has
stayed stable across Slurm versions; parsing is separate from querying (:func:`parse_partitions`,
:func:`parse_nodes`, :func:`parse_config`) so tests replay output captured from the real local cluster.
:func:`check_plan` compares a planned job with that picture and returns the problems in words.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python launch/cluster_info.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class SlurmError(RuntimeError):
    """A Slurm client command is missing, failed or did not answer. The message names the command and Slurm's own
    error in one line (the dashboard shows it in its stale-data banner); ``hint`` says what to do (the submitter
    prints both: :func:`explain`)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def explain(exc: SlurmError) -> str:
    """The error and what to do about it, on two lines."""
    return f"{exc}\n{exc.hint}" if exc.hint else str(exc)


def slurm_environ(slurm_conf: str | None = None) -> dict[str, str]:
    """The environment for Slurm commands: ``slurm_conf`` (a profile's) if given, else ``SLURM_CONF`` as set, else
    the project's local cluster (``launch.local_cluster.slurm_environ()``) when that module is present."""
    env = dict(os.environ)
    if slurm_conf:
        env["SLURM_CONF"] = str(Path(os.path.expandvars(os.path.expanduser(slurm_conf))))
        return env
    if env.get("SLURM_CONF"):
        return env
    try:
        from launch.local_cluster import slurm_environ as local_environ
    except ImportError:
        return env
    return dict(local_environ())


def run_slurm(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Run one Slurm client command and return its stdout; any failure is a :class:`SlurmError`."""
    command = shlex.join(args) if len(shlex.join(args)) <= 80 else f"{args[0]} ..."
    local_hint = "start the project's cluster with `python launch/local_cluster.py up`"
    conf = (os.environ if env is None else env).get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # Slurm's clients would retry for a minute before saying so
        raise SlurmError(f"SLURM_CONF={conf}: no such file",
                         "point the profile's slurm_conf (or SLURM_CONF) at the cluster's slurm.conf, or unset it "
                         "to use the default")
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"'{args[0]}' is not installed here",
                         f"submit from a Slurm login node, or {local_hint}") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"'{command}': no answer from the controller within {timeout:.0f} s",
                         "is slurmctld up? (`python launch/local_cluster.py status` for the project's cluster)"
                         ) from None
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise SlurmError(f"'{command}' exited with {out.returncode}: {lines[-1] if lines else 'no message'}",
                         f"SLURM_CONF={conf or 'the default slurm.conf'}: {local_hint}, or point SLURM_CONF (or the "
                         "profile's slurm_conf) at your cluster")
    return out.stdout


def job_states(job_ids: list[str], env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Job id -> the states of its jobs (an array: one per task) for every id Slurm knows: ``squeue -t all``
    (queued, running, ended within MinJobAge), then ``sacct`` for the rest where accounting runs. Unknown ids are
    absent (and the result is incomplete, not an error, where there is no accounting)."""
    from launch.slurm_output import normalize_state

    states: dict[str, list[str]] = {}

    def add(text: str, wanted: list[str]) -> None:
        for line in text.splitlines():
            job, _, state = line.strip().partition("|")
            for key in {job, job.split("_")[0]} & set(wanted):
                states.setdefault(key, []).append(normalize_state(state))

    try:
        add(run_slurm(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T"], env), job_ids)
    except SlurmError as exc:
        if "Invalid job id" not in str(exc):  # squeue's answer when it knows none of them
            raise
    rest = [job for job in job_ids if job not in states]
    if rest:
        try:
            add(run_slurm(["sacct", "-n", "-X", "-P", "-j", ",".join(rest), "-o", "JobID,State"], env), rest)
        except SlurmError:
            pass  # no accounting: what squeue does not know stays unknown
    return states


def check_dependency(dependency: str, states: dict[str, list[str]]) -> list[str]:
    """Problems of a resolved ``--dependency`` given :func:`job_states` of its jobs, in words. Slurm itself counts a
    job it does not know as done and starts the dependent job at once, and leaves a job whose condition can no
    longer hold pending forever (DependencyNeverSatisfied)."""
    from launch.plan import dependency_jobs
    from launch.slurm_output import ACTIVE_STATES

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


def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output (one record per line of ``Key=Value`` pairs) -> dicts."""
    records = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        record = {}
        for match in re.finditer(r"(\w[\w/:.]*)=(.*?)(?=\s+\w[\w/:.]*=|$)", line.strip()):
            record[match.group(1)] = match.group(2).strip()
        records.append(record)
    return records


def parse_time(value: str | None) -> int | None:
    """Slurm time (``UNLIMITED``, ``30``, ``1-00:00:00``, ``02:00:00``) -> minutes; None for unlimited/unknown."""
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    from launch.profiles import parse_time_limit

    try:
        return parse_time_limit(value)
    except ValueError:
        return None


@dataclass
class Partition:
    name: str
    nodes: list[str]
    max_time_min: int | None
    default: bool
    state: str


@dataclass
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    gpu_type: str | None
    features: list[str]
    state: str
    partitions: list[str]


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    max_array_size: int = 1001

    @classmethod
    def query(cls, env: dict[str, str] | None = None) -> "ClusterInfo":
        """Ask the live cluster (three scontrol calls)."""
        return cls(partitions=parse_partitions(run_slurm(["scontrol", "show", "partition", "-o"], env)),
                   nodes=parse_nodes(run_slurm(["scontrol", "show", "node", "-o"], env)),
                   max_array_size=parse_config(run_slurm(["scontrol", "show", "config"], env)).get("MaxArraySize", 1001))


def expand_hostlist(text: str) -> list[str]:
    """``node[1-3,5],gpu7`` -> ``['node1', 'node2', 'node3', 'node5', 'gpu7']`` (submitit's parser)."""
    if not text or text in ("(null)", "None"):
        return []
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(text)


def parse_partitions(text: str) -> dict[str, Partition]:
    """``scontrol show partition -o`` -> name -> Partition."""
    result = {}
    for r in _records(text):
        name = r.get("PartitionName")
        if name:
            result[name] = Partition(name=name, nodes=expand_hostlist(r.get("Nodes", "")),
                                     max_time_min=parse_time(r.get("MaxTime")), default=r.get("Default") == "YES",
                                     state=r.get("State", "UP"))
    return result


def _gpus(gres: str) -> tuple[int, str | None]:
    """``gpu:v100:8(S:0-1)`` -> (8, 'V100'); ``(null)`` -> (0, None)."""
    total, kind = 0, None
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = parts[-1]
        if count.isdigit():
            total += int(count)
            if len(parts) == 3:
                kind = parts[1].upper()
        elif len(parts) == 2:  # gpu:v100 without a count means 1
            total, kind = total + 1, parts[1].upper()
    return total, kind


def parse_nodes(text: str) -> dict[str, Node]:
    """``scontrol show node -o`` -> name -> Node."""
    result = {}
    for r in _records(text):
        name = r.get("NodeName")
        if not name:
            continue
        gpus, gpu_type = _gpus(r.get("Gres", ""))

        def number(key: str) -> int:
            value = r.get(key, "0")
            return int(value) if value.isdigit() else 0

        features = [f for f in r.get("AvailableFeatures", "").split(",") if f and f != "(null)"]
        result[name] = Node(name=name, cpus=number("CPUTot"), memory_mb=number("RealMemory"), gpus=gpus,
                            gpu_type=gpu_type, features=features, state=r.get("State", ""),
                            partitions=[p for p in r.get("Partitions", "").split(",") if p])
    return result


def parse_config(text: str) -> dict[str, Any]:
    """``scontrol show config`` -> the keys the preflight needs (``MaxArraySize`` as an int)."""
    config: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    if str(config.get("MaxArraySize", "")).isdigit():
        config["MaxArraySize"] = int(config["MaxArraySize"])
    return config


def _mem_mb(text: str) -> int:
    """``'480G'`` / ``'1536M'`` (also ``GB``/``MB``, ``T``) -> MB."""
    number = float(re.match(r"[\d.]+", text).group())
    unit = text.upper().rstrip("B")[-1:]
    return int(number * {"T": 1024 * 1024, "G": 1024}.get(unit, 1))


def check_plan(plan, info: ClusterInfo, array_size: int = 1) -> list[str]:
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
    need_mem = _mem_mb(sbatch["mem"])
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
        from launch.profiles import format_minutes

        problems.append(f"{src}: 'time_limit: {profile.time_limit}' exceeds partition '{partition.name}''s limit "
                        f"{format_minutes(partition.max_time_min)}; lower time_limit (the job requeues and resumes)")
    if array_size > info.max_array_size:
        problems.append(f"an array of {array_size} tasks exceeds this cluster's MaxArraySize {info.max_array_size}; "
                        f"set 'max_array_size: {info.max_array_size}' in {src} to split it")
    return problems


def main() -> int:
    env = slurm_environ()
    try:
        info = ClusterInfo.query(env)
    except SlurmError as exc:
        print(f"cluster_info: {explain(exc)}", file=sys.stderr)
        return 1
    print(f"SLURM_CONF={env.get('SLURM_CONF', '(default)')}  MaxArraySize={info.max_array_size}")
    for p in info.partitions.values():
        print(f"partition {p.name}{' (default)' if p.default else ''}: {p.state}, max time "
              f"{p.max_time_min if p.max_time_min is not None else 'unlimited'} min, nodes {', '.join(p.nodes)}")
    for n in info.nodes.values():
        print(f"node {n.name}: {n.cpus} CPUs, {n.memory_mb} MB, {n.gpus} GPU(s) {n.gpu_type or ''} {n.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
