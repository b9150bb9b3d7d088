"""Nothing doubled, nothing lost, nothing injected: the trainer under real faults.

A second trainer on the same run directory, kill -9, damaged checkpoint files, a damaged run.json and a full disk
(a real, small tmpfs). Every fault ends in one line naming the file and a distinct exit code, never a traceback, and
a rerun continues exactly where the last good checkpoint left off.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from memorymodels import checkpoints, evaluate, metrics
from memorymodels.rundir import TrainerExit
from memorymodels.attempts import attempts

from .conftest import PYTHON, REPO, run_module
from .test_checkpoints import flip, flip_member, truncate


def _experiment(path: Path, data, root: Path, **train) -> Path:
    tokenizer, data_dir = data
    config = {
        "model": {"name": "autoencoding_mixer", "preset": "debug"},
        "data": {"tokenizer": str(tokenizer), "train_dir": str(data_dir), "context": 32},
        "train": {"learning_rate": 3e-3, "warmup_steps": 2, "max_steps": 12, "batch_size": 8, "eval_steps": 0,
                  "save_steps": 5, "logging_steps": 1, "save_total_limit": 2, **train},
        "output": {"checkpoint_root": str(root)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _train(path: Path, *args: str, **kwargs):
    return run_module("memorymodels.train", "--experiment", str(path), "--no-eval", *args, **kwargs)


def _start(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "memorymodels.train", "--experiment", str(path), "--no-eval", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        records = metrics.read_metrics(run_dir)
        if records and records[-1]["step"] >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no metrics line for step {step} within {timeout}s")


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in metrics.read_metrics(run_dir)]


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def completed_run(tiny_data, tmp_path_factory):
    """(experiment yaml, run directory) of a finished 12-step run: checkpoints 10 and 12 kept."""
    root = tmp_path_factory.mktemp("completed")
    path = _experiment(root / "exp.yaml", tiny_data, root / "runs")
    done = _train(path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (root / "runs").iterdir()
    assert [p.name for p in checkpoints.checkpoints(run_dir)[0]] == ["checkpoint-10", "checkpoint-12"]
    return path, run_dir


# ---- a second trainer, kill -9 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_trainer_exits_at_once_and_kill_9_frees_the_lock(tiny_data, tmp_path):
    path = _experiment(tmp_path / "exp.yaml", tiny_data, tmp_path / "runs", max_steps=40, save_steps=10)
    run_dir = tmp_path / "run"
    first = _start(path, "--run-dir", str(run_dir))
    _wait_for_step(run_dir, 3, first)
    first.send_signal(signal.SIGSTOP)  # it holds the lock while the second one tries, however slow the machine
    try:
        start = time.time()
        second = _train(path, "--run-dir", str(run_dir))
        took = time.time() - start
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == TrainerExit.LOCKED, second.stderr[-3000:]
    line = _one_error_line(second.stderr)
    assert line.startswith(f"error: {run_dir}: another trainer is running in this run directory (pid {first.pid} "
                           f"on host "), line
    assert took < 60 and "starting" not in second.stdout and "resuming" not in second.stdout
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert _steps(run_dir) == list(range(1, 41))  # the first finished alone: every step once
    assert [a["outcome"] for a in attempts(run_dir)] == ["completed"]  # the refused one recorded nothing

    # kill -9 leaves no lock behind: the kernel dropped it with the process.
    other = tmp_path / "other"
    victim = _start(path, "--run-dir", str(other))
    _wait_for_step(other, 14, victim)
    victim.kill()
    victim.communicate(timeout=60)
    assert (other / ".trainer.lock").exists()
    again = _train(path, "--run-dir", str(other))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout and _steps(other) == list(range(1, 41))
    assert [a["outcome"] for a in attempts(other)] == ["lost", "completed"]


# ---- damaged checkpoints ------------------------------------------------------------------------------------

DAMAGE = {
    "truncated model.safetensors": (lambda c: truncate(c / "model.safetensors"), "model.safetensors: truncated"),
    "missing rng_state.pth": (lambda c: (c / "rng_state.pth").unlink(), "rng_state.pth: missing"),
    "garbage trainer_state.json": (lambda c: (c / "trainer_state.json").write_bytes(b"\x00garbage{"),
                                   "trainer_state.json: not valid JSON"),
    "truncated optimizer.pt": (lambda c: truncate(c / "optimizer.pt", 0.9), "optimizer.pt: damaged or truncated"),
    # same size, still loadable: caught by the content hashes of the COMPLETE marker
    "bit flipped in model.safetensors": (lambda c: flip(c / "model.safetensors"),
                                         "model.safetensors: changed since the checkpoint was completed"),
    "bit flipped in optimizer.pt": (lambda c: flip_member(c / "optimizer.pt"),
                                    "optimizer.pt: changed since the checkpoint was completed"),
    "bit flipped in scheduler.pt": (lambda c: flip_member(c / "scheduler.pt", "data.pkl"),
                                    "scheduler.pt: changed since the checkpoint was completed"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_final_checkpoint_is_retrained_from_the_previous_one_exactly(completed_run, tmp_path, kind):
    damage, problem = DAMAGE[kind]
    path, original = completed_run
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    damage(run_dir / "checkpoint-12")
    done = _train(path, "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if "is damaged" in line]
    assert len(said) == 1 and f"{run_dir}/checkpoint-12/{problem}" in said[0], done.stdout
    assert "already reached max_steps" not in done.stdout
    assert f"resuming {run_dir} from checkpoint-10 (step 10 of 12); 2 metrics lines" in done.stdout
    assert _steps(run_dir) == list(range(1, 13))
    assert [p.name for p in checkpoints.checkpoints(run_dir)[0]] == ["checkpoint-10", "checkpoint-12"]
    assert not list(run_dir.glob("checkpoint-12.*"))  # set aside, then pruned by the new checkpoint-12
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and attempts(run_dir)[-1]["trainer"]["resumed_from_step"] == 10
    mine = load_file(run_dir / "checkpoint-12" / "model.safetensors")
    theirs = load_file(original / "checkpoint-12" / "model.safetensors")
    for key in theirs:
        assert (mine[key] - theirs[key]).abs().max() <= 1e-6, key


@pytest.mark.parametrize("kind", DAMAGE)
def test_evaluate_names_the_damaged_file_in_one_line(completed_run, tmp_path, capsys, kind):
    damage, problem = DAMAGE[kind]
    run_dir = tmp_path / "run"
    shutil.copytree(completed_run[1], run_dir)
    damage(run_dir / "checkpoint-12")
    assert evaluate.main([str(run_dir), "--checkpoint", str(run_dir / "checkpoint-12")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run_dir}/checkpoint-12/{problem}"), err
    assert evaluate.main([str(run_dir)]) == 1  # the newest by default: no silent switch to an older one
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err
    assert err.rstrip().endswith(f"evaluate the newest intact one with --checkpoint {run_dir}/checkpoint-10"), err
    assert not (run_dir / "eval.json").exists()


def test_evaluate_as_a_command_on_a_damaged_checkpoint_and_on_bad_arguments(completed_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(completed_run[1], run_dir)
    truncate(run_dir / "checkpoint-12" / "model.safetensors")
    done = run_module("memorymodels.evaluate", str(run_dir))
    assert done.returncode == 1
    assert _one_error_line(done.stderr).startswith(f"error: {run_dir}/checkpoint-12/model.safetensors: truncated")
    for bits in ("-3", "0"):
        with pytest.raises(SystemExit) as stop:  # argparse's one line (configuration.flag_number)
            evaluate.main([str(run_dir), "--embedding-bits", bits])
        assert stop.value.code == 2
    with pytest.raises(ValueError, match="embedding_bits 0: must be at least 1"):
        evaluate.evaluate_run(run_dir, embedding_bits=0)


def test_evaluate_refuses_bad_embedding_bits_in_one_line(capsys, tmp_path):
    for bits in ("-3", "0"):  # refused by the flag's own check (configuration.flag_number), one line after usage
        with pytest.raises(SystemExit) as stop:
            evaluate.main([str(tmp_path), "--embedding-bits", bits])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument --embedding-bits: {bits}: must be 1 or more\n" in err and "Traceback" not in err


# ---- a damaged run.json -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_damaged_run_json_stops_training_instead_of_starting_over(completed_run, tmp_path):
    path, original = completed_run
    root = tmp_path / "runs"
    run_dir = root / original.name
    shutil.copytree(original, run_dir)
    damaged = b'{"identity": "' + b"\xff" * 7
    (run_dir / "run.json").write_bytes(damaged)
    done = _train(path, "--set", f"output.checkpoint_root={root}")
    assert done.returncode == TrainerExit.RUN_DIR, done.stderr[-3000:]
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: {run_dir}/run.json: not valid JSON") and "nothing was changed" in line
    assert f"'cp {run_dir}/run.json.bak {run_dir}/run.json'" in line  # the completed run left a backup
    assert [p.name for p in root.iterdir()] == [original.name]  # no fresh directory, nothing trained
    assert (run_dir / "run.json").read_bytes() == damaged


# ---- a full disk --------------------------------------------------------------------------------------------


def _used(folder: Path) -> int:
    """Bytes a folder takes on tmpfs (every file rounded up to 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 8 MiB tmpfs (needs root: mount -t tmpfs); skipped where mounting is not permitted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_the_rerun_resumes_exactly(tiny_data, tmp_path, small_tmpfs):
    """The disk really fills up (a tmpfs, topped up with a filler file so that one checkpoint fits and the second
    does not), not an injected error: safetensors and torch.save report it in their own ways."""
    path = _experiment(tmp_path / "exp.yaml", tiny_data, tmp_path / "runs", max_steps=20)
    reference = tmp_path / "reference"
    done = _train(path, "--run-dir", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = _used(reference / "checkpoint-20")
    others = _used(reference) - 2 * checkpoint  # run.json (+ .bak), the git diff, metrics.jsonl

    filler = small_tmpfs / "filler"
    spare = 2 * others + 64 * 1024 + checkpoint * 3 // 2
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_tmpfs).free - spare))
    run_dir = small_tmpfs / "run"
    full = _train(path, "--run-dir", str(run_dir))
    assert full.returncode == TrainerExit.DISK_FULL, full.stderr[-3000:]
    line = _one_error_line(full.stderr)
    assert line.startswith(f"error: {run_dir}/checkpoint-10: no space left on device while writing it ("), line
    assert "free there); the unfinished checkpoint was removed and checkpoint-5 is intact; free some space" in line
    assert [p.name for p in checkpoints.checkpoints(run_dir)[0]] == ["checkpoint-5"]
    assert not (run_dir / "checkpoint-10").exists() and not list(run_dir.rglob(".*.tmp-*"))
    checkpoints.verify_checkpoint(run_dir / "checkpoint-5")
    info = json.loads((run_dir / "run.json").read_text())
    last = attempts(run_dir)[-1]
    assert info["status"] == "failed" and last["outcome"] == "failed" and "no space left on device" in last["cause"]

    filler.unlink()
    resumed = _train(path, "--run-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} from checkpoint-5" in resumed.stdout
    assert _steps(run_dir) == list(range(1, 21))
    assert [r["loss"] for r in metrics.read_metrics(run_dir)] == pytest.approx(
        [r["loss"] for r in metrics.read_metrics(reference)], rel=1e-5)
    mine, theirs = (load_file(d / "checkpoint-20" / "model.safetensors") for d in (run_dir, reference))
    for key in theirs:
        assert (mine[key] - theirs[key]).abs().max() <= 1e-6, key
