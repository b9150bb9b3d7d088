"""Trackers across requeues (``train.report_to``, ``memorymodels.tracking``): a run killed after its checkpoint and
resumed is one TensorBoard curve, every logged step once, read back with TensorBoard's own readers; wandb (offline,
no network) keeps one run id for every attempt, and a sweep's cells share the sweep's group."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from memorymodels import metrics
from memorymodels.configuration import ConfigError
from memorymodels.experiment import load_experiment
from memorymodels.rundir import RunPaths
from memorymodels.tracking import tracker_identity

from .conftest import PYTHON, REPO, run_module

event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
pytest.importorskip("wandb")


def tensorboard_steps(run_dir: Path, tag: str) -> tuple[list[int], list[int]]:
    """(steps of ``tag`` in the raw event files, steps TensorBoard's accumulator shows)."""
    raw = []
    for path in sorted(RunPaths(run_dir).tensorboard.glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            if any(value.tag == tag for value in event.summary.value):
                raw.append(event.step)
    acc = event_accumulator.EventAccumulator(str(RunPaths(run_dir).tensorboard))
    acc.Reload()
    shown = [s.step for s in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    return raw, shown


def test_a_killed_and_resumed_run_is_one_tensorboard_curve_and_one_wandb_run(write_experiment, tmp_path):
    steps = 60
    path = write_experiment(max_steps=steps, save_steps=20, logging_steps=1, eval_steps=0,
                            report_to=["tensorboard", "wandb"])
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "WANDB_DISABLE_GIT": "true"}
    proc = subprocess.Popen([PYTHON, "-m", "memorymodels.train", "--experiment", str(path), "--no-eval"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    run_dir = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # past checkpoint-20, before the next: steps after it must be undone
        dirs = [p for p in (tmp_path / "runs").glob("*") if p.is_dir()] if (tmp_path / "runs").exists() else []
        if dirs and (metrics.read_metrics(dirs[0]) or [{}])[-1].get("step", 0) >= 27:
            run_dir = dirs[0]
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    assert run_dir is not None, "the run did not get past step 27"
    proc.send_signal(signal.SIGKILL)  # no checkpoint on the way out: a node failure
    proc.communicate(timeout=60)
    killed_at = metrics.read_metrics(run_dir)[-1]["step"]
    raw, _ = tensorboard_steps(run_dir, "train/loss")
    assert killed_at < 40 and raw and max(raw) > 20  # the killed attempt logged steps after checkpoint-20
    first_id = json.loads((RunPaths(run_dir).tracking).read_text())["id"]

    resumed = run_module("memorymodels.train", "--experiment", str(path), "--no-eval",
                         env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "from checkpoint-20" in resumed.stdout

    raw, shown = tensorboard_steps(run_dir, "train/loss")
    assert raw == list(range(1, steps + 1)) and shown == list(range(1, steps + 1))  # one curve, each step once
    losses = {r["step"]: r["loss"] for r in metrics.read_metrics(run_dir)}
    acc = event_accumulator.EventAccumulator(str(RunPaths(run_dir).tensorboard))
    acc.Reload()
    assert [pytest.approx(losses[s.step], rel=1e-6) for s in acc.Scalars("train/loss")] == \
        [s.value for s in acc.Scalars("train/loss")]
    assert len(list(RunPaths(run_dir).tensorboard.glob("events.out.tfevents.*"))) == 1

    identity = json.loads((RunPaths(run_dir).tracking).read_text())
    assert identity["id"] == first_id and identity["wandb_started"] is True
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(first_id) for p in offline)  # both attempts: one run


def test_report_to_is_checked_and_not_part_of_the_run_identity(write_experiment):
    with pytest.raises(ConfigError, match="'train.report_to' takes tensorboard and/or wandb"):
        load_experiment(write_experiment(report_to=["mlflow"]))
    plain = load_experiment(write_experiment(name="a"))
    tracked = load_experiment(write_experiment(name="b", report_to=["tensorboard"]))
    from memorymodels.experiment import identity

    assert identity(plain, 1) == identity(tracked, 1)  # turning tracking on does not start a new run


def test_tracker_identity_is_kept_and_a_sweep_group_is_recorded(tmp_path):
    first = tracker_identity(tmp_path / "run")
    assert tracker_identity(tmp_path / "run") == first
    grouped = tracker_identity(tmp_path / "run", group="kernel_heads")
    assert grouped["id"] == first["id"] and grouped["group"] == "kernel_heads"
    assert json.loads(RunPaths(tmp_path / "run").tracking.read_text())["group"] == "kernel_heads"
