"""Startup (memorymodels/startup.py): the phases an attempt records, and what the trainer's imports leave out.

    .venv/bin/pytest tests/test_startup.py -q

The trainer's phases in a real run are checked by tests/training/test_train.py, the node task's hand-over and the
history by tests/launch/test_submit.py (the local profile's job).
"""

import json
import subprocess
import sys
import time

import pytest

from memorymodels.experiment import REPO_ROOT
from memorymodels.startup import ATTEMPT_ENV, Startup, allocation_start, attempt_env, describe, process_start

UNUSED = ("datasets", "pandas", "pyarrow", "deepspeed", "matplotlib", "wandb", "tensorboard", "sklearn", "scipy")
"""Installed here, and loaded by the libraries the trainer uses, but not needed to train on our own data: datasets
only for hf: corpora, deepspeed only under a DeepSpeed config, the trackers only when train.report_to names them."""


def test_importing_the_trainer_loads_no_library_it_does_not_use():
    script = ("import gc, json, sys\n"
              "import memorymodels.train\n"
              "import transformers.trainer, transformers.utils\n"
              f"print(json.dumps({{'loaded': [m for m in {UNUSED!r} if m in sys.modules], 'gc': gc.isenabled(),\n"
              "    'trainer_sees_datasets': transformers.trainer.is_datasets_available(),\n"
              "    'others_see_datasets': transformers.utils.is_datasets_available()}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["loaded"] == [], f"import memorymodels.train loads {found['loaded']} (see memorymodels/hf_adapter.py)"
    assert found["gc"] is True  # the collector, off during the imports, is on again for whoever imports the trainer
    assert found["trainer_sees_datasets"] is False and found["others_see_datasets"] is True


def test_process_start_is_read_from_proc():
    assert 0 <= time.time() - process_start() < 3600  # this test process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert abs(process_start(child.pid) - time.time()) < 2
    finally:
        child.kill()
        child.wait()
    assert process_start(2 ** 31) is None  # no such process


def test_the_allocation_starts_with_slurm_s_job_else_with_the_process():
    assert allocation_start({"SLURM_JOB_START_TIME": "1700000000"}) == 1700000000.0
    assert allocation_start({}) == pytest.approx(process_start(), abs=0.05)  # two clocks read: not to the microsecond
    future = str(int(time.time()) + 3600)  # a clock that disagrees: not believed
    assert allocation_start({"SLURM_JOB_START_TIME": future}) == pytest.approx(process_start(), abs=0.05)


def test_startup_marks_phases_in_order_from_the_attempt_the_task_hands_over():
    start = process_start() - 2  # this process (the "trainer") began after its task
    startup = Startup(attempt_env("41_2", 3, start, start + 0.5))
    startup.mark("imports")
    startup.mark("imports")  # the first mark counts
    record = startup.record()
    assert (record["job_id"], record["restart_count"], record["start"]) == ("41_2", 3, start)
    assert list(record["phases"]) == ["task", "python", "imports"] and record["phases"]["task"] == 0.5
    assert json.loads(json.dumps(record)) == record
    # without a launcher (or with a damaged hand-over) the attempt starts with this process
    for environ in ({}, {ATTEMPT_ENV: "not json"}, {ATTEMPT_ENV: "[1]"}):
        plain = Startup(environ).record()
        assert plain["start"] == pytest.approx(process_start(), abs=0.05) and plain["phases"] == {"python": 0.0}


def test_describe_gives_the_first_step_then_each_phase_s_own_length():
    record = {"start": 0.0, "phases": {"task": 0.5, "python": 0.6, "imports": 3.6, "first_step": 4.2}}
    assert describe(record) == ("first step 4.2 s after the start (task 0.5 s, python 0.1 s, imports 3.0 s, "
                                "first step 0.6 s)")
    assert describe({"start": 0.0, "phases": {}}) == "no step yet"


def test_phases_are_kept_in_the_order_the_code_reaches_them():
    startup = Startup(attempt_env("7", 0, 100.0, 100.5))
    startup.ends.update(python=100.497, imports=103.0)  # a directly started trainer: /proc a tick early
    assert list(startup.record()["phases"]) == ["task", "python", "imports"]
    assert describe(startup.record()).endswith("(task 0.5 s, python 0.0 s, imports 2.5 s)")
