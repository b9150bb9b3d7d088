"""The code a job runs: a content-addressed snapshot of the project, so a queued job runs what it was submitted with.

    python launch/submit.py --profile v100x8 --dry-run        # "code  snapshot <hash> ..." and the --chdir it runs in
    python launch/submit.py --profile local-slurm --no-snapshot   # iterate on a branch: run from the checkout

Planning (:func:`project_code`) lists the project's files (git's tracked files plus untracked ones it does not
ignore, as they are in the working tree: uncommitted changes included) and hashes their content; the plan names
``<checkpoint_root>/.code/<hash>/`` and runs every attempt from it. Submission
(``launch.submission.snapshot.materialize``) copies the files there once, checking that what it copied still has
the planned hash. The same code gives the same hash, so the cells of a sweep and repeated submissions share one
copy. Without git (an unpacked release) the project's packages and data folders are listed instead.

A job writes nothing into its snapshot (:data:`NO_WRITES`), so one copy serves every job of the same code.
A snapshot holds ``MANIFEST`` (its hash, the checkout's git commit and whether it was dirty, every file's sha256:
``memorymodels.codemanifest``, which owns it); the trainer checks it at every attempt's start and records from it
which code the attempt ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from memorymodels.codemanifest import MANIFEST, file_record
from memorymodels.configuration import ConfigError
from memorymodels.experiment import REPO_ROOT

CODE_DIR = ".code"
"""The folder under a checkpoint root that holds the snapshots, one per hash."""
NO_WRITES = {"PYTHONDONTWRITEBYTECODE": "1"}
"""What every process of a job running from a snapshot gets, so that nothing is written into it: Python would put
its bytecode cache in the snapshot's folders (the copies are read-only, their folders are not, and root writes
anyway). Prepared data goes to the profile's ``data_root`` (``data.cache_dir``), run files to the run directory."""
HASH_LENGTH = 16
MAX_BYTES = 256 << 20
"""A project larger than this is not snapshotted (it is likely to hold data by mistake)."""
WITHOUT_GIT = ("memorymodels", "launch", "configs", "cluster_profiles", "sweeps", "setup.cfg", "pyproject.toml")


@dataclass(frozen=True)
class CodeSnapshot:
    """The project's code as planned: its hash, its files and where the job runs it from."""

    hash: str
    """sha256 (first 16 hex digits) of every file's path, executable bit and content."""
    source: Path
    """The checkout it was taken from."""
    files: tuple[str, ...] = field(repr=False)
    """The files, relative to ``source``, sorted."""
    git: dict = field(default_factory=dict, compare=False)
    """``{"sha": ..., "dirty": ...}`` of the checkout (None values without git)."""
    root: Path | None = None
    """The checkpoint root the snapshot lives under (:meth:`under`)."""

    @property
    def path(self) -> Path:
        """``<checkpoint_root>/.code/<hash>``: where every attempt of the job runs from."""
        if self.root is None:
            raise ValueError("the snapshot has no checkpoint root yet (CodeSnapshot.under)")
        return self.root / CODE_DIR / self.hash

    def under(self, root: Path) -> "CodeSnapshot":
        return dataclasses.replace(self, root=Path(root))

    def manifest(self) -> dict:
        return {"hash": self.hash, "source": str(self.source), "files": len(self.files), "git": self.git}


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def listed_files(repo: Path) -> tuple[list[str], dict]:
    """(the project's files relative to ``repo``, git's ``{"sha", "dirty"}``): tracked and untracked-not-ignored
    files that exist in the working tree; without git, the folders in :data:`WITHOUT_GIT`."""
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is not None and Path(top.strip()).resolve() == repo.resolve():
        listing = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard") or ""
        names = sorted({n for n in listing.split("\0") if n and (repo / n).is_file() or n and (repo / n).is_symlink()})
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        sha = (_git(repo, "rev-parse", "HEAD") or "").strip() or None
        return names, {"sha": sha, "dirty": bool(status.strip()) if status is not None else None}
    names = []
    for top_name in WITHOUT_GIT:
        path = repo / top_name
        if path.is_file():
            names.append(top_name)
        elif path.is_dir():
            names += [str(p.relative_to(repo)) for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(names), {"sha": None, "dirty": None}


_CACHE: dict[tuple, str] = {}


def project_code(repo: Path = REPO_ROOT) -> CodeSnapshot:
    """The project's code as it is now (reads files; a repeated call with unchanged files is answered from the
    files' sizes and times). A ConfigError when the project is too large to snapshot."""
    repo = Path(repo).resolve()
    names, git = listed_files(repo)
    signature = []
    for name in names:
        info = os.lstat(repo / name)
        signature.append((name, info.st_mtime_ns, info.st_size, info.st_mode))
    key = (str(repo), tuple(signature))
    if key not in _CACHE:
        total = sum(s[2] for s in signature)
        if total > MAX_BYTES:
            raise ConfigError(f"{repo}: the project holds {total >> 20} MB of files git does not ignore, too much to "
                              f"snapshot for every job; add the data to .gitignore, or submit with --no-snapshot")
        digest = hashlib.sha256()
        for name in names:
            digest.update(file_record(repo, name))
        _CACHE.clear()  # one checkout's latest state is all a process needs
        _CACHE[key] = digest.hexdigest()[:HASH_LENGTH]
    return CodeSnapshot(hash=_CACHE[key], source=repo, files=tuple(names), git=git)
