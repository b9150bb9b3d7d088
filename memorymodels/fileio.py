"""Writing and reading the project's small state files: atomically, and telling a missing file from a damaged one.

The one place for file writing in ``memorymodels/`` (run.json, checkpoint markers, eval.json, metrics rewrites) and
in ``launch/`` (launch files, the journal, the local cluster's configuration). A write goes to a hidden temporary file in the same directory (``.NAME.tmp-PID``)
and is renamed over the target, so a reader sees the old file or the new one, never half of one; when the write
fails (disk full) the temporary file is removed and the error is raised.

``read_json`` returns None for a missing file and raises :class:`CorruptFileError` (naming the file and what is
wrong) for one that exists but does not hold the expected JSON: a caller never mistakes a damaged file for a
missing one. ``tail_lines`` reads only the end of a (possibly huge) log; ``locked`` holds an exclusive ``flock`` for
a block, which the operating system releases when the holder dies, so a killed holder never leaves a stale lock.
``make_private_dir`` makes the folders jobs fill on shared scratch (run directories, code snapshots, the journal)
their owner's alone, or also a named group's: what is written inside is out of others' reach, whatever its mode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CorruptFileError(ValueError):
    """A file exists but its content is not what it should be (not JSON, truncated, wrong type)."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class DiskFullError(OSError):
    """The disk (or the quota) filled up while writing ``path``; ``free`` bytes were left; ``done`` says what was
    cleaned up or kept."""

    def __init__(self, path: Path, free: int | None, done: str = ""):
        self.path, self.free = Path(path), free
        super().__init__(f"{path}: no space left on device while writing it ({human_bytes(free)} free there)"
                         + (f"; {done}" if done else "") + "; free some space and rerun the same command to resume")


def temporary_name(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (``mode``: its permissions); the temporary
    file never outlives a failure. A missing folder is made (asked only then: a mkdir per file costs as much as
    the file on a slow file system)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        try:
            handle = open(tmp, "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(tmp, "wb")
        with handle:
            handle.write(data)
            handle.flush()
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str | bytes, *, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8; bytes as they are) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text if isinstance(text, bytes) else text.encode("utf-8"), mode=mode)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path, *, expect: type = dict) -> Any:
    """The JSON content of ``path``; None when the file does not exist.

    Raises :class:`CorruptFileError` when it exists but cannot be read, is not JSON (garbage, truncated) or is not
    an ``expect`` (a list where an object belongs).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        what = "empty" if not raw.strip() else f"not valid JSON ({exc})"
        raise CorruptFileError(path, f"{what}; {len(raw)} bytes") from None
    if expect is not None and not isinstance(data, expect):
        raise CorruptFileError(path, f"holds a JSON {type(data).__name__}, not a JSON {expect.__name__}")
    return data


def read_json_lines(path: str | Path) -> list[Any]:
    """The parsable lines of a JSON-lines file (metrics, events), oldest first; [] when it cannot be read. A line
    cut by a process that died mid-write is skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or the quota is full.

    Libraries report it differently: ``OSError`` with ``errno`` ENOSPC/EDQUOT (Python), a message with "os error 28"
    (safetensors), or a bare "file write failed" / "unexpected pos" (torch.save's zip writer, no errno at all);
    callers check the free space themselves for the last kind (:func:`free_bytes`).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        text = str(exc)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: Path) -> int | None:
    """Free bytes (for this user) on the file system holding ``path`` or its nearest existing parent."""
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def tail_lines(path: str | Path | None, count: int, max_bytes: int = 65536) -> list[str]:
    """The last ``count`` lines of a text file, reading at most its last ``max_bytes``; [] when there is none."""
    if not path or count <= 0:
        return []
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first line was cut by the window
    return lines[-count:]


PRIVATE = 0o700
"""A folder only its owner enters (run directories, code snapshots, the journal, without a group)."""
GROUP_READS = 0o2750
"""... and the members of its group read (setgid: what is made inside keeps the group)."""
GROUP_ADDS = 0o3770
"""... and the members of its group add their own entries, only owners removing theirs (setgid, sticky): the
``.code`` folder that a group's members share."""


def make_private_dir(path: str | Path, group: int | None = None, *, group_adds: bool = False) -> Path:
    """Make the folder ``path`` (missing parents with the default mode) so that only this user enters it, or also
    the members of ``group`` (a gid): :data:`PRIVATE`, :data:`GROUP_READS`, or :data:`GROUP_ADDS` with
    ``group_adds``. Whatever is written inside is then out of others' reach, whatever its own mode. A folder that
    exists already is left as it is (its owner chose its mode)."""
    path = Path(path)
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE)
    except FileExistsError:  # another process made it first
        return path
    if group is not None:
        os.chown(path, -1, group)
        os.chmod(path, GROUP_ADDS if group_adds else GROUP_READS)
    else:
        os.chmod(path, PRIVATE)  # mkdir's mode went through the umask
    return path


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive lock on ``path`` (created if missing) for the block; other holders wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
