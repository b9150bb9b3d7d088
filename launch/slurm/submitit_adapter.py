"""submitit's private functions, used here and nowhere else.

submitit has no public hook for four things the launcher needs; each is wrapped once below, and
``tests/launch/test_adapters.py`` fails naming the function when a submitit release changes one of them:

- rendering an sbatch script from parameters without submitting it (``submitit.slurm.slurm._make_sbatch_string``):
  the planner renders the script once and the plan carries it;
- submitting exactly that script (``SlurmExecutor._make_submission_file_text``, and for arrays the body of
  ``SlurmExecutor._internal_process_submissions``, which builds a plain ``SlurmExecutor`` of its own):
  :class:`PlannedSlurmExecutor` hands sbatch the planned bytes instead of rendering them again;
- expanding a Slurm host list (``submitit.slurm.slurm._parse_node_list``);
- the signal submitit's requeue handler listens to (``JobEnvironment._usr_sig``).
"""

from __future__ import annotations

import shlex
import signal
import typing as tp
import uuid
from pathlib import Path

import submitit
from submitit.core import utils as submitit_utils
from submitit.slurm import slurm as submitit_slurm

ARRAY_PARAMETERS = ("map_count", "array_parallelism")


def submit_command(python: str, folder: str | Path) -> str:
    """The command an sbatch script of submitit runs (``SlurmExecutor._submitit_command_str``)."""
    return " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(params: dict[str, tp.Any], *, folder: str | Path, python: str) -> str:
    """The sbatch script submitit would write for ``params`` (submitit's names; ``map_count`` for an array)."""
    return submitit_slurm._make_sbatch_string(command=submit_command(python, folder), folder=folder, **params)


def sbatch_parameter_names() -> set[str]:
    """Every parameter :func:`render_sbatch` accepts."""
    return set(submitit_slurm._get_default_parameters()) | {"map_count"}


def parse_node_list(text: str) -> list[str]:
    """``node[1-3,5],gpu7`` -> ``['node1', 'node2', 'node3', 'node5', 'gpu7']``."""
    return submitit_slurm._parse_node_list(text)


def requeue_signal(job_env: submitit.JobEnvironment) -> signal.Signals:
    """The signal submitit's requeue handler is installed for (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says)."""
    return job_env._usr_sig()


class PlannedSlurmExecutor(submitit.SlurmExecutor):
    """A ``SlurmExecutor`` that submits the script it is given, byte for byte, instead of rendering one.

    The parameters are still set (``update_parameters``), because submitit reads the time limit and the task count
    from them; the script is the planner's. A script that does not run the command submitit expects (another
    folder or interpreter) is refused before anything is submitted.
    """

    def __init__(self, folder: str | Path, *, script: str, python: str, max_num_timeout: int):
        super().__init__(folder=folder, max_num_timeout=max_num_timeout, python=shlex.quote(python))
        self.script = script

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        if command not in self.script:
            raise ValueError(f"the planned sbatch script does not run {command!r}; plan and submission disagree "
                             "(plan the job again)")
        return self.script

    def _internal_process_submissions(self, delayed_submissions: list) -> list:
        """submitit's array path (``SlurmExecutor._internal_process_submissions``, step for step, its throttle
        before sbatch included), with this class (and so the planned script) instead of a new ``SlurmExecutor``."""
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        folder = submitit_utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        self._throttle()  # where submitit waits out its throttling interval since this executor's last sbatch
        first = self._submit_command(self._submitit_command_str)
        tasks = list(range(first.num_tasks))
        jobs = [submitit_slurm.SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{a}", tasks=tasks)
                for a in range(len(delayed_submissions))]
        for job, path in zip(jobs, pickles):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs
