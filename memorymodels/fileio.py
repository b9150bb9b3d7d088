"""Writing and reading the project's small state files: atomically, and telling a missing file from a damaged one.

The one place for file writing in ``memorymodels/`` (run.json, checkpoint markers, eval.json, metrics rewrites); the
launcher is meant to use it too. A write goes to a hidden temporary file in the same directory (``.NAME.tmp-PID``)
and is renamed over the target, so a reader sees the old file or the new one, never half of one; when the write
fails (disk full) the temporary file is removed and the error is raised.

``read_json`` returns None for a missing file and raises :class:`CorruptFileError` (naming the file and what is
wrong) for one that exists but does not hold the expected JSON: a caller never mistakes a damaged file for a
missing one.
"""

from __future__ import annotations

import errno
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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; the temporary file never outlives a failure."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


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
