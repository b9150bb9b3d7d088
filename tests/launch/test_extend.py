"""``--extend`` and resubmission: a finished run continued to a longer schedule in its own directory (here, and on the
local Slurm cluster), the refusals in one line, the note of a new run that differs from an existing one only in
``train.max_steps``, and finished runs and sweep cells that are not queued again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.planning.plan import plan_job
from launch.planning.profiles import REPO_ROOT, load_profile
from launch.planning.sweep import plan_sweep
from launch.planning.sweep_file import load_sweep
from launch.submission.preflight import NothingLeftError
from launch.submission.submit import submit_job
from memorymodels.checkpoints import checkpoints
from memorymodels.metrics import read_metrics
from memorymodels.experiment import experiment_dict, identity
from memorymodels.fileio import write_json
from tests.launch.test_plan import run_main
from tests.launch.test_submit import state  # noqa: F401 (the fixture: a private journal, the shared data cache)
from tests.training.conftest import make_checkpoint

DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"
RUN_NAME = "autoencoding_mixer_d32_n2_c64_b8x1_stdlib-small-v512"


def debug_args(root: Path, steps: int, profile: str = "local") -> list[str]:
    """The debug experiment at ``steps`` steps, logging every step, on ``profile`` with runs under ``root``."""
    return ["--profile", profile, "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={root}",
            "--set", "profile.cpus_per_gpu=1", "--set", f"train.max_steps={steps}", "--set", "train.logging_steps=1"]


def submit_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/submit.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def check_extended(run_dir: Path, dry_run: str) -> None:
    """``run_dir`` went from 40 to 80 steps as one run: every step logged once, the extension in run.json, the
    learning rate of the first added step the rebuilt schedule's, as the dry run said."""
    assert f"extends     {run_dir}: train.max_steps 40 -> 80, from checkpoint-40 (kept); linear schedule rebuilt " \
           "for 80 steps: after step 40 the learning rate jumps from 0 to 0.00107" in dry_run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["train"]["max_steps"] == 80
    (record,) = info["extensions"]
    assert (record["from_steps"], record["to_steps"], record["at_step"]) == (40, 80, 40)
    assert record["learning_rate_before"] == 0 and record["learning_rate_after"] == pytest.approx(2e-3 * 40 / 75)
    assert record["schedule"] in dry_run and record["identity_before"] != info["identity"]
    metrics = read_metrics(run_dir)
    assert [r["step"] for r in metrics] == list(range(1, 81))  # one curve: no gap, no repeat
    rates = {r["step"]: r["learning_rate"] for r in metrics}
    assert rates[40] > 0 and rates[41] == pytest.approx(record["learning_rate_after"])  # not the old schedule's 0
    assert rates[80] == pytest.approx(2e-3 * 1 / 75)
    # the 40-step run's result stays beside the newest two (save_total_limit: 2)
    assert [p.name for p in checkpoints(run_dir)[0]] == ["checkpoint-40", "checkpoint-60", "checkpoint-80"]
    assert json.loads((run_dir / "eval.json").read_text())["checkpoint"] == "checkpoint-80"


def test_extend_takes_a_finished_40_step_run_to_80_steps_in_its_directory(state, tmp_path):
    root = tmp_path / "runs"
    first = submit_cli(*debug_args(root, 40), "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = Path(json.loads(first.stdout.splitlines()[0])["run_dir"])
    assert run_dir == root / RUN_NAME

    longer = submit_cli(*debug_args(root, 80), "--dry-run")
    assert longer.returncode == 0, longer.stderr
    assert (f"note        this is a new run: it differs from {run_dir} in train.max_steps (40 -> 80) only; use "
            "--extend to continue that run instead") in longer.stdout
    planned = submit_cli(*debug_args(root, 80), "--extend", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert f"run dir     {run_dir}\n" in planned.stdout and " --extend\n" in planned.stdout

    extended = submit_cli(*debug_args(root, 80), "--extend")
    assert extended.returncode == 0, extended.stdout[-3000:] + extended.stderr[-3000:]
    assert f"run dir  {run_dir}\n" in extended.stdout and "(checkpoint-80)" in extended.stdout
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [RUN_NAME]
    check_extended(run_dir, planned.stdout)

    again = submit_cli(*debug_args(root, 80), "--extend")
    assert again.returncode == 3 and again.stdout == ""  # nothing left to do: its result, not an error
    assert again.stderr.startswith(f"error: {run_dir} has nothing left to do: completed 80 of 80 steps, "
                                   "checkpoint-80 evaluated on ") and len(again.stderr.splitlines()) == 1


@pytest.mark.slurm
def test_extend_on_slurm_continues_the_run_in_its_directory(slurm_cluster, state, tmp_path):
    root = tmp_path / "runs"
    first = submit_cli(*debug_args(root, 40, "local-slurm"), "--wait", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    planned = submit_cli(*debug_args(root, 80, "local-slurm"), "--extend", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    extended = submit_cli(*debug_args(root, 80, "local-slurm"), "--extend", "--wait", "--json")
    assert extended.returncode == 0, extended.stdout + extended.stderr
    assert json.loads(extended.stdout)["run_dir"] == str(run_dir)
    check_extended(run_dir, planned.stdout)
    info = json.loads((run_dir / "run.json").read_text())
    assert len(info["slurm_job_ids"]) == 2  # the first job and the extension's, one run


# ---- refusals and notes, on runs written by hand ---------------------------------------------------------------


def fake_run(root: Path, steps: int, *, status: str = "completed", checkpoint: int | None = None,
             evaluated: bool = False, sets: tuple[str, ...] = ()) -> Path:
    """The run directory the launcher plans for the debug experiment at ``steps`` steps, with a run.json saying
    ``status``, a complete ``checkpoint-N`` and an eval.json of it when asked."""
    plan = plan_job(load_profile("local", [f"checkpoint_root={root}"]), DEBUG, snapshot=False,
                    overrides=[f"train.max_steps={steps}", "train.logging_steps=1", *sets])
    plan.run_dir.mkdir(parents=True)
    write_json(plan.run_dir / "run.json", {"identity": identity(plan.settings, 1), "world_size": 1, "status": status,
                                           "config": experiment_dict(plan.settings)})
    if checkpoint is not None:
        make_checkpoint(plan.run_dir, checkpoint)
    if evaluated:
        write_json(plan.run_dir / "eval.json", {"checkpoint": f"checkpoint-{checkpoint}", "loss": 5.65,
                                                "bits_per_byte": 3.75, "time": 1.8e9})
    return plan.run_dir


def dry_run(capsys, root: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    return run_main(capsys, *debug_args(root, steps), "--no-snapshot", "--dry-run", *extra)


FINISHED = dict(checkpoint=40, evaluated=True)
REFUSALS = [
    # (case, runs there before: (steps, fake_run arguments), arguments, exit code, the one line's text)
    ("no run to extend", [], [80, "--extend"], 2,
     "error: --extend: no run under {root} ({name} or {name}-*) differs from {debug} (with --set"),
    ("only another config's run", [(40, dict(FINISHED, sets=("train.learning_rate=0.001",)))], [80, "--extend"], 2,
     "in train.max_steps only; submit without --extend to start this run"),
    ("max_steps not larger", [(80, FINISHED)], [60, "--extend"], 2,
     "error: --extend: {root}/{name} has train.max_steps 80 and an extension needs a larger one, got 60; set "
     "--set train.max_steps=N with N > 80"),
    ("no complete checkpoint", [(40, dict(status="interrupted"))], [80, "--extend"], 2,
     "error: {root}/{name}: --extend: the run has no complete checkpoint to continue from; submit it without "
     "--extend to train it (again) from the start"),
    ("nothing left to do", [(40, FINISHED)], [40], 3,
     "error: {root}/{name} has nothing left to do: completed 40 of 40 steps, checkpoint-40 evaluated on "),
    ("nothing left to do, with --extend", [(40, FINISHED)], [40, "--extend"], 3,
     "eval loss 5.6500 nats/token, 3.7500 bits/byte; nothing was submitted. Evaluate it again with `python -m "
     "memorymodels.evaluate {root}/{name}`, or train it longer with --extend --set train.max_steps=N (N > 40)"),
]


@pytest.mark.parametrize("case, before, args, code, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_one_line_and_change_nothing(capsys, state, tmp_path, case, before, args, code, message):
    root = tmp_path / "runs"
    for steps, kwargs in before:
        fake_run(root, steps, **kwargs)
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    out = dry_run(capsys, root, *args)
    assert out.returncode == code and out.stdout == "", out.stdout
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert message.format(root=root, name=RUN_NAME, debug=DEBUG) in out.stderr
    assert (sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []) == listing
    assert not (state / "journal").exists()


def test_a_finished_run_is_not_queued_even_when_submitted_directly(state, tmp_path):
    run_dir = fake_run(tmp_path / "runs", 40, **FINISHED)
    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path / 'runs'}"]), DEBUG, snapshot=False,
                    overrides=["train.max_steps=40", "train.logging_steps=1"])
    with pytest.raises(NothingLeftError, match=f"^{run_dir} has nothing left to do: completed 40 of 40 steps"):
        submit_job(plan)
    assert not (run_dir / "launch").exists() or not list((run_dir / "launch").glob("*.yaml"))


def test_what_still_has_work_is_planned(capsys, state, tmp_path):
    root = tmp_path / "runs"
    run_dir = fake_run(root, 40, checkpoint=40)  # completed, but its final checkpoint was never evaluated
    out = dry_run(capsys, root, 40, "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["run_dir"] == str(run_dir) and plan["note"] is None and plan["extension"] is None

    out = dry_run(capsys, root, 30)
    assert out.returncode == 0, out.stderr
    assert (f"note        this is a new run: it differs from {run_dir} in train.max_steps (40 -> 30) only\n"
            in out.stdout)  # a shorter run is new; --extend cannot make it

    out = dry_run(capsys, root, 100, "--extend", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["run_dir"] == str(run_dir) and plan["command"].endswith(" --extend")
    assert {k: plan["extension"][k] for k in ("from_steps", "to_steps", "at_step")} == {
        "from_steps": 40, "to_steps": 100, "at_step": 40}
    assert plan["extension"]["learning_rate_after"] == pytest.approx(2e-3 * 60 / 95)


def test_a_finished_run_whose_final_checkpoint_changed_in_place_has_work_left(capsys, state, tmp_path):
    from tests.training.test_checkpoints import flip

    root = tmp_path / "runs"
    run_dir = fake_run(root, 40, **FINISHED)
    assert dry_run(capsys, root, 40).returncode == 3  # nothing left to do
    flip(run_dir / "checkpoint-40" / "model.safetensors")  # same size: only its hash in COMPLETE tells
    out = dry_run(capsys, root, 40)
    assert out.returncode == 0, out.stderr  # the trainer will set it aside and train from the one before


def test_extend_continues_the_longest_shorter_run(capsys, state, tmp_path):
    root = tmp_path / "runs"
    fake_run(root, 20, checkpoint=20, evaluated=True)
    longest = fake_run(root, 40, status="interrupted", checkpoint=30)
    out = dry_run(capsys, root, 80, "--extend")
    assert out.returncode == 0, out.stderr
    assert f"extends     {longest}: train.max_steps 40 -> 80, from checkpoint-30 (kept); " in out.stdout


def test_a_sweep_whose_cells_are_all_complete_runs_nothing(state, tmp_path):
    sweep = tmp_path / "steps.yaml"
    sweep.write_text(yaml.safe_dump({"experiment": str(DEBUG), "name": "steps", "grid": {"train.max_steps": [4, 6]},
                                     "overrides": {"output.checkpoint_root": str(tmp_path / "runs")}}))
    plan = plan_sweep(load_sweep(sweep), load_profile("local"), snapshot=False)
    for job in plan.jobs:
        job.run_dir.mkdir(parents=True)
        write_json(job.run_dir / "run.json", {"identity": identity(job.settings, job.world_size), "status": "completed",
                                              "config": experiment_dict(job.settings)})
    out = submit_cli("--profile", "local", "--sweep", str(sweep), "--no-snapshot")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (f"sweep steps: nothing to do: all 2 cells complete. Report: python launch/sweep_report.py "
                          f"{sweep}\n")
    assert not (state / "journal").exists() and all(not (job.run_dir / "launch").exists() for job in plan.jobs)
    out = submit_cli("--profile", "local", "--sweep", str(sweep), "--extend")
    assert out.returncode == 2 and "--extend continues one run (--experiment)" in out.stderr
