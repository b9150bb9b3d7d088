"""A loss that is not a finite number is a failure at its step, never a completed run.

    .venv/bin/pytest tests/training/test_non_finite.py -q

The trainer (a real one, in a subprocess) stops at the first NaN or infinite training loss (every micro-batch is
checked, on every rank, at the step's end), at a NaN evaluation loss, and before it saves a checkpoint whose
weights went NaN: exit 76 (``TrainerExit.DIVERGED``), one ``error:`` line naming the step, run.json ``failed``,
nothing of that step logged or saved. ``python -m memorymodels.evaluate`` exits 1 on a NaN result and writes
nothing; a completed run whose final evaluation is NaN is recorded as failed.
"""

from __future__ import annotations

import json
import math
import subprocess
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from memorymodels import checkpoints, metrics
from memorymodels.callbacks import LossCheck, StopOnSignal
from memorymodels.metrics import NonFiniteLoss
from memorymodels.rundir import TrainerExit

from .conftest import PYTHON, REPO, run_module

NAN, INF = float("nan"), float("inf")

# ---- the step-end check, without a trainer ------------------------------------------------------------------

STEPS = [
    # (id, the micro-batch losses of step 7, the error it raises or None)
    ("finite", [2.5], None),
    ("finite-accumulated", [2.5, 3.0, 0.0], None),
    ("nan", [NAN], "training loss is nan at step 7"),
    ("inf-in-the-second-micro-batch", [2.5, INF], "training loss is inf at step 7"),
    ("minus-inf", [-INF, 1.0], "training loss is -inf at step 7"),
]


@pytest.mark.parametrize("losses, error", [s[1:] for s in STEPS], ids=[s[0] for s in STEPS])
def test_a_step_with_a_non_finite_micro_batch_loss_raises_naming_it(tmp_path, losses, error):
    check = LossCheck()
    callback = StopOnSignal(check)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    state = TrainerState(global_step=7, max_steps=100)
    for loss in losses:
        check.add(torch.tensor(loss))
    if error is None:
        callback.on_step_end(args, state, TrainerControl())
        return
    with pytest.raises(NonFiniteLoss) as caught:
        callback.on_step_end(args, state, TrainerControl())
    assert str(caught.value) == error and caught.value.step == 7
    callback.on_step_end(args, state, TrainerControl())  # the step's losses were taken: the next step starts clean


@pytest.mark.parametrize("value", [NAN, INF])
def test_a_non_finite_evaluation_loss_raises_before_it_is_logged(tmp_path, value):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    callback, state = StopOnSignal(LossCheck()), TrainerState(global_step=20, max_steps=100)
    callback.on_log(args, state, TrainerControl(), logs={"eval_loss": 3.25})
    callback.on_log(args, state, TrainerControl(), logs={"loss": 3.5})
    with pytest.raises(NonFiniteLoss, match=f"^evaluation loss is {value} at step 20$"):
        callback.on_log(args, state, TrainerControl(), logs={"eval_loss": value})


# ---- the real trainer -------------------------------------------------------------------------------------------

# What a subprocess changes in the trainer before running it (to make a weight or an evaluation NaN on purpose).
NAN_WEIGHT_AFTER_STEP_3 = """
    step = RunTrainer.training_step
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = step(self, model, inputs, num_items_in_batch)
        if self.state.global_step == 2:  # the update of step 3 follows: its loss was finite, its weights are not
            next(model.parameters()).data[0] = float("nan")
        return loss
    RunTrainer.training_step = training_step
"""
NAN_EVALUATION = """
    compute = RunTrainer.compute_loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = compute(self, model, inputs, True, num_items_in_batch)
        if not model.training:
            loss = loss * float("nan")
        return (loss, outputs) if return_outputs else loss
    RunTrainer.compute_loss = compute_loss
"""

CASES = [
    # (id, train settings, patch, the error's start, complete checkpoints left, metrics steps left)
    ("training-loss-nan", {"learning_rate": 1e30, "warmup_steps": 0, "save_steps": 1}, "",
     "training loss is nan at step 2; ", ["checkpoint-1"], [1]),
    ("weight-nan-at-a-save", {"save_steps": 3}, NAN_WEIGHT_AFTER_STEP_3,
     "a weight of the model is not finite at step 3; ", [], [1, 2]),
    ("evaluation-loss-nan", {"eval_steps": 2, "save_steps": 1}, NAN_EVALUATION,
     "evaluation loss is nan at step 2; ", ["checkpoint-1"], [1]),
]


def _train(path, patch: str = ""):
    script = textwrap.dedent(f"""
    import sys
    from memorymodels.train import RunTrainer, main
    {textwrap.indent(textwrap.dedent(patch), "    ").strip()}
    sys.exit(main(sys.argv[1:]))
    """)
    return subprocess.run([PYTHON, "-c", script, "--experiment", str(path), "--no-eval"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("settings, patch, error, kept, logged", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_trainer_stops_at_the_first_non_finite_loss_and_marks_the_run_failed(write_experiment, tmp_path, settings,
                                                                                  patch, error, kept, logged):
    path = write_experiment(max_steps=8, **settings)
    done = _train(path, patch)
    assert done.returncode == TrainerExit.DIVERGED, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(lines) == 1 and lines[0].startswith(f"error: {error}{run_dir} is marked failed"), done.stderr[-3000:]
    assert lines[0].endswith("another precision")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["error"].startswith(f"NonFiniteLoss: {error}")
    assert [[p.name for p in found] for found in checkpoints.checkpoints(run_dir)] == [kept, []]  # none half-saved
    records = metrics.read_metrics(run_dir)
    assert [r["step"] for r in records] == logged
    assert all(math.isfinite(r[key]) for r in records for key in ("loss", "eval_loss") if r.get(key) is not None)


@pytest.mark.slow
def test_a_nan_evaluation_fails_evaluate_and_the_run_that_reports_it(write_experiment, tmp_path, capsys):
    from memorymodels import evaluate

    path = write_experiment(max_steps=4, save_steps=2)
    assert run_module("memorymodels.train", "--experiment", str(path), "--no-eval").returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = run_dir / "checkpoint-4"
    weights = load_file(last / "model.safetensors")
    save_file({name: torch.full_like(w, NAN) for name, w in weights.items()}, str(last / "model.safetensors"))
    (last / "COMPLETE").unlink()
    checkpoints.mark_complete(last)  # a checkpoint intact as written, whose weights are NaN (an older trainer's)

    assert evaluate.main([str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {last}: the held-out loss is nan at step 4; nothing was "
                                                   f"written to eval.json"), err
    assert not (run_dir / "eval.json").exists()

    again = run_module("memorymodels.train", "--experiment", str(path))  # nothing to train; it evaluates the run
    assert again.returncode == TrainerExit.DIVERGED, again.stderr[-3000:]
    assert "already reached max_steps" in again.stdout
    assert f"error: {last}: the held-out loss is nan at step 4; {run_dir} is marked failed" in again.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
