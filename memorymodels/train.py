"""Train an experiment with ``transformers.Trainer``: run directory, exact resume, requeue on signals, metrics.

    python -m memorymodels.train --experiment configs/experiments/debug.yaml
    python -m memorymodels.train --experiment configs/experiments/autoencoder.yaml --set train.max_steps=200
    torchrun --nproc_per_node 2 -m memorymodels.train --experiment configs/experiments/debug.yaml
    python -m memorymodels.train --experiment configs/experiments/debug.yaml --set train.max_steps=80 --extend

The run directory is derived from the config (``memorymodels.runs.run_dir_for``) unless ``--run-dir`` is given (the
launcher always gives it). A rerun of the same config resumes from the newest complete checkpoint and ends with
exactly ``train.max_steps`` optimizer steps. ``--extend`` continues the run this config is except for a shorter
``train.max_steps`` in its own directory (``memorymodels.extension``: the rule of the learning rate, the record in
run.json's ``extensions``). On SIGTERM or SIGUSR1 the trainer saves a checkpoint at the next step
boundary and exits with ``TrainerExit.REQUEUE`` (75; the codes are ``memorymodels.rundir.TrainerExit``); exit 0 means the run reached max_steps. Under torchrun every rank
traps the signal and the ranks agree (all-reduce) on stopping, so a signal reaching any rank stops all of them at the
same step; rank 0 alone writes run.json and metrics.jsonl. torchrun itself reports a worker's 75 as a failure (exit
1): read ``status`` in run.json (``interrupted``) to tell a requeue from an error.

Rank 0 holds an exclusive lock on the run directory for the whole attempt (``runs.lock_run_dir``); a second trainer
on the same directory, however launched, exits at once with ``LOCKED`` (73) naming the pid and host holding
it. Run from a code snapshot, rank 0 first checks every file of it against the snapshot's manifest
(``memorymodels.codemanifest``): an edited one stops the attempt with ``CODE`` (66) naming the file. Before resuming, checkpoints are verified (``memorymodels.checkpoints``): a damaged one is set aside with one
line and the previous complete one is used. Other exits, each with one ``error:`` line on stderr: ``CONFIG``
(2) config or data, ``RUN_DIR`` (65) a run directory that must not be used (another config's, a damaged
run.json: the message says how to repair it) or a checkpoint that fails its checks right after being written,
``DISK_FULL`` (74) the disk filled up (the unfinished checkpoint is removed, older ones are intact, run.json
says ``failed``; free space and rerun to resume), ``DIVERGED`` (76) a training loss (checked at every step, on
every rank), an evaluation loss or a weight about to be saved was NaN or infinite: the line names the step, run.json
says ``failed``, nothing of that step is logged or saved, and a completed run is never reported with such a loss.

After its first step rank 0 records how the attempt started, phase by phase (``memorymodels.startup``), in the run's
history of attempts and one ``startup:`` line. The imports below are what a first step waits for longest: they run
with the garbage collector off, and nothing is imported that training on our own data does not use (no deepspeed,
datasets or trackers unless asked for: ``memorymodels.hf_adapter``, ``tests/test_startup.py``).
"""

from __future__ import annotations

import gc

gc.disable()  # while the imports below run: enabled again right after them (why: there)

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback

from memorymodels import checkpoints, extension, metrics, runrecord, runs
from memorymodels.accounting import RunAccounting
from memorymodels.callbacks import (ContinueSchedule, HeartbeatCallback, Interrupted, LossCheck, MetricsWriter,
                                    StartupRecorder, StopOnSignal, defer_signals, install_signal_handlers)
from memorymodels.checkpoints import CheckpointError, without_aliases
from memorymodels.codemanifest import CodeChangedError, verify_code
from memorymodels.configuration import ConfigError, flag_number
from memorymodels.data.errors import DataError
from memorymodels.evaluate import evaluate_run, format_table
from memorymodels.experiment import (REPO_ROOT, Data, Experiment, build, experiment_dict, identity, load_data,
                                     load_experiment, load_fast_tokenizer, model_build_args)
from memorymodels.extension import ExtendError
from memorymodels.fileio import DiskFullError, disk_full_error, free_bytes, is_disk_full
from memorymodels.heartbeat import Heartbeat
from memorymodels.hf_adapter import CheckpointingTrainer
from memorymodels.hostmemory import keep_freed_host_memory
from memorymodels.metrics import NonFiniteLoss
from memorymodels.precision import Device, resolve_precision
from memorymodels.rundir import RunDirError, RunLockedError, RunPaths, TrainerExit
from memorymodels.startup import Startup
from memorymodels.tracking import Trackers

# The imports above leave about 400,000 objects that live as long as the process; with the collector on, its six full
# passes over them while they were being created took 0.7-0.8 of the 5.4-5.9 CPU seconds of 'import memorymodels.train'
# at load 4 on the development machine (BENCHMARKS.md, "Startup"). main() then freezes them out of later collections.
gc.enable()


LOW_SPACE = 16 << 20
"""A checkpoint write that fails with less free space than this is taken for a full disk: torch.save's zip writer
reports ENOSPC without an errno ("file write failed", "unexpected pos")."""

# ---- model summary ---------------------------------------------------------------------------------------------


def model_summary(model: torch.nn.Module, build_args: dict) -> dict:
    """Class, build arguments and parameter counts (total, trainable, per top-level child) for run.json."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "class": type(model).__name__,
        "build": build_args,
        "parameters": count(model),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "children": {name: count(child) for name, child in model.named_children()},
        "input_length": getattr(model, "input_length", None),
        "embedding_values": getattr(model, "embedding_values", None),
    }


# ---- precision ----------------------------------------------------------------------------------------------


def training_device() -> Device:
    """The device this process trains on, as the precision rule sees it: the current CUDA GPU, else the CPU."""
    if not torch.cuda.is_available():
        return Device("cpu")
    return Device("gpu", capability=tuple(torch.cuda.get_device_capability()), name=torch.cuda.get_device_name())


def trainer_precision(precision: str, source: str = "") -> str:
    """``train.precision`` on this process's device, by the rule the launcher plans with
    (``memorymodels.precision.resolve_precision``: ``auto`` is bf16 from compute capability 8, fp16 on 7.x, fp32 on
    CPU); a ConfigError naming ``source`` when the device cannot train in it."""
    try:
        return resolve_precision(precision, training_device())
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# ---- Trainer pieces ------------------------------------------------------------------------------------------


class RunTrainer(CheckpointingTrainer):
    """Trainer with the loss weighted by tokens across micro-batches and ranks, and marked-complete checkpoints.

    Models return the mean loss over their micro-batch's targets and take no ``num_items_in_batch`` (the
    seed's Trainer setup summed micro-batch means and logged 2x the loss with GA=2, docs/porting.md). Here each
    micro-batch's mean is weighted by its share of the targets (labels != -100) of the whole global batch,
    counted by the Trainer over all accumulation steps and all ranks (``num_items_in_batch``), and multiplied by
    the world size because DDP averages gradients over ranks. Gradients and the logged loss are therefore the
    token mean over the global batch, as with GA=1 on one device, also when micro-batches hold different
    numbers of targets (padded rows). Exact for same-position losses (autoencoders); for shifted losses
    (causal, memory models) the count includes one position per row that the model does not predict, which
    only matters when micro-batches differ in padding.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, keep_checkpoints: int | None = None, keep_steps: tuple[int, ...] = (),
                 losses: LossCheck | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Makes the Trainer count the targets of each global batch; compute_loss below never passes the count
        # on to the model (models take no loss kwargs).
        self.model_accepts_loss_kwargs = True
        self.keep_checkpoints = keep_checkpoints
        self.keep_steps = keep_steps  # checkpoints rotation leaves alone: where extensions started
        self.losses = losses  # every micro-batch's loss, judged at the step's end (callbacks.StopOnSignal)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.losses is not None:
            self.losses.add(loss)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(inputs["input_ids"], labels=inputs.get("labels"),
                        attention_mask=inputs.get("attention_mask"))
        loss = outputs[0]
        if model.training and num_items_in_batch is not None:
            targets = (inputs["labels"] != -100).sum()
            loss = loss * targets / num_items_in_batch * self.accelerator.num_processes
        elif model.training:  # no count (cannot happen with labels): plain mean over micro-batches
            loss = loss / self.current_gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss

    def weights_to_save(self, state_dict: dict) -> dict:
        # safetensors refuses tensors that share memory (tied embeddings, tie_weights=True): save each once.
        return without_aliases(state_dict)

    def checkpoint_written(self, folder: Path) -> None:
        # a weight gone NaN (an overflowing update whose loss was still finite) is never marked complete: the
        # checkpoint would replace good ones in the rotation. Each rank checks its parameters (its shard under FSDP).
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all().to(torch.int64)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            flag = finite.reshape(1).to(self.args.device)
            # also the barrier: every rank's files (rng states) are written
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag[0]
        if not bool(finite):
            raise NonFiniteLoss("a weight of the model", "not finite", self.state.global_step)
        if self.args.should_save:
            checkpoints.mark_complete(folder)  # checks the files first: a bad one is never marked nor rotated in
            checkpoints.rotate_checkpoints(self.args.output_dir, self.keep_checkpoints, self.keep_steps)
            checkpoints.prune_set_aside(self.args.output_dir)

    def checkpoint_failed(self, folder: Path, error: Exception) -> None:
        free = free_bytes(folder)
        if self.args.should_save:
            checkpoints.remove_unfinished(folder)  # half a checkpoint is never resumed: give its space back
        if is_disk_full(error) or (free is not None and free < LOW_SPACE):
            complete = checkpoints.checkpoints(self.args.output_dir)[0]
            intact = f"{complete[-1].name} is intact" if complete else "there is no earlier checkpoint"
            raise DiskFullError(folder, free, f"the unfinished checkpoint was removed and {intact}") from error


def training_arguments(experiment: Experiment, run_dir: Path, precision: str, show_progress: bool,
                       collective_timeout_s: int | None = None):
    """The Trainer's arguments; ``collective_timeout_s`` bounds every collective (transformers' ``ddp_timeout``,
    1800 s when not given: the launcher passes its profile's, well below)."""
    t = experiment.train
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(run_dir),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type="linear",
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation is ours, after the COMPLETE marker
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        ddp_backend="gloo" if not cuda and world()[1] > 1 else None,
        ddp_timeout=collective_timeout_s or 1800,
        ddp_find_unused_parameters=False,  # every model uses all its parameters (tests/models checks each one)
        torch_compile=t.compile,
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        prediction_loss_only=True,
        label_names=["labels"],
        average_tokens_across_devices=True,  # count targets over all ranks (see RunTrainer)
        # transformers' default replaces a NaN training loss by the mean of earlier ones and drops NaN batches from
        # the evaluation loss: a diverged run looked healthy. Non-finite losses stop the run instead (StopOnSignal).
        logging_nan_inf_filter=False,
    )


# ---- the run ------------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment (1 process without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _log(message: str) -> None:
    if world()[0] == 0:
        print(f"memorymodels.train: {message}", flush=True)


def train(experiment: Experiment, run_dir: Path | None = None, *, command: list[str] | None = None,
          evaluate_at_end: bool = True, heartbeat_dir: Path | None = None,
          collective_timeout_s: int | None = None, extend: bool = False, startup: Startup | None = None) -> int:
    """Train (or resume) ``experiment``; returns 0 when max_steps is reached, TrainerExit.REQUEUE after a signal.

    Raises :class:`RunLockedError` at once when another trainer holds the run directory (rank 0 takes its lock
    before touching anything and holds it to the end), :class:`RunDirError` for a directory it must not use,
    :class:`DiskFullError` when the disk fills up (the attempt is recorded as failed where run.json can still be
    written) and :class:`CheckpointError` when a checkpoint it has just written fails its checks.

    ``heartbeat_dir``: where this rank keeps its heartbeat file (``memorymodels.heartbeat``; the launcher watches
    it); ``collective_timeout_s``: the limit of every collective (``ddp_timeout``). ``extend``: continue the run
    in ``run_dir`` (default: the one ``memorymodels.extension.extension_target`` finds) to this config's longer
    ``train.max_steps`` from its newest complete checkpoint (:class:`ExtendError`, a :class:`RunDirError`, when it
    cannot be extended; nothing is changed then). ``startup``: the phases marked so far (``memorymodels.startup``;
    rank 0 records them in the run's history after the first step).
    """
    install_signal_handlers()
    rank, world_size = world()
    if run_dir is not None:
        RunPaths(run_dir).refuse_links()  # before the first heartbeat goes into RUN_DIR/launch/heartbeats
    heartbeat = None
    if heartbeat_dir is not None:
        heartbeat = Heartbeat(heartbeat_dir, rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
        heartbeat.beat("setup")
    if run_dir is None and extend:
        run_dir = extension.extension_target(experiment, world_size)[0]
    elif run_dir is None:
        run_dir = runs.run_dir_for(experiment, world_size)
        for note in (runs.collision_message(experiment, world_size, run_dir),
                     extension.new_run_note(experiment, world_size, run_dir)):
            if note:
                _log(note)
    run_dir = Path(run_dir)
    growing = extension.check_extension(run_dir, experiment, world_size) if extend else None
    if growing is None:
        runs.check_run_dir(run_dir, identity(experiment, world_size))
    lock = runs.lock_run_dir(run_dir) if rank == 0 else None
    try:
        return _train_locked(experiment, run_dir, command, evaluate_at_end, heartbeat, collective_timeout_s, growing,
                             startup or Startup())
    finally:
        if lock is not None:
            lock.release()
        if heartbeat is not None:
            heartbeat.beat("end")
            heartbeat.close()


def _train_locked(experiment: Experiment, run_dir: Path, command: list[str] | None, evaluate_at_end: bool,
                  heartbeat: Heartbeat | None, collective_timeout_s: int | None,
                  growing: extension.Extension | None, startup: Startup) -> int:
    precision = trainer_precision(experiment.train.precision, experiment.source)
    if not torch.cuda.is_available():
        keep_freed_host_memory()  # a quarter of a CPU step was page faults on the freed logits (hostmemory.py)
    try:
        data = load_data(experiment, progress=sys.stderr.isatty() and world()[0] == 0)
        startup.mark("data")
        build_args = model_build_args(experiment, data.n_vocab)
        torch.manual_seed(experiment.train.seed)
        model = build(build_args, context=experiment.data.context, source=experiment.source)
        startup.mark("model")
        resume = _open_run(run_dir, experiment, model, build_args, command, precision, growing)
        if resume is not None and checkpoints.checkpoint_step(resume) >= experiment.train.max_steps:
            _log(f"{run_dir} already reached max_steps {experiment.train.max_steps}; nothing to train")
            return _finish(run_dir, "completed", TrainerExit.COMPLETED, evaluate_at_end, resume)
        trainer, stopper = _make_trainer(experiment, run_dir, model, data, precision, heartbeat,
                                         collective_timeout_s, extension.saved_max_steps(resume), startup)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except Interrupted as exc:
        _log(f"{exc} before training started: nothing new to save; exiting {TrainerExit.REQUEUE:d} to be requeued")
        return _finish(run_dir, "interrupted", TrainerExit.REQUEUE, False, None)
    except ExtendError:
        raise  # a refusal before anything was written: the run stays as it was
    except BaseException as exc:
        error = exc
        if isinstance(exc, NonFiniteLoss):
            error = _diverged(run_dir, exc)
        elif isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and is_disk_full(exc):
            error = disk_full_error(exc, run_dir)  # the file it failed on and the free space there
        _record_failure(run_dir, error)
        if error is exc:
            raise
        raise error from exc
    if trainer.state.global_step >= experiment.train.max_steps:
        last = checkpoints.checkpoints(run_dir)[0]
        return _finish(run_dir, "completed", TrainerExit.COMPLETED, evaluate_at_end, last[-1] if last else None)
    why = signal.Signals(stopper.stopped_by).name if stopper.stopped_by else "stop"
    _log(f"{why}: saved checkpoint-{trainer.state.global_step} in {run_dir}; exiting {TrainerExit.REQUEUE:d} to be requeued")
    return _finish(run_dir, "interrupted", TrainerExit.REQUEUE, False, None)


def _diverged(run_dir: Path, exc: NonFiniteLoss) -> NonFiniteLoss:
    """``exc`` with what it means for the run: failed, what is kept, what to change (a rerun repeats the step)."""
    complete = checkpoints.checkpoints(run_dir)[0]
    kept = f"its newest checkpoint is {complete[-1].name}" if complete else "no checkpoint was saved"
    return NonFiniteLoss(exc.what, exc.value, exc.step, advice=(
        f"{run_dir} is marked failed and nothing of that step was logged or saved ({kept}); rerunning repeats it: "
        f"start a new run with a lower train.learning_rate, a longer train.warmup_steps or another precision"))


def _record_failure(run_dir: Path, exc: BaseException) -> None:
    """Rank 0: mark this attempt failed in run.json; when even that cannot be written, say so in one line."""
    if world()[0] != 0 or not RunPaths(run_dir).run_json.exists():
        return
    try:
        runrecord.end_attempt(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
    except (OSError, RunDirError) as again:
        _log(f"could not record the failure in {RunPaths(run_dir).run_json} ({again})")


def _open_run(run_dir: Path, experiment: Experiment, model, build_args: dict, command: list[str] | None,
              precision: str, growing: extension.Extension | None = None) -> Path | None:
    """The newest usable checkpoint to resume from; rank 0 also sets partial and damaged checkpoints aside, records
    the attempt (and ``growing``, an extension, from that checkpoint) and rolls metrics.jsonl back to the checkpoint
    (to 0 when starting over)."""
    rank0 = world()[0] == 0
    if rank0:
        checkpoints.set_aside_partial(run_dir, log=_log)
    resume = checkpoints.newest_usable(run_dir, set_aside=rank0, log=_log)
    step = checkpoints.checkpoint_step(resume) if resume is not None else 0
    if growing is not None:
        if resume is None:
            raise ExtendError(f"{run_dir}: --extend: no usable checkpoint is left to continue from (see the lines "
                              f"above); the run was not extended")
        growing = growing.at(step)
    if not rank0:
        return resume
    record = None
    if growing is not None:
        before = (runrecord.read_run_json(run_dir) or {}).get("identity")
        record = growing.record(time=time.time(), identity_before=before)
    info = runrecord.start_run(run_dir, experiment, world()[1], command=command or sys.argv,
                               model_summary=model_summary(model, build_args), repo=REPO_ROOT, extension=record)
    if growing is not None:
        _log(f"extending {growing.describe()}")
    moved = metrics.roll_back_metrics(run_dir, step)  # lines an attempt logged after its last checkpoint
    rolled = f"; {moved} metrics lines logged after it moved to metrics.rolledback.jsonl" if moved else ""
    if resume is None:
        _log(f"starting {run_dir} ({info['model']['parameters']:,} parameters, {precision}){rolled}")
        return None
    runrecord.record_resume(run_dir, step)
    _log(f"resuming {run_dir} from {resume.name} (step {step} of {experiment.train.max_steps}){rolled}")
    return resume


def _make_trainer(experiment: Experiment, run_dir: Path, model, data: Data, precision: str,
                  heartbeat: Heartbeat | None = None, collective_timeout_s: int | None = None,
                  resumed_max_steps: int | None = None, startup: Startup | None = None):
    """The RunTrainer with its callbacks, and the StopOnSignal callback (which says why training stopped).
    ``resumed_max_steps``: the schedule length the checkpoint resumed from was saved under (an extension when it
    differs: :class:`ContinueSchedule`)."""
    t = experiment.train
    startup = startup or Startup()
    show = sys.stderr.isatty() and world()[0] == 0
    args = training_arguments(experiment, run_dir, precision, show, collective_timeout_s)
    startup.mark("rendezvous")  # the arguments set up the device and join the process group (ddp_timeout)
    eval_rows = len(data.test) if t.eval_rows is None else min(t.eval_rows, len(data.test))
    eval_set = torch.utils.data.Subset(data.test, range(eval_rows)) if t.eval_steps else None
    tokens_per_step = t.batch_size * t.gradient_accumulation_steps * args.world_size * experiment.data.context
    losses = LossCheck()
    stopper = StopOnSignal(losses)
    rank0 = world()[0] == 0
    accounting = RunAccounting.for_run(model_build_args(experiment, data.n_vocab), args.world_size, data.test,
                                       load_fast_tokenizer(data.tokenizer_dir), eval_rows, writes_metrics=rank0,
                                       recorded=(runrecord.read_run_json(run_dir) or {}).get("heldout") if rank0 else None)
    trainer = RunTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=eval_set,
        callbacks=[StartupRecorder(startup, run_dir, _log), stopper,
                   MetricsWriter(run_dir, tokens_per_step, show=not show, accounting=accounting,
                                 trackers=_trackers(experiment, run_dir)),
                   *([HeartbeatCallback(heartbeat)] if heartbeat is not None else []),
                   *([ContinueSchedule()] if resumed_max_steps not in (None, t.max_steps) else [])],
        keep_checkpoints=t.save_total_limit, keep_steps=extension.started_from(run_dir), losses=losses,
    )
    startup.mark("trainer")
    if not show:
        trainer.remove_callback(PrinterCallback)  # MetricsWriter prints one line per logging step instead
    return trainer, stopper


def _trackers(experiment: Experiment, run_dir: Path) -> Trackers | None:
    """Rank 0's TensorBoard / wandb writers when ``train.report_to`` names any (memorymodels.tracking)."""
    if not experiment.train.report_to or world()[0] != 0:
        return None
    return Trackers(run_dir, experiment.train.report_to, experiment_dict(experiment))


def _finish(run_dir: Path, status: str, code: int, evaluate: bool, checkpoint: Path | None) -> int:
    """Record how this attempt ended; after a completed run print the evaluation table (rank 0)."""
    # Every rank of a completed run gets here after the same step; an interrupted one may not have trained together.
    close_process_group(synchronize=status == "completed")
    if world()[0] == 0:
        defer_signals()  # a signal during the evaluation no longer interrupts anything worth saving
        if RunPaths(run_dir).run_json.exists():
            newest = checkpoints.checkpoints(run_dir)[0]
            runrecord.end_attempt(run_dir, status, step=checkpoints.checkpoint_step(newest[-1]) if newest else 0)
        if evaluate and checkpoint is not None:
            try:
                result = evaluate_run(run_dir, checkpoint=checkpoint)
            except NonFiniteLoss as exc:  # never a completed run with a NaN result
                error = _diverged(run_dir, exc)
                _record_failure(run_dir, error)
                raise error from None
            print(format_table(result), flush=True)
        _log(f"{status}: {run_dir}")
    return code


def close_process_group(*, synchronize: bool = False) -> None:
    """Destroy the process group before the interpreter exits, all ranks together when ``synchronize``.

    Left to interpreter shutdown, or destroyed by some ranks while rank 0 still evaluates, gloo's threads can abort a
    worker after a completed run ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489,
    seen on the two-node cluster): torchrun then reports the run failed and the other node's torchrun waits 300 s in
    its exit barrier. So a completed run's ranks meet at a barrier and shut down together before rank 0 evaluates."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if synchronize:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    startup = Startup()
    startup.mark("imports")  # the module's imports are done when main() runs
    # What is loaded by now lives to the end of the process: no collection need scan it again (accelerate's
    # free_memory runs a full one before training; 0.2 s of scanning the modules without this).
    gc.freeze()
    parser = argparse.ArgumentParser(prog="python -m memorymodels.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="experiment YAML (configs/experiments/NAME.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dotted key, e.g. --set train.max_steps=20 (repeatable)")
    parser.add_argument("--run-dir", type=Path, help="train in this directory (default: derived from the config)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation table at the end")
    parser.add_argument("--heartbeat-dir", type=Path, help="keep this rank's heartbeat file here (the launcher's)")
    parser.add_argument("--collective-timeout-s", type=flag_number(int, minimum=10),
                        help="limit of every collective (default 1800 s)")
    parser.add_argument("--extend", action="store_true",
                        help="continue the run this config is except for a shorter train.max_steps, in its directory, "
                             "from its newest complete checkpoint (memorymodels.extension)")
    args = parser.parse_args(argv)
    try:
        if world()[0] == 0:
            verify_code(REPO_ROOT)  # running from a code snapshot: every file as submitted, or nothing runs
        experiment = load_experiment(args.experiment, args.overrides)
        command = [sys.executable, "-m", "memorymodels.train", *(argv if argv is not None else sys.argv[1:])]
        code = train(experiment, args.run_dir, command=command, evaluate_at_end=not args.no_eval,
                     heartbeat_dir=args.heartbeat_dir, collective_timeout_s=args.collective_timeout_s,
                     extend=args.extend, startup=startup)
    except (ConfigError, DataError) as exc:
        code, message = TrainerExit.CONFIG, str(exc)
    except RunLockedError as exc:
        code, message = TrainerExit.LOCKED, str(exc)
    except CodeChangedError as exc:
        code, message = TrainerExit.CODE, str(exc)
    except (RunDirError, CheckpointError) as exc:
        code, message = TrainerExit.RUN_DIR, str(exc)
    except DiskFullError as exc:
        code, message = TrainerExit.DISK_FULL, str(exc)
    except NonFiniteLoss as exc:
        code, message = TrainerExit.DIVERGED, str(exc)
    else:
        return code
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
