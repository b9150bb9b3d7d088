"""The code a job runs is the code it was submitted with (``launch.planning.code``, ``launch.submission.snapshot``).

    .venv/bin/pytest tests/launch/test_code_snapshot.py -q

On the local cluster, from a temporary copy of the repository: a held job is submitted, the copy's trainer is broken,
the job is released and finishes with the submitted code; interrupted and requeued, it resumes from the same snapshot;
resubmitting the run from the changed checkout is refused until ``--new-code``, with or without ``--no-snapshot``.
Without a cluster: the hash covers content, executable bits and untracked files, and ignores what git ignores; the
copy is checked against the plan, kept to its owner (and the profile's group), its manifest hashes every file; a
snapshot edited in place is caught by the trainer before anything runs and copied afresh by the next submission;
files that look like credentials and large files are refused by name unless the profile includes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launch.localcluster.cluster import wait_for_job
from launch.planning.code import MANIFEST, SnapshotRules, project_code
from launch.submission.snapshot import SnapshotError, materialize
from memorymodels.attempts import attempts
from memorymodels.codemanifest import CodeChangedError, file_digest, verify_code
from memorymodels.configuration import ConfigError
from memorymodels.experiment import REPO_ROOT, state_dir
from memorymodels.rundir import RunPaths, TrainerExit
from tests.launch.helpers import job_line, last_step, release_requeued, run_json, wait_until

BREAK = 'raise RuntimeError("the checkout was broken after submission")\n'


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return root


def test_the_hash_follows_content_modes_and_untracked_files_not_ignored_ones(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", ".gitignore": "runs/\n", "pkg/b.py": ""})
    first = project_code(repo)
    assert first.files == (".gitignore", "a.py", "pkg/b.py") and first.git["dirty"] is False
    (repo / "runs").mkdir()
    (repo / "runs" / "big.bin").write_bytes(b"0" * 1000)  # ignored: not code
    assert project_code(repo).hash == first.hash
    (repo / "a.py").write_text("x = 2\n")  # an uncommitted change
    changed = project_code(repo)
    assert changed.hash != first.hash and changed.git["dirty"] is True
    (repo / "a.py").write_text("x = 1\n")
    assert project_code(repo).hash == first.hash
    (repo / "new.py").write_text("")  # untracked, not ignored: part of the code
    assert "new.py" in project_code(repo).files and project_code(repo).hash != first.hash
    (repo / "new.py").unlink()
    os.chmod(repo / "a.py", 0o755)
    assert project_code(repo).hash != first.hash


def mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o7777


def test_materialize_copies_once_read_only_and_refuses_a_checkout_changed_since_planning(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", "pkg/b.py": "y = 2\n"})
    os.chmod(repo / "a.py", 0o775)
    code = project_code(repo).under(tmp_path / "runs")
    path = materialize(code)
    assert path == tmp_path / "runs" / ".code" / code.hash and (path / "pkg" / "b.py").read_text() == "y = 2\n"
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["hash"] == code.hash
    assert manifest["sha256"] == {name: file_digest(repo, name) for name in code.files}  # every file, as copied
    assert not os.access(path / "a.py", os.W_OK) or os.geteuid() == 0  # root may write anything
    # nobody writes; only the owner reads (no group named), executables stay executable
    assert (mode(path / "a.py"), mode(path / "pkg" / "b.py"), mode(path / MANIFEST)) == (0o500, 0o400, 0o400)
    assert (mode(path.parent), mode(path), mode(path / "pkg")) == (0o700, 0o700, 0o700)
    assert materialize(code) == path  # a second submission of the same code shares it
    (repo / "a.py").write_text("x = 3\n")  # changed after planning, before the copy
    stale = project_code(repo)
    (repo / "a.py").write_text("x = 4\n")
    with pytest.raises(SnapshotError, match="changed between planning and submission"):
        materialize(stale.under(tmp_path / "runs"))
    assert sorted(p.name for p in (tmp_path / "runs" / ".code").iterdir()) == [code.hash]  # nothing half-made


def test_a_snapshot_carries_the_bytecode_of_the_packages_a_job_imports(tmp_path):
    repo = make_repo(tmp_path / "repo", {"memorymodels/__init__.py": "", "memorymodels/train.py": "STEPS = 3\n",
                                         "launch/__init__.py": "", "notes.py": "x = 1\n"})
    path = materialize(project_code(repo).under(tmp_path / "runs"))
    compiled = path / "memorymodels" / "__pycache__" / f"train.{sys.implementation.cache_tag}.pyc"
    assert compiled.is_file() and os.stat(compiled).st_mode & 0o222 == 0  # read-only, like the sources
    assert not (path / "__pycache__").exists()  # only the packages jobs import
    # a job's interpreter reads it: nothing is compiled, even where nothing may be written
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-v", "-c", "import memorymodels.train"], cwd=path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"code object from '{compiled}'" in done.stderr


# ---- on the local cluster -----------------------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path):
    """A copy of this repository (tracked and untracked-not-ignored files, as they are now), committed in its own git."""
    names = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, text=True, check=True).stdout.split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, names):
        if (REPO_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, copy / name)
    git = ["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], check=True)
    return copy


def submit_from(copy: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/submit.py", *args], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=300)


def _ended(job_id: str, env: dict) -> bool:
    line = job_line(job_id, env)
    return any(f"JobState={state}" in line for state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "COMPLETED"))


@pytest.mark.slurm
def test_a_job_runs_the_code_it_was_submitted_with_across_a_broken_checkout_and_a_requeue(slurm_cluster, checkout,
                                                                                         tmp_path):
    cache = state_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)  # on a fresh machine no test has made it yet: no dangling link
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "cache").symlink_to(cache.resolve())
    # the copy imports itself, never this checkout (the editable install points elsewhere too)
    env = {**os.environ, "PYTHONPATH": str(checkout), "MEMORYMODELS_STATE": str(tmp_path / "state")}
    max_steps = 600
    args = ["--profile", "local-slurm", "--experiment", "configs/experiments/debug.yaml", "--json",
            "--set", f"profile.checkpoint_root={tmp_path / 'runs'}", "--set", f"train.max_steps={max_steps}",
            "--set", "train.save_steps=100000", "--set", "train.eval_steps=0", "--set", "train.logging_steps=2"]
    out = submit_from(checkout, env, *args, "--set", "profile.sbatch_extra={hold: true}")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    code = run_json(run_dir)["code"]
    snapshot = Path(code["path"])
    assert snapshot == tmp_path / "runs" / ".code" / code["hash"] and (snapshot / "memorymodels" / "train.py").is_file()
    assert f"WorkDir={snapshot}" in job_line(job_id, slurm_cluster.environ())
    assert json.loads((run_dir / "launch" / "plan.json").read_text())["code"]["hash"] == code["hash"]

    trainer = checkout / "memorymodels" / "train.py"
    trainer.write_text(BREAK + trainer.read_text())  # the checkout no longer trains at all
    slurm_env = slurm_cluster.environ()
    subprocess.run(["scontrol", "release", job_id], env=slurm_env, check=True)
    # a fresh machine prepares the tokenizer and shards first (a minute or more on a busy 2-core machine)
    wait_until(lambda: last_step(run_dir) >= 2 or _ended(job_id, slurm_env), 600, "the first training steps")
    err = run_dir / "launch" / "slurm" / f"{job_id}_0_log.err"
    assert last_step(run_dir) >= 2, (f"job {job_id} ended before training: {job_line(job_id, slurm_env)}\n"
                                     f"{err.read_text()[-3000:] if err.exists() else ''}")
    subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm_env, check=True)

    def pending_then_release():
        line = job_line(job_id, slurm_env)
        if "JobState=PENDING" in line and "Restarts=1" in line:
            release_requeued(job_id, slurm_env)
            return True
        return "Restarts=1" in line and "JobState=RUNNING" in line

    wait_until(pending_then_release, 120, "the requeued job")
    assert wait_for_job(job_id, timeout=300, environ=slurm_env) == {job_id: "COMPLETED"}
    info = run_json(run_dir)
    assert info["status"] == "completed" and last_step(run_dir) == max_steps and info["restart_count"] == 1
    trainers = [a["trainer"] for a in attempts(run_dir)]
    assert [t["code"] for t in trainers] == [code["hash"], code["hash"]]  # the resumed attempt too
    assert trainers[1]["resumed_from_step"] > 0
    environment = trainers[0]["environment"]
    assert environment["python"] == sys.version.split()[0] and environment["torch"] and "driver" in environment
    assert info["git"]["sha"] == code["git"]["sha"]  # the copy's commit, read from the snapshot's manifest

    # a finished, evaluated run has nothing left to do: resubmitting it is refused with its result (exit 3)
    finished = submit_from(checkout, env, *args, "--dry-run")
    assert finished.returncode == 3 and "nothing left to do" in finished.stderr, finished.stderr
    # with work left (its evaluation), the changed checkout is what stops it: it says so and asks for --new-code
    RunPaths(run_dir).eval_json.unlink()
    again = submit_from(checkout, env, *args, "--dry-run")
    assert again.returncode == 2
    assert f"was submitted with code {code['hash']}" in again.stderr and "--new-code" in again.stderr
    assert submit_from(checkout, env, *args, "--dry-run", "--new-code").returncode == 0
    side_door = submit_from(checkout, env, *args, "--dry-run", "--no-snapshot")  # the checkout as it is: other code
    assert side_door.returncode == 2, side_door.stdout
    assert f"was submitted with code {code['hash']}" in side_door.stderr and "--no-snapshot would continue it with " \
        f"the checkout as it is, which is code {project_code(checkout).hash}" in side_door.stderr
    assert submit_from(checkout, env, *args, "--dry-run", "--no-snapshot", "--new-code").returncode == 0


def _files(folder: Path) -> dict[str, int]:
    """Every file and link under ``folder`` -> its modification time (ns)."""
    return {str(p.relative_to(folder)): os.lstat(p).st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.is_file() or p.is_symlink()}


def _write_corpus(folder: Path, docs: int = 120) -> Path:
    """A small deterministic corpus of .txt files (prepared in seconds, unlike the standard library)."""
    words = ["memory", "mixer", "token", "def", "return", "compress", "the", "data", "(", ")", "42", "\n"]
    folder.mkdir(parents=True)
    for i in range(docs):
        (folder / f"doc{i:04d}.txt").write_text(" ".join(words[(i * 7 + k * k) % len(words)] for k in range(60 + i)))
    return folder


@pytest.mark.slurm
def test_jobs_of_different_code_prepare_the_data_once_outside_the_snapshots(slurm_cluster, checkout, tmp_path):
    """Prepared data live in the profile's data_root (for local-slurm the submitting checkout's .state/cache),
    keyed on the data and the data code: a second job from changed code (outside memorymodels/data) reuses them, and
    no job writes into its code snapshot (no cache, no bytecode)."""
    # as most users submit: no MEMORYMODELS_STATE, so the state directory is the checkout's own .state/ (nothing
    # prepared there yet; a job that went by its own state_dir() would prepare inside its snapshot), and Python
    # writes bytecode caches unless told not to
    env = {**{k: v for k, v in os.environ.items() if k not in ("MEMORYMODELS_STATE", "PYTHONDONTWRITEBYTECODE")},
           "PYTHONPATH": str(checkout)}
    corpus = _write_corpus(tmp_path / "corpus")
    code_root = tmp_path / "runs" / ".code"
    slurm_env = slurm_cluster.environ()

    def submit_and_run(name: str) -> tuple[dict, dict]:
        out = submit_from(checkout, env, "--profile", "local-slurm", "--experiment", "configs/experiments/debug.yaml",
                          "--json", "--set", f"profile.checkpoint_root={tmp_path / 'runs'}",
                          "--set", "profile.sbatch_extra={hold: true}", "--set", f"data.corpus={corpus}",
                          "--set", "data.vocab_size=300", "--set", "train.max_steps=4", "--set", "train.eval_steps=0",
                          "--set", f"output.name={name}")
        assert out.returncode == 0, out.stderr
        job = json.loads(out.stdout)
        before = _files(code_root)  # the snapshot as the submission left it, before the job starts
        subprocess.run(["scontrol", "release", job["job_id"]], env=slurm_env, check=True)
        state_now = wait_for_job(job["job_id"], timeout=600, environ=slurm_env)
        err = Path(job["stderr"])
        assert state_now == {job["job_id"]: "COMPLETED"}, err.read_text()[-3000:] if err.exists() else state_now
        assert _files(code_root) == before, "the job wrote into the code snapshots"
        return job, run_json(Path(job["run_dir"]))

    first, first_run = submit_and_run("first")
    cache = checkout / ".state" / "cache"
    assert first_run["config"]["data"]["cache_dir"] == str(cache)  # the profile's data_root, outside .code/
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "data" / "manifest.json").is_file(), sorted(cache.iterdir())
    prepared = _files(entries[0])  # the tokenizer and shards (not the lock file beside them: opened by every job)

    trainer = checkout / "memorymodels" / "train.py"  # code outside memorymodels/data changes: a new snapshot
    trainer.write_text(trainer.read_text() + "# changed after the first submission\n")
    second, second_run = submit_and_run("second")
    assert second_run["code"]["hash"] != first_run["code"]["hash"]
    assert sorted(p.name for p in code_root.iterdir()) == sorted([first_run["code"]["hash"],
                                                                   second_run["code"]["hash"]])
    assert [p for p in cache.iterdir() if p.is_dir()] == entries and _files(entries[0]) == prepared, \
        "the second job prepared the data again"
    for snapshot in code_root.iterdir():  # no cache, and no bytecode but what the submission compiled and hashed
        hashed = set(json.loads((snapshot / MANIFEST).read_text())["sha256"])
        assert set(_files(snapshot)) - {MANIFEST} == hashed, "a file that the snapshot's manifest does not hash"
    assert not list(code_root.rglob(".state"))


def test_a_group_named_by_the_profile_reads_the_snapshot_and_nobody_else(tmp_path):
    repo = make_repo(tmp_path / "repo", {"run.sh": "#!/bin/sh\n", "pkg/b.py": "y = 2\n"})
    os.chmod(repo / "run.sh", 0o755)
    group = os.getgid()  # a group the user is in (chgrp to another one needs membership)
    path = materialize(project_code(repo).under(tmp_path / "runs"), group=group)
    assert (mode(path / "run.sh"), mode(path / "pkg" / "b.py")) == (0o550, 0o440)
    assert (mode(path.parent), mode(path), mode(path / "pkg")) == (0o3770, 0o2750, 0o2750)
    assert {os.lstat(p).st_gid for p in [path, *path.rglob("*")]} == {group}


# (id, what is done to a materialized snapshot, the file the error names)
EDITS = [
    ("same-size-edit", lambda s: _rewrite(s / "pkg" / "b.py", "y = 3\n"), "pkg/b.py"),
    ("longer-edit", lambda s: _rewrite(s / "a.py", "x = 1  # and more\n"), "a.py"),
    ("made-executable", lambda s: os.chmod(s / "pkg" / "b.py", 0o500), "pkg/b.py"),
    ("deleted", lambda s: os.unlink(s / "a.py"), "a.py"),
    ("replaced-by-a-link", lambda s: (os.unlink(s / "a.py"), os.symlink("pkg/b.py", s / "a.py")), "a.py"),
]


def _rewrite(path: Path, text: str) -> None:
    os.chmod(path, 0o600)
    path.write_text(text)
    os.chmod(path, 0o400)


@pytest.mark.parametrize("edit, name", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_an_edited_snapshot_is_caught_before_use_and_copied_afresh_by_the_next_submission(tmp_path, edit, name):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", "pkg/b.py": "y = 2\n"})
    code = project_code(repo).under(tmp_path / "runs")
    path = materialize(code)
    assert verify_code(path)["hash"] == code.hash
    edit(path)
    with pytest.raises(CodeChangedError) as caught:
        verify_code(path)  # what the trainer does first, at every attempt
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path / name}: "), message
    assert f"code snapshot {code.hash}" in message and "Submit the run again from a checkout of that code" in message

    said = []
    assert materialize(code, log=said.append) == path  # the checkout still has that code: copied again
    assert len(said) == 1 and said[0].startswith(f"{path / name}: ") and "moved aside to" in said[0], said
    verify_code(path)
    assert (path / "a.py").read_text() == "x = 1\n" and (path / "pkg" / "b.py").read_text() == "y = 2\n"
    assert [p.name for p in (tmp_path / "runs" / ".code").iterdir() if p.name != code.hash] == \
        [f".{code.hash}.damaged-1"]  # kept for the jobs running from it, hidden from listings


def test_a_snapshot_from_before_file_hashes_is_copied_again_and_the_trainer_lets_it_be(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    code = project_code(repo).under(tmp_path / "runs")
    path = materialize(code)
    os.chmod(path / MANIFEST, 0o600)
    (path / MANIFEST).write_text(json.dumps({**json.loads((path / MANIFEST).read_text()), "sha256": None}))
    assert verify_code(path)["hash"] == code.hash  # nothing to compare with
    said = []
    materialize(code, log=said.append)
    assert "records no file hashes" in said[0] and json.loads((path / MANIFEST).read_text())["sha256"]


def test_the_trainer_refuses_to_run_from_an_edited_snapshot(tmp_path):
    """A snapshot of this project whose checkpoint code lost one letter of a docstring (same size): the trainer
    names the file and exits CODE before reading the experiment, the data or the run directory."""
    code = project_code(REPO_ROOT).under(tmp_path / "runs")
    path = materialize(code)
    victim = path / "memorymodels" / "checkpoints.py"
    _rewrite(victim, victim.read_text().replace("Checkpoint directories", "Checkpoint directoriez", 1))
    done = subprocess.run([sys.executable, "-m", "memorymodels.train", "--experiment", str(tmp_path / "none.yaml"),
                           "--run-dir", str(tmp_path / "run")], cwd=path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == TrainerExit.CODE, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {victim}: changed since code snapshot {code.hash} was made"), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


PRIVATE_KEY = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"  # split: this file is no key
BIG = 11 * 10**6  # bytes: above the default snapshot_max_file_mb (10)

CHECKOUTS = [
    # (id, extra files of the checkout (name -> text, or an int: a file of that many bytes), snapshot_include,
    #  snapshot_max_file_mb, what the refusal names; None: taken)
    ("env-file", {".env": "OPENAI_API_KEY=sk-1"}, [], 10, ".env look(s) like credentials"),
    ("nested-env", {"configs/.env.local": "TOKEN=1"}, [], 10, "configs/.env.local look(s) like credentials"),
    ("netrc", {".netrc": "machine x login y password z"}, [], 10, ".netrc look(s) like credentials"),
    ("ssh-key-by-name", {"deploy/id_ed25519": PRIVATE_KEY}, [], 10, "deploy/id_ed25519 look(s) like credentials"),
    ("ssh-folder", {".ssh/config": "Host x"}, [], 10, ".ssh/config look(s) like credentials"),
    ("pem", {"certs/server.pem": "x"}, [], 10, "certs/server.pem look(s) like credentials"),
    ("key-inside-a-text-file", {"notes.txt": "see below\n" + PRIVATE_KEY}, [], 10, "notes.txt look(s) like credentials"),
    ("several", {".env": "A=1", ".pypirc": "x", "aws.key": "x"}, [], 10, ".env, .pypirc, aws.key look(s) like"),
    ("large-data", {"data/corpus.bin": BIG}, [], 10, "data/corpus.bin (11.0 MB) exceed(s) 'snapshot_max_file_mb: 10'"),
    ("both", {".env": "A=1", "big.bin": BIG}, [], 10, ".env look(s) like credentials (a snapshot is copied to the "
     "shared checkpoint root): move them out of the checkout or add them to .gitignore; big.bin (11.0 MB) exceed(s)"),
    ("env-example", {".env.example": "A=", "id_rsa.pub": "ssh-rsa AAAA"}, [], 10, None),
    ("env-included", {".env": "A=1"}, [".env"], 10, None),
    ("large-included-by-pattern", {"data/corpus.bin": BIG}, ["data/*"], 10, None),
    ("large-limit-raised", {"data/corpus.bin": BIG}, [], 12, None),
    ("ignored-env", {".gitignore": ".env\n", ".env": "A=1"}, [], 10, None),
]


@pytest.mark.parametrize("files, include, limit, refusal", [c[1:] for c in CHECKOUTS], ids=[c[0] for c in CHECKOUTS])
def test_a_snapshot_refuses_credentials_and_large_files_unless_included(tmp_path, files, include, limit, refusal):
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(repo / name, "wb") as f:
                f.truncate(content)
        else:
            (repo / name).write_text(content)
    rules = SnapshotRules(max_file_mb=limit, include=tuple(include), source="cluster_profiles/x.yaml")
    if refusal is None:
        ignored = {".env"} if ".gitignore" in files else set()
        assert set(project_code(repo, rules).files) == {"a.py", *files} - ignored
        return
    with pytest.raises(ConfigError) as caught:
        project_code(repo, rules)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{repo.resolve()}: the code snapshot refuses "), message
    assert refusal in message, message
    assert message.endswith("to copy them anyway list them in 'snapshot_include' of cluster_profiles/x.yaml, or "
                            "submit with --no-snapshot")
    assert project_code(repo).hash  # without rules (what --no-snapshot compares by) it is only hashed
