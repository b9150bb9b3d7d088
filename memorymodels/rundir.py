"""The run directory's one owner: every file name in it, and the trainer's exit codes (torch-free).

    python -c "from memorymodels.rundir import RunPaths; print(RunPaths('runs/x').events)"

Several processes share a run directory: the submitter writes the plan's files, each node's task writes events,
heartbeats, hang stacks and the rendezvous, the trainer writes run.json, metrics and checkpoints, and the dashboard,
the sweep report and ``status.py --history`` read them. All of them ask :class:`RunPaths` for paths (in the spirit
of submitit's ``JobPaths``), so a name is spelled once; ``tests/test_layout.py`` fails on a run-file name spelled
anywhere else. The plan hands the node task its run directory and failure policy; the node task builds its paths here
too, so no layer re-derives them::

    RUN_DIR/
      run.json, run.json.bak      the run record (``memorymodels.runrecord``) and its previous version
      metrics.jsonl               one line per logging step (``memorymodels.metrics``); metrics.rolledback.jsonl
      .trainer.lock               flock'ed by the trainer writing the directory (``memorymodels.runs``)
      checkpoint-STEP/            checkpoints (their naming and rules: ``memorymodels.checkpoints``)
      eval.json                   ``python -m memorymodels.evaluate``
      tensorboard/                TensorBoard's event files (``memorymodels.tracking``)
      git-attemptN.diff           the uncommitted changes an attempt ran with
      launch/                     the launcher's files:
        job.sbatch, experiment.yaml, accelerate_config.yaml, plan.json, .submit.lock
        events.jsonl              the history of the run's attempts, one writer (``memorymodels.attempts``)
        heartbeats/ hangs/ rendezvous/ slurm/    ranks' beats, hung ranks' stacks, the head's address, logs

Checkpoint folders keep their names in ``memorymodels.checkpoints``, which owns every rule about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from memorymodels.fileio import DISK_FULL_EXIT, LinkedPathError, refuse_links


class RunDirError(Exception):
    """A run directory cannot be used as asked: another config's run, foreign files, a damaged run.json."""


class RunLockedError(RunDirError):
    """Another live process holds the run directory's lock (a second trainer on the same run)."""


class TrainerExit(IntEnum):
    """How ``python -m memorymodels.train`` ends; the node task (``launch.node``) acts on these codes."""

    COMPLETED = 0
    """The run reached max_steps."""
    CONFIG = 2
    """A config or data error (one ``error:`` line says which file and key)."""
    RUN_DIR = 65
    """The run directory must not be used (another config's run, a damaged run.json, a bad new checkpoint)."""
    CODE = 66
    """The code snapshot the attempt runs from is not what was submitted (a file edited since: the line names it);
    nothing ran. Submitting the run again from a checkout of that code copies the snapshot afresh."""
    LOCKED = 73
    """Another trainer holds the run directory."""
    DISK_FULL = DISK_FULL_EXIT
    """The disk filled up; the unfinished checkpoint was removed, older ones are intact."""
    REQUEUE = 75
    """A checkpoint was saved after a signal: run again (requeue) to resume."""
    DIVERGED = 76
    """A training or evaluation loss was NaN or infinite (the line names the step); the run is marked failed and
    nothing after the last complete checkpoint was saved. Rerunning the same step gives the same loss."""


REFUSALS = {TrainerExit.CONFIG: "a config or data error",
            TrainerExit.CODE: "the code snapshot was edited after submission; the log names the file",
            TrainerExit.RUN_DIR: "the run directory cannot be used; the log says how to repair it",
            TrainerExit.LOCKED: "another trainer holds this run directory",
            TrainerExit.DISK_FULL: "the disk is full; free space, then resubmit",
            TrainerExit.DIVERGED: "the loss is not a finite number; the log names the step"}
"""The trainer's refusals in words: exits that a retry cannot help, so none of them is requeued."""


def exit_meaning(code: int | None) -> str:
    """`` (a config or data error)`` for a refusal's code, else ''."""
    return f" ({REFUSALS[code]})" if code in REFUSALS else ""


SCRIPT = "job.sbatch"
"""The sbatch script's name, in a run's ``launch/`` and in a sweep's array folders."""
SUBMIT_LOCK = ".submit.lock"
"""The submission lock's name, in a run's ``launch/`` and at a sweep's root."""


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run directory. Cheap to build; touches nothing on disk."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ---- the trainer's files ----
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def run_json_backup(self) -> Path:
        return self.root / "run.json.bak"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def metrics_rolled_back(self) -> Path:
        """Metrics lines logged after the checkpoint an attempt resumed from (moved aside, never lost)."""
        return self.root / "metrics.rolledback.jsonl"

    @property
    def trainer_lock(self) -> Path:
        return self.root / ".trainer.lock"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def eval_history(self) -> Path:
        """Earlier evaluations, one JSON line each (eval.json's previous versions)."""
        return self.root / "eval-history.jsonl"

    @property
    def tracking(self) -> Path:
        """Which trackers' runs this run feeds (``memorymodels.tracking``)."""
        return self.root / "tracking.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def git_diff(self, attempt: int) -> Path:
        """The uncommitted changes attempt ``attempt`` (1-based) ran with."""
        return self.root / f"git-attempt{attempt}.diff"

    # ---- the launcher's files ----
    @property
    def launch(self) -> Path:
        return self.root / "launch"

    @property
    def script(self) -> Path:
        """The sbatch script, byte for byte what sbatch received."""
        return self.launch / SCRIPT

    @property
    def experiment(self) -> Path:
        """The resolved experiment the trainer reads."""
        return self.launch / "experiment.yaml"

    @property
    def accelerate_config(self) -> Path:
        return self.launch / "accelerate_config.yaml"

    @property
    def plan(self) -> Path:
        """The plan as submitted: profile, overrides, sbatch parameters, command, code."""
        return self.launch / "plan.json"

    @property
    def submit_lock(self) -> Path:
        """Held while a submission checks the queue and queues this run (exactly once)."""
        return self.launch / SUBMIT_LOCK

    @property
    def events(self) -> Path:
        """The history of the run's attempts (``memorymodels.attempts``)."""
        return self.launch / "events.jsonl"

    @property
    def heartbeats(self) -> Path:
        """One file per rank: its last beat (``memorymodels.heartbeat``)."""
        return self.launch / "heartbeats"

    @property
    def hangs(self) -> Path:
        """The stacks of a hung attempt's ranks."""
        return self.launch / "hangs"

    @property
    def rendezvous(self) -> Path:
        """The head node's address and port per attempt (``launch.node.rendezvous``)."""
        return self.launch / "rendezvous"

    @property
    def logs(self) -> Path:
        """submitit's folder: the pickled task and each job's stdout and stderr."""
        return self.launch / "slurm"

    def plan_files(self) -> dict[str, Path]:
        """The plan's files by what they hold: ``script``, ``experiment``, ``accelerate_config``."""
        return {"script": self.script, "experiment": self.experiment, "accelerate_config": self.accelerate_config}

    def written_in_place(self) -> list[Path]:
        """The folders the toolkit writes files into, and the files it appends to or locks (a file replaced by a
        rename never writes through a link; these would)."""
        return [self.launch, self.heartbeats, self.hangs, self.rendezvous, self.logs, self.tensorboard, self.events,
                self.metrics, self.metrics_rolled_back, self.eval_history, self.trainer_lock, self.submit_lock]

    def refuse_links(self) -> None:
        """Raise :class:`RunDirError` when a folder of the run (``launch/`` and those under it, ``tensorboard/``) or
        a file written in place is a symbolic link: every writer (submitter, node task, trainer) asks before it
        writes, so no file of a run lands outside it."""
        try:
            refuse_links(self.root, self.written_in_place())
        except LinkedPathError as exc:
            raise RunDirError(str(exc)) from None

    def is_run(self) -> bool:
        """Whether this looks like a run directory (it has a run record or metrics)."""
        return self.run_json.exists() or self.metrics.exists()
