"""Plumbing every writer and reader of project files shares: atomic writes, JSON that may be missing, log tails.

One home for these rules (the launcher, the local cluster and the trainer all use them):

- a file is written to a temporary name in its own directory and renamed over the target, so a reader (or a
  process killed mid-write) never leaves half a file under the real name; the temporary file is removed when the
  write fails (a full disk leaves nothing behind);
- ``read_json`` returns ``None`` for a missing or unreadable file; callers that must tell the two apart (a damaged
  manifest is not a missing one) use ``load_json``, which raises :class:`CorruptFile` naming the file;
- ``tail_lines`` reads only the end of a (possibly huge) log;
- ``locked`` holds an exclusive ``flock`` on a lock file for a block: the operating system releases it when the
  process dies, so a killed holder never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any


class CorruptFile(ValueError):
    """A file exists but cannot be read as what it should be; the message names it and what to do."""


def write_text_atomic(path: str | Path, text: str | bytes, *, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = text if isinstance(text, bytes) else text.encode()
    try:
        try:
            tmp.write_bytes(data)
        except FileNotFoundError:  # the folder is new (asked only then: a mkdir per file costs as much as the file)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> None:
    """Write ``data`` as JSON atomically (keys sorted, unknown types as text)."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n")


def load_json(path: str | Path) -> Any:
    """A JSON file's content; FileNotFoundError when missing, :class:`CorruptFile` (naming it) when unreadable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptFile(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFile(f"{path}: not valid JSON ({exc})") from None


def read_json(path: str | Path) -> dict | None:
    """A JSON object from ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        data = load_json(path)
    except (OSError, CorruptFile):
        return None
    return data if isinstance(data, dict) else None


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
    if len(data) == max_bytes and size > max_bytes:
        lines = lines[1:]  # the first line was cut by the window
    return lines[-count:]


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
