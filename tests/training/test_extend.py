"""The trainer's ``--extend``: a finished run continued to a longer schedule in its directory, the learning rate of the
added steps those of a run planned that long, and the refusals (exit 65, one line, nothing changed)."""

import json

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from memorymodels.checkpoints import checkpoints
from memorymodels.metrics import read_metrics
from memorymodels.attempts import attempts
from memorymodels.extension import learning_rate_at
from memorymodels.rundir import TrainerExit

from .conftest import run_module


@pytest.mark.parametrize("warmup, total", [(0, 10), (2, 12), (5, 40), (5, 80), (30, 20)])
def test_the_stated_schedule_is_the_trainers(warmup, total):
    """learning_rate_at (what the plan and run.json state) against transformers' linear schedule the trainer uses."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    for step in range(total + 2):
        assert learning_rate_at(step, learning_rate=3e-3, warmup_steps=warmup, max_steps=total) == pytest.approx(
            schedule.get_last_lr()[0], abs=1e-12), step
        optimizer.step()
        schedule.step()


def test_extend_continues_a_finished_run_with_the_longer_runs_learning_rates(write_experiment, tmp_path):
    short = write_experiment("short", max_steps=12, save_steps=5)
    done = run_module("memorymodels.train", "--experiment", str(short), "--no-eval")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()

    long = write_experiment("long", max_steps=24, save_steps=5)
    extended = run_module("memorymodels.train", "--experiment", str(long), "--no-eval", "--extend")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert (f"extending {run_dir}: train.max_steps 12 -> 24, from checkpoint-12 (kept); linear schedule rebuilt for "
            f"24 steps: after step 12 the learning rate jumps from 0 to 0.00164") in extended.stdout
    assert list((tmp_path / "runs").iterdir()) == [run_dir]
    info = json.loads((run_dir / "run.json").read_text())
    assert [(e["from_steps"], e["to_steps"], e["at_step"]) for e in info["extensions"]] == [(12, 24, 12)]
    assert [a["outcome"] for a in attempts(run_dir)] == ["completed", "completed"]
    metrics = read_metrics(run_dir)
    assert [r["step"] for r in metrics] == list(range(1, 25))
    # save_total_limit 2 keeps the newest two, and the 12-step run's result besides
    assert [p.name for p in checkpoints(run_dir)[0]] == ["checkpoint-12", "checkpoint-20", "checkpoint-24"]

    reference = run_module("memorymodels.train", "--experiment", str(long), "--no-eval", "--run-dir",
                           str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    planned_long = {r["step"]: r["learning_rate"] for r in read_metrics(tmp_path / "reference")}
    rates = {r["step"]: r["learning_rate"] for r in metrics}
    assert rates[12] != planned_long[12]  # the first 12 steps decayed to 0 at step 12
    assert [rates[s] for s in range(13, 25)] == pytest.approx([planned_long[s] for s in range(13, 25)], abs=1e-12)

    # The run is the 24-step run now: --extend again continues nothing, and the trainer says it is done.
    again = run_module("memorymodels.train", "--experiment", str(long), "--no-eval", "--extend")
    assert again.returncode == 0 and "already reached max_steps 24; nothing to train" in again.stdout


def test_trainer_refuses_an_extension_it_cannot_make_and_changes_nothing(write_experiment, tmp_path):
    short = write_experiment("short", max_steps=6, save_steps=1000)
    done = run_module("memorymodels.train", "--experiment", str(short), "--no-eval")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    (checkpoint,) = checkpoints(run_dir)[0]
    (checkpoint / "model.safetensors").write_bytes(b"damaged")  # the only checkpoint: none left to continue from
    before = (run_dir / "run.json").read_text()

    longer = write_experiment("longer", max_steps=12)
    out = run_module("memorymodels.train", "--experiment", str(longer), "--no-eval", "--extend")
    assert out.returncode == TrainerExit.RUN_DIR, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {run_dir}: --extend: no usable checkpoint is left to continue from (see the lines above); the run "
        "was not extended")
    assert (run_dir / "run.json").read_text() == before

    out = run_module("memorymodels.train", "--experiment", str(short), "--no-eval", "--extend", "--run-dir",
                     str(tmp_path / "elsewhere"))
    assert out.returncode == TrainerExit.RUN_DIR
    assert out.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'elsewhere'}: --extend: no run here to "
                                                   "extend (no run.json); submit without --extend to start one")
