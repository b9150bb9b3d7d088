"""Hostile input to the launcher's commands, table-driven: profiles, sweep files, command-line flags, the dashboard
and the sweep report. Each case asserts the exit code, one error line naming the file, key or flag, no traceback,
and nothing written under the test's checkpoint root. (Experiment files and ``--set`` values: the library's
``tests/test_hostile_inputs.py``.)"""

from __future__ import annotations


import pytest

from memorymodels.experiment import REPO_ROOT

DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"
GPU_BASE = "extends: v100x4\n"
CPU_BASE = "extends: local-slurm\n"

PROFILES = [
    # (profile file text, text the error names)
    (GPU_BASE + "gpu_type: K80\n", "'gpu_type: K80' is not a known GPU"),
    (GPU_BASE + "gpus_per_node: 17\n", "'gpus_per_node: 17' is impossible for V100"),
    (GPU_BASE + "precision: bf16\n", "'precision: bf16' is not supported by V100 GPUs; use fp16"),
    (GPU_BASE + "mem_per_gpu_gb: .nan\n", "mem_per_gpu_gb"),
    (GPU_BASE + "mem_per_gpu_gb: -1\n", "'mem_per_gpu_gb: -1.0' must be positive"),
    (GPU_BASE + "time_limit: forever\n", "'forever' is not a time limit"),
    (GPU_BASE + "time_limit: 0m\n", "'0m' is not a time limit"),
    (GPU_BASE + "time_limit: [1]\n", "'time_limit'"),
    (GPU_BASE + "time_limit: 1m\nsignal_before_end_s: 300\n", "the job would be told to stop before it starts"),
    (GPU_BASE + 'partition: "gpu\\nhostname"\n', "'partition' contains a control character"),
    (GPU_BASE + "partition: gpu hostname\n", "'partition: gpu hostname' is not a Slurm name"),
    (GPU_BASE + 'account: "lab\\x07"\n', "'account' contains a control character"),
    (GPU_BASE + 'sbatch_extra: {"mail-type\\nhostname": END}\n', "is not an sbatch long option"),
    (GPU_BASE + "sbatch_extra: {--mail-type: END}\n", "'sbatch_extra' key '--mail-type' is not an sbatch long option"),
    (GPU_BASE + 'sbatch_extra: {mail-type: "END\\nrm -rf ~"}\n', "'sbatch_extra.mail-type' contains a control"),
    (GPU_BASE + "sbatch_extra: {exclude: [a, b]}\n", "'sbatch_extra.exclude' must be one string, number or true"),
    (GPU_BASE + "sbatch_extra: {nice: .inf}\n", "sbatch_extra"),
    (GPU_BASE + "setup: module load cuda\n", "setup"),
    (GPU_BASE + 'setup: ["module load cuda\\u0007"]\n', "'setup[0]' contains a control character"),
    ("extends: self_loop.yaml\n", "'extends' forms a loop"),
    ("extends: nosuch_profile\n", "'extends: nosuch_profile'"),
    (GPU_BASE + "name: other\n", "'name' is set from the file name"),
    (GPU_BASE + "gpus: 8\n", "unknown key 'gpus'"),
    (GPU_BASE + "checkpoint_root: ${MEMORYMODELS_TEST_UNSET_VARIABLE}/runs\n", "MEMORYMODELS_TEST_UNSET_VARIABLE"),
    (GPU_BASE + "executor: pbs\n", "executor"),
    (GPU_BASE + "nodes: 0\n", "'nodes: 0' must be 1 or more"),
    (CPU_BASE + "launcher: fsdp\n", "'launcher: fsdp' needs GPUs"),
    (CPU_BASE + "precision: fp16\n", "'precision: fp16' needs GPUs"),
    (GPU_BASE + "processes_per_node: 2\n", "'processes_per_node: 2' must equal 'gpus_per_node: 4'"),
    (GPU_BASE + "max_array_size: 0\n", "'max_array_size: 0' must be 1 or more"),
    (CPU_BASE + "snapshot_max_file_mb: 0\n", "'snapshot_max_file_mb: 0' must be positive"),
    (CPU_BASE + "snapshot_max_file_mb: .nan\n", "snapshot_max_file_mb"),
    (CPU_BASE + "snapshot_include: .env\n", "'snapshot_include': expected a list, got '.env'"),
    (CPU_BASE + 'snapshot_include: [""]\n', "'snapshot_include' must be a list of paths relative to the checkout"),
    (CPU_BASE + "snapshot_include: [~/.netrc]\n", "'snapshot_include[0]: ~/.netrc' must be a path inside the"),
    (CPU_BASE + "snapshot_include: [/home/me/.netrc]\n", "'snapshot_include[0]: /home/me/.netrc' must be a path"),
    (CPU_BASE + "snapshot_include: [../secrets/.env]\n", "'snapshot_include[0]: ../secrets/.env' must be a path"),
    (CPU_BASE + 'snapshot_include: ["a\\nb"]\n', "'snapshot_include[0]' contains a control character"),
    (CPU_BASE + "group: lab mates\n", "'group: lab mates' is not a Unix group name"),
    (CPU_BASE + "group: [lab]\n", "group"),
    ("", "empty"),
    ("- a\n- b\n", "mapping"),
]


def run(capsys, entry: str, *args: str) -> tuple[int, str, str]:
    """An entry point's main() in this process; (exit code, stdout, stderr)."""
    import importlib

    main = importlib.import_module(entry).main
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str, message: str, *, lines: int = 1) -> None:
    assert code not in (0, None), out
    assert "Traceback" not in err and "Traceback" not in out
    text = err.strip().splitlines()
    assert 1 <= len(text) <= lines, err
    assert message in err, err


@pytest.mark.parametrize("text, message", PROFILES, ids=[m for _, m in PROFILES])
def test_bad_profiles(capsys, tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "self_loop.yaml" if "self_loop" in text else tmp_path / "bad.yaml"
    path.write_text(text.replace("checkpoint_root: $", "checkpoint_root: $") + (
        "" if "checkpoint_root" in text or not text.strip() or text.startswith("-") else
        f"checkpoint_root: {tmp_path}/ckpt\n"))
    code, out, err = run(capsys, "launch.cli.submit", "--profile", str(path), "--experiment", str(DEBUG),
                         "--dry-run", "--no-preflight")
    refused(code, out, err, message)
    assert str(path) in err or path.name in err
    assert not (tmp_path / "ckpt").exists()


def test_bad_profile_bytes_name_the_offset(capsys, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GPU_BASE.encode() + b"description: caf\xe9\n")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", str(path), "--dry-run", "--no-preflight")
    refused(code, out, err, "not UTF-8: byte 0xe9 at offset")


SWEEPS = [
    ("grid: {}\n", "'grid' is empty"),
    ("cells: []\n", "'cells' is empty"),
    ("overrides: {train.seed: 1}\n", "a sweep needs at least one axis"),
    ("zip: {train.seed: [1, 2], train.max_steps: [3]}\n", "the 'zip' lists must all have the same length"),
    ("grid: {kernel: [1, 2]}\n", "must be a dotted config key"),
    ("grid: {model.params.kernel: [1, true]}\n", "cell 1 (model.params.kernel=true)"),
    ("grid: {model.params.kernel: 3}\n", "'grid.model.params.kernel' must be a non-empty list"),
    ("grid: {train.seed: [1]}\nname: ../x\n", "'name: ../x' must be a non-empty folder name"),
    ("cells: [3]\n", "'cells[0]' must be a mapping"),
    ("grid: {train.seed: [1]}\ncells: [{train.seed: 2}]\n", "'cells[0].train.seed' is also set"),
    ("grid: {train.learning_rate: [.nan]}\n", "train.learning_rate"),
    ("grid: {model.name: [gpt5]}\n", "unknown model 'gpt5'"),
]


@pytest.mark.parametrize("body, message", SWEEPS, ids=[m for _, m in SWEEPS])
def test_bad_sweeps(capsys, tmp_path, body, message):
    path = tmp_path / "bad_sweep.yaml"
    path.write_text(f"experiment: {DEBUG}\noverrides_placeholder: 0\n".replace("overrides_placeholder: 0\n", "")
                    + (body if "overrides" in body else body + f"overrides: {{output.checkpoint_root: {tmp_path}/ckpt}}\n"))
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local-slurm", "--sweep", str(path), "--dry-run",
                         "--no-preflight")
    refused(code, out, err, message)
    assert str(path) in err
    assert not (tmp_path / "ckpt").exists()


def test_a_sweep_whose_experiment_is_missing(capsys, tmp_path):
    path = tmp_path / "orphan.yaml"
    path.write_text("experiment: nosuch.yaml\ngrid: {train.seed: [1]}\n")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local-slurm", "--sweep", str(path), "--dry-run")
    refused(code, out, err, "'experiment: nosuch.yaml' does not exist")


FLAGS = [
    (["--nodes", "0"], "--nodes 0: must be 1 or more", 1),
    (["--launcher", "mpi"], "argument --launcher: invalid choice: 'mpi'", 1),
    (["--dependency", "afterok:abc"], "'abc' is neither a Slurm job id", 1),
    (["--dependency", "afterok:1,afterok:2?afterok:3"], "mix of ',' (all of) and '?' (any of)", 1),
    (["--dependency", "after:1+x"], "'+x' (minutes after the start) goes with 'after' only", 1),
    (["--dependency", "afterok:20990101-000000-abcdef"], "no such submission", 1),
    (["--experiment", "/nonexistent/experiment.yaml"], "--experiment /nonexistent/experiment.yaml: no such file", 1),
    (["--profile", "nosuch"], "unknown profile 'nosuch'", 1),
    (["--diff", "nosuch"], "--diff nosuch: unknown profile 'nosuch'", 1),
    (["--sweep", "/nonexistent/sweep.yaml"], "/nonexistent/sweep.yaml", 1),
    (["--set", "novalue"], "novalue", 1),
    (["--set", "train.max_steps=abc"], "train.max_steps", 1),
    (["--set", "profile.nosuch=1"], "unknown key 'nosuch'", 1),
    (["--set", "train.learning_rate=inf"], "train.learning_rate", 1),
    (["--set", "train.nosuch=1"], "unknown key 'train.nosuch'", 1),
    (["--set", "output.name=/etc/x"], "output.name", 1),
]


@pytest.mark.parametrize("args, message, lines", FLAGS, ids=[" ".join(a) for a, _, _ in FLAGS])
def test_bad_flags(capsys, tmp_path, args, message, lines):
    base = ["--experiment", str(DEBUG)] if "--experiment" not in args else []
    profile = [] if "--profile" in args else ["--profile", "local-slurm"]
    code, out, err = run(capsys, "launch.cli.submit", *profile, *base, "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", *args, "--dry-run", "--no-preflight")
    refused(code, out, err, message, lines=lines)
    assert not (tmp_path / "ckpt").exists()


def test_dependency_on_a_profile_without_slurm(capsys, tmp_path):
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local", "--experiment", str(DEBUG), "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", "--dependency", "afterok:1", "--dry-run")
    refused(code, out, err, "dependencies need a Slurm profile")


def test_dashboard_and_report_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    refused(*run(capsys, "launch.cli.status", "--interval", "0.5"), "at most one refresh every 2 s")
    refused(*run(capsys, "launch.cli.status", "--logs", "nosuch"), "--logs nosuch: not in the journal")
    refused(*run(capsys, "launch.cli.status", "--history", "nosuch"), "--history nosuch: no job of the journal",
            lines=2)
    refused(*run(capsys, "launch.cli.report", "nosuch"), "nosuch: neither a sweep file nor a sweep submission id")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"experiment: {DEBUG}\noverrides: {{output.checkpoint_root: {tmp_path}/ckpt}}\n"
                     "grid: {model.params.kernel: [1, 2]}\n")
    refused(*run(capsys, "launch.cli.report", str(sweep), "--profile", "local-slurm", "--plot", "depth"),
            "--plot depth: not an axis of this sweep; axes: kernel (model.params.kernel)")
    refused(*run(capsys, "launch.cli.report", str(sweep), "--profile", "local-slurm", "--plot", "kernel",
                 "--metric", "bogus"), "--metric bogus: unknown metric")
    assert not (tmp_path / "ckpt").exists(), "arguments are checked before anything is written"


# ---- guards without a side door: a run's code, with and without --no-snapshot ------------------------------------

RECORDED = "feedface00000000"
"""The code a run in these cases was submitted with: not the checkout's."""
CODE_GUARD = [
    # (id, the run's recorded code ("now": the checkout's own), flags, text of the refusal; None: accepted)
    ("same-code", "now", [], None),
    ("same-code-no-snapshot", "now", ["--no-snapshot"], None),
    ("other-code", RECORDED, [], f"was submitted with code {RECORDED} (/x/.code/{RECORDED}); the checkout is now "),
    ("other-code-no-snapshot", RECORDED, ["--no-snapshot"],
     f"was submitted with code {RECORDED} (/x/.code/{RECORDED}); --no-snapshot would continue it with the checkout "
     f"as it is, which is code "),
    ("other-code-new-code", RECORDED, ["--new-code"], None),
    ("other-code-no-snapshot-new-code", RECORDED, ["--no-snapshot", "--new-code"], None),
]


@pytest.mark.parametrize("recorded, flags, refusal", [c[1:] for c in CODE_GUARD], ids=[c[0] for c in CODE_GUARD])
def test_a_run_continues_with_other_code_only_when_asked_with_or_without_a_snapshot(capsys, tmp_path, recorded, flags,
                                                                                      refusal):
    from launch.planning.code import project_code
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile
    from memorymodels.experiment import experiment_dict, identity
    from memorymodels.runrecord import claim

    now = project_code().hash
    recorded = now if recorded == "now" else recorded
    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}/ckpt"]), DEBUG)
    claim(plan.run_dir, ident=identity(plan.settings, plan.world_size), config=experiment_dict(plan.settings),
          source=plan.settings.source, world_size=plan.world_size,
          code={"hash": recorded, "path": f"/x/.code/{recorded}", "git": {"sha": "0123456789abcdef"}})
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local", "--experiment", str(DEBUG), "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", "--dry-run", *flags)
    if refusal is None:
        assert code == 0, err
        return
    assert code == 2 and "Traceback" not in err, err
    assert refusal + now in err and "--new-code" in err and "git 0123456789ab" in err, err


def test_continuing_with_the_checkout_records_its_code(tmp_path):
    from launch.planning.code import project_code
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile
    from launch.submission.submit import claim_run_dir
    from memorymodels.fileio import write_json
    from memorymodels.rundir import RunPaths
    from memorymodels.runrecord import read_run_json

    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}/ckpt"]), DEBUG, snapshot=False)
    old = {"hash": RECORDED, "path": f"/x/.code/{RECORDED}", "git": {"sha": None}}
    write_json(RunPaths(plan.run_dir).run_json, {"code": old})
    claim_run_dir(plan, new_code=True)  # --no-snapshot --new-code
    info = read_run_json(plan.run_dir)
    assert info["code"]["hash"] == project_code().hash and info["code"]["path"] is None
    assert info["code"]["checkout"] == str(project_code().source) and info["code_history"] == [old]


def test_a_group_that_is_not_one_of_yours_is_refused_before_anything_is_made(capsys, tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(f"extends: local\ngroup: memorymodels-no-such-group\ncheckpoint_root: {tmp_path}/ckpt\n")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", str(path), "--experiment", str(DEBUG), "--dry-run")
    assert code == 2 and "Traceback" not in err, err
    assert f"{path}: 'group: memorymodels-no-such-group' is not a group on this machine (getent group " in err, err
    assert not (tmp_path / "ckpt").exists()


def test_the_journal_is_its_owners_alone(tmp_path, monkeypatch):
    """It names every run directory and log of its owner: nobody else lists it."""
    import os

    from launch.records import journal

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    journal.record(profile="local", jobs=[{"job_id": "1", "run_dir": str(tmp_path / "run")}])
    assert os.stat(journal.journal_dir()).st_mode & 0o777 == 0o700
