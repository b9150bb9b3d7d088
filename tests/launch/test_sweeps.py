"""Sweeps: expansion, deduplication, cell directories, chunking, and real submissions to the local Slurm."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import yaml

from launch.planning.sweep_file import chunk, expand_cells, load_sweep, plan_cells, short_keys
from tests.launch.helpers import run_json, wait_until
from memorymodels.configuration import ConfigError
from memorymodels.attempts import attempts

REPO = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, data: dict, name: str = "abl.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the sweep file --------------------------------------------------------------------------------------------------


def test_grid_is_the_product_in_file_order(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"experiment": "x.yaml",
                                              "grid": {"model.kernel": [1, 2, 4], "model.n_heads": [0, 4]}}))
    cells = expand_cells(sweep)
    assert cells == [{"model.kernel": k, "model.n_heads": h} for k in (1, 2, 4) for h in (0, 4)]
    assert sweep.name == "abl" and sweep.axes == ["model.kernel", "model.n_heads"]


def test_zip_takes_lists_in_parallel_and_crosses_grid_and_cells(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "grid": {"model.kernel": [1, 2]},
        "zip": {"model.dim": [32, 64], "train.batch_size": [8, 4]},
        "cells": [{"model.compression": 2}, {"model.compression": 4}],
    }))
    cells = expand_cells(sweep)
    assert len(cells) == 2 * 2 * 2
    assert {(c["model.dim"], c["train.batch_size"]) for c in cells} == {(32, 8), (64, 4)}
    assert cells[0] == {"model.kernel": 1, "model.dim": 32, "train.batch_size": 8, "model.compression": 2}


def test_duplicate_cells_are_removed_keeping_the_first(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "cells": [{"model.kernel": 1, "model.n_heads": 0}, {"model.kernel": 2},
                  {"model.n_heads": 0, "model.kernel": 1}, {"model.kernel": 2}],
    }))
    assert expand_cells(sweep) == [{"model.kernel": 1, "model.n_heads": 0}, {"model.kernel": 2}]


@pytest.mark.parametrize("data, message", [
    ({"experiment": "x.yaml", "gird": {"model.kernel": [1]}}, "unknown key 'gird'; did you mean 'grid'?"),
    ({"grid": {"model.kernel": [1]}}, "'experiment' is required"),
    ({"experiment": "x.yaml", "zip": {"model.dim": [1, 2], "model.depth": [1]}},
     "the 'zip' lists must all have the same length; got model.dim (2), model.depth (1)"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": []}}, "'grid.model.kernel' must be a non-empty list"),
    ({"experiment": "x.yaml", "grid": {"kernel": [1, 2]}}, "'grid' key 'kernel' must be a dotted config key"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": [1]}, "zip": {"model.kernel": [2]}},
     "'model.kernel' is in both 'grid' and 'zip'"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": [1]}, "cells": [{"model.kernel": 2}]},
     "'cells[0].model.kernel' is also set in overrides, grid or zip"),
    ({"experiment": "x.yaml", "name": "a/b"}, "'name: a/b' must be a non-empty folder name"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, data, message):
    path = write_sweep(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


# --- cell directories ------------------------------------------------------------------------------------------------


def test_cell_directories_are_named_by_overrides(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"experiment": "x.yaml", "name": "kh",
                                              "grid": {"model.kernel": [1, 2], "model.n_heads": [0, 4]}}))
    cells = plan_cells(sweep, tmp_path / "runs")
    assert [c.run_dir.relative_to(tmp_path / "runs").as_posix() for c in cells] == [
        "kh/kernel=1,n_heads=0", "kh/kernel=1,n_heads=4", "kh/kernel=2,n_heads=0", "kh/kernel=2,n_heads=4"]


def test_cell_directories_stay_distinct_when_spellings_collide(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "grid": {"model.dim": [8], "data.dim": [8]},
        "cells": [{"data.corpus": "a/b"}, {"data.corpus": "a_b"}, {"data.corpus": "x" * 300}],
    }))
    dirs = [c.run_dir.name for c in plan_cells(sweep, tmp_path)]
    assert len(set(dirs)) == 3
    assert dirs[0].startswith("model.dim=8,data.dim=8,corpus=a_b-")  # escaped, so a hash keeps it unique
    assert dirs[1] == "model.dim=8,data.dim=8,corpus=a_b"
    assert all(len(d) <= 130 and "/" not in d for d in dirs)


def test_short_keys_use_the_shortest_unambiguous_suffix():
    assert short_keys(["model.kernel", "model.dim", "data.dim", "train.lr"]) == {
        "model.kernel": "kernel", "model.dim": "model.dim", "data.dim": "data.dim", "train.lr": "lr"}


def test_chunking_by_max_array_size():
    arrays = chunk(list(range(2500)), 1001)
    assert [len(a) for a in arrays] == [1001, 1001, 498]
    assert sum(arrays, []) == list(range(2500))
    assert chunk([], 5) == []


# --- planning against the real launcher (pure: no cluster) -----------------------------------------------------------

DEBUG = REPO / "configs" / "experiments" / "debug.yaml"


def debug_sweep(tmp_path: Path, grid: dict, name: str = "abl", **extra) -> Path:
    """A sweep over the debug experiment whose run directories go under ``tmp_path/runs``."""
    overrides = {"train.max_steps": 4, "train.eval_steps": 0, "train.save_steps": 2, "train.logging_steps": 2,
                 "train.warmup_steps": 1, "output.checkpoint_root": str(tmp_path / "runs")}
    return write_sweep(tmp_path, {"experiment": str(DEBUG), "overrides": overrides, "grid": grid, **extra},
                       f"{name}.yaml")


def test_every_cell_plan_equals_plan_job(tmp_path):
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile
    from launch.planning.sweep_file import cell_items
    from launch.planning.sweep import plan_sweep
    from memorymodels.experiment import load_experiment

    sweep = load_sweep(debug_sweep(tmp_path, {"model.params.kernel": [1, 2], "train.learning_rate": [1e-3, 2.5e-3]}))
    profile = load_profile("local-slurm")
    plan = plan_sweep(sweep, profile, overrides=["train.seed=3"])
    assert len(plan.jobs) == 4 and plan.arrays == [[0, 1, 2, 3]] and plan.complete == []
    for cell, job in zip(plan.cells, plan.jobs):
        items = cell_items(sweep.overrides) + ["train.seed=3"] + cell_items(cell.overrides)
        reference = plan_job(profile, DEBUG, overrides=items, run_dir=cell.run_dir, request=plan.request)
        assert job == reference
        assert job.settings == load_experiment(DEBUG, reference.overrides)
        assert f"--run-dir {cell.run_dir}" in job.command
    after = plan_sweep(sweep, profile, dependency="afterok:41")
    assert all(job.dependency == "afterok:41" and "#SBATCH --dependency=afterok:41\n" in job.script
               for job in after.jobs)


def test_set_on_an_axis_and_a_cell_of_a_changed_config_are_refused(tmp_path):
    import json

    from launch.planning.profiles import load_profile
    from launch.planning.sweep import plan_sweep
    from memorymodels.experiment import experiment_dict

    path = debug_sweep(tmp_path, {"model.params.kernel": [1, 2]})
    profile = load_profile("local-slurm")
    with pytest.raises(ConfigError, match="'model.params.kernel' is an axis of"):
        plan_sweep(load_sweep(path), profile, overrides=["model.params.kernel=3"])
    plan = plan_sweep(load_sweep(path), profile)
    run_dir = plan.cells[1].run_dir
    run_dir.mkdir(parents=True)
    config = experiment_dict(plan.jobs[1].settings)
    config["train"].update(max_steps=99, eval_steps=50)  # eval_steps does not change the run's identity
    (run_dir / "run.json").write_text(json.dumps({"identity": "0123456789ab", "status": "completed",
                                                  "config": config}))
    with pytest.raises(ConfigError) as err:
        plan_sweep(load_sweep(path), profile)
    assert f"cell 1 ({run_dir}): train.max_steps: 99 -> 4\n" in str(err.value) + "\n"
    assert "Give the sweep a new 'name:'" in str(err.value)


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_plan(path, tmp_path):
    from launch.planning.profiles import load_profile
    from launch.planning.sweep import plan_sweep

    sweep = load_sweep(path)
    plan = plan_sweep(sweep, load_profile(sweep.profile), overrides=[f"output.checkpoint_root={tmp_path}"])
    assert len(plan.cells) >= 6 and len(plan.jobs) == len(plan.cells)
    assert len({cell.run_dir for cell in plan.cells}) == len(plan.cells)  # every cell in its own run directory
    if path.name.startswith("kernel_heads"):
        assert {"model.params.kernel", "model.params.n_heads"} <= set(sweep.axes)


def dry_run(*args: str) -> dict:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), *args, "--dry-run", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_dry_run_of_2500_cells_with_max_array_size_1001_plans_three_arrays(tmp_path):
    cells = [{"train.seed": s} for s in range(2500)]
    path = write_sweep(tmp_path, {"experiment": str(DEBUG), "cells": cells,
                                  "overrides": {"output.checkpoint_root": str(tmp_path / "runs")}}, "big.yaml")
    out = dry_run("--profile", "local-slurm", "--set", "profile.max_array_size=1001", "--sweep", str(path))
    assert set(out) == {"cells", "arrays", "cluster_checks"}
    assert len(out["cells"]) == 2500
    assert out["cells"][7] == {"overrides": {"train.seed": 7}, "run_dir": str(tmp_path / "runs" / "big" / "seed=7")}
    assert [len(a) for a in out["arrays"]] == [1001, 1001, 498]
    assert sum(out["arrays"], []) == list(range(2500))
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


# --- real submissions to the local Slurm -----------------------------------------------------------------------------


def submit(*args: str, env: dict | None = None) -> dict:
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), *args, "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env or dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def run_report(*args: str) -> list[dict]:
    """Run ``launch/sweep_report.py`` and return its CSV rows."""
    import csv
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "launch" / "sweep_report.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    csv_path = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("csv: "))
    return list(csv.DictReader(open(csv_path)))


@pytest.mark.slurm
@pytest.mark.slow
def test_six_cell_sweep_runs_as_one_array_and_resubmits_exactly_the_deleted_cells(slurm_cluster, wait_for_job,
                                                                                   tmp_path):
    import shutil

    from launch.records import journal

    path = debug_sweep(tmp_path, {"model.params.kernel": [1, 2, 4], "model.params.n_heads": [0, 4]}, name="six")
    cells = dry_run("--profile", "local-slurm", "--sweep", str(path))["cells"]
    start = time.monotonic()
    first = submit("--profile", "local-slurm", "--sweep", str(path))
    assert [a["cells"] for a in first["arrays"]] == [[0, 1, 2, 3, 4, 5]]
    array = first["arrays"][0]["job_id"]
    states = wait_for_job(array, timeout=300)
    print(f"6-cell sweep: submitted and completed in {time.monotonic() - start:.0f} s")
    assert states == {f"{array}_{i}": "COMPLETED" for i in range(6)}
    entry = journal.load(first["sweep_id"])
    assert entry["kind"] == "sweep" and [j["job_id"] for j in entry["jobs"]] == [f"{array}_{i}" for i in range(6)]
    assert [j["cell"] for j in entry["jobs"]] == [c["overrides"] for c in cells]
    assert entry["sweep"]["cells"] == [{"index": i, **c} for i, c in enumerate(cells)]
    assert entry["sweep"]["axes"] == ["model.params.kernel", "model.params.n_heads"]
    assert entry["sweep"]["file"] == str(path.resolve()) and entry["sweep"]["root"] == str(tmp_path / "runs" / "six")
    run_dirs = [c["run_dir"] for c in cells]
    assert len(set(run_dirs)) == 6
    for cell in cells:
        info = run_json(cell["run_dir"])
        assert info["status"] == "completed"
        assert attempts(cell["run_dir"])[0]["trainer"]["slurm"]["array_job_id"] == array  # a task of the one array
        assert info["config"]["model"]["params"] == {"kernel": cell["overrides"]["model.params.kernel"],
                                                     "n_heads": cell["overrides"]["model.params.n_heads"]}
        assert info["config"]["train"]["max_steps"] == 4

    report = run_report(str(path), "--plot", "model.params.kernel")
    assert [(r["model.params.kernel"], r["model.params.n_heads"], r["status"], r["step"]) for r in report] == [
        (str(c["overrides"]["model.params.kernel"]), str(c["overrides"]["model.params.n_heads"]), "completed", "4")
        for c in cells]
    assert all(float(r["eval_loss"]) > 0 and float(r["bits_per_byte"]) > 0 for r in report)
    assert (tmp_path / "runs" / "six" / "eval_loss_vs_kernel.png").stat().st_size > 0
    assert run_report(first["sweep_id"]) == report  # by submission id: the same cells

    kept_before = {d: attempts(d) for d in run_dirs}
    shutil.rmtree(run_dirs[1])
    shutil.rmtree(run_dirs[4])
    second = submit("--profile", "local-slurm", "--sweep", str(path), "--wait")  # returns once both have run
    assert [a["cells"] for a in second["arrays"]] == [[1, 4]]
    for i, run_dir in enumerate(run_dirs):
        info = run_json(run_dir)
        assert info["status"] == "completed"
        if i in (1, 4):
            assert len(attempts(run_dir)) == 1 and attempts(run_dir) != kept_before[run_dir]
        else:
            assert attempts(run_dir) == kept_before[run_dir]  # complete cells never ran again

    third = submit("--profile", "local-slurm", "--sweep", str(path))
    assert third == {"sweep_id": None, "arrays": []}
    # sacct counts every attempt of both submissions: cells 1 and 4 ran twice (their first run was deleted)
    def every_attempt_counted():
        usage = {int(r["cell"]): (int(r["attempts"] or 0), float(r["cpu_hours"] or 0), float(r["lost_cpu_hours"] or 0))
                 for r in run_report(str(path))}
        attempts = {cell: attempts for cell, (attempts, _, _) in usage.items()}
        return usage if attempts == {0: 1, 1: 2, 2: 1, 3: 1, 4: 2, 5: 1} else None

    # slurmdbd records a job's end a moment after slurmctld
    usage = wait_until(every_attempt_counted, 30, "sacct to count one attempt per cell, two for cells 1 and 4",
                       interval=2)
    assert all(hours > 0 and lost == 0 for _, hours, lost in usage.values())


@pytest.mark.slurm
def test_a_sweep_larger_than_max_array_size_is_submitted_as_several_arrays(slurm_cluster, tmp_path):
    import subprocess

    from launch.slurm.client import slurm_environ

    profile = tmp_path / "tiny-arrays.yaml"  # held, so nothing trains: the arrays are inspected, then cancelled
    profile.write_text("extends: local-slurm\nmax_array_size: 2\nsbatch_extra: {hold: true}\n")
    path = debug_sweep(tmp_path, {"model.params.kernel": [1, 2, 3, 4, 5]}, name="chunked")
    assert dry_run("--profile", str(profile), "--sweep", str(path))["arrays"] == [[0, 1], [2, 3], [4]]
    env = {**slurm_environ(), "MEMORYMODELS_STATE": str(tmp_path / "state")}  # a journal of its own
    result = submit("--profile", str(profile), "--sweep", str(path), env=env)
    ids = [a["job_id"] for a in result["arrays"]]
    try:
        assert [a["cells"] for a in result["arrays"]] == [[0, 1], [2, 3], [4]]
        assert len(set(ids)) == 3
        queued = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)], env=env,
                                capture_output=True, text=True, check=True).stdout.split("\n")
        tasks = sorted(line.split()[0] for line in queued if line.strip())
        # submitit submits a one-task chunk as a plain job
        assert tasks == sorted([f"{ids[0]}_0", f"{ids[0]}_1", f"{ids[1]}_0", f"{ids[1]}_1", ids[2]])
        assert all(line.split()[1] == "PENDING" for line in queued if line.strip())
        # resubmitting while they wait submits nothing: the cells are queued already
        assert submit("--profile", str(profile), "--sweep", str(path), env=env) == {"sweep_id": None, "arrays": []}
        assert len(list((tmp_path / "state" / "journal").glob("*.json"))) == 1
    finally:
        subprocess.run(["scancel", *ids], env=env, check=False)


# --- the report ------------------------------------------------------------------------------------------------------


def fake_run(run_dir: Path, status: str | None, steps: list[tuple[int, float, float | None]], bpb: float | None = None):
    """A run directory as the trainer leaves it: run.json, metrics.jsonl and (when evaluated) eval.json."""
    from memorymodels.fileio import write_json
    from memorymodels.metrics import append_metrics

    run_dir.mkdir(parents=True)
    write_json(run_dir / "run.json", {"status": status, "config": {"train": {"max_steps": 10}}, "attempts": []})
    for step, loss, eval_loss in steps:
        append_metrics(run_dir, {"step": step, "loss": loss, "eval_loss": eval_loss})
    if bpb is not None:
        write_json(run_dir / "eval.json", {"loss": steps[-1][2], "bits_per_byte": bpb,
                                           "embedding": {"total_bits_per_byte": bpb + 0.5}})


def report_rows(tmp_path: Path):
    from launch.monitor.report import collect_rows

    axes = ["model.params.kernel", "model.params.n_heads"]
    cells = []
    for i, (k, h) in enumerate([(1, 0), (1, 4), (2, 0), (2, 4)]):
        cells.append({"index": i, "overrides": {axes[0]: k, axes[1]: h},
                      "run_dir": str(tmp_path / f"kernel={k},n_heads={h}")})
    fake_run(Path(cells[0]["run_dir"]), "completed", [(5, 3.0, None), (10, 2.5, 2.75)], bpb=1.25)
    fake_run(Path(cells[1]["run_dir"]), "completed", [(5, 3.1, None), (10, 2.25, 2.5)], bpb=1.125)
    fake_run(Path(cells[2]["run_dir"]), "running", [(5, 3.5, None)])
    return axes, collect_rows(cells, axes)


def test_report_table_reads_states_losses_and_bits_per_byte(tmp_path):
    from rich.console import Console

    from launch.monitor.report import render

    axes, rows = report_rows(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "completed", "running", "not started"]
    assert (rows[1]["step"], rows[1]["loss"], rows[1]["eval_loss"], rows[1]["bits_per_byte"]) == (10, 2.25, 2.5, 1.125)
    console = Console(width=120, color_system=None, record=True)
    console.print(render(rows, axes, "kh"))
    text = console.export_text()
    lines = [line for line in text.splitlines() if "│" in line]
    cells = [[c.strip() for c in line.split("│")[1:10]] for line in lines]
    assert cells == [["0", "1", "0", "completed", "10/10", "2.5000", "2.7500", "1.2500", "1.7500"],
                     ["1", "1", "4", "completed", "10/10", "2.2500", "2.5000", "1.1250", "1.6250"],
                     ["2", "2", "0", "running", "5/10", "3.5000", "-", "-", "-"],
                     ["3", "2", "4", "not started", "-", "-", "-", "-", "-"]]


def test_report_csv_and_plot(tmp_path):
    import csv

    from launch.monitor.report import plot, write_csv

    axes, rows = report_rows(tmp_path)
    write_csv(rows, axes, tmp_path / "report.csv")
    table = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["status"] for r in table] == ["completed", "completed", "running", "not started"]
    assert table[0]["model.params.kernel"] == "1" and table[0]["eval_loss"] == "2.75" and table[3]["loss"] == ""
    assert plot(rows, axes, "model.params.n_heads", "eval_loss", tmp_path / "plot.png") == 2
    assert plot(rows, axes, "n_heads", "eval_loss", tmp_path / "short.png") == 2  # the name the table shows
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match=r"not an axis of this sweep; axes: kernel \(model.params.kernel\), n_heads"):
        plot(rows, axes, "train.seed", "eval_loss", tmp_path / "x.png")


@pytest.mark.slow
def test_a_local_profile_runs_the_cells_here_one_after_the_other(tmp_path):
    path = debug_sweep(tmp_path, {"model.params.kernel": [1, 2]}, name="here")
    result = submit("--profile", "local", "--sweep", str(path))
    assert [a["cells"] for a in result["arrays"]] == [[0], [1]]
    runs = [run_json(tmp_path / "runs" / "here" / f"kernel={k}") for k in (1, 2)]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    first, second = (attempts(tmp_path / "runs" / "here" / f"kernel={k}")[0] for k in (1, 2))
    assert first["end"] <= second["start"]  # one after the other
    assert submit("--profile", "local", "--sweep", str(path)) == {"sweep_id": None, "arrays": []}


def test_command_line_errors_name_the_file_and_what_to_do(tmp_path, capsys):
    import argparse

    from launch.cli.sweep import run_sweep_command

    path = debug_sweep(tmp_path, {"model.params.kernel": [1, 2]})
    args = dict(sweep=str(path), profile=None, overrides=[], launcher=None, nodes=None, dry_run=True, json=True,
                no_preflight=False, experiment=None)
    assert run_sweep_command(argparse.Namespace(**args)) == 2
    assert f"{path}: no profile; pass --profile or set 'profile:' in the file" in capsys.readouterr().err
    assert run_sweep_command(argparse.Namespace(**{**args, "profile": "local-slurm", "experiment": "x.yaml"})) == 2
    assert "a sweep names its experiment" in capsys.readouterr().err
    assert run_sweep_command(argparse.Namespace(**{**args, "profile": "local-slurm",
                                                   "overrides": ["train.max_stpes=3"]})) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: {DEBUG} (with --set ")
    assert "unknown key 'train.max_stpes'; did you mean 'max_steps'?" in err


def test_report_counts_hours_of_every_attempt_and_what_failed_attempts_lost(tmp_path):
    from rich.console import Console

    from launch.slurm.output import parse_usage, usage_command
    from launch.monitor.report import add_usage, render, resource_usage, usage_summary

    axes, rows = report_rows(tmp_path)
    # cell 0: requeued once (its checkpoint carried on), then completed; cell 1: failed on a node, then completed in a
    # resubmission (job 90); cell 2 still running; job 88_3 pending (no allocation yet); one odd line
    sacct = ("88_0|REQUEUED|3600|billing=8,cpu=32,gres/gpu=8,mem=960G,node=1\n"
             "88_0|COMPLETED|1800|billing=8,cpu=32,gres/gpu=8,mem=960G,node=1\n"
             "88_1|NODE_FAIL|900|billing=8,cpu=32,gres/gpu:a100=8,mem=960G,node=1\n"
             "88_2|RUNNING|360|billing=4,cpu=16,gres/gpu=4,mem=480G,node=1\n"
             "88_3|PENDING|0|\n"
             "90_0|COMPLETED|2700|billing=8,cpu=32,gres/gpu=8,mem=960G,node=1\n"
             "garbage\n")
    assert parse_usage(sacct)[2] == {"job_id": "88_1", "state": "NODE_FAIL", "elapsed_s": 900, "gpus": 8, "cpus": 32}
    assert len(parse_usage(sacct)) == 5
    jobs = [{"job_id": f"88_{i}", "run_dir": rows[i]["run_dir"]} for i in range(4)]
    jobs.append({"job_id": "90_0", "run_dir": rows[1]["run_dir"]})
    calls = []
    usage, error = resource_usage(jobs, run=lambda argv: calls.append(argv) or sacct)
    assert error is None and calls == [usage_command(["88", "90"])]
    assert usage[rows[0]["run_dir"]] == {"attempts": 2, "gpu_hours": 12.0, "cpu_hours": 48.0, "lost_gpu_hours": 0,
                                         "lost_cpu_hours": 0}
    assert usage[rows[1]["run_dir"]]["gpu_hours"] == 8.0 and usage[rows[1]["run_dir"]]["lost_gpu_hours"] == 2.0
    add_usage(rows, usage)
    assert usage_summary(rows) == ("resources: 20.4 GPU-h used by 5 attempt(s) of 3 cell(s); 2 GPU-h (10%) in "
                                   "attempts that failed or were cancelled")
    console = Console(width=140, color_system=None, record=True)
    console.print(render(rows, axes, "kh"))
    text = console.export_text()
    lines = [line for line in text.splitlines() if "│" in line]
    assert [line.split("│")[-2].strip() for line in lines] == ["12.0000", "8.0000", "0.4000", "-"]
    assert "┃   GPU-h ┃" in text

    def no_accounting(argv):
        from launch.slurm.client import SlurmError
        raise SlurmError("'sacct ...' exited with 1: Slurm accounting storage is disabled")

    assert resource_usage(jobs, run=no_accounting) == ({}, "'sacct ...' exited with 1: Slurm accounting storage is "
                                                           "disabled")
    assert usage_summary(rows, "x") == "resources: unknown (x)" and resource_usage([]) == ({}, None)


def test_the_cpu_study_sweep_trains_the_two_study_models_each_at_three_budgets(tmp_path):
    """sweeps/study_cpu.yaml (issue 19): every cell is one of the two study experiment files, changed only in its
    schedule (max_steps and the steps derived from it), so the frontier compares the models and nothing else."""
    from launch.planning.profiles import expand_path, load_profile
    from launch.planning.sweep import plan_sweep
    from memorymodels.experiment import load_experiment

    profile = load_profile("local-slurm")
    data_root = expand_path(profile.data_root, where="data_root")
    plan = plan_sweep(load_sweep(REPO / "sweeps" / "study_cpu.yaml"), profile, snapshot=False,
                      overrides=[f"output.checkpoint_root={tmp_path}"])
    files = {name: load_experiment(REPO / "configs" / "experiments" / f"study_{name}_cpu.yaml")
             for name in ("mixer", "llama")}
    budgets: dict[str, list[int]] = {"mixer": [], "llama": []}
    for job in plan.jobs:
        settings = job.settings
        family = "mixer" if settings.model.name == "language_mixer" else "llama"
        reference = files[family]
        # the same model and data; the data are prepared where the profile says (its data_root)
        assert settings.model == reference.model, job.run_dir
        assert settings.data == dataclasses.replace(reference.data, cache_dir=str(data_root)), job.run_dir
        schedule = {"max_steps", "warmup_steps", "eval_steps", "save_steps", "precision"}  # precision: the profile's
        assert (reference.train.precision, settings.train.precision) == ("auto", "fp32")
        assert {k: v for k, v in vars(settings.train).items() if k not in schedule} == \
            {k: v for k, v in vars(reference.train).items() if k not in schedule}, job.run_dir
        assert settings.train.max_steps % settings.train.eval_steps == 0  # every run evaluates at its budget
        budgets[family].append(settings.train.max_steps)
    assert budgets == {"mixer": [250, 500, 1000], "llama": [250, 500, 1000]}


def test_a_wide_report_piped_is_never_cut(tmp_path, capsys):
    """sweep_report.py into a pipe or a file: every column whole however many axes (rich saw 80 columns and cut the
    study sweep's 14 columns to '…')."""
    from launch.cli.output import print_table
    from launch.monitor.report import collect_rows, render

    axes = ["model.name", "model.preset", "model.params.dim", "model.params.depth", "model.params.n_heads",
            "train.max_steps", "train.learning_rate"]
    cells = [{"index": i, "overrides": dict(zip(axes, ["language_mixer", "cpu", 256, 8, 4, 1000 * i, 0.002])),
              "run_dir": str(tmp_path / f"cell{i}")} for i in range(2)]
    print_table(render(collect_rows(cells, axes), axes, "study"))
    out = capsys.readouterr().out
    assert "…" not in out and "language_mixer" in out and "not started" in out, out
    assert all(len(line) > 80 for line in out.splitlines() if "language_mixer" in line)


def test_a_report_whose_reader_went_away_ends_quietly(tmp_path):
    """``sweep_report.py ... | head``: the reader closes the pipe; the command ends by SIGPIPE, as Unix tools do, with
    nothing on stderr (it ended with exit 1 and a BrokenPipeError before)."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "launch/sweep_report.py", "sweeps/kernel_heads_debug.yaml", "--profile",
                             "local-slurm", "--csv", str(tmp_path / "r.csv")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "MEMORYMODELS_STATE": str(tmp_path / "state")})
    proc.stdout.close()  # before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == -signal.SIGPIPE and err == "", err
