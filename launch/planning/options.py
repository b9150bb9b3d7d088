"""The one table of the sbatch and srun options the launcher sets itself or that a profile key decides, and the check
that keeps a profile's ``sbatch_extra`` and ``srun_args`` away from them.

    python launch/submit.py --profile v100x8 --set 'profile.sbatch_extra={comment: x}' --dry-run   # refused

``sbatch_extra`` is an escape hatch for options the launcher does not know (``mail-type``, ``exclude``, ``hold``);
an option the plan depends on must not come through it: ``comment`` would drop the exactly-once tag, ``chdir`` move
the job out of its code snapshot, ``output`` move the logs the dashboard reads, ``partition`` overrule the profile's
own key without a word. Every spelling Slurm accepts is matched (``launch.slurm.options``: abbreviations, short
letters, clustered short options, ``=`` or a separate value), and a refusal names the profile key to use instead.
Where the exactly-once tag goes is the profile's ``tag_field`` (:data:`TAG_FIELDS`): sites that keep ``--comment``
for accounting move it to ``--wckey``, and ``comment`` is then the site's.
"""

from __future__ import annotations

import re

from launch.slurm.options import SBATCH_LONG, long_option, read_srun_args

TAG_FIELDS = {"comment": "%k", "wckey": "%w"}
"""Where a queued job carries the launcher's exactly-once tag: the sbatch option -> the ``squeue -o`` field that
prints it. ``comment`` by default; ``wckey`` where the site keeps ``--comment`` for accounting (and does not
enforce a list of wckeys: ``AccountingStorageEnforce=wckeys`` refuses unknown ones)."""

_LOGS = "the launcher: the logs the dashboard and --logs read"
_NODES = "the launcher: one task per node (--nodes, or the profile key 'nodes')"
_SUBMIT = "the launcher: how sbatch answers the submission"
_REQUEUE = "the launcher: timeouts and failures requeue the job"
_SNAPSHOT = "the launcher: the job runs from its code snapshot"

SBATCH_OWNED = {
    "job-name": "the launcher: the run directory's name", "chdir": _SNAPSHOT,
    "output": _LOGS, "error": _LOGS, "input": _LOGS, "open-mode": _LOGS,
    "wrap": "the launcher: the planned script", "array": "the launcher: a sweep's arrays",
    "parsable": _SUBMIT, "test-only": _SUBMIT, "wait": _SUBMIT, "requeue": _REQUEUE, "no-requeue": _REQUEUE,
    "dependency": "the --dependency flag",
    "nodes": _NODES, "ntasks": _NODES, "ntasks-per-node": _NODES, "tasks-per-node": _NODES,
    "signal": "signal_before_end_s", "partition": "partition", "account": "account", "qos": "qos",
    "constraint": "constraint", "gpus": "gpus_per_node", "gpus-per-node": "gpus_per_node",
    "gpus-per-task": "gpus_per_node", "cpus-per-task": "cpus_per_gpu", "cpus-per-gpu": "cpus_per_gpu",
    "mem": "mem_per_gpu_gb", "mem-per-cpu": "mem_per_gpu_gb", "mem-per-gpu": "mem_per_gpu_gb",
    "time": "time_limit", "exclusive": "exclusive", "container": "container",
}
"""sbatch options the plan sets -> who decides them: a profile key, or why the launcher does. ``comment`` and
``wckey`` are added by :func:`sbatch_owned` (one holds the tag, the other is the profile's ``wckey``)."""

SRUN_OWNED = {
    "output": _LOGS, "error": _LOGS, "input": _LOGS, "open-mode": _LOGS, "unbuffered": _LOGS, "chdir": _SNAPSHOT,
    "kill-on-bad-exit": "the launcher: one failed node ends the step",
    "nodes": _NODES, "ntasks": _NODES, "ntasks-per-node": _NODES, "tasks-per-node": _NODES,
    "jobid": "the launcher: the step runs in its own job",
    "cpus-per-task": "cpus_per_gpu", "container-image": "container", "container-mounts": "container",
    "container-workdir": "container",
}
"""srun options the job's srun line sets (submitit's logs, the launcher's, pyxis's from ``container``) -> who."""


def sbatch_owned(tag_field: str) -> dict[str, str]:
    """:data:`SBATCH_OWNED` with ``comment`` and ``wckey`` for a profile whose tag goes in ``tag_field``."""
    owned = {**SBATCH_OWNED, "wckey": "wckey"}
    owned[tag_field] = (f"the launcher: its exactly-once tag (the profile key 'tag_field' can move it to "
                        f"{' or '.join(f'--{f}' for f in TAG_FIELDS if f != tag_field)})")
    return owned


def _verdict(word: str, meanings: list[str], owned: dict[str, str], command: str) -> str | None:
    """Why ``word`` may not be given and what to do instead, or None."""
    mine = [option for option in meanings if option in owned]
    if not mine:
        return None
    who = owned[mine[0]]
    todo = "remove it" if who.startswith("the ") else f"use the profile key '{who}' instead"
    who = who if who.startswith("the ") else f"the profile key '{who}'"
    if len(meanings) > 1:
        return (f"is an abbreviation {command} refuses as ambiguous (--{', --'.join(meanings)}), and --{mine[0]} is "
                f"set by {who}; spell the option in full")
    spelled = "" if word.lstrip("-") == mine[0] else f" (Slurm reads {word} as --{mine[0]})"
    return f"sets {command}'s --{mine[0]}{spelled}, which is set by {who}; {todo}"


def sbatch_extra_problem(key: str, tag_field: str) -> str | None:
    """Why ``sbatch_extra`` may not have ``key`` (rendered ``#SBATCH --key``), or None."""
    return _verdict(key, long_option(key, SBATCH_LONG), sbatch_owned(tag_field), "sbatch")


def srun_args_problem(args: list[str]) -> tuple[int, str] | None:
    """(index, why) of the first of ``args`` (a profile's ``srun_args``) that sets an option the launcher owns."""
    for i, arg in enumerate(args):
        for word, meanings in read_srun_args([arg]):
            why = _verdict(word, meanings, SRUN_OWNED, "srun")
            if why:
                return i, why
    return None


_NAMED = re.compile(r"--([a-z][a-z0-9-]*)")


def blame_sbatch_extra(message: str, sbatch_extra: dict) -> str:
    """``message`` (Slurm refusing a script) followed by the ``sbatch_extra`` items it names, in any spelling:
    Slurm's own words ("Invalid --mail-type specification") name the option, not the profile key it came from."""
    named = set(_NAMED.findall(message))
    culprits = []
    for key, value in sbatch_extra.items():
        meanings = long_option(key, SBATCH_LONG)
        if key in named or len(meanings) == 1 and meanings[0] in named:
            culprits.append(f"sbatch_extra.{key}: {value}")
    if not culprits:
        return message
    return f"{message} (from the profile's {'; '.join(culprits)}: fix or remove it)"
