"""A code snapshot's manifest: what a job runs from, file by file, and the check that it is still that (torch-free).

    python -c "from memorymodels.codemanifest import verify_code; verify_code('RUNS/.code/HASH')"

The launcher copies the project into ``<checkpoint_root>/.code/<hash>/`` (``launch.submission.snapshot``) and writes
:data:`MANIFEST` there: the hash, the checkout's git commit and whether it was dirty, and ``sha256``, the hash of
every file's :func:`file_record` (its path, whether it is executable or a link, its content). A file edited in the
snapshot after it was made (same size or not) would run while run.json still named the original code; so the
manifest is checked where the snapshot is used again:

- the trainer, at the start of every attempt (a resubmission or a requeue), before anything else
  (``memorymodels.train``: exit ``TrainerExit.CODE``, one line naming the file);
- a submission that finds the snapshot already there (``launch.submission.snapshot.materialize``: it is set aside
  and copied again from the checkout, whose files have that hash).

A snapshot written before the manifest held file hashes has nothing to compare with: it is not checked by the
trainer, and a submission copies it again. Files the manifest does not list (none are written: Python's bytecode is
kept out, ``launch.planning.code.NO_WRITES``) are not looked at.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from memorymodels.fileio import CorruptFileError, read_json

MANIFEST = ".memorymodels-code.json"
"""The file a code snapshot describes itself in, at its top."""


class CodeChangedError(Exception):
    """A code snapshot's file (``path``) differs from what its manifest recorded, or the manifest is damaged."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def file_record(repo: Path, name: str) -> bytes:
    """What the hashes cover of one file: its path, whether it is executable (or a link) and its content."""
    path = Path(repo) / name
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        kind, content = b"l", os.readlink(path).encode()
    else:
        kind, content = (b"x" if info.st_mode & 0o111 else b"f"), path.read_bytes()
    return name.encode() + b"\0" + kind + b"\0" + str(len(content)).encode() + b"\0" + content


def file_digest(repo: Path, name: str) -> str:
    """sha256 (hex) of :func:`file_record`: what the manifest's ``sha256`` holds for ``name``."""
    return hashlib.sha256(file_record(repo, name)).hexdigest()


def code_manifest(folder: Path) -> dict | None:
    """The manifest of the code snapshot at ``folder`` (None: a plain checkout, or a damaged manifest)."""
    try:
        data = read_json(Path(folder) / MANIFEST)
    except CorruptFileError:
        return None
    return data if isinstance(data, dict) else None


def changed_file(folder: Path) -> CodeChangedError | None:
    """Why the snapshot at ``folder`` is not what its manifest says (the first file that differs or is missing,
    or the manifest itself); None when it is intact. A folder without a manifest (a checkout) or with one that
    holds no file hashes has nothing to check: None."""
    folder = Path(folder)
    try:
        manifest = read_json(folder / MANIFEST)
    except CorruptFileError as exc:
        return CodeChangedError(exc.path, f"damaged code snapshot manifest ({exc.problem})")
    if not isinstance(manifest, dict) or manifest.get("sha256") is None:
        return None
    hashes = manifest["sha256"]
    if not isinstance(hashes, dict):
        return CodeChangedError(folder / MANIFEST, "damaged code snapshot manifest ('sha256' is not a mapping)")
    for name, digest in sorted(hashes.items()):
        try:
            found = file_digest(folder, name)
        except OSError as exc:
            return CodeChangedError(folder / name, f"missing from code snapshot {manifest.get('hash')} "
                                                   f"({exc.strerror or exc})")
        if found != digest:
            return CodeChangedError(folder / name, f"changed since code snapshot {manifest.get('hash')} was made "
                                                   f"(its content or mode differs from the snapshot's manifest)")
    return None


def verify_code(folder: Path) -> dict | None:
    """The manifest of the snapshot at ``folder`` once every file it lists checks out (None: not a snapshot);
    :class:`CodeChangedError` naming the first file that differs, with what to do."""
    problem = changed_file(folder)
    if problem is not None:
        raise CodeChangedError(problem.path, f"{problem.problem}; this attempt does not run edited code. Submit the "
                                             f"run again from a checkout of that code (the submission copies the "
                                             f"snapshot afresh), or delete {Path(folder)} first")
    return code_manifest(folder)
