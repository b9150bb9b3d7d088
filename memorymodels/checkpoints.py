"""Checkpoint directories of a run: which count, whether their files are intact, what is kept and what goes.

A run directory holds ``checkpoint-STEP/`` folders as the Trainer writes them. The rules, all owned here:

- A checkpoint counts (is *complete*) once its ``COMPLETE`` marker exists; the marker is written last, after every
  rank's files, and lists the files it vouches for with the sha256 of each (every file under a sharded folder too:
  weights, optimizer and scheduler state, RNG states, trainer state).
- Before the trainer resumes from a complete checkpoint, and before ``evaluate`` or ``compress`` loads one,
  :func:`verify_checkpoint` checks its files: first cheaply (present; safetensors header parses and the sizes add
  up; JSON parses; torch zip files have their central directory), then their content against the marker's sha256,
  so bytes changed in place (same size, still parseable) are caught too. A new checkpoint gets the cheap checks
  before its marker is written. A damaged one is set aside as ``checkpoint-STEP.damaged-N`` with one line naming the
  bad file, and the previous complete one is used (:func:`newest_usable`). A marker written before the hashes
  existed (no ``sha256``) gets the cheap checks only.
- A checkpoint without a marker (a process killed while saving) is set aside as ``checkpoint-STEP.partial-N``.
- Set-aside folders are kept for inspection only while they may tell something: once a complete checkpoint at the
  same or a later step exists they are deleted, and of the rest only the newest is kept (:func:`prune_set_aside`).
- ``save_total_limit`` complete checkpoints are kept (:func:`rotate_checkpoints`, only after the newest verified),
  so with a limit of two or more there is always a previous one to fall back to; checkpoints an extended run started
  from (the shorter run's result, ``memorymodels.extension``) are kept besides.

Also here: the state-dict helpers shared by saving (trainer) and loading (evaluation, frozen encoders) a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

from memorymodels.fileio import CorruptFileError, read_json, write_json

COMPLETE = "COMPLETE"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
SET_ASIDE_RE = re.compile(r"^checkpoint-(\d+)\.(partial|damaged)-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt")
FSDP_SHARDS = "pytorch_model_fsdp_0"
TORCH_ZIP_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointError(Exception):
    """A checkpoint (or one of its files, ``path``) is missing, incomplete or damaged."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


# ---- listing ------------------------------------------------------------------------------------------------


def checkpoints(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete, partial) checkpoint directories of a run, each sorted by step (oldest first)."""
    complete, partial = [], []
    try:
        entries = list(Path(run_dir).iterdir())
    except OSError:
        return [], []
    for path in entries:
        if path.is_dir() and CHECKPOINT_RE.match(path.name):
            (complete if (path / COMPLETE).is_file() else partial).append(path)
    return sorted(complete, key=checkpoint_step), sorted(partial, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    """``checkpoint-120`` -> 120."""
    return int(CHECKPOINT_RE.match(Path(path).name).group(1))


# ---- verification -------------------------------------------------------------------------------------------


def _check_safetensors(path: Path) -> None:
    """The header parses and header + tensor data are exactly the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(path, f"truncated ({size} bytes; not even a safetensors header)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise CheckpointError(path, f"truncated ({size} bytes; its header alone should be {n + 8})")
        try:
            header = json.loads(f.read(n))
            end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                      default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise CheckpointError(path, "damaged safetensors header (not the JSON it should be)") from None
    expected = 8 + n + end
    if size != expected:
        raise CheckpointError(path, f"{'truncated' if size < expected else 'damaged'} ({size} bytes; its header "
                                    f"says {expected})")


def _check_torch_zip(path: Path) -> None:
    """A ``torch.save`` file: its zip central directory (at the very end) is there and every member fits the file."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(path, f"damaged or truncated torch file ({size} bytes; {exc})") from None
    for info in members:
        if info.header_offset + info.compress_size > size:
            raise CheckpointError(path, f"truncated torch file ({size} bytes; member {info.filename} ends past it)")


def check_files(folder: Path, names: list[str] | None = None, *, step: int | None = None) -> None:
    """Cheap checks of a checkpoint folder's files (``names``, default all); raises :class:`CheckpointError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "not a checkpoint directory (give RUN_DIR/checkpoint-STEP)")
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != COMPLETE)
    if not any((folder / n).is_file() for n in WEIGHT_FILES) and not (folder / FSDP_SHARDS / ".metadata").is_file():
        raise CheckpointError(folder, f"no {', '.join(WEIGHT_FILES)} or {FSDP_SHARDS}/ in this checkpoint directory")
    for name in names:
        path = folder / name
        if not path.exists():
            raise CheckpointError(path, "missing (the checkpoint's COMPLETE marker lists it)")
        if path.is_dir():
            if name.startswith(("pytorch_model_fsdp", "optimizer_")) and not (path / ".metadata").is_file():
                raise CheckpointError(path / ".metadata", "missing (sharded checkpoint without its metadata)")
        elif name.endswith(".safetensors"):
            _check_safetensors(path)
        elif name.endswith(TORCH_ZIP_SUFFIXES):
            _check_torch_zip(path)
        elif name.endswith(".json"):
            try:
                data = read_json(path, expect=dict)
            except CorruptFileError as exc:
                raise CheckpointError(path, exc.problem) from None
            if name == "trainer_state.json" and step is not None and data.get("global_step") != step:
                raise CheckpointError(path, f"says global_step {data.get('global_step')}, not {step}")


def file_hashes(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 (hex) of every file ``names`` hold, by path relative to ``folder`` (a folder's files one by one)."""
    digests = {}
    for name in names:
        path = Path(folder) / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            with open(file, "rb") as f:
                digests[str(file.relative_to(folder))] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def _check_hashes(folder: Path, recorded: dict) -> None:
    """Every file the marker hashed still has that content (raises :class:`CheckpointError` naming the first that
    does not)."""
    for name, digest in sorted(recorded.items()):
        path = folder / name
        try:
            with open(path, "rb") as f:
                found = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise CheckpointError(path, f"missing or unreadable ({exc.strerror or exc}; the checkpoint's COMPLETE "
                                        f"marker hashed it)") from None
        if found != digest:
            raise CheckpointError(path, "changed since the checkpoint was completed (its sha256 is not the one the "
                                        "COMPLETE marker recorded: bytes altered in place)")


def verify_checkpoint(folder: Path) -> None:
    """Check a complete checkpoint: its marker parses, every file it lists is present and intact, and every file it
    hashed still has that content."""
    folder = Path(folder)
    try:
        marker = read_json(folder / COMPLETE, expect=dict)
    except CorruptFileError as exc:
        raise CheckpointError(exc.path, exc.problem) from None
    if marker is None:
        raise CheckpointError(folder / COMPLETE, "missing: the checkpoint was never completed")
    step = checkpoint_step(folder) if CHECKPOINT_RE.match(folder.name) else None
    check_files(folder, marker.get("files"), step=step)
    recorded = marker.get("sha256")
    if recorded is not None:
        if not isinstance(recorded, dict):
            raise CheckpointError(folder / COMPLETE, "damaged: 'sha256' is not a mapping of files to hashes")
        _check_hashes(folder, recorded)


def newest_usable(run_dir: Path, *, set_aside: bool, log: Callable[[str], None] = print) -> Path | None:
    """The newest complete checkpoint that verifies; damaged newer ones are skipped with one line each.

    With ``set_aside`` (the process that writes the run directory) each damaged one is renamed
    ``checkpoint-STEP.damaged-N`` so that it is neither tried again nor overwritten in place when training passes
    its step again; other ranks only skip it (they reach the same choice from the same files).
    """
    for path in reversed(checkpoints(run_dir)[0]):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as exc:
            fate = f"set aside as {_set_aside(path, 'damaged').name}" if set_aside else "skipped"
            log(f"{exc}; {path.name} is damaged: {fate}, falling back to the previous complete checkpoint")
    return None


# ---- writing, setting aside, deleting -----------------------------------------------------------------------


def mark_complete(checkpoint: Path) -> None:
    """Check a just-written checkpoint's files, hash them, then write the marker that makes it count (all ranks'
    files done)."""
    checkpoint = Path(checkpoint)
    files = sorted(p.name for p in checkpoint.iterdir() if not p.name.startswith(".") and p.name != COMPLETE)
    check_files(checkpoint, files, step=checkpoint_step(checkpoint))
    write_json(checkpoint / COMPLETE, {"step": checkpoint_step(checkpoint), "time": time.time(), "files": files,
                                       "sha256": file_hashes(checkpoint, files)})


def _set_aside(path: Path, kind: str) -> Path:
    n = 1
    while (target := path.with_name(f"{path.name}.{kind}-{n}")).exists():
        n += 1
    path.rename(target)
    return target


def set_aside_partial(run_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Rename partial checkpoints to ``checkpoint-STEP.partial-N`` (reported, never resumed; see prune_set_aside)."""
    moved = []
    for path in checkpoints(run_dir)[1]:
        target = _set_aside(path, "partial")
        log(f"{path}: incomplete checkpoint (no {COMPLETE} marker; the process was killed while saving); "
            f"ignored and kept as {target.name} until a newer complete checkpoint exists")
        moved.append(target)
    prune_set_aside(run_dir)
    return moved


def prune_set_aside(run_dir: Path) -> list[Path]:
    """Delete set-aside checkpoints made obsolete: those at or before the newest complete step, and all but the
    newest of the rest. Returns what was deleted."""
    complete = checkpoints(run_dir)[0]
    newest = checkpoint_step(complete[-1]) if complete else -1
    try:
        aside = [(p, SET_ASIDE_RE.match(p.name)) for p in Path(run_dir).iterdir()]
    except OSError:
        return []
    aside = sorted(((int(m.group(1)), int(m.group(3)), p) for p, m in aside if m and p.is_dir()),
                   key=lambda t: t[:2])
    doomed = [p for step, _, p in aside if step <= newest] + [p for step, _, p in aside if step > newest][:-1]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_unfinished(checkpoint: Path) -> None:
    """Delete a checkpoint whose saving failed (no marker); never touches a complete one."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir() and not (checkpoint / COMPLETE).exists():
        shutil.rmtree(checkpoint, ignore_errors=True)


def rotate_checkpoints(run_dir: Path, limit: int | None, keep: tuple[int, ...] = ()) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``limit``; returns what was deleted. The checkpoints at steps
    ``keep`` are never deleted and not counted."""
    complete = [path for path in checkpoints(run_dir)[0] if checkpoint_step(path) not in keep]
    if limit is None or len(complete) <= limit:
        return []
    doomed = complete[: len(complete) - limit]
    for path in doomed:
        # Remove the marker first: a crash half-way leaves a partial checkpoint, never a "complete" broken one.
        (path / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# ---- state dicts --------------------------------------------------------------------------------------------


def without_aliases(state_dict: dict) -> dict:
    """The state dict with every tensor that shares memory with an earlier entry left out (``lm_head.weight`` of a
    model whose head is tied to ``wte.weight``): loading it with ``strict=False`` restores both through the tie."""
    kept, seen = {}, set()
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.device.type == "meta" or key not in seen:
            seen.add(key)
            kept[name] = tensor
    return kept


def tied_names(model) -> set[str]:
    """Names of parameters that are the same tensor as an earlier one (what ``without_aliases`` leaves out)."""
    return set(model.state_dict()) - set(without_aliases(model.state_dict()))
