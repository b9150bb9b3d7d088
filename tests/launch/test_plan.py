"""Planning: every shipped profile plans; rendered scripts, commands and accelerate configs match recorded files.

Re-record after an intended change with::

    MEMORYMODELS_RECORD=1 .venv/bin/pytest tests/launch/test_plan.py -q
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.planning.plan import plan_job, split_overrides
from launch.planning.command import sbatch_parameters
from launch.planning.profiles import REPO_ROOT, list_profiles, load_profile
from memorymodels.configuration import ConfigError

HERE = Path(__file__).parent
RECORDED = HERE / "recorded" / "plans"
EXPERIMENT = HERE / "recorded" / "experiment.yaml"
RECORD = os.environ.get("MEMORYMODELS_RECORD") == "1"
CKPT = "/ckpt"


@pytest.fixture(autouse=True)
def cluster_roots(monkeypatch):
    """The GPU profiles' ${CHECKPOINT_ROOT:-...} and ${DATA_ROOT:-...} point at fixed, absent paths."""
    monkeypatch.setenv("CHECKPOINT_ROOT", CKPT)
    monkeypatch.setenv("DATA_ROOT", "/data")


def plan(profile: str, *, launcher=None, nodes=None, profile_sets=(), sets=()):
    overrides = [f"checkpoint_root={CKPT}", *profile_sets] if profile.startswith("local") else list(profile_sets)
    return plan_job(load_profile(profile, overrides), EXPERIMENT, overrides=list(sets), launcher=launcher,
                    nodes=nodes, python="/venv/bin/python")


def normalize(text: str) -> str:
    """Paths of this checkout and the code snapshot's hash (it changes with every commit) as placeholders."""
    text = text.replace(str(EXPERIMENT), "<EXPERIMENT>").replace(str(REPO_ROOT), "<ROOT>")
    return re.sub(r"/\.code/[0-9a-f]{16}", "/.code/<HASH>", text)


def compare_recorded(name: str, text: str) -> None:
    path = RECORDED / name
    text = normalize(text)
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"{path} is not recorded yet; record it with MEMORYMODELS_RECORD=1 pytest {__file__}")
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"recorded/{name}", "rendered now"))
        pytest.fail(f"rendered {name} differs from the recorded file:\n{diff}\nIf the change is intended, "
                    f"re-record with: MEMORYMODELS_RECORD=1 .venv/bin/pytest {Path(__file__).relative_to(REPO_ROOT)}",
                    pytrace=False)


CASES = [  # (case name, profile, launcher, nodes)
    ("v100x8-torchrun", "v100x8", "torchrun", 1),
    ("v100x8-fsdp-2nodes", "v100x8", "fsdp", 2),
    ("v100x4-deepspeed", "v100x4", "deepspeed", 1),
    ("a100x8-fsdp", "a100x8", "fsdp", 1),
    ("h100x8-torchrun-2nodes", "h100x8", "torchrun", 2),
    ("h100x2-deepspeed-2nodes", "h100x2", "deepspeed", 2),
    ("local-slurm", "local-slurm", None, None),
    ("local-slurm-2node", "local-slurm-2node", None, None),
    ("local", "local", None, None),
]


@pytest.mark.parametrize("case, profile, launcher, nodes", CASES, ids=[c[0] for c in CASES])
def test_rendered_jobs_match_recorded(case, profile, launcher, nodes):
    p = plan(profile, launcher=launcher, nodes=nodes)
    compare_recorded(f"{case}.sbatch", p.script)
    compare_recorded(f"{case}.command.sh", p.command + "\n")
    if p.accelerate_config is not None:
        compare_recorded(f"{case}.accelerate_config.yaml", p.accelerate_config)


SITE_CASES = [  # (case name, profile, profile keys, nodes): a container cluster's settings, recorded
    ("a100x8-pyxis-exclusive-2nodes", "a100x8",
     ["container={image: nvcr.io#nvidia/pytorch:24.05-py3, mounts: [/scratch:/scratch]}", "exclusive=true",
      "srun_args=[--mpi=pmix, --cpu-bind=cores]", "wckey=lab"], 2),
    ("v100x8-apptainer", "v100x8", ["container={image: /images/torch.sif, runtime: apptainer}"], 1),
]


@pytest.mark.parametrize("case, profile, sets, nodes", SITE_CASES, ids=[c[0] for c in SITE_CASES])
def test_site_settings_match_recorded(case, profile, sets, nodes):
    p = plan(profile, nodes=nodes, profile_sets=sets)
    compare_recorded(f"{case}.sbatch", p.script)
    compare_recorded(f"{case}.command.sh", p.command + "\n")


def test_site_settings_reach_the_planned_script_and_command():
    pyxis = plan("a100x8", nodes=2, profile_sets=SITE_CASES[0][2])
    srun = next(line for line in pyxis.script.splitlines() if line.startswith("srun "))
    assert "#SBATCH --exclusive" in pyxis.script and "#SBATCH --mem=0" in pyxis.script
    assert "#SBATCH --wckey=lab" in pyxis.script
    assert "--mpi=pmix --cpu-bind=cores" in srun and "'--container-image=nvcr.io#nvidia/pytorch:24.05-py3'" in srun
    # the checkpoint and data roots are mounted at the same path; the task starts in the code snapshot
    assert f"--container-mounts=/scratch:/scratch,{CKPT}:{CKPT},/data:/data" in srun
    assert f"--container-workdir={pyxis.code.path}" in srun and f"--chdir={pyxis.code.path}" in pyxis.script
    assert srun.endswith(f"python -u -m submitit.core._submit {pyxis.log_folder}")  # the image's interpreter
    assert pyxis.command.startswith(f"env --chdir={pyxis.code.path} PYTHONPATH={pyxis.code.path}\"${{PYTHONPATH:+:$PYTHONPATH}}\" "
                                    "PYTHONDONTWRITEBYTECODE=1 python -m torch")  # no bytecode in the snapshot
    box = plan("v100x8", profile_sets=SITE_CASES[1][2])
    assert f"apptainer exec --nv --bind {CKPT}:{CKPT},/data:/data --pwd {box.code.path} /images/torch.sif python -m " \
           "torch.distributed.run" in box.command
    assert "--container" not in box.script and "/venv/bin/python -u -m submitit" in box.script
    # no site settings: no --wckey (submitit writes --wckey=submitit unless told otherwise), no --exclusive
    plain = plan("v100x8")
    assert "--wckey" not in plain.script and "--exclusive" not in plain.script and "#SBATCH --mem=480G" in plain.script
    assert "container" not in plain.describe().split("# command")[0]


@pytest.mark.parametrize("key, value, message", [
    ("container", "{image: 'a b'}", "'container.image' must name one image"),
    ("container", "{image: x, runtime: docker}", "container.runtime"),
    ("container", "{image: x, mounts: ['/a:/a,/b:/b']}", "'container.mounts[0]: /a:/a,/b:/b' is not one"),
    ("container", "{image: x, workdir: rel}", "'container.workdir: rel' must be an absolute path"),
    ("container", "{image: \"x\\ny\"}", "'container.image' contains a control character"),
    ("container", "{imag: x}", "container.imag"),
    ("srun_args", "[--output=x]", "'srun_args[0]: --output=x' is set by the launcher"),
    ("srun_args", "--mpi=pmix", "srun_args"),
    ("srun_args", "[\"--a\\tb\"]", "'srun_args[0]' contains a control character"),
    ("exclusive", "2", "exclusive"),
    ("wckey", "'a b'", "'wckey: a b' is not a Slurm name"),
])
def test_site_keys_are_validated_naming_the_file_and_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        load_profile("v100x8", [f"{key}={value}"])
    assert "cluster_profiles/v100x8.yaml" in str(err.value) and message in str(err.value), str(err.value)


def test_diff_shows_the_site_keys():
    from launch.planning.diff import diff_plans

    text = diff_plans(plan("v100x8"), plan("v100x8", profile_sets=["exclusive=true", "srun_args=[--mpi=pmix]",
                                                                   "container={image: i.sif, runtime: apptainer}"]))
    assert "exclusive" in text and "False -> True" in text and "srun_args" in text and "container" in text
    assert "+#SBATCH --exclusive" in text and "+#SBATCH --mem=0" in text and "apptainer" in text


PLAN_KEYS = {"sbatch", "script", "command", "accelerate_config", "run_dir", "precision", "experiment", "code",
             "extension", "note"}


def test_every_shipped_profile_plans_with_each_launcher_it_allows():
    for name in list_profiles():
        profile = load_profile(name, [f"checkpoint_root={CKPT}"] if name.startswith("local") else [])
        launchers = ["torchrun", "fsdp", "deepspeed"] if profile.gpu_type else ["torchrun"]
        for launcher in launchers:
            p = plan_job(profile, EXPERIMENT, launcher=launcher)
            data = p.to_json()
            assert set(data) == PLAN_KEYS
            assert (data["accelerate_config"] is None) == (launcher == "torchrun")
            assert p.sbatch["ntasks_per_node"] == 1 and p.sbatch["nodes"] == p.nodes
            assert str(p.run_dir).startswith(CKPT)
            assert "--run-dir " + str(p.run_dir) in p.command


def test_accelerate_config_counts_every_gpu_and_takes_the_profile_precision():
    p = plan("v100x8", launcher="fsdp", nodes=2)
    config = yaml.safe_load(p.accelerate_config)
    assert (config["num_processes"], config["num_machines"], config["mixed_precision"]) == (16, 2, "fp16")
    assert config["distributed_type"] == "FSDP" and "use_cpu" not in config
    ds = yaml.safe_load(plan("h100x2", launcher="deepspeed", nodes=3).accelerate_config)
    assert (ds["num_processes"], ds["num_machines"], ds["mixed_precision"]) == (6, 3, "bf16")
    assert ds["deepspeed_config"]["zero_stage"] == 3 and "use_cpu" not in ds
    # each node passes its own rank and the head node's address; the templates are untouched
    assert '--machine_rank "$NODE_RANK"' in p.command and '--main_process_ip "$HEAD_NODE"' in p.command
    assert "num_processes: 4" in (REPO_ROOT / "configs" / "fsdp_config.yaml").read_text()


def test_torchrun_one_per_node_with_c10d_on_the_head_node():
    p = plan("h100x8", nodes=2)
    assert "--nnodes 2 --nproc_per_node 8 --rdzv_backend c10d" in p.command
    assert '--rdzv_endpoint "$HEAD_NODE:$HEAD_PORT"' in p.command
    assert p.sbatch["gpus_per_node"] == 8 and p.sbatch["cpus_per_task"] == 8 * 14
    assert p.world_size == 16 and "_b8x16_" in p.run_dir.name  # the run name counts every process
    single = plan("v100x8")
    assert "--standalone --nnodes 1 --nproc_per_node 8" in single.command


def test_one_process_on_one_node_runs_the_trainer_without_torchrun():
    one = plan("local-slurm")
    assert "torch.distributed.run" not in one.command and " -m memorymodels.train --experiment " in one.command
    two = plan("local-slurm", profile_sets=["processes_per_node=2"])
    assert "-m torch.distributed.run --standalone --nnodes 1 --nproc_per_node 2" in two.command
    assert "torch.distributed.run" in plan("local-slurm-2node", profile_sets=["processes_per_node=1"]).command


def test_sbatch_parameters_in_scheduler_terms():
    profile = load_profile("v100x4", ["time_limit=90m", "account=lab", "qos=high", "sbatch_extra={exclusive: true}"])
    params = sbatch_parameters(profile, name="job", nodes=3)
    assert params["time"] == 90 and params["nodes"] == 3 and params["gpus_per_node"] == 4
    assert params["mem"] == "240G" and params["cpus_per_task"] == 20
    assert params["account"] == "lab" and params["qos"] == "high" and params["signal_delay_s"] == 300
    assert params["additional_parameters"] == {"requeue": True, "exclusive": True}


def test_set_rule_profile_then_experiment():
    assert split_overrides(["profile.time_limit=2h", "train.max_steps=5"]) == (["time_limit=2h"],
                                                                               ["train.max_steps=5"])
    p = plan("v100x8", sets=["train.max_steps=7", "train.precision=fp32"])
    # the profile decides the checkpoint root and where data are prepared (its data_root, outside the code
    # snapshot), --set wins over the file, and the plan's one precision comes last
    assert p.overrides == [f"output.checkpoint_root={CKPT}", "data.cache_dir=/data", "train.max_steps=7",
                           "train.precision=fp32", "train.precision=fp32"]
    assert p.settings.data.cache_dir == "/data"
    assert "data        stdlib-small, prepared once under /data (shared by every code snapshot)" in p.describe()
    assert p.precision == "fp32" and p.settings.train.precision == "fp32" and p.settings.train.max_steps == 7
    assert '"max_steps": 7' in p.experiment_text and '"precision": "fp32"' in p.experiment_text
    assert load_experiment_text(p.experiment_text) == p.settings  # the trainer reads it back as it was planned
    assert f"--experiment {p.run_dir}/launch/experiment.yaml --run-dir {p.run_dir} " in p.command


def load_experiment_text(text: str):
    from memorymodels.configuration import yaml_load
    from memorymodels.experiment import experiment_from_dict

    return experiment_from_dict(yaml_load(text), "cli")


def test_relative_data_directories_live_under_data_root(tmp_path):
    exp = tmp_path / "pretokenized.yaml"
    exp.write_text("data: {tokenizer: tok8k, train_dir: fineweb-c512}\nmodel: {preset: debug}\n")
    p = plan_job(load_profile("a100x8"), exp)
    assert "data.tokenizer=/data/tok8k" in p.overrides and "data.train_dir=/data/fineweb-c512" in p.overrides


def test_bad_flags_and_keys_name_what_to_fix():
    with pytest.raises(ConfigError, match="--launcher fsdp: .*needs GPUs"):
        plan("local-slurm", launcher="fsdp")
    with pytest.raises(ConfigError, match="--nodes 2: .*impossible with 'executor: local'"):
        plan("local", nodes=2)
    with pytest.raises(ConfigError, match="unknown key 'train.max_step'; did you mean 'max_steps'"):
        plan("v100x8", sets=["train.max_step=3"])
    with pytest.raises(ConfigError, match="no such file"):
        plan_job(load_profile("v100x8"), "configs/experiments/nope.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHECKPOINT_ROOT": CKPT, "DATA_ROOT": "/data"}
    return subprocess.run([sys.executable, "launch/submit.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """``launch/submit.py``'s main() in this process (argparse errors exit 2), output captured."""
    from launch.cli.submit import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_script_runs_from_the_repository_root():
    out = run_cli("--list-profiles")
    assert out.returncode == 0 and "v100x8" in out.stdout and "local-slurm-2node" in out.stdout


def test_cli_dry_run_json_has_exactly_the_plan_keys(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-cluster.conf"))  # no cluster answers: a GPU profile here
    out = run_main(capsys, "--profile", "a100x4", "--experiment", str(EXPERIMENT), "--launcher", "deepspeed", "--nodes", "2",
                  "--set", "profile.time_limit=2h", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == PLAN_KEYS | {"cluster_checks"}
    assert data["cluster_checks"] == f"the cluster checks were not run: SLURM_CONF={tmp_path / 'no-cluster.conf'}: no such file"
    assert data["sbatch"]["time"] == 120 and "num_processes: 8" in data["accelerate_config"]


def test_cli_errors_exit_2_with_the_message(capsys):
    out = run_main(capsys, "--profile", "v100x9", "--dry-run")
    assert out.returncode == 2 and "unknown profile 'v100x9'" in out.stderr and "v100x8" in out.stderr
    out = run_main(capsys, "--profile", "v100x8", "--set", "profile.precision=bf16", "--dry-run")
    assert out.returncode == 2 and "'precision: bf16' is not supported by V100 GPUs; use fp16" in out.stderr
    out = run_main(capsys, "--profile", "v100x8", "--nodes", "0", "--dry-run")
    assert out.returncode == 2 and "--nodes 0: must be 1 or more" in out.stderr
    out = run_main(capsys, "--dry-run")
    assert out.returncode == 2 and "--profile is required; profiles: a100x4" in out.stderr
    out = run_main(capsys, "--profile", "v100x8", "--launcher", "mpi", "--dry-run")
    assert out.returncode == 2 and "invalid choice: 'mpi'" in out.stderr


# ---- --dependency ---------------------------------------------------------------------------------------------------


def test_dependency_is_checked_resolved_from_the_journal_and_rendered(tmp_path, monkeypatch):
    from launch.records import journal
    from launch.planning.dependency import dependency_jobs, dependency_spec

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path))
    sweep = journal.record(profile="local-slurm", kind="sweep", jobs=[
        {"job_id": f"700_{i}", "run_dir": f"/r/{i}", "executor": "slurm"} for i in range(3)])
    here = journal.record(profile="local", jobs=[{"job_id": "4242", "run_dir": "/r/l", "executor": "local"}])
    assert dependency_spec("afterok:12:12_3") == "afterok:12:12_3"
    assert dependency_spec(f"afterok:{sweep['submission_id']},afterany:9") == "afterok:700,afterany:9"
    assert dependency_spec("after:5+10?afternotok:6") == "after:5+10?afternotok:6"
    assert dependency_spec("singleton") == "singleton"
    assert dependency_jobs("after:5+10?afternotok:6") == {"5": "after", "6": "afternotok"}
    for spec, message in [
            ("afterok", "'afterok' is not TYPE:JOB[:JOB...]"),
            ("afterwards:12", "'afterwards:12' is not TYPE:JOB[:JOB...]"),
            ("afterok:12,afterany:13?after:14", "mix of ',' (all of) and '?' (any of)"),
            ("afterok:12+5", "'+5' (minutes after the start) goes with 'after' only"),
            ("afterok:run-7", "'run-7' is neither a Slurm job id (1234, 1234_7) nor a submission id"),
            ("afterok:20260101-000000-abcdef", "20260101-000000-abcdef.json: no such submission"),
            (f"afterok:{here['submission_id']}", f"submission {here['submission_id']} has no Slurm job")]:
        with pytest.raises(ConfigError, match="^--dependency " + spec.replace("?", r"\?").replace("+", r"\+")) as err:
            dependency_spec(spec)
        assert message in str(err.value)
    job = plan_job(load_profile("local-slurm", [f"checkpoint_root={CKPT}"]), EXPERIMENT,
                   dependency=f"afterok:{sweep['submission_id']}")
    assert job.dependency == "afterok:700" and "#SBATCH --dependency=afterok:700\n" in job.script
    assert "starts      when afterok:700 holds" in job.describe()
    assert "--dependency" not in plan("local-slurm").script
    with pytest.raises(ConfigError, match="profile 'local' runs jobs on this machine at once; dependencies need a "
                                          "Slurm profile"):
        plan_job(load_profile("local", [f"checkpoint_root={CKPT}"]), EXPERIMENT, dependency="afterok:1")


def test_dependency_preflight_names_jobs_that_make_it_start_at_once_or_never():
    from launch.submission.preflight import check_dependency

    states = {"10": ["RUNNING"], "11": ["FAILED"], "12": ["COMPLETED"], "13": ["COMPLETED", "PENDING"]}
    assert check_dependency("afterok:10:12:13,afternotok:10:13,afterany:11", states) == []
    problems = check_dependency("afterok:11:99,afternotok:12", states)
    assert len(problems) == 3
    assert "job 11 already ended FAILED; 'afterok' can never hold and this job would wait forever" in problems[0]
    assert "Slurm knows no job 99 (not queued, not in accounting); Slurm would count it as done" in problems[1]
    assert "job 12 already COMPLETED; 'afternotok' can never hold" in problems[2]


# ---- --diff ---------------------------------------------------------------------------------------------------------


def test_diff_shows_only_what_changes_between_two_profiles(capsys):
    from launch.planning.diff import diff_plans

    v100, a100 = plan("v100x8"), plan("a100x8")
    text = diff_plans(v100, a100)
    assert text.startswith("--- v100x8 (cluster_profiles/v100x8.yaml)\n+++ a100x8 (cluster_profiles/a100x8.yaml)\n")
    sections = {part.splitlines()[0]: part.splitlines()[1:] for part in text.split("\n\n")[1:]}
    assert list(sections) == ["# profile", "# sbatch parameters", "# trainer overrides (--set)",
                              "# experiment.yaml", "# job.sbatch"]
    assert "  precision       fp16 -> bf16" in sections["# profile"]
    assert "  mem            480G -> 960G" in sections["# sbatch parameters"]
    assert sections["# trainer overrides (--set)"] == ["  train.precision  fp16 -> bf16"]
    assert {'-  "precision": "fp16",', '+  "precision": "bf16",'} <= set(sections["# experiment.yaml"])
    assert "-#SBATCH --constraint=v100" in sections["# job.sbatch"] and "+#SBATCH --constraint=a100" in sections["# job.sbatch"]
    assert not any(line.startswith(("-", "+")) and "job-name" in line for line in sections["# job.sbatch"])

    fsdp = diff_plans(a100, plan("a100x8", launcher="fsdp", nodes=2))
    assert "  launcher  torchrun -> fsdp" in fsdp and "\n# accelerate_config.yaml\n@@ -0,0 +1," in fsdp
    assert "+--num_processes\n+16\n" in fsdp and "+$NODE_RANK\n" in fsdp
    assert diff_plans(v100, plan("v100x8")).endswith("no differences: the two profiles plan the same job")

    out = run_main(capsys, "--profile", "v100x8", "--diff", "a100x8", "--experiment", str(EXPERIMENT))
    assert out.returncode == 0 and out.stdout.strip() == diff_plans(
        plan_job(load_profile("v100x8"), EXPERIMENT), plan_job(load_profile("a100x8"), EXPERIMENT))
    out = run_main(capsys, "--profile", "v100x8", "--diff", "nosuch")
    assert out.returncode == 2 and out.stderr.startswith("error: --diff nosuch: unknown profile 'nosuch'")
    out = run_main(capsys, "--profile", "v100x8", "--diff", "a100x8", "--sweep", "sweeps/kernel_heads_debug.yaml")
    assert out.returncode == 2 and "--diff compares the job of one experiment on two profiles; drop --sweep" in out.stderr


# ---- a dry run checks what a submission checks ------------------------------------------------------------------


def _sweep_file(tmp_path, grid: str) -> str:
    path = tmp_path / "bad_sweep.yaml"
    path.write_text(f"experiment: {EXPERIMENT}\noverrides: {{output.checkpoint_root: {tmp_path}/runs}}\ngrid: {grid}\n")
    return str(path)


DRY_RUN_REFUSALS = [
    # (arguments, text the one-line error must hold)
    (["--profile", "v100x8", "--set", "model.params.dim=32", "--set", "model.params.n_heads=5"], "n_heads"),
    (["--profile", "v100x8", "--set", "model.name=gpt5"], "unknown model 'gpt5'"),
    (["--profile", "v100x8", "--set", "train.precision=bf16"],
     "--set train.precision=bf16: 'train.precision: bf16' is not supported by V100 GPUs; use fp16"),
    (["--profile", "local-slurm", "--set", "train.precision=fp16"],
     "'train.precision: fp16' needs GPUs; CPU-only nodes train in fp32"),
    (["--profile", "v100x8", "--set", "profile.precision=bf16"], "'precision: bf16' is not supported by V100 GPUs"),
    (["--profile", "v100x8", "--set", "train.learning_rate=.nan"], "train.learning_rate"),
    (["--profile", "v100x8", "--set", "profile.mem_per_gpu_gb=.nan"], "mem_per_gpu_gb"),
    (["--profile", "v100x8", "--set", 'profile.partition="gpu\\nhostname"'], "'partition' contains a control character"),
    (["--profile", "v100x8", "--set", "profile.partition=gpu\nhostname"], "'partition: gpu hostname' is not a Slurm name"),
    (["--profile", "v100x8", "--set", 'profile.sbatch_extra={"mail-type": "END\\nrm -rf /"}'],
     "'sbatch_extra.mail-type' contains a control character"),
    (["--profile", "v100x8", "--set", "profile.sbatch_extra={'a b': 1}"], "'sbatch_extra' key 'a b' is not an sbatch"),
    (["--profile", "v100x8", "--set", "output.name=../../x"], "output.name"),
]


@pytest.mark.parametrize("args, message", DRY_RUN_REFUSALS, ids=[" ".join(a[1:]) for a, _ in DRY_RUN_REFUSALS])
def test_dry_run_refuses_what_a_submission_would(capsys, tmp_path, args, message):
    out = run_main(capsys, *args, "--experiment", str(EXPERIMENT), "--dry-run", "--no-preflight")
    assert out.returncode == 2, out.stdout
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_dry_run_of_a_sweep_refuses_a_cell_of_the_wrong_type(capsys, tmp_path):
    out = run_main(capsys, "--profile", "local-slurm", "--sweep",
                   _sweep_file(tmp_path, "{model.params.kernel: [1, 2, true]}"), "--dry-run", "--no-preflight")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cell 2 (model.params.kernel=true)" in out.stderr and "model.params.kernel" in out.stderr
    assert not (tmp_path / "runs").exists()
