"""Hostile input to the launcher's commands, table-driven: profiles, sweep files, command-line flags, the dashboard
and the sweep report. Each case asserts the exit code, one error line naming the file, key or flag, no traceback,
and nothing written under the test's checkpoint root. (Experiment files and ``--set`` values: the library's
``tests/test_hostile_inputs.py``.)"""

from __future__ import annotations


import time
from pathlib import Path

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
    (["--nodes", "0"], "argument --nodes: 0: must be 1 or more", 1),
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
    (["--set", "train=5"], "--set train=5: 'train' is a section (batch_size, eval_rows, eval_steps, learning_rate, "
                           "...), not one value; set one of its keys: --set train.KEY=VALUE", 1),
    (["--set", "model=x"], "--set model=x: 'model' is a section", 1),
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


# ---- options the launcher owns: refused in sbatch_extra / srun_args in every spelling Slurm accepts ----

OWNED = [
    # (--set profile.KEY=VALUE, text the refusal names)
    ("sbatch_extra={comment: x}", "'sbatch_extra.comment' sets sbatch's --comment, which is set by the launcher: its "
                                  "exactly-once tag (the profile key 'tag_field' can move it to --wckey); remove it"),
    ("sbatch_extra={comm: x}", "(Slurm reads comm as --comment)"),
    ("sbatch_extra={co: x}", "'sbatch_extra.co' is an abbreviation sbatch refuses as ambiguous"),
    ("sbatch_extra={chdir: /tmp}", "sets sbatch's --chdir, which is set by the launcher: the job runs from its code"),
    ("sbatch_extra={chd: /tmp}", "(Slurm reads chd as --chdir)"),
    ("sbatch_extra={output: /tmp/x}", "sets sbatch's --output, which is set by the launcher: the logs"),
    ("sbatch_extra={e: /tmp/x}", "is an abbreviation sbatch refuses as ambiguous (--error, --exclude, --exclusive,"),
    ("sbatch_extra={err: /tmp/x}", "(Slurm reads err as --error)"),
    ("sbatch_extra={wrap: hostname}", "sets sbatch's --wrap, which is set by the launcher: the planned script"),
    ("sbatch_extra={partition: big}", "sets sbatch's --partition, which is set by the profile key 'partition'; use "
                                      "the profile key 'partition' instead"),
    ("sbatch_extra={part: big}", "(Slurm reads part as --partition)"),
    ("sbatch_extra={time: 60}", "use the profile key 'time_limit' instead"),
    ("sbatch_extra={mem-per-cpu: 1G}", "use the profile key 'mem_per_gpu_gb' instead"),
    ("sbatch_extra={exclusive: true}", "use the profile key 'exclusive' instead"),
    ("sbatch_extra={no-requeue: true}", "set by the launcher: timeouts and failures requeue the job"),
    ("sbatch_extra={parsable: true}", "set by the launcher: how sbatch answers the submission"),
    ("sbatch_extra={wckey: lab}", "use the profile key 'wckey' instead"),
    ("sbatch_extra={job-name: x}", "set by the launcher: the run directory's name"),
    ("sbatch_extra={dependency: afterok:1}", "set by the --dependency flag"),
    ("srun_args=[--output=x]", "'srun_args[0]: --output=x' sets srun's --output"),
    ("srun_args=[--output, x]", "'srun_args[0]: --output' sets srun's --output"),
    ("srun_args=[--outp=x]", "(Slurm reads --outp as --output)"),
    ("srun_args=[-o, x]", "(Slurm reads -o as --output)"),
    ("srun_args=[-ox]", "'srun_args[0]: -ox' sets srun's --output"),
    ("srun_args=[-lox]", "'srun_args[0]: -lox' sets srun's --output"),
    ("srun_args=[--mpi=pmix, -le, x]", "'srun_args[1]: -le' sets srun's --error"),
    ("srun_args=[--err=x]", "(Slurm reads --err as --error)"),
    ("srun_args=[-c4]", "use the profile key 'cpus_per_gpu' instead"),
    ("srun_args=[--chdir=/tmp]", "set by the launcher: the job runs from its code snapshot"),
    ("srun_args=[-D/tmp]", "(Slurm reads -D as --chdir)"),
    ("srun_args=[--jobid=12]", "the step runs in its own job"),
    ("srun_args=[--container-image=x]", "use the profile key 'container' instead"),
    ("srun_args=[--kill-on-bad-exit=0]", "one failed node ends the step"),
    ("srun_args=[-K0]", "(Slurm reads -K as --kill-on-bad-exit)"),
    ("tag_field=wckey\nwckey: lab", "'tag_field: wckey' puts the launcher's exactly-once tag in --wckey, which "
                                    "'wckey: lab' sets too"),
    ("tag_field=wckey\nsbatch_extra: {wckey: x}", "sets sbatch's --wckey, which is set by the launcher: its "
                                                  "exactly-once tag (the profile key 'tag_field' can move it to "
                                                  "--comment)"),
    ("tag_field=jobname", "tag_field"),
]


@pytest.mark.parametrize("setting, message", OWNED, ids=[s for s, _ in OWNED])
def test_options_the_launcher_owns_are_refused_in_every_spelling(capsys, tmp_path, setting, message):
    """Refused when the profile is read: naming the file, the key and the profile key to use instead."""
    path = tmp_path / "site.yaml"
    path.write_text(CPU_BASE + f"checkpoint_root: {tmp_path}/ckpt\n" + setting.replace("=", ": ", 1) + "\n")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", str(path), "--experiment", str(DEBUG),
                         "--dry-run", "--no-preflight")
    refused(code, out, err, message)
    assert str(path) in err
    assert not (tmp_path / "ckpt").exists()


ALLOWED = ["sbatch_extra={mail-type: END}", "sbatch_extra={hold: true}", "sbatch_extra={time-min: 30}",
           "sbatch_extra={exclude: n1}", "srun_args=[--mpi=pmix, --cpu-bind=cores]", "srun_args=[-l]",
           "srun_args=[--export=ALL]", "tag_field=wckey\nsbatch_extra: {comment: 'accounting: project 7'}"]


@pytest.mark.parametrize("setting", ALLOWED)
def test_options_the_launcher_does_not_own_pass(capsys, tmp_path, setting):
    path = tmp_path / "site.yaml"
    path.write_text(CPU_BASE + f"checkpoint_root: {tmp_path}/ckpt\n" + setting.replace("=", ": ", 1) + "\n")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", str(path), "--experiment", str(DEBUG),
                         "--dry-run", "--no-preflight")
    assert code == 0, err


def test_the_tag_moves_to_the_wckey_and_the_comment_is_the_sites(tmp_path):
    from launch.planning.command import run_tag
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile

    profile = load_profile("local-slurm", [f"checkpoint_root={tmp_path}", "tag_field=wckey",
                                           "sbatch_extra={comment: project-7}"])
    plan = plan_job(profile, DEBUG)
    assert f"#SBATCH --wckey={run_tag(plan.run_dir)}\n" in plan.script
    assert "#SBATCH --comment=project-7\n" in plan.script and plan.script.count("--comment") == 1


@pytest.mark.slurm
def test_slurms_refusal_names_the_sbatch_extra_item_that_caused_it(slurm_cluster, capsys, tmp_path, monkeypatch):
    """Slurm says "Invalid --mail-type specification" or "unrecognized option" then "Try sbatch --help": the
    preflight's line and a submission without it both name the profile's item, in one line; nothing is queued."""
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    for extra, slurm_says in (("{mail-type: BOGUS}", "Invalid --mail-type specification"),
                              ("{mail-t: BOGUS}", "Invalid --mail-type specification"),
                              ("{bogus-option: 1}", "unrecognized option '--bogus-option=1'")):
        key, value = extra.strip("{}").split(": ")
        base = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
                "--set", f"profile.sbatch_extra={extra}"]
        code, out, err = run(capsys, "launch.cli.submit", *base, "--dry-run")
        refused(code, out, err, f"{slurm_says} (from the profile's sbatch_extra.{key}: {value}: fix or remove it)",
                lines=2)
        assert "--help" not in err
        code, out, err = run(capsys, "launch.cli.submit", *base, "--no-preflight", "--no-snapshot")
        refused(code, out, err, f"{slurm_says} (from the profile's sbatch_extra.{key}: {value}: fix or remove it)")
    assert not (tmp_path / "state" / "journal").exists() or not list((tmp_path / "state" / "journal").iterdir())


# ---- paths that escape the run directory: a symbolic link where the toolkit writes is refused ----

LINKS = ["launch", "launch/heartbeats", "launch/slurm", "launch/rendezvous", "launch/hangs", "tensorboard",
         "launch/events.jsonl", "metrics.jsonl", ".trainer.lock", "launch/.submit.lock"]


@pytest.mark.parametrize("name", LINKS)
def test_a_linked_folder_or_appended_file_of_a_run_is_refused(tmp_path, name):
    from memorymodels.attempts import record_event
    from memorymodels.rundir import RunDirError, RunPaths
    from memorymodels.runs import check_run_dir

    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
    elsewhere.mkdir()
    (run_dir / name).symlink_to(elsewhere if "." not in name else elsewhere / "file")
    for write in (RunPaths(run_dir).refuse_links, lambda: check_run_dir(run_dir, "x"),
                  lambda: record_event(run_dir, "start")):
        with pytest.raises(RunDirError, match=f"^{run_dir / name} is a symbolic link \\(to {elsewhere}.*\\) inside "
                                              f"{run_dir}: .*replace the link with a real folder"):
            write()
    assert list(elsewhere.iterdir()) == []


def test_a_linked_journal_is_refused(tmp_path, monkeypatch):
    from launch.records import journal
    from memorymodels.fileio import LinkedPathError

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "state" / "journal").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LinkedPathError, match="state/journal is a symbolic link"):
        journal.record(profile="p", jobs=[{"job_id": "1", "run_dir": "/r"}])
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_trainer_refuses_a_linked_launch_folder_with_exit_65(tmp_path):
    import subprocess
    import sys

    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / "launch").symlink_to(elsewhere)
    done = subprocess.run([sys.executable, "-m", "memorymodels.train", "--experiment", str(DEBUG), "--run-dir",
                           str(run_dir), "--heartbeat-dir", str(run_dir / "launch" / "heartbeats")],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 65, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {run_dir / 'launch'} is a symbolic link (to {elsewhere}) "
                                                f"inside {run_dir}: writing through it would put files outside "
                                                f"{run_dir}; replace the link with a real folder "
                                                f"(rm {run_dir / 'launch'}), then run the command again"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slurm
def test_a_run_whose_launch_folder_is_a_link_is_refused_before_anything_is_written(slurm_cluster, tmp_path,
                                                                                     monkeypatch):
    """Submitted once (held, then cancelled), its launch/ replaced by a link to a folder holding a plan.json: the
    dry run names the link, the submission refuses it in one line and writes nothing there, nothing is queued."""
    import json
    import shutil
    import subprocess
    import sys

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    args = [sys.executable, str(REPO_ROOT / "launch" / "submit.py"), "--profile", "local-slurm", "--experiment",
            str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}/ckpt", "--set",
            "profile.sbatch_extra={hold: true}"]
    first = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    subprocess.run(["scancel", job["job_id"]], check=True)
    launch = Path(job["run_dir"]) / "launch"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(launch, elsewhere)
    launch.symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()}
    dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert dry.returncode == 2 and f"{launch} is a symbolic link (to {elsewhere})" in dry.stderr, dry.stderr
    for wait in range(60):  # the cancelled job leaves the queue
        if not subprocess.run(["squeue", "-h", "-j", job["job_id"]], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(1)
    again = subprocess.run([*args, "--no-preflight"], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert again.returncode == 2, again.stdout + again.stderr
    assert again.stderr.strip().splitlines() == [
        f"error: {launch} is a symbolic link (to {elsewhere}) inside {job['run_dir']}: writing through it would put "
        f"files outside {job['run_dir']}; replace the link with a real folder (rm {launch}), then run the command "
        "again; nothing was submitted"]
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()} == before


# ---- what a dry run shows, and the messages ----

def test_a_dry_run_with_problems_prints_the_plan_then_the_problems(capsys, tmp_path):
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local", "--experiment", str(DEBUG), "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", "--set", f"data.corpus={tmp_path}/none/*.txt",
                         "--dry-run")
    assert code == 2 and "Traceback" not in err
    assert out.startswith("profile     local") and "# checks: data and checkpoint root checked; no cluster " \
        "(executor: local); 1 problem found (below)" in out
    assert err.startswith("error: preflight found problems") and f"'data.corpus: {tmp_path}/none/*.txt' matches no " \
        "file" in err


def test_the_script_shows_the_command_each_node_runs(tmp_path):
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile
    from launch.planning.sweep import plan_arrays, plan_sweep
    from launch.planning.sweep_file import load_sweep

    plan = plan_job(load_profile("local-slurm", [f"checkpoint_root={tmp_path}"]), DEBUG)
    assert f"\n# Each node runs (started by submitit's task below, launch.node.task):\n#   {plan.command}\n" \
        in plan.script
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"experiment: {DEBUG}\noverrides: {{output.checkpoint_root: {tmp_path}}}\n"
                     "grid: {train.seed: [1, 2]}\n")
    swept = plan_sweep(load_sweep(sweep), load_profile("local-slurm"))
    array = plan_arrays(swept, [0, 1], "sid")[0]
    assert "# Each node runs (cell 0's; the other cells differ in their run directory)" in array.script
    assert swept.jobs[0].command in array.script
    one = plan_arrays(swept, [1], "sid")[0]
    assert swept.jobs[1].command in one.script


def write_grid(tmp_path, seeds: int) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(f"experiment: {DEBUG}\noverrides: {{output.checkpoint_root: {tmp_path}/ckpt}}\n"
                    f"grid: {{train.seed: {list(range(seeds))}}}\n")
    return path


def test_a_sweep_larger_than_the_profiles_limit_asks_and_a_dry_run_says_its_size(capsys, tmp_path, monkeypatch):
    import io

    sweep = write_grid(tmp_path, 6)
    base = ["--profile", "local-slurm", "--sweep", str(sweep), "--set", "profile.ask_above_cells=5", "--set",
            "profile.max_array_size=4"]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    code, out, err = run(capsys, "launch.cli.submit", *base)
    refused(code, out, err, f"sweep {sweep}: 6 cells in 2 arrays of at most 4 (4 at once), more than the profile's "
                            "ask_above_cells: 5")
    assert "nothing was submitted: pass --yes to submit them, or raise ask_above_cells" in err
    code, out, err = run(capsys, "launch.cli.submit", *base, "--dry-run", "--no-preflight")
    assert code == 0 and "planning them (this takes a while)" in err
    assert "6 cells, 0 complete, 6 to submit in 2 arrays of at most 4" in out
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local-slurm", "--sweep",
                         str(write_grid(tmp_path, 1)), "--dry-run", "--no-preflight")
    assert "1 cell, 0 complete, 1 to submit in 1 array of at most" in out
    assert not (tmp_path / "ckpt").exists()


def test_a_dry_run_read_by_head_ends_quietly(tmp_path):
    import subprocess
    import sys

    sweep = write_grid(tmp_path, 40)
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "launch" / "submit.py"), "--profile", "local-slurm",
                             "--sweep", str(sweep), "--dry-run", "--no-preflight"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO_ROOT)
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_corpus_the_trainer_refuses_leaves_no_run_directory(tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty.txt").write_text("")
    run_dir = tmp_path / "runs" / "run"
    done = subprocess.run([sys.executable, "-m", "memorymodels.train", "--experiment", str(DEBUG), "--run-dir",
                           str(run_dir), "--set", f"data.corpus={corpus}/*.txt", "--set",
                           f"data.cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not run_dir.exists(), "not a folder holding only .trainer.lock"


def test_a_partial_snapshot_of_a_killed_submitter_is_removed_and_a_live_one_kept(tmp_path):
    import fcntl
    import os

    from launch.submission.snapshot import remove_stale_partials

    dead, live = tmp_path / ".abc.partial-1", tmp_path / ".abc.partial-2"
    for folder in (dead, live):
        (folder / "memorymodels").mkdir(parents=True)
        (folder / "memorymodels" / "x.py").write_text("x = 1\n")
        os.chmod(folder / "memorymodels" / "x.py", 0o444)
        os.utime(folder, (time.time() - 3600, time.time() - 3600))
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # its submitter is still copying
    try:
        assert remove_stale_partials(tmp_path) == [dead]
    finally:
        os.close(fd)
    assert not dead.exists() and live.exists()


# ---- late failures found before anything is queued, and every numeric flag ----

LAUNCHER_FLAGS = [
    ("launch.cli.submit", "--nodes", "0", "argument --nodes: 0: must be 1 or more"),
    ("launch.cli.submit", "--nodes", "-2", "argument --nodes: -2: must be 1 or more"),
    ("launch.cli.submit", "--nodes", "1.5", "argument --nodes: '1.5' is not an integer"),
    ("launch.cli.submit", "--nodes", "nan", "argument --nodes: 'nan' is not an integer"),
    ("launch.cli.status", "--interval", "nan", "argument --interval: 'nan' is not a finite number"),
    ("launch.cli.status", "--interval", "inf", "argument --interval: 'inf' is not a finite number"),
    ("launch.cli.status", "--interval", "0", "--interval 0: at most one refresh every 2 s"),
    ("launch.cli.status", "--interval", "-5", "--interval -5: at most one refresh every 2 s"),
    ("launch.cli.status", "--lines", "-5", "argument --lines: -5: must be 0 or more"),
    ("launch.cli.status", "--lines", "2.5", "argument --lines: '2.5' is not an integer"),
    ("launch.cli.status", "--since", "nan", "--since nan: give an age"),
    ("launch.cli.status", "--since", "-3d", "--since -3d: give an age"),
    ("launch.cli.status", "--since", "0", "--since 0: give an age"),
]


@pytest.mark.parametrize("entry, flag, value, message", LAUNCHER_FLAGS,
                         ids=[f"{e.rsplit('.', 1)[1]} {f} {v}" for e, f, v, _ in LAUNCHER_FLAGS])
def test_numeric_flags_of_the_launcher_commands(capsys, tmp_path, monkeypatch, entry, flag, value, message):
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    extra = ["--profile", "local-slurm", "--dry-run"] if entry.endswith("submit") else ["--once"]
    refused(*run(capsys, entry, *extra, f"{flag}={value}"), message)
    assert list(tmp_path.iterdir()) == []


def test_a_corpus_folder_with_nothing_readable_is_a_preflight_problem(capsys, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("")
    (corpus / "b.jsonl").write_text("")
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local", "--experiment", str(DEBUG), "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", "--set", f"data.corpus={corpus}", "--dry-run")
    assert code == 2 and "Traceback" not in err
    assert f"'data.corpus': corpus '{corpus}': none of its 2 file(s) can be read and holds anything (a.txt: " \
           "empty; b.jsonl: empty)" in err, err


def test_wandb_without_an_account_is_a_preflight_problem_unless_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    args = ["--profile", "local", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}/ckpt",
            "--set", "train.report_to=[wandb]", "--dry-run"]
    code, out, err = run(capsys, "launch.cli.submit", *args)
    assert code == 2 and "'train.report_to: [wandb]' has no wandb account here" in err, err
    assert out.startswith("profile     local"), "the plan is printed first"
    code, out, err = run(capsys, "launch.cli.submit", *args, "--set", "profile.env={WANDB_MODE: offline}")
    assert code == 0, err
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run(capsys, "launch.cli.submit", *args)[0] == 0


def test_a_dependency_on_a_damaged_journal_entry_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    (tmp_path / "state" / "journal").mkdir(parents=True)
    (tmp_path / "state" / "journal" / "20261201-000000-abcdef.json").write_bytes(b'{"jobs": [\xff')
    code, out, err = run(capsys, "launch.cli.submit", "--profile", "local-slurm", "--experiment", str(DEBUG), "--set",
                         f"profile.checkpoint_root={tmp_path}/ckpt", "--dependency",
                         "afterok:20261201-000000-abcdef", "--dry-run", "--no-preflight")
    refused(code, out, err, "--dependency afterok:20261201-000000-abcdef: the journal entry of submission "
                            "20261201-000000-abcdef is damaged")
    assert "name its job ids instead" in err


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
