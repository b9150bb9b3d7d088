"""Experiments, run directories (naming, collisions), metrics and run_progress."""

import json
import os
import time
from pathlib import Path

import pytest

from memorymodels import fileio, metrics, runrecord, runs
from memorymodels.attempts import attempts
from memorymodels.configuration import ConfigError
from memorymodels.experiment import experiment_from_dict, identity, load_experiment, run_name

from .conftest import make_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_load(path):
    from memorymodels.models import model_config
    from memorymodels.experiment import model_build_args

    experiment = load_experiment(path)
    assert experiment.train.max_steps >= 1
    assert run_name(experiment, 1).startswith(experiment.model.name)
    build = model_build_args(experiment, n_vocab=experiment.data.vocab_size)
    model_config(build["name"], preset=build["preset"], **build["params"])  # validates without building


def test_unknown_keys_and_bad_values_name_the_file_and_key(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model: {name: autoencoding_mixer}\ndata: {corpus: stdlib}\ntrain: {lerning_rate: 1.0e-3}\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown key 'train.lerning_rate'; did you mean 'learning_rate'"):
        load_experiment(path)
    path.write_text("data: {corpus: stdlib}\ntrain: {max_steps: 0}\n")
    with pytest.raises(ConfigError, match=r"x.yaml: 'train.max_steps' must be at least 1"):
        load_experiment(path)
    path.write_text("data: {corpus: stdlib, train_dir: /x}\n")
    with pytest.raises(ConfigError, match=r"x.yaml: .*exclude each other"):
        load_experiment(path)
    with pytest.raises(ConfigError, match=r"x.yaml \(with --set data.train_dir=null train.precision=fp8\): "
                                          r"'train.precision': 'fp8' is not one of"):
        load_experiment(path, ["data.train_dir=null", "train.precision=fp8"])


def test_overrides_use_dotted_keys():
    experiment = load_experiment(REPO / "configs/experiments/debug.yaml", ["train.max_steps=7", "model.params.dim=48"])
    assert experiment.train.max_steps == 7 and experiment.model.params == {"dim": 48}
    assert "d48" in run_name(experiment, 2) and "b8x2" in run_name(experiment, 2)


def _experiment(root, **train):
    data = {"model": {"name": "autoencoding_mixer", "preset": "debug"},
            "data": {"corpus": "stdlib-small", "context": 64, "vocab_size": 512},
            "train": {"max_steps": 10, **train}, "output": {"checkpoint_root": str(root)}}
    return experiment_from_dict(data, "test.yaml")


def _claim(run_dir, experiment, world_size=1):
    run_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_json(run_dir / "run.json", {"identity": identity(experiment, world_size)})


def test_run_dir_is_named_from_the_config_and_stable(tmp_path):
    experiment = _experiment(tmp_path)
    run_dir = runs.run_dir_for(experiment, 1)
    assert run_dir.parent == tmp_path
    assert run_dir.name == "autoencoding_mixer_d32_n2_c64_b16x1_stdlib-small-v512"
    _claim(run_dir, experiment)
    # Logging/saving settings do not make it another run: the same directory is found and resumed.
    assert runs.run_dir_for(_experiment(tmp_path, save_steps=3, eval_steps=2), 1) == run_dir


def test_colliding_config_gets_a_distinct_directory_and_nothing_is_overwritten(tmp_path):
    first = _experiment(tmp_path)
    first_dir = runs.run_dir_for(first, 1)
    _claim(first_dir, first)
    (first_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    other = _experiment(tmp_path, learning_rate=1e-2)  # not in the name: the names collide
    other_dir = runs.run_dir_for(other, 1)
    assert other_dir != first_dir and other_dir.name.startswith(first_dir.name + "-")
    assert "belongs to a different config" in runs.collision_message(other, 1, other_dir)
    _claim(other_dir, other)
    assert runs.run_dir_for(other, 1) == other_dir and runs.run_dir_for(first, 1) == first_dir
    assert (first_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'
    with pytest.raises(runs.RunDirError, match="refusing to overwrite"):
        runs.check_run_dir(first_dir, identity(other, 1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunDirError, match="not a run"):
        runs.check_run_dir(foreign, identity(first, 1))


def test_world_size_is_part_of_the_run(tmp_path):
    experiment = _experiment(tmp_path)
    assert runs.run_dir_for(experiment, 1) != runs.run_dir_for(experiment, 2)
    assert identity(experiment, 1) != identity(experiment, 2)


def test_where_data_are_prepared_is_not_part_of_the_run(tmp_path):
    """``data.cache_dir`` (the profile's data_root under the launcher) differs between clusters and checkouts; the
    run, its directory and its resume are the same."""
    from memorymodels.experiment import data_cache_dir, state_dir

    path = tmp_path / "x.yaml"
    path.write_text("data: {corpus: stdlib-small, vocab_size: 512, context: 64}\nmodel: {preset: debug}\n")
    plain = load_experiment(path, [f"output.checkpoint_root={tmp_path}"])
    cached = load_experiment(path, [f"output.checkpoint_root={tmp_path}", f"data.cache_dir={tmp_path}/data"])
    assert identity(plain, 1) == identity(cached, 1) and runs.run_dir_for(plain, 1) == runs.run_dir_for(cached, 1)
    assert data_cache_dir(cached.data) == tmp_path / "data" and data_cache_dir(plain.data) == state_dir() / "cache"
    with pytest.raises(ConfigError, match=r"'data.cache_dir' must be a path, got ' '"):
        load_experiment(path, ["data.cache_dir=' '"])


def test_metrics_roll_back_to_the_resumed_checkpoint_without_losing_lines(tmp_path):
    for step in (5, 10, 15):
        metrics.append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    assert metrics.roll_back_metrics(tmp_path, 10) == 1
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [5, 10]
    assert json.loads((tmp_path / "metrics.rolledback.jsonl").read_text())["step"] == 15


def test_run_progress_reads_the_tail_and_tolerates_missing_files(tmp_path):
    empty = metrics.run_progress(tmp_path / "missing")
    assert set(empty) == {"status", "step", "max_steps", "loss", "eval_loss", "tokens_per_s", "checkpoint_step",
                          "checkpoint_time", "updated", "goodput", "excluded_nodes", "outcome"}
    assert all(v is None for v in empty.values())
    fileio.write_json(tmp_path / "run.json", {"status": "running", "config": {"train": {"max_steps": 100000}}})
    filler = json.dumps({"step": 1, "loss": 9.0, "eval_loss": None, "tokens_per_s": 1.0}) + "\n"
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(filler * 600_000)  # ~40 MB: parsing all of it would take seconds
        for step in range(49000, 50001):
            f.write(json.dumps({"step": step, "loss": 10.0 / step, "eval_loss": 3.0 if step == 49000 else None,
                                "tokens_per_s": 1000.0}) + "\n")
        f.write('{"step": 50001, "lo')  # a line being written
    make_checkpoint(tmp_path, 50000)
    start = time.perf_counter()
    progress = metrics.run_progress(tmp_path)
    assert time.perf_counter() - start < 0.5  # only the tail is read
    assert progress["status"] == "running" and progress["max_steps"] == 100000
    assert progress["step"] == 50000 and progress["loss"] == pytest.approx(10.0 / 50000)
    assert progress["eval_loss"] == 3.0 and progress["tokens_per_s"] == 1000.0
    assert progress["checkpoint_step"] == 50000 and progress["checkpoint_time"] <= time.time()
    assert progress["updated"] >= os.path.getmtime(tmp_path / "run.json")


def test_run_json_keeps_the_attempt_chain(tmp_path, monkeypatch):
    experiment = _experiment(tmp_path)
    run_dir = tmp_path / "run"
    monkeypatch.setenv("SLURM_JOB_ID", "500")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = runrecord.start_run(run_dir, experiment, 1, command=["train"], model_summary={"parameters": 1}, repo=REPO)
    assert first["status"] == "running" and first["slurm_job_ids"] == ["500"]
    # The first attempt was SIGKILLed (no end recorded); Slurm requeues the same job id, then a new job resumes.
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    runrecord.start_run(run_dir, experiment, 1, command=["train"], model_summary={"parameters": 1}, repo=REPO)
    runrecord.end_attempt(run_dir, "interrupted", step=20)
    monkeypatch.setenv("SLURM_JOB_ID", "501")
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    info = runrecord.start_run(run_dir, experiment, 1, command=["train"], model_summary={"parameters": 1}, repo=REPO)
    history = attempts(run_dir)  # the one record of attempts; run.json keeps only the job-id chain
    assert [a["outcome"] for a in history] == ["lost", "interrupted-outside", "running"]
    assert [(a["job_id"], a["restart_count"], a["step"]) for a in history] == [("500", 0, None), ("500", 1, 20),
                                                                               ("501", 0, None)]
    assert "attempts" not in info
    assert info["slurm_job_ids"] == ["500", "501"] and info["restart_count"] == 0
    assert info["identity"] == identity(experiment, 1) and info["created"] == first["created"]


DAMAGED_RUN_JSON = {"garbage bytes": b"\x00\xff\xfe garbage", "truncated JSON": b'{"identity": "abc", "sta',
                    "a JSON list": b'["identity", "abc"]'}


@pytest.mark.parametrize("content", DAMAGED_RUN_JSON.values(), ids=DAMAGED_RUN_JSON)
def test_a_damaged_run_json_stops_instead_of_starting_over_in_another_directory(tmp_path, content):
    experiment = _experiment(tmp_path)
    run_dir = runs.run_dir_for(experiment, 1)
    _claim(run_dir, experiment)
    runrecord.write_run_json(run_dir, {"identity": identity(experiment, 1), "status": "running"})  # keeps a .bak
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "run.json").write_bytes(content)
    repair = rf"restore the previous version with 'cp {run_dir}/run.json.bak {run_dir}/run.json'"
    with pytest.raises(runs.RunDirError, match=rf"^{run_dir}/run.json: .*nothing was changed. To resume it, "
                                               rf"{repair}; to start fresh, move {run_dir} away$"):
        runs.run_dir_for(experiment, 1)
    with pytest.raises(runs.RunDirError, match=repair):
        runs.check_run_dir(run_dir, identity(experiment, 1))
    (run_dir / "run.json.bak").unlink()
    with pytest.raises(runs.RunDirError, match=r"repair it by hand \(no usable run.json.bak\)"):
        runs.run_dir_for(experiment, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]  # no second directory


def test_run_json_backup_is_the_previous_version(tmp_path):
    runrecord.write_run_json(tmp_path, {"status": "running"})
    assert not (tmp_path / "run.json.bak").exists()
    runrecord.write_run_json(tmp_path, {"status": "completed"})
    assert json.loads((tmp_path / "run.json.bak").read_text()) == {"status": "running"}


def test_the_run_lock_is_exclusive_names_its_holder_and_leaves_the_directory_free(tmp_path):
    import socket

    lock = runs.lock_run_dir(tmp_path / "run")
    holder = rf"pid {os.getpid()} on host {socket.gethostname()} since "
    with pytest.raises(runs.RunLockedError, match=rf"^{tmp_path}/run: another trainer is running in this run "
                                                  rf"directory \({holder}.*; lock {tmp_path}/run/.trainer.lock\)"):
        runs.lock_run_dir(tmp_path / "run")
    assert runs._owner(tmp_path / "run") is None  # the lock file alone does not make it a foreign directory
    lock.release()
    runs.lock_run_dir(tmp_path / "run").release()
