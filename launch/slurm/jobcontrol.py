"""What a running job asks of Slurm about itself: its end time, requeueing it, and leaving a bad node out of the retry.

    scontrol requeue JOB                          # what requeue() runs
    scontrol update JobId=JOB ExcNodeList=a,b     # what exclude_node() runs, right after the requeue

Used by the node launcher (``launch.node.task``) from inside the job. Slurm 22.05 refuses ``ExcNodeList`` on a
running job ("Job is no longer pending execution") and accepts it the moment the job is requeued, so the order is
requeue, then exclude. A node is left out only when the partition keeps enough other nodes for the job (on a
two-node partition a two-node job would otherwise wait forever); the answer says which happened and why.
"""

from __future__ import annotations

import time

from launch.slurm.client import SlurmError, run_slurm
from launch.slurm.cluster import _records, expand_hostlist
from launch.slurm.output import attempts_command, parse_attempts, parse_time


def job_record(job_id: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``scontrol show job -o JOB`` as Key -> value ({} when Slurm no longer knows it)."""
    records = _records(run_slurm(["scontrol", "show", "job", "-o", str(job_id)], env))
    return records[0] if records else {}


def _queue_time(job_id: str, field: str, env: dict[str, str] | None) -> float | None:
    """One of the job's times as squeue gives it (``%e`` end, ``%S`` start; epoch seconds), or None when unknown."""
    try:
        out = run_slurm(["squeue", "-h", "-j", str(job_id), "-o", field], env, timeout=10).strip()
    except SlurmError:
        return None
    return parse_time(out.splitlines()[0]) if out else None


def end_time(job_id: str, env: dict[str, str] | None = None) -> float | None:
    """When Slurm will end the job (epoch seconds; its time limit as updated so far), or None when unknown."""
    return _queue_time(job_id, "%e", env)


def start_time(job_id: str, env: dict[str, str] | None = None) -> float | None:
    """When Slurm started this attempt of the job (epoch seconds), or None when unknown."""
    return _queue_time(job_id, "%S", env)


def attempt_accounting(job_ids: list[str], env: dict[str, str] | None = None) -> dict[tuple[str, int], dict]:
    """Slurm's accounting of every attempt of these jobs (:func:`launch.slurm.output.parse_attempts`); {} where
    accounting does not run."""
    if not job_ids:
        return {}
    try:
        return parse_attempts(run_slurm(attempts_command(sorted(set(job_ids))), env, timeout=20))
    except SlurmError:
        return {}


def requeue(job_id: str, env: dict[str, str] | None = None) -> None:
    """``scontrol requeue``: Slurm ends the job's steps on every node and queues it again (same id)."""
    run_slurm(["scontrol", "requeue", str(job_id)], env)


def exclude_node(job_id: str, node: str, nodes_needed: int, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Add ``node`` to the requeued (pending) job's ``ExcNodeList`` when its partition keeps ``nodes_needed`` other
    nodes (the job's size, from the job itself: Slurm's NumNodes of a job being requeued is not reliable); (excluded,
    what happened in words)."""
    try:
        job = job_record(job_id, env)
        partition = job.get("Partition", "")
        excluded = set(expand_hostlist(job.get("ExcNodeList", "")))
        part = _records(run_slurm(["scontrol", "show", "partition", "-o", partition], env))
        members = set(expand_hostlist(part[0].get("Nodes", ""))) if part else set()
    except (SlurmError, ValueError) as exc:
        return False, f"{node} not excluded: {exc}"
    if node in excluded:
        return True, f"{node} was excluded already"
    left = members - excluded - {node}
    if len(left) < nodes_needed:
        return False, (f"{node} not excluded: partition {partition} would keep {len(left)} node(s) for a "
                       f"{nodes_needed}-node job")
    names = ",".join(sorted(excluded | {node}))
    for _ in range(10):  # accepted once the requeue has made the job pending again
        try:
            run_slurm(["scontrol", "update", f"JobId={job_id}", f"ExcNodeList={names}"], env)
            return True, f"{node} excluded from the retry (ExcNodeList={names})"
        except SlurmError as exc:
            error = exc
            time.sleep(0.5)
    return False, f"{node} not excluded: {error}"
