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
import functools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_EXIT = 74
"""What every command exits with when the disk (or the quota) filled up (``EX_IOERR``; the trainer's
``rundir.TrainerExit.DISK_FULL``), after one line naming the path and its free space."""


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
        self.errno = errno.ENOSPC  # is_disk_full() knows it as what it is


def disk_full_error(exc: BaseException, where: str | Path, done: str = "") -> DiskFullError | None:
    """``exc`` as a :class:`DiskFullError` naming the file it failed on (else ``where``, what the caller was
    writing) and the free space there; None when ``exc`` is not about a full disk."""
    if isinstance(exc, DiskFullError):
        return exc
    if not is_disk_full(exc):
        return None
    path = Path(getattr(exc, "filename", None) or where)
    return DiskFullError(path, free_bytes(path), done)


class LinkedPathError(ValueError):
    """A folder (or a file written in place) inside a directory the toolkit writes is a symbolic link: writing
    through it would put files outside that directory, overwriting whatever they meet there."""


def refuse_links(root: str | Path, paths) -> None:
    """Raise :class:`LinkedPathError` when any of ``paths`` (inside ``root``), or a folder between ``root`` and it,
    is a symbolic link. ``root`` itself may be one (a checkpoint root on another disk); missing paths are fine
    (they will be made as real folders). The one check of every writer that must stay inside its directory: the
    run directory's (``memorymodels.rundir.RunPaths.refuse_links``) and the journal's."""
    root = Path(root)
    for path in paths:
        try:
            parts = Path(path).relative_to(root).parts
        except ValueError:
            raise LinkedPathError(f"{path}: not inside {root}; refusing to write there") from None
        current = root
        for part in parts:
            current = current / part
            if current.is_symlink():
                raise LinkedPathError(f"{current} is a symbolic link (to {os.readlink(current)}) inside {root}: "
                                      f"writing through it would put files outside {root}; replace the link with a "
                                      f"real folder (rm {current}), then run the command again")
            if not current.exists():
                break


def exits_on_full_disk(main):
    """A command's ``main()`` that ends a full disk in one line, ``error: PATH: no space left on device while writing
    it (N free there); ...``, and exit :data:`DISK_FULL_EXIT` instead of a traceback. Every command that writes
    files has it; its writers raise :class:`DiskFullError` naming the file (:func:`atomic_file` does)."""

    @functools.wraps(main)
    def checked(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except OSError as exc:
            full = disk_full_error(exc, Path.cwd())
            if full is None:
                raise
            print(f"error: {full}", file=sys.stderr)
            return DISK_FULL_EXIT

    return checked


def temporary_name(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int | None = None, fsync: bool = False):
    """A binary handle on a temporary file beside ``path`` that becomes ``path`` (a rename) when the block ends
    without an error (``mode``: its permissions; ``fsync``: on disk before the rename). On any failure the temporary
    file is removed, and a full disk is a :class:`DiskFullError` naming ``path`` and its free space. A missing folder
    is made (asked only then: a mkdir per file costs as much as the file on a slow file system)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        try:
            handle = open(tmp, "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(tmp, "wb")
        with handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and is_disk_full(exc):
            raise DiskFullError(path, free_bytes(path.parent), "nothing was left half-written") from exc
        raise


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (:func:`atomic_file`)."""
    with atomic_file(path, mode=mode, fsync=fsync) as handle:
        handle.write(data)


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


def read_json_lines(path: str | Path, skipped: list[int] | None = None) -> list[Any]:
    """The parsable lines of a JSON-lines file (metrics, events), oldest first; [] when it cannot be read. A line
    cut by a process that died mid-write, or holding bytes that are not UTF-8, is skipped (its number appended to
    ``skipped``: a reader may say so)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line.decode("utf-8")))
        except ValueError:  # UnicodeDecodeError included
            if skipped is not None and line.strip():
                skipped.append(number)
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        if full := disk_full_error(exc, path):
            raise full from None
        raise
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
