"""Every metrics.jsonl record carries the run's cumulative compute (flops, device_seconds) and, with an evaluation,
eval_bits_per_byte; run.json carries the totals; both continue across a SIGTERM and resume without counting twice."""

import json
import signal
import subprocess

import pytest

from memorymodels import checkpoints, metrics, runrecord
from memorymodels.compute import model_flops
from memorymodels.rundir import TrainerExit

from .conftest import PYTHON, REPO, run_module
from .test_train import _wait_for_step


def test_compute_is_recorded_and_continues_across_an_interrupted_run(write_experiment, tmp_path):
    steps = 150
    path = write_experiment(max_steps=steps, save_steps=1000, eval_steps=25, eval_rows=16, logging_steps=5)
    proc = subprocess.Popen([PYTHON, "-m", "memorymodels.train", "--experiment", str(path), "--no-eval"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    run_dir = _wait_for_step(tmp_path / "runs", 30, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == TrainerExit.REQUEUE, err[-3000:]
    stopped = checkpoints.checkpoint_step(checkpoints.checkpoints(run_dir)[0][-1])
    saved = json.loads((run_dir / f"checkpoint-{stopped}" / "trainer_state.json").read_text())
    at_checkpoint = saved["stateful_callbacks"]["MetricsWriter"]["attributes"]["device_seconds"]
    first = json.loads((run_dir / "run.json").read_text())["compute"]
    assert first["step"] == stopped and first["device_seconds"] >= at_checkpoint > 0
    # an attempt that ran past its checkpoint: its lines after the checkpoint are rolled back on resume
    metrics.append_metrics(run_dir, {"step": stopped + 3, "loss": 1.0, "tokens": 0, "flops": 0, "device_seconds": 1e9})
    # the held-out summary is the run's: the resumed attempt takes it from run.json instead of computing it again
    recorded = json.loads((run_dir / "run.json").read_text())["heldout"]
    runrecord.update_run(run_dir, heldout={**recorded, "text_bytes": -1})

    resumed = run_module("memorymodels.train", "--experiment", str(path), "--no-eval")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = metrics.read_metrics(run_dir)
    # every 5 steps, and the step the signal stopped at (logged when it saved)
    assert [r["step"] for r in records] == sorted({5 * i for i in range(1, steps // 5 + 1)} | {stopped})

    count = model_flops("autoencoding_mixer", preset="debug", n_vocab=300, length=32)
    per_step = 8 * count.training_per_row  # batch 8 rows of 32 tokens
    assert [r["flops"] for r in records] == [r["step"] * per_step for r in records]
    seconds = [r["device_seconds"] for r in records]
    assert all(b > a for a, b in zip(seconds, seconds[1:]))  # monotone, no restart from 0 at the resume
    after = next(r for r in records if r["step"] > stopped)
    assert after["device_seconds"] > at_checkpoint and seconds[-1] < 1e9

    info = json.loads((run_dir / "run.json").read_text())
    compute, heldout = info["compute"], info["heldout"]
    assert compute["step"] == steps and compute["flops"] == steps * per_step
    assert compute["training_flops_per_token"] == count.training_per_token
    assert compute["device_seconds"] >= seconds[-1]
    assert heldout["objective"] == "same-position" and heldout["rows"] == 16 and heldout["targets"] == 16 * 32
    assert heldout == {**recorded, "text_bytes": -1}  # not computed again
    assert set(heldout["baselines"]) == {"gzip", "bz2", "xz", "zstd"}

    evals = [r for r in records if r["eval_loss"] is not None]
    assert [r["step"] for r in evals] == [25, 50, 75, 100, 125, 150]
    for r in evals:
        assert r["eval_bits_per_byte"] == pytest.approx(r["eval_loss"] / 0.6931471805599453
                                                        / heldout["bytes_per_target"])
    assert all(r["eval_bits_per_byte"] is None for r in records if r["eval_loss"] is None)


@pytest.mark.parametrize("model", [{"name": "language_mixer", "preset": "debug"},
                                   {"name": "autoencoding_mixer", "preset": "debug"}])
def test_evaluate_gives_the_bits_per_byte_of_the_last_evaluation_during_training(write_experiment, model, tmp_path):
    """One conversion (memorymodels.heldout): ``python -m memorymodels.evaluate`` on the final checkpoint and the same
    rows reports the bits per byte that training wrote for that step, causal models included (whose first token of
    each row is never scored)."""
    path = write_experiment(model=model, max_steps=10, save_steps=10, eval_steps=10, eval_rows=16)
    trained = run_module("memorymodels.train", "--experiment", str(path), "--no-eval")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    last = [r for r in metrics.read_metrics(run_dir) if r["eval_loss"] is not None][-1]
    evaluated = run_module("memorymodels.evaluate", str(run_dir), "--rows", "16")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((run_dir / "eval.json").read_text())
    heldout = json.loads((run_dir / "run.json").read_text())["heldout"]
    assert result["step"] == last["step"] == 10 and result["targets"] == heldout["targets"]
    assert result["bits_per_byte_basis"] == "scored targets"
    assert result["bits_per_byte"] == pytest.approx(last["eval_bits_per_byte"], rel=1e-4)
    assert result["baselines"] == pytest.approx(heldout["baselines"])
    assert f"{result['bits_per_byte']:.3f}" in evaluated.stdout
