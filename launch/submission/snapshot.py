"""Submission's half of the code snapshot (``launch.planning.code``): copy the planned code to
``<checkpoint_root>/.code/<hash>/`` once, and refuse to resubmit a run with other code than its own unless asked.

    python launch/submit.py --profile local-slurm --experiment configs/experiments/debug.yaml             # snapshot
    python launch/submit.py --profile local-slurm --experiment configs/experiments/debug.yaml --new-code  # the run
                                                                          # continues with the checkout's code now

:func:`materialize` copies the files the plan hashed into a temporary folder beside the snapshot, hashing what it
copied; only when that hash is the planned one does the folder get its final name (a rename: a snapshot is either
complete or absent, and two submitters of the same code meet at the same folder). The copies are read-only, and the
packages a job imports (:data:`PRECOMPILED`) come with their bytecode, compiled by this interpreter before the rename:
no job compiles them again (Python only reads ``__pycache__`` where ``PYTHONDONTWRITEBYTECODE`` is set or the folders
are not writable; another interpreter version, a container's, compiles as before). The copier holds a lock on its
temporary folder; one left by a submitter killed mid-copy is removed by the next submission to that checkpoint root
(:func:`remove_stale_partials`).
:func:`code_problem` says why a run directory's recorded code (``run.json``'s ``code``) forbids a plan.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

from launch.planning.code import HASH_LENGTH, MANIFEST, CodeSnapshot, file_record
from launch.planning.plan import JobPlan
from memorymodels.fileio import CorruptFileError, DiskFullError, free_bytes, is_disk_full, read_json, write_json
from memorymodels.rundir import RunPaths


PRECOMPILED = ("memorymodels", "launch")
"""The packages whose bytecode a snapshot carries: what the node task and the trainer import from it."""


class SnapshotError(RuntimeError):
    """The code could not be snapshotted (changed since planning, no room); the message says what to do."""


def materialize(code: CodeSnapshot) -> Path:
    """The snapshot's folder, filled from ``code.source`` when it is not there yet."""
    target = code.path
    if (target / MANIFEST).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    work = target.parent / f".{code.hash}.partial-{uuid.uuid4().hex[:8]}"
    held = None
    try:
        held = _claim(work)
        digest = hashlib.sha256()
        for name in code.files:
            digest.update(file_record(code.source, name))  # what is copied is what is hashed
            source, copy = code.source / name, work / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), copy)
            else:
                shutil.copy2(source, copy)
                os.chmod(copy, os.stat(copy).st_mode & ~0o222)  # read-only: nobody edits a job's code in place
        if digest.hexdigest()[:HASH_LENGTH] != code.hash:
            raise SnapshotError(f"{code.source} changed between planning and submission (code {code.hash} was "
                                f"planned); nothing was submitted: submit again")
        _precompile(work, target)
        write_json(work / MANIFEST, code.manifest())
        try:
            os.rename(work, target)
        except OSError:
            if not (target / MANIFEST).exists():  # not another submitter's identical copy: a real failure
                raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(target, free_bytes(target.parent), "the partial copy was removed (or submit with "
                                "--no-snapshot)") from None
        raise SnapshotError(f"cannot snapshot the code into {target}: {exc.strerror or exc}; free space or fix "
                            f"permissions, or submit with --no-snapshot") from None
    finally:
        if work.exists():
            _remove(work)
        if held is not None:
            os.close(held)
    return target


PARTIAL_GRACE_S = 60
"""A partial copy younger than this is never taken for a dead submitter's (it may not be locked yet)."""


def _claim(work: Path) -> int:
    """Make the partial copy's folder and hold a lock on it while copying (a descriptor; closing it releases the
    lock, as does the copier's death): :func:`remove_stale_partials` leaves a held one alone."""
    work.mkdir()
    fd = os.open(work, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale_partials(parent: Path) -> list[Path]:
    """Remove the partial copies in ``parent`` (``<checkpoint_root>/.code``) whose submitter was killed while
    copying: nobody holds their lock. Returns what was removed."""
    removed = []
    for work in parent.glob(".*.partial-*"):
        try:
            if time.time() - work.stat().st_mtime < PARTIAL_GRACE_S:
                continue
            fd = os.open(work, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live submitter is copying it
        else:
            _remove(work)
            removed.append(work)
        finally:
            os.close(fd)
    return removed


def _precompile(folder: Path, target: Path) -> None:
    """The bytecode of :data:`PRECOMPILED` in ``folder``'s ``__pycache__`` folders (0.3 s here), naming the sources
    where they will be (``target``), read-only like them; a file that does not compile fails in the job as before."""
    for package in PRECOMPILED:
        if (folder / package).is_dir():
            compileall.compile_dir(folder / package, ddir=str(target / package), quiet=2)
    for compiled in folder.rglob("__pycache__/*.pyc"):
        os.chmod(compiled, os.stat(compiled).st_mode & ~0o222)


def _remove(folder: Path) -> None:
    for path in folder.rglob("*"):  # read-only copies: make them removable first
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o644)
    shutil.rmtree(folder, ignore_errors=True)


def recorded_code(run_dir: Path) -> dict | None:
    """The ``code`` a run directory's run.json records (None: no run there yet, or one without a snapshot)."""
    try:
        info = read_json(RunPaths(run_dir).run_json)
    except CorruptFileError:
        return None  # planning refuses a damaged run.json already, with how to repair it
    code = (info or {}).get("code")
    return code if isinstance(code, dict) and code.get("hash") else None


def code_problem(plan: JobPlan, new_code: bool = False) -> str | None:
    """Why ``plan`` may not run in its run directory: the run was submitted with other code (its snapshot) and
    ``--new-code`` was not given. None when it may."""
    if plan.code is None or new_code:
        return None
    old = recorded_code(plan.run_dir)
    if old is None or old["hash"] == plan.code.hash:
        return None
    return (f"{plan.run_dir} was submitted with code {old['hash']} ({old.get('path')}); the checkout is now "
            f"{plan.code.hash}. To continue this run with the new code pass --new-code; to keep its code, submit "
            f"from a checkout of that code (git {((old.get('git') or {}).get('sha') or 'unknown')[:12]}); or start "
            f"a new run (--set output.name=...)")
