"""The other libraries' private functions the launcher uses, each through one adapter: these tests fail, naming the
function, when a release changes what the adapter relies on (``launch/slurm/submitit_adapter.py``)."""

from __future__ import annotations

import inspect
import signal
import time

import pytest
import submitit
from submitit.core import job_environment
from submitit.slurm import slurm as submitit_slurm

from launch.slurm import submitit_adapter as adapter


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("owner, name, expected", [
    (submitit_slurm, "_make_sbatch_string", ["command", "folder", "job_name", "partition", "time", "nodes",
                                             "ntasks_per_node", "cpus_per_task"]),
    (submitit_slurm, "_parse_node_list", ["node_list"]),
    (submitit_slurm, "_get_default_parameters", []),
    (submitit_slurm.SlurmExecutor, "_make_submission_file_text", ["self", "command", "uid"]),
    (submitit_slurm.SlurmExecutor, "_internal_process_submissions", ["self", "delayed_submissions"]),
    (submitit_slurm.SlurmExecutor, "_submit_command", ["self", "command"]),
    (job_environment.JobEnvironment, "_usr_sig", []),
])
def test_submitit_private_functions_keep_their_shape(owner, name, expected):
    function = getattr(owner, name, None)
    assert function is not None, f"submitit {submitit.__version__} has no {owner.__name__}.{name}; update {adapter.__file__}"
    names = parameters(function)
    assert names[:len(expected)] == expected, (f"submitit {submitit.__version__} changed {owner.__name__}.{name}"
                                               f"{inspect.signature(function)}; update {adapter.__file__}")


def test_the_sbatch_command_matches_what_the_executor_runs(tmp_path):
    folder = tmp_path / "logs"
    script = adapter.render_sbatch({"job_name": "x", "time": 5}, folder=folder, python="/venv/bin/python")
    assert adapter.submit_command("/venv/bin/python", folder) in script
    assert {"map_count", "array_parallelism", "additional_parameters", "srun_args"} <= adapter.sbatch_parameter_names()


def test_planned_executor_hands_over_the_planned_script_and_refuses_another(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun needed here
    folder = tmp_path / "logs"
    script = "#!/bin/bash\n# planned\n" + adapter.submit_command("/venv/bin/python", folder) + "\n"
    executor = adapter.PlannedSlurmExecutor(folder, script=script, python="/venv/bin/python", max_num_timeout=3)
    assert executor._submitit_command_str == adapter.submit_command("/venv/bin/python", folder)
    assert executor._make_submission_file_text(executor._submitit_command_str, "uid") == script
    with pytest.raises(ValueError, match="plan and submission disagree"):
        executor._make_submission_file_text("python -m something.else", "uid")


def test_node_list_and_requeue_signal():
    assert adapter.parse_node_list("node[1-3,5],gpu7") == ["node1", "node2", "node3", "node5", "gpu7"]
    assert adapter.requeue_signal(job_environment.JobEnvironment) == signal.SIGUSR2  # submitit's default


def test_planned_executor_throttles_an_array_submission_before_sbatch_as_submitit_does(tmp_path, monkeypatch):
    """The copied array path keeps submitit's ``self._throttle()`` right before sbatch (a bypass submits at once)."""
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun needed here
    folder = tmp_path / "logs"
    script = "#!/bin/bash\n#SBATCH --array=0-2%3\n" + adapter.submit_command("/venv/bin/python", folder) + "\n"
    executor = adapter.PlannedSlurmExecutor(folder, script=script, python="/venv/bin/python", max_num_timeout=3)
    calls = []
    real_throttle = executor._throttle

    def throttle():
        calls.append("throttle")
        real_throttle()

    def sbatch(command):
        assert executor._make_submission_file_text(command, "uid") == script  # the planned bytes reach sbatch
        calls.append(("sbatch", time.monotonic()))
        return submitit_slurm.SlurmJob(folder=folder, job_id="42", tasks=[0])

    monkeypatch.setattr(executor, "_throttle", throttle)
    monkeypatch.setattr(executor, "_submit_command", sbatch)
    executor._throttling = 0.3  # as if this executor had just submitted: submitit waits its interval out first
    executor._last_job_submitted = time.time()
    started = time.monotonic()
    with executor.batch():
        jobs = [executor.submit(print, k) for k in range(3)]
    assert calls[0] == "throttle" and [c[0] for c in calls[1:]] == ["sbatch"], calls
    assert calls[1][1] - started >= 0.3, "sbatch ran before submitit's throttling interval had passed"
    assert [job.job_id for job in jobs] == ["42_0", "42_1", "42_2"]
    assert all(job.paths.submitted_pickle.exists() for job in jobs)
