"""The trainer end to end on tiny data: run.json/metrics, SIGTERM then exact resume, GA and DDP loss semantics."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from memorymodels import checkpoints, metrics
from memorymodels.rundir import TrainerExit
from memorymodels.attempts import attempts
from memorymodels.startup import attempt_env

from .conftest import PYTHON, REPO, run_module


def _only_run_dir(root: Path) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_train_writes_run_manifest_metrics_checkpoint_and_evaluation(write_experiment, tmp_path):
    path = write_experiment(max_steps=12, save_steps=5, save_total_limit=2, eval_steps=6, eval_rows=16)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "0", "SLURM_JOB_NODELIST": "node[1-2]",
             "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}
    done = run_module("memorymodels.train", "--experiment", str(path), env=slurm)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path / "runs")
    assert run_dir.name == "autoencoding_mixer_d32_n2_c32_b8x1_data"
    assert "gzip -9" in done.stdout and f"completed: {run_dir}" in done.stdout

    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["end"] >= info["start"]
    assert info["config"]["train"]["max_steps"] == 12 and info["world_size"] == 1
    assert info["command"][1:4] == ["-m", "memorymodels.train", "--experiment"]
    assert len(info["git"]["sha"]) == 40 and isinstance(info["git"]["dirty"], bool)
    assert info["versions"]["torch"] and info["versions"]["transformers"] and info["host"]
    assert info["model"]["parameters"] > 0 and info["model"]["build"]["params"]["n_vocab"] == 300
    assert info["model"]["build"]["params"]["length"] == 32 and info["model"]["embedding_values"] == 32
    (attempt,) = attempts(run_dir)
    assert attempt["outcome"] == "completed" and attempt["step"] == 12
    assert attempt["trainer"]["slurm"] == {"job_id": "4242", "restart_count": "0", "job_nodelist": "node[1-2]",
                                "array_job_id": "4240", "array_task_id": "2"}
    assert info["slurm_job_ids"] == ["4242"] and info["restart_count"] == 0
    # no launcher: the attempt starts with the trainer's process; each phase ends after the one before
    startup = attempt["startup"]
    assert list(startup["phases"]) == ["python", "imports", "data", "model", "rendezvous", "trainer", "first_step"]
    assert startup["phases"]["python"] == 0 and startup["phases"]["first_step"] < info["end"] - startup["start"]
    assert abs(startup["start"] - attempt["start"]) < 60 and "startup: first step" in done.stdout

    records = metrics.read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["loss"] > 0 and r["learning_rate"] is not None and r["tokens"] == r["step"] * 8 * 32
               for r in records)
    assert [r["step"] for r in records if r["eval_loss"] is not None] == [6, 12]
    # save_total_limit 2 of checkpoints 5, 10, 12 (the final one is always saved)
    assert [p.name for p in checkpoints.checkpoints(run_dir)[0]] == ["checkpoint-10", "checkpoint-12"]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation) >= {"loss", "bits_per_byte", "token_accuracy", "baselines", "embedding"}
    assert set(evaluation["baselines"]) == {"gzip", "bz2", "xz", "zstd"} and evaluation["checkpoint"] == "checkpoint-12"
    progress = metrics.run_progress(run_dir)
    assert progress["status"] == "completed" and progress["step"] == 12 and progress["checkpoint_step"] == 12

    # The same config (saving settings aside) finds the same directory: nothing more to train, exit 0.
    again = run_module("memorymodels.train", "--experiment", str(path), "--set", "train.save_steps=3", "--no-eval")
    assert again.returncode == 0 and "already reached max_steps 12" in again.stdout
    assert _only_run_dir(tmp_path / "runs") == run_dir

    evaluated = run_module("memorymodels.evaluate", str(run_dir), "--checkpoint", str(run_dir / "checkpoint-10"),
                           "--rows", "8", "--embedding-bits", "4")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "bz2 -9" in evaluated.stdout and "32 values x 4 bits" in evaluated.stdout
    latest = json.loads((run_dir / "eval.json").read_text())
    assert latest["checkpoint"] == "checkpoint-10" and latest["rows"] == 8
    assert json.loads((run_dir / "eval-history.jsonl").read_text())["checkpoint"] == "checkpoint-12"  # kept

    plot = run_module("memorymodels.plot", str(run_dir), "--out", str(tmp_path / "loss.png"))
    assert plot.returncode == 0 and (tmp_path / "loss.png").stat().st_size > 10_000


def _wait_for_step(run_dir_root: Path, step: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for run_dir in run_dir_root.glob("*"):
            records = metrics.read_metrics(run_dir)
            if records and records[-1]["step"] >= step:
                return run_dir
        time.sleep(0.05)
    raise AssertionError(f"no metrics line for step {step} within {timeout}s")


def test_sigterm_saves_and_rerun_resumes_to_exactly_max_steps_identically(write_experiment, tmp_path):
    steps = 300
    path = write_experiment(max_steps=steps, save_steps=100, eval_steps=0)
    proc = subprocess.Popen([PYTHON, "-m", "memorymodels.train", "--experiment", str(path), "--no-eval"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "SLURM_JOB_ID": "77", "OMP_NUM_THREADS": "1"})
    run_dir = _wait_for_step(tmp_path / "runs", 20, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == TrainerExit.REQUEUE, err[-3000:]
    assert "SIGTERM: saved checkpoint-" in out
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    stopped = checkpoints.checkpoint_step(checkpoints.checkpoints(run_dir)[0][-1])
    assert 20 <= stopped < steps and metrics.read_metrics(run_dir)[-1]["step"] == stopped

    # A checkpoint being written when the job died (no COMPLETE marker) must be ignored, not resumed from.
    partial = run_dir / f"checkpoint-{stopped + 50}"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    # what the node task hands a trainer it starts: the attempt, its allocation's start and when the task began
    allocated = time.time() - 1  # the allocation began a second before this trainer
    resumed = run_module("memorymodels.train", "--experiment", str(path), "--no-eval",
                         env={"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1",
                              **attempt_env("77", 1, allocated, allocated + 0.25)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} from checkpoint-{stopped} (step {stopped} of {steps})" in resumed.stdout
    assert f"checkpoint-{stopped + 50}: incomplete checkpoint" in resumed.stdout
    # Set aside as checkpoint-STEP.partial-1, then deleted once a complete checkpoint at a later step existed.
    assert not list(run_dir.glob("checkpoint-*.partial-*"))
    assert _only_run_dir(tmp_path / "runs") == run_dir

    records = metrics.read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, steps + 1))  # the curve continues, no gap, no repeat
    info = json.loads((run_dir / "run.json").read_text())
    history = attempts(run_dir)
    assert info["status"] == "completed" and "attempts" not in info
    assert [(a["outcome"], a["step"]) for a in history] == [("interrupted-outside", stopped), ("completed", steps)]
    assert history[1]["trainer"]["resumed_from_step"] == stopped and info["restart_count"] == 1
    startup = history[1]["startup"]
    assert (startup["job_id"], startup["restart_count"], startup["start"]) == ("77", 1, allocated)
    assert list(startup["phases"]) == ["task", "python", "imports", "data", "model", "rendezvous", "trainer",
                                       "checkpoint", "first_step"] and startup["phases"]["task"] == 0.25
    final = checkpoints.checkpoints(run_dir)[0][-1]
    assert final.name == f"checkpoint-{steps}"
    assert json.loads((final / "trainer_state.json").read_text())["global_step"] == steps

    # Exact resume: the same weights and losses as a run that was never interrupted.
    reference = run_module("memorymodels.train", "--experiment", str(path), "--no-eval", "--run-dir",
                           str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_losses = [r["loss"] for r in metrics.read_metrics(tmp_path / "reference")]
    assert [r["loss"] for r in records] == pytest.approx(ref_losses, rel=1e-5)
    mine = load_file(final / "model.safetensors")
    theirs = load_file(tmp_path / "reference" / f"checkpoint-{steps}" / "model.safetensors")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert (mine[key] - theirs[key]).abs().max() <= 1e-5, key


def _losses(run_dir: Path, n: int) -> list[float]:
    return [r["loss"] for r in metrics.read_metrics(run_dir)][:n]


def test_gradient_accumulation_and_two_process_ddp_log_the_same_loss_as_one_big_batch(write_experiment, padded_data,
                                                                                     tmp_path):
    """Global batch 8 three ways: 8 x GA1, 4 x GA2 (the seed logged 2x here), torchrun 2 ranks x 4; on padded rows,
    so micro-batches hold different numbers of targets and only token weighting gives the GA1 loss."""
    from memorymodels.data import TokenDataset

    rows = TokenDataset(padded_data[1], "train")
    targets = [int((rows[i]["labels"] != -100).sum()) for i in range(16)]
    assert len(set(targets)) > 4  # the test means something only if rows differ
    common = dict(max_steps=3, eval_steps=0, learning_rate=1e-2, warmup_steps=0, data=padded_data)
    one = write_experiment("one", batch_size=8, gradient_accumulation_steps=1, **common)
    ga = write_experiment("ga", batch_size=4, gradient_accumulation_steps=2, **common)
    ddp = write_experiment("ddp", root=tmp_path / "ddp_root", batch_size=4, gradient_accumulation_steps=1, **common)
    for name, path in (("one", one), ("ga", ga)):
        done = run_module("memorymodels.train", "--experiment", str(path), "--no-eval", "--run-dir",
                          str(tmp_path / name))
        assert done.returncode == 0, done.stderr[-3000:]
    done = run_module("torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m",
                      "memorymodels.train", "--experiment", str(ddp), "--no-eval", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_dir = _only_run_dir(tmp_path / "ddp_root")  # both ranks derived the same directory
    assert ddp_dir.name == "autoencoding_mixer_d32_n2_c32_b4x2_data"
    reference = _losses(tmp_path / "one", 3)
    assert len(reference) == 3 and reference[0] > 1.0
    assert _losses(tmp_path / "ga", 3) == pytest.approx(reference, rel=2e-5)
    assert _losses(ddp_dir, 3) == pytest.approx(reference, rel=2e-5)
    info = json.loads((ddp_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "completed"
