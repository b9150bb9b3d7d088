"""The code a job runs: a content-addressed snapshot of the project, so a queued job runs what it was submitted with.

    python launch/submit.py --profile v100x8 --dry-run        # "code  snapshot <hash> ..." and the --chdir it runs in
    python launch/submit.py --profile local-slurm --no-snapshot   # iterate on a branch: run from the checkout

Planning (:func:`project_code`) lists the project's files (git's tracked files plus untracked ones it does not
ignore, as they are in the working tree: uncommitted changes included) and hashes their content; the plan names
``<checkpoint_root>/.code/<hash>/`` and runs every attempt from it. What a snapshot may take is the profile's word
(:class:`SnapshotRules`): files that look like credentials (:data:`CREDENTIALS`, or a private key inside) and files
larger than ``snapshot_max_file_mb`` are refused by name, before anything is copied, unless ``snapshot_include``
lists them: a ``.env``, an ssh key or a data file left in the checkout would otherwise be copied to the shared
checkpoint root at every submission. Submission
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
import fnmatch
import hashlib
import os
import re
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
CREDENTIALS = (".env", ".env.*", "*.env", ".envrc", ".netrc", "_netrc", ".pgpass", ".git-credentials", ".npmrc",
               ".pypirc", ".htpasswd", "credentials", "credentials.json", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks",
               "*.keystore", "*.ppk", "*.kdbx", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_*_sk")
"""File names (shell patterns, matched against the name without its folder) that look like credentials."""
CREDENTIAL_FOLDERS = (".ssh", ".aws", ".gnupg", ".kube", ".docker")
"""Any file inside a folder of these names looks like a credential."""
NOT_CREDENTIALS = (".env.example", ".env.sample", ".env.template", "*.pub")
"""Names that match :data:`CREDENTIALS` but are templates or public keys."""
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
"""A private key inside a file, whatever its name."""


@dataclass(frozen=True)
class SnapshotRules:
    """What a snapshot may take: the profile's ``snapshot_max_file_mb`` and ``snapshot_include``."""

    max_file_mb: float = 10
    """Files larger than this are refused unless included."""
    include: tuple[str, ...] = ()
    """Paths relative to the checkout (shell patterns) copied although they look like credentials or are large."""
    source: str = "<profile>"
    """The profile file, named in refusals."""

    def included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)


def looks_like_credentials(name: str) -> bool:
    """Whether the file ``name`` (relative to the checkout) looks like a credential by its name or folder."""
    parts = Path(name).parts
    base = parts[-1]
    if any(fnmatch.fnmatchcase(base, pattern) for pattern in NOT_CREDENTIALS):
        return False
    return (any(fnmatch.fnmatchcase(base, pattern) for pattern in CREDENTIALS)
            or any(part in CREDENTIAL_FOLDERS for part in parts[:-1]))


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


_CACHE: dict[tuple, tuple[str, tuple[str, ...]]] = {}


def project_code(repo: Path = REPO_ROOT, rules: SnapshotRules | None = None) -> CodeSnapshot:
    """The project's code as it is now (reads files; a repeated call with unchanged files is answered from the
    files' sizes and times). A ConfigError when the project is too large to snapshot, or, with ``rules``, when it
    holds files a snapshot must not take (:func:`refusal`)."""
    repo = Path(repo).resolve()
    names, git = listed_files(repo)
    signature = []
    for name in names:
        info = os.lstat(repo / name)
        signature.append((name, info.st_mtime_ns, info.st_size, info.st_mode))
    if rules is not None and (problem := refusal(repo, signature, (), rules)):
        raise ConfigError(problem)  # before any content is read: a large file is neither hashed nor copied
    key = (str(repo), tuple(signature))
    if key not in _CACHE:
        total = sum(s[2] for s in signature)
        if total > MAX_BYTES:
            raise ConfigError(f"{repo}: the project holds {total >> 20} MB of files git does not ignore, too much to "
                              f"snapshot for every job; add the data to .gitignore, or submit with --no-snapshot")
        digest, keys = hashlib.sha256(), []
        for name in names:
            record = file_record(repo, name)
            if PRIVATE_KEY.search(record):
                keys.append(name)
            digest.update(record)
        _CACHE.clear()  # one checkout's latest state is all a process needs
        _CACHE[key] = (digest.hexdigest()[:HASH_LENGTH], tuple(keys))
    digest, keys = _CACHE[key]
    if rules is not None and (problem := refusal(repo, signature, keys, rules)):
        raise ConfigError(problem)
    return CodeSnapshot(hash=digest, source=repo, files=tuple(names), git=git)


def refusal(repo: Path, signature: list[tuple], keys: tuple[str, ...], rules: SnapshotRules) -> str | None:
    """Why a snapshot must not take the checkout's files (``signature``: name, time, size, mode; ``keys``: files
    holding a private key), in one line naming them and the ways out; None when it may."""
    credentials = [name for name, *_ in signature if looks_like_credentials(name) or name in keys]
    credentials = [name for name in credentials if not rules.included(name)]
    large = [(name, size) for name, _, size, _ in signature
             if size > rules.max_file_mb * 1e6 and not rules.included(name) and name not in credentials]
    problems = []
    if credentials:
        problems.append(f"{_names(credentials)} look(s) like credentials (a snapshot is copied to the shared "
                        f"checkpoint root): move them out of the checkout or add them to .gitignore")
    if large:
        problems.append(f"{_names([f'{n} ({size / 1e6:.1f} MB)' for n, size in large])} exceed(s) "
                        f"'snapshot_max_file_mb: {rules.max_file_mb:g}' (a snapshot copies them for every job): "
                        f"keep data under data_root or in .gitignore, or raise snapshot_max_file_mb")
    if not problems:
        return None
    return (f"{repo}: the code snapshot refuses " + "; ".join(problems) + f"; to copy them anyway list them in "
            f"'snapshot_include' of {rules.source}, or submit with --no-snapshot")


def _names(items: list[str], shown: int = 5) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
