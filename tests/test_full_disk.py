"""A full disk outside checkpoint saving, on a real full file system (``full_disk``: a 2 MiB tmpfs filled up): every
command that writes ends in one line naming the path and the free space there, exits 74, and leaves nothing
half-written (no temporary file, no folder holding only a lock). The checkpoint's own full disk:
``tests/training/test_faults.py``; ``compress -o``: ``tests/training/test_compress.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from memorymodels import fileio
from memorymodels.experiment import REPO_ROOT

DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"


def leftovers(folder: Path) -> list[str]:
    """What the failed command left on the full file system (its filler aside)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".filler")


def one_line_74(done: subprocess.CompletedProcess, path: Path) -> None:
    assert done.returncode == 74, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {path}") and "no space left on device while writing it (0 B free there)" \
        in lines[0], lines[0]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                          env=env)


def test_a_state_file_written_to_a_full_disk_is_one_error_naming_it_and_leaves_nothing(full_disk):
    target = full_disk / "run.json"
    with pytest.raises(fileio.DiskFullError, match=f"^{target}: no space left on device while writing it "
                                                   r"\(0 B free there\); nothing was left half-written"):
        fileio.write_json(target, {"x": "y" * 100000})
    assert leftovers(full_disk) == []
    assert fileio.is_disk_full(fileio.DiskFullError(target, 0))


def test_the_trainers_lock_on_a_full_disk_exits_74_in_one_line(full_disk):
    run_dir = full_disk / "run"
    done = run("-m", "memorymodels.train", "--experiment", str(DEBUG), "--run-dir", str(run_dir))
    one_line_74(done, run_dir / ".trainer.lock")
    assert "the lock was given up; nothing was trained" in done.stderr
    assert leftovers(full_disk) == [], "the run directory the trainer made is gone again"


def test_a_full_data_cache_is_named_not_the_run_directory(full_disk, tmp_path):
    """The run directory is on a disk with room; the corpus is prepared in a full cache: the line names the cache
    entry and the cache's free space, the half-saved tokenizer is removed, and no run directory is left holding only
    its lock."""
    run_dir = tmp_path / "runs" / "run"
    done = run("-m", "memorymodels.train", "--experiment", str(DEBUG), "--run-dir", str(run_dir), "--set",
               f"data.cache_dir={full_disk / 'cache'}", "--set", "output.checkpoint_root=" + str(tmp_path / "runs"))
    one_line_74(done, full_disk / "cache")
    assert not any(".tmp-" in name for name in leftovers(full_disk)), leftovers(full_disk)
    assert not run_dir.exists()


def test_submit_onto_a_full_checkpoint_root_exits_74_and_leaves_no_run_directory(full_disk, tmp_path):
    env = {**__import__("os").environ, "MEMORYMODELS_STATE": str(tmp_path / "state")}
    done = run(str(REPO_ROOT / "launch" / "submit.py"), "--profile", "local", "--experiment", str(DEBUG),
               "--no-snapshot", "--set", f"profile.checkpoint_root={full_disk}", env=env)
    one_line_74(done, full_disk)
    assert leftovers(full_disk) == [], "no run directory holding only .submit.lock and half a plan"
    assert not (tmp_path / "state" / "journal").exists()


def test_a_snapshot_onto_a_full_checkpoint_root_exits_74_and_leaves_no_partial_copy(full_disk, tmp_path):
    env = {**__import__("os").environ, "MEMORYMODELS_STATE": str(tmp_path / "state")}
    done = run(str(REPO_ROOT / "launch" / "submit.py"), "--profile", "local", "--experiment", str(DEBUG),
               "--set", f"profile.checkpoint_root={full_disk}", env=env)
    one_line_74(done, full_disk / ".code")
    assert [name for name in leftovers(full_disk) if "partial" in name] == []


@pytest.mark.parametrize("command", ["plot", "frontier"])
def test_figures_and_tables_onto_a_full_disk_exit_74_and_leave_no_temporary_file(full_disk, tmp_path, command):
    from tests.training.test_plots import fake_run

    source = fake_run(tmp_path / "run", [3.0, 2.5, 2.0, 1.8])
    out = full_disk / "figure.png"
    args = ["--out", str(out)] if command == "plot" else ["-o", str(out)]
    done = run("-m", f"memorymodels.{command}", str(source), *args)
    one_line_74(done, out)
    assert leftovers(full_disk) == []
