"""Extending a run to a longer schedule in its own directory, and telling a resubmission what became of its run.

    python launch/submit.py --profile local --set train.max_steps=2400 --extend      # the demo's run, longer
    python -m memorymodels.train --experiment configs/experiments/debug.yaml --set train.max_steps=80 --extend

Two runs are *relatives* when their configs and world sizes are equal except for the schedule's length,
``train.max_steps`` (:data:`SCHEDULE_LENGTH`; the warmup, the learning rate and everything else must be equal):
:func:`schedule_free_identity` is the same. A run's name leaves ``max_steps`` out, so relatives sit under one
checkpoint root as ``NAME`` and ``NAME-<identity>`` (:func:`relatives` reads those run.json files only).

An *extension* continues a relative with fewer steps from its newest complete checkpoint to the new max_steps, in the
same directory: metrics.jsonl goes on from the checkpoint's step (one curve), the checkpoint it started from is kept
(the shorter run's result: :func:`started_from`, which rotation leaves alone) and the run's identity becomes the longer
config's. The learning rate follows :data:`SCHEDULE_RULE`: the linear schedule is
rebuilt for the new total, so the added steps take the rates a run planned that long from its start has at those
steps; at the checkpoint the rate jumps from the old schedule's (0 at the end of a linear decay) to the new one's
(:meth:`Extension.schedule` says by how much). The trainer (``--extend``) records each extension in run.json's
``extensions`` when the extended attempt starts; the launcher plans it (:func:`extension_target`) and shows the same
words in ``--dry-run``.

Without ``--extend``, :func:`new_run_note` is the one line a new run with a relative prints, and
:func:`finished_result` says when a run has nothing left to do (completed, at max_steps, its final checkpoint
evaluated), so that resubmitting it is refused with its result. Torch-free: the launcher imports this module.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, replace
from pathlib import Path

from memorymodels.checkpoints import CheckpointError, checkpoint_step, checkpoints, verify_checkpoint
from memorymodels.experiment import NOT_IDENTITY, Experiment, config_identity, experiment_dict, identity, run_name
from memorymodels.fileio import CorruptFileError, read_json
from memorymodels.rundir import RunDirError, RunPaths
from memorymodels.runrecord import read_run_json

SCHEDULE_LENGTH = ("max_steps",)
"""The ``train`` keys that are the schedule's length only: runs that differ in nothing else are relatives."""
SCHEDULE_RULE = ("the linear schedule is rebuilt for the new train.max_steps: the added steps take the learning rate "
                 "a run planned that long from its start has at those steps (the rate jumps at the checkpoint)")
"""How the learning rate continues in an extension (recorded in run.json's ``extensions``)."""
"""The evaluation ``python -m memorymodels.evaluate`` writes into the run directory."""


class ExtendError(RunDirError):
    """``--extend`` cannot continue a run as asked: none to extend, max_steps not larger, no complete checkpoint."""


def schedule_free_identity(config: dict, world_size: int) -> str:
    """The identity of a config (plain data: ``experiment_dict`` or run.json's ``config``) without its length."""
    ignore = {**NOT_IDENTITY, "train": (*NOT_IDENTITY["train"], *SCHEDULE_LENGTH)}
    return config_identity(config, world_size, ignore)


def learning_rate_at(step: int, *, learning_rate: float, warmup_steps: int, max_steps: int) -> float:
    """The rate of the optimizer step after ``step`` steps under the trainer's schedule (``lr_scheduler_type``
    linear: warmup to ``learning_rate``, then linear decay to 0 at ``max_steps``; transformers'
    ``get_linear_schedule_with_warmup``, which tests/training/test_extend.py compares it with)."""
    if step < warmup_steps:
        return learning_rate * step / max(1, warmup_steps)
    return learning_rate * max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))


# ---- relatives ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relative:
    """A run under the checkpoint root that differs from a config at most in ``train.max_steps``."""

    run_dir: Path
    info: dict
    """Its run.json."""

    @property
    def max_steps(self) -> int:
        return int(self.info["config"]["train"]["max_steps"])

    @property
    def step(self) -> int:
        """The step of its newest complete checkpoint (0 without one)."""
        complete = checkpoints(self.run_dir)[0]
        return checkpoint_step(complete[-1]) if complete else 0


def relatives(experiment: Experiment, world_size: int, *, strict: bool = True) -> list[Relative]:
    """The runs named like ``experiment``'s (``NAME``, ``NAME-*``) whose config differs from it at most in the
    schedule's length (the same config included). A damaged run.json raises :class:`RunDirError` saying how to
    repair it when ``strict``, and is passed over otherwise."""
    root = Path(experiment.output.checkpoint_root)
    name = run_name(experiment, world_size)
    key = schedule_free_identity(experiment_dict(experiment), world_size)
    found = []
    for run_dir in [root / name, *sorted(Path(p) for p in glob.glob(str(root / f"{glob.escape(name)}-*")))]:
        if not run_dir.is_dir():
            continue
        try:
            info = read_run_json(run_dir)
        except RunDirError:
            if strict:
                raise
            continue
        config = (info or {}).get("config")
        train = config.get("train") if isinstance(config, dict) else None
        if (isinstance(train, dict) and isinstance(train.get("max_steps"), int)
                and schedule_free_identity(config, info.get("world_size")) == key):
            found.append(Relative(run_dir, info))
    return found


def new_run_note(experiment: Experiment, world_size: int, run_dir: Path) -> str | None:
    """One line when ``run_dir`` is a new run and a relative exists: which run it differs from, in what, and (when
    that one is shorter) that ``--extend`` continues it instead; None otherwise."""
    try:
        info = read_run_json(run_dir)
    except RunDirError:
        return None
    if info is not None:
        return None  # a run of this config already (resubmitted: it resumes)
    new = experiment.train.max_steps
    found = [r for r in relatives(experiment, world_size, strict=False) if r.max_steps != new]
    if not found:
        return None
    shorter = [r for r in found if r.max_steps < new]
    other = max(shorter, key=lambda r: (r.max_steps, r.step)) if shorter else min(found, key=lambda r: r.max_steps)
    advice = "; use --extend to continue that run instead" if shorter else ""
    return (f"this is a new run: it differs from {other.run_dir} in train.max_steps ({other.max_steps} -> {new}) "
            f"only{advice}")


# ---- extensions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extension:
    """A run continued from checkpoint ``at_step`` of its ``from_steps``-step schedule to ``to_steps`` steps."""

    run_dir: Path
    from_steps: int
    to_steps: int
    at_step: int
    learning_rate: float
    """The schedule's peak (``train.learning_rate``, equal in both configs)."""
    warmup_steps: int

    def rates(self) -> tuple[float, float]:
        """(old schedule's, new schedule's) learning rate of the first added step."""
        common = dict(learning_rate=self.learning_rate, warmup_steps=self.warmup_steps)
        return (learning_rate_at(self.at_step, max_steps=self.from_steps, **common),
                learning_rate_at(self.at_step, max_steps=self.to_steps, **common))

    def schedule(self) -> str:
        """:data:`SCHEDULE_RULE` in numbers: how the learning rate goes on after the checkpoint."""
        before, after = self.rates()
        return (f"linear schedule rebuilt for {self.to_steps} steps: after step {self.at_step} the learning rate "
                f"jumps from {before:.3g} to {after:.3g} (as in a run of {self.to_steps} steps), then decays "
                f"linearly to 0 at step {self.to_steps}")

    def describe(self) -> str:
        """One line for the plan and the trainer's log."""
        return (f"{self.run_dir}: train.max_steps {self.from_steps} -> {self.to_steps}, from checkpoint-"
                f"{self.at_step} (kept); {self.schedule()}")

    def record(self, **extra) -> dict:
        """The entry of run.json's ``extensions``."""
        before, after = self.rates()
        return {"from_steps": self.from_steps, "to_steps": self.to_steps, "at_step": self.at_step,
                "rule": SCHEDULE_RULE, "schedule": self.schedule(), "learning_rate_before": before,
                "learning_rate_after": after, **extra}

    def at(self, step: int) -> "Extension":
        """The same extension from the checkpoint the trainer really resumes from (a damaged newest one is set
        aside when it is verified)."""
        return replace(self, at_step=step)


def check_extension(run_dir: Path, experiment: Experiment, world_size: int) -> Extension | None:
    """The extension that continues the run in ``run_dir`` as ``experiment``; None when that directory holds a
    run of exactly this config already (an extension recorded before: it resumes). Raises :class:`ExtendError`
    (one line: what is wrong and what to do) when it holds no run, another config's run, a run at least as long, or
    a run without a complete checkpoint."""
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    new = experiment.train.max_steps
    if info is None:
        raise ExtendError(f"{run_dir}: --extend: no run here to extend (no run.json); submit without --extend to "
                          f"start one")
    if info.get("identity") == identity(experiment, world_size):
        return None
    config = info.get("config") or {}
    if schedule_free_identity(config, info.get("world_size")) != schedule_free_identity(
            experiment_dict(experiment), world_size):
        raise ExtendError(f"{run_dir}: --extend: this run's config differs from {experiment.source} in more than "
                          f"train.max_steps (see its run.json); only a longer schedule can continue a run")
    old = (config.get("train") or {}).get("max_steps")
    if not isinstance(old, int):
        raise ExtendError(f"{run_dir}: --extend: its run.json records no train.max_steps; repair it (run.json.bak "
                          f"holds the previous version) before extending the run")
    if new <= old:
        raise ExtendError(f"{run_dir}: --extend: the run has train.max_steps {old} and an extension needs a larger "
                          f"one, got {new}; set --set train.max_steps=N with N > {old}")
    complete = checkpoints(run_dir)[0]
    if not complete:
        raise ExtendError(f"{run_dir}: --extend: the run has no complete checkpoint to continue from; submit it "
                          f"without --extend to train it (again) from the start")
    return Extension(run_dir=run_dir, from_steps=old, to_steps=new, at_step=checkpoint_step(complete[-1]),
                     learning_rate=experiment.train.learning_rate, warmup_steps=experiment.train.warmup_steps)


def started_from(run_dir: Path) -> tuple[int, ...]:
    """The steps of the checkpoints the run's extensions started from (run.json's ``extensions``): the shorter runs'
    results, which checkpoint rotation keeps (``memorymodels.checkpoints.rotate_checkpoints``)."""
    try:
        info = read_run_json(run_dir) or {}
    except RunDirError:
        return ()
    return tuple(e["at_step"] for e in info.get("extensions", []) if isinstance(e, dict)
                 and isinstance(e.get("at_step"), int))


def saved_max_steps(checkpoint: Path | None) -> int | None:
    """The ``train.max_steps`` a checkpoint was saved under (its ``trainer_state.json``); None without a checkpoint
    or that number. A resume under another one is an extension (``memorymodels.callbacks.ContinueSchedule``)."""
    if checkpoint is None:
        return None
    try:
        state = read_json(Path(checkpoint) / "trainer_state.json", expect=dict) or {}
    except CorruptFileError:
        return None  # verified before the resume; transformers names it when it reads it
    return state.get("max_steps") if isinstance(state.get("max_steps"), int) else None


def extension_target(experiment: Experiment, world_size: int) -> tuple[Path, Extension | None]:
    """The run ``--extend`` continues as ``experiment``: (its directory, the extension), or (directory, None) when
    a run of exactly this config exists (extended before: it resumes, or has nothing left to do). Of several shorter
    relatives the longest is continued. :class:`ExtendError` when there is none to continue."""
    new = experiment.train.max_steps
    found = relatives(experiment, world_size)
    same = [r for r in found if r.max_steps == new]
    if same:
        return same[0].run_dir, None
    shorter = [r for r in found if r.max_steps < new]
    if shorter:
        chosen = max(shorter, key=lambda r: (r.max_steps, r.step))
        return chosen.run_dir, check_extension(chosen.run_dir, experiment, world_size)
    root, name = experiment.output.checkpoint_root, run_name(experiment, world_size)
    if found:
        longest = max(found, key=lambda r: r.max_steps)
        raise ExtendError(f"--extend: {longest.run_dir} has train.max_steps {longest.max_steps} and an extension "
                          f"needs a larger one, got {new}; set --set train.max_steps=N with N > {longest.max_steps}")
    raise ExtendError(f"--extend: no run under {root} ({name} or {name}-*) differs from {experiment.source} in "
                      f"train.max_steps only; submit without --extend to start this run")


def finished_result(run_dir: Path, max_steps: int) -> str | None:
    """When the run in ``run_dir`` has nothing left to do (run.json says completed, its newest complete checkpoint
    is at ``max_steps``, intact (``verify_checkpoint``: its content hashes too), and ``eval.json`` evaluates that
    checkpoint): its result in words; None otherwise (the trainer would train, or evaluate the final checkpoint, or
    set a damaged one aside and train from the one before)."""
    run_dir = Path(run_dir)
    try:
        info = read_run_json(run_dir)
        evaluation = read_json(RunPaths(run_dir).eval_json, expect=dict)
    except (RunDirError, CorruptFileError):
        return None  # the trainer names a damaged file, with its repair
    complete = checkpoints(run_dir)[0]
    if (not info or info.get("status") != "completed" or not complete or checkpoint_step(complete[-1]) < max_steps
            or not evaluation or evaluation.get("checkpoint") != complete[-1].name):
        return None
    try:
        verify_checkpoint(complete[-1])
    except CheckpointError:
        return None  # changed since it was evaluated: the trainer names the file and trains it again
    numbers = [text.format(evaluation[key]) for key, text in (("loss", "eval loss {:.4f} nats/token"),
                                                               ("bits_per_byte", "{:.4f} bits/byte"))
               if isinstance(evaluation.get(key), (int, float))]
    when = (f" on {time.strftime('%Y-%m-%d %H:%M', time.localtime(evaluation['time']))}"
            if isinstance(evaluation.get("time"), (int, float)) else "")
    return (f"completed {checkpoint_step(complete[-1])} of {max_steps} steps, {complete[-1].name} evaluated{when}: "
            f"{', '.join(numbers) or 'see ' + str(RunPaths(run_dir).eval_json)}")
