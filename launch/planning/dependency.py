"""``--dependency``: Slurm's job-to-job dependencies, checked and resolved before a job is planned.

    python launch/submit.py --profile local-slurm --dependency afterok:1234 --dry-run
    python launch/submit.py --profile local-slurm --dependency afterok:20261128-001917-559a6a    # a whole submission

Reads the journal (a submission id stands for all its jobs) and nothing else; whether the named jobs exist and can
still satisfy the condition is the preflight's question (``launch.submission.preflight``).
"""

from __future__ import annotations

import re

from launch.records import journal
from memorymodels.configuration import ConfigError
from memorymodels.fileio import CorruptFileError

DEPENDENCY_TYPES = ("after", "afterany", "afterok", "afternotok", "aftercorr")
"""Slurm's job-to-job dependency types that ``--dependency`` accepts (``singleton`` too, which names no job)."""


_JOB_ID = re.compile(r"\d+(?:_\d+)?")


_SUBMISSION_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


def dependency_spec(spec: str, *, flag: str = "--dependency") -> str:
    """A dependency in Slurm's syntax, checked, with journal submission ids replaced by their job ids.

    ``afterok:1234``, ``afterany:1234:1240``, ``afterok:1234,afternotok:1250`` (all must hold), ``afterok:1?afterok:2``
    (either), ``after:1234+10`` (10 minutes after 1234 started), ``singleton``; a job id may be an array task
    (``1234_7``) or a submission id from ``.state/journal/`` (``afterok:20261128-001917-559a6a``: every job of that
    submission). ConfigError names the flag and what is wrong. Reads the journal, nothing else.
    """
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
                except CorruptFileError as exc:  # which jobs it stands for cannot be known: never guess
                    raise ConfigError(f"{flag} {spec}: the journal entry of submission {job} is damaged ({exc}); "
                                      f"name its job ids instead (python launch/status.py --all)") from None
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
