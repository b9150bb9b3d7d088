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
are not writable; another interpreter version, a container's, compiles as before).
only their owner reads them (and the profile's ``group``, when it names one); the manifest records every file's
hash, the bytecode's too (``memorymodels.codemanifest``). A snapshot that is there already is checked against its
manifest before it is reused: one edited since it was made is not refused but set aside (``.code/.<hash>.damaged-N``)
and copied again, since the checkout being submitted hashes to exactly that code; jobs running from the old folder
keep it as their working directory, and every attempt that starts later runs the fresh copy (the trainer checks it).
:func:`code_problem` says why a run directory's recorded code (``run.json``'s ``code``) forbids a plan.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable

from launch.planning.code import HASH_LENGTH, MANIFEST, CodeSnapshot, project_code
from launch.planning.plan import JobPlan
from memorymodels.codemanifest import changed_file, file_record
from memorymodels.experiment import REPO_ROOT
from memorymodels.fileio import GROUP_READS, PRIVATE, CorruptFileError, make_private_dir, read_json, write_json
from memorymodels.rundir import RunPaths


PRECOMPILED = ("memorymodels", "launch")
"""The packages whose bytecode a snapshot carries: what the node task and the trainer import from it."""


class SnapshotError(RuntimeError):
    """The code could not be snapshotted (changed since planning, no room); the message says what to do."""


def _warn(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


def materialize(code: CodeSnapshot, *, group: int | None = None, log: Callable[[str], None] = _warn) -> Path:
    """The snapshot's folder, filled from ``code.source`` unless an intact copy is there; ``group``: the gid that
    may read it (None: only this user); ``log`` hears of a damaged copy set aside."""
    target = code.path
    if (target / MANIFEST).exists():
        problem = _reuse_problem(target)
        if problem is None:
            return target
        try:
            aside = _set_aside(target)
        except FileNotFoundError:  # another submitter of this code moved it aside first
            aside = None
        except OSError as exc:
            raise SnapshotError(f"{problem}; it cannot be moved aside ({exc.strerror or exc}): delete {target} (or "
                                f"ask its owner to) and submit again") from None
        if aside is not None:
            log(f"{problem}; that snapshot was moved aside to {aside} (delete it once no job runs from it) and the "
                f"code is copied again from {code.source}")
    make_private_dir(target.parent, group, group_adds=True)
    work = target.parent / f".{code.hash}.partial-{uuid.uuid4().hex[:8]}"
    try:
        digest, hashes = hashlib.sha256(), {}
        for name in code.files:
            source, copy = code.source / name, work / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), copy)
            else:
                shutil.copy2(source, copy)
                os.chmod(copy, _read_only(os.stat(copy).st_mode, group))  # nobody edits a job's code in place
            record = file_record(work, name)  # what is hashed is what was copied
            digest.update(record)
            hashes[name] = hashlib.sha256(record).hexdigest()
        if digest.hexdigest()[:HASH_LENGTH] != code.hash:
            raise SnapshotError(f"{code.source} changed between planning and submission (code {code.hash} was "
                                f"planned); nothing was submitted: submit again")
        for compiled in _precompile(work, target, group):  # the bytecode a job runs is checked like its sources
            hashes[compiled] = hashlib.sha256(file_record(work, compiled)).hexdigest()
        write_json(work / MANIFEST, {**code.manifest(), "sha256": hashes})
        os.chmod(work / MANIFEST, _read_only(0o644, group))
        _restrict_folders(work, group)
        try:
            os.rename(work, target)
        except OSError:
            if not (target / MANIFEST).exists():  # not another submitter's identical copy: a real failure
                raise
    except OSError as exc:
        raise SnapshotError(f"cannot snapshot the code into {target}: {exc.strerror or exc}; free space or fix "
                            f"permissions, or submit with --no-snapshot") from None
    finally:
        if work.exists():
            _remove(work)
    return target


def _precompile(folder: Path, target: Path, group: int | None) -> list[str]:
    """The bytecode of :data:`PRECOMPILED` in ``folder``'s ``__pycache__`` folders (0.3 s here), naming the sources
    where they will be (``target``), read-only like them; a file that does not compile fails in the job as before.
    Returns the compiled files' names under ``folder``."""
    for package in PRECOMPILED:
        if (folder / package).is_dir():
            compileall.compile_dir(folder / package, ddir=str(target / package), quiet=2)
    compiled = sorted(folder.rglob("__pycache__/*.pyc"))
    for path in compiled:
        os.chmod(path, _read_only(os.stat(path).st_mode, group))
    return [str(path.relative_to(folder)) for path in compiled]


def _reuse_problem(target: Path) -> str | None:
    """Why the snapshot at ``target`` must not be reused: a file edited since it was made, or a manifest from
    before file hashes (nothing to check it against)."""
    changed = changed_file(target)
    if changed is not None:
        return str(changed)
    try:
        manifest = read_json(target / MANIFEST) or {}
    except CorruptFileError as exc:
        return str(exc)
    return None if manifest.get("sha256") else f"{target / MANIFEST}: records no file hashes to check the copy by"


def _set_aside(target: Path) -> Path:
    n = 1
    while (aside := target.with_name(f".{target.name}.damaged-{n}")).exists():
        n += 1
    os.rename(target, aside)
    return aside


def _read_only(mode: int, group: int | None) -> int:
    """A copy's mode: read (and execute, when the original is executable) for its owner, and for the group when
    one is named; nothing for others, nobody writes."""
    executable = bool(mode & 0o111)
    owner = 0o500 if executable else 0o400
    return owner | ((owner >> 3) if group is not None else 0)


def _restrict_folders(work: Path, group: int | None) -> None:
    """The snapshot's folders: entered by the owner only, or read by the group too (``fileio`` modes)."""
    for folder in [work, *(p for p in work.rglob("*") if p.is_dir() and not p.is_symlink())]:
        if group is not None:
            os.chown(folder, -1, group)
            os.chmod(folder, GROUP_READS)
        else:
            os.chmod(folder, PRIVATE)
    if group is not None:
        for path in work.rglob("*"):
            if not path.is_dir():
                os.chown(path, -1, group, follow_symlinks=False)


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


def checkout_code() -> dict:
    """run.json's ``code`` for a run continued with ``--no-snapshot --new-code``: the checkout's hash now, no
    snapshot folder (``path`` None), the checkout it runs from."""
    code = project_code(REPO_ROOT)
    return {"hash": code.hash, "path": None, "git": code.git, "checkout": str(code.source)}


def code_problem(plan: JobPlan, new_code: bool = False) -> str | None:
    """Why ``plan`` may not run in its run directory: the run was submitted with other code (its snapshot) and
    ``--new-code`` was not given. A plan without a snapshot (``--no-snapshot``) runs the checkout as it is: it is
    compared by the checkout's hash now, so the flag is no side door. None when it may."""
    if new_code:
        return None
    old = recorded_code(plan.run_dir)
    if old is None:
        return None
    now = plan.code.hash if plan.code is not None else project_code(REPO_ROOT).hash
    if old["hash"] == now:
        return None
    where = old.get("path") or f"the checkout {old.get('checkout')}"
    sha = ((old.get("git") or {}).get("sha") or "unknown")[:12]
    if plan.code is None:
        return (f"{plan.run_dir} was submitted with code {old['hash']} ({where}); --no-snapshot would continue it "
                f"with the checkout as it is, which is code {now}. To continue this run with the checkout's code pass "
                f"--new-code too; to keep its code, submit from a checkout of that code (git {sha}); or start a new "
                f"run (--set output.name=...)")
    return (f"{plan.run_dir} was submitted with code {old['hash']} ({where}); the checkout is now "
            f"{now}. To continue this run with the new code pass --new-code; to keep its code, submit "
            f"from a checkout of that code (git {sha}); or start a new run (--set output.name=...)")
