"""The one path to Slurm's client commands: every ``squeue``, ``sacct``, ``scontrol``, ``scancel`` and ``sbatch
--test-only`` call of the launcher goes through :func:`run_slurm`, whose :class:`SlurmError` names the command and
Slurm's own error in one line and carries a ``hint`` (what to do).

Which cluster: a profile's ``slurm_conf`` when it names one (the local profiles name the project's development
cluster this way), else ``SLURM_CONF`` as set, else Slurm's default configuration.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from launch.slurm.output import normalize_state

_TRY_HELP = re.compile(r'Try "\w+ --help" for more information')

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


def slurm_environ(slurm_conf: str | Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Slurm commands: ``base`` (default ``os.environ``) with ``SLURM_CONF`` set to
    ``slurm_conf`` (a profile's, already expanded) when given; otherwise ``SLURM_CONF`` stays as set."""
    env = dict(os.environ if base is None else base)
    if slurm_conf:
        env["SLURM_CONF"] = str(slurm_conf)
    return env


def without_allocation(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the variables of a Slurm allocation (``SLURM_*`` but ``SLURM_CONF``): submitting from inside
    ``salloc`` or a batch job must not hand the new job the old job's id, node list or task counts."""
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def run_slurm(args: list[str], env: dict[str, str] | None = None, timeout: float = 30,
              input: str | None = None) -> str:
    """Run one Slurm client command (``input`` on its stdin) and return its stdout; any failure is a
    :class:`SlurmError`."""
    command = shlex.join(args) if len(shlex.join(args)) <= 80 else f"{args[0]} ..."
    local_hint = "for the project's development cluster run `python launch/local_cluster.py up`"
    conf = (os.environ if env is None else env).get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # Slurm's clients would retry for a minute before saying so
        raise SlurmError(f"SLURM_CONF={conf}: no such file",
                         "point the profile's slurm_conf (or SLURM_CONF) at the cluster's slurm.conf, or unset it "
                         "to use the default")
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError:
        raise SlurmError(f"'{args[0]}' is not installed here",
                         f"submit from a Slurm login node, or {local_hint}") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"'{command}': no answer from the controller within {timeout:.0f} s",
                         "is slurmctld up? (`python launch/local_cluster.py status` for the project's cluster)"
                         ) from None
    if out.returncode != 0:
        raise SlurmError(f"'{command}' exited with {out.returncode}: {slurm_reason(out.stderr or out.stdout)}",
                         f"SLURM_CONF={conf or 'the default slurm.conf'}: {local_hint}, or point SLURM_CONF (or the "
                         "profile's slurm_conf) at your cluster")
    return out.stdout


def slurm_reason(text: str) -> str:
    """The line of a Slurm client's error output that says why: the last one, but for the ``Try "sbatch --help"``
    that follows an unknown option (the option is named on the line before)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not _TRY_HELP.match(line)]
    return lines[-1] if lines else "no message"


def job_states(job_ids: list[str], env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Job id -> the states of its jobs (an array: one per task) for every id Slurm knows: ``squeue -t all``
    (queued, running, ended within MinJobAge), then ``sacct`` for the rest where accounting runs. Unknown ids are
    absent (and the result is incomplete, not an error, where there is no accounting)."""
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
