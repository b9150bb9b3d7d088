"""The Trainer callbacks of a run: stop on a signal at a step boundary, heartbeats, metrics.jsonl, an extension's
learning rate.

    trainer = RunTrainer(..., callbacks=[StopOnSignal(), MetricsWriter(run_dir, tokens_per_step, show=True),
                                         HeartbeatCallback(heartbeat)])

``install_signal_handlers`` traps SIGTERM and SIGUSR1: before training starts (data preparation, model building) a
signal raises :class:`Interrupted` at once, nothing being worth saving; once training runs it only sets a flag that
:class:`StopOnSignal` reads at the next step end, where all ranks agree (all-reduce) to save and stop together. In
the same all-reduce they agree whether any rank's training loss of the step was NaN or infinite (:class:`LossCheck`,
fed by the trainer's ``training_step``): then every rank raises ``metrics.NonFiniteLoss`` naming the step, before
anything of that step is logged or saved; a non-finite evaluation loss raises it too.
:class:`MetricsWriter` (rank 0) writes one ``metrics.jsonl`` line per logging step with the run's compute
(``memorymodels.accounting``); :class:`HeartbeatCallback` (every rank) writes the heartbeats the node watchdog reads
(``memorymodels.heartbeat``); :class:`ContinueSchedule` (every rank, resuming from a checkpoint of a shorter
schedule) gives the first added step the rebuilt schedule's learning rate (``memorymodels.extension``).
``memorymodels.train`` puts them together.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from memorymodels import metrics, runrecord
from memorymodels.accounting import RunAccounting
from memorymodels.heartbeat import Heartbeat
from memorymodels.metrics import NonFiniteLoss, check_finite
from memorymodels.startup import Startup, describe
from memorymodels.tracking import Trackers

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class _StopFlag:
    """Set by the signal handler; read at step boundaries once training runs."""

    signum: int | None = None
    training: bool = False


class Interrupted(BaseException):
    """A stop signal arrived before training started (data preparation, model building): nothing to save."""


def _on_signal(signum, frame):  # noqa: ARG001
    _StopFlag.signum = signum
    if not _StopFlag.training:  # preparing data can take long; it resumes where it stopped, so stop now
        raise Interrupted(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM and SIGUSR1 raise :class:`Interrupted` until :func:`defer_signals`, then only set the stop flag."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)


def defer_signals() -> None:
    """From now on a stop signal only sets the flag, read at the next step end (:class:`StopOnSignal`)."""
    _StopFlag.training = True


class LossCheck:
    """The training losses of the current optimizer step (one per micro-batch), kept on the device without a sync
    until the step ends (:meth:`take`)."""

    def __init__(self):
        self._losses: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach().reshape(-1)[:1].float())

    def take(self) -> torch.Tensor | None:
        """The step's losses (None when there were none), forgotten here."""
        losses, self._losses = (torch.cat(self._losses) if self._losses else None), []
        return losses


class StopOnSignal(TrainerCallback):
    """At each step end: all ranks agree whether a stop signal arrived (save and stop) and whether a training loss
    of the step was not finite (``losses``: raise ``NonFiniteLoss``); save at max_steps. A non-finite evaluation
    loss raises it too."""

    def __init__(self, losses: LossCheck | None = None):
        self.stopped_by: int | None = None
        self.losses = losses

    def on_train_begin(self, args, state, control, **kwargs):
        defer_signals()

    def on_step_end(self, args, state, control, **kwargs):
        flag = _StopFlag.signum or 0
        losses = self.losses.take() if self.losses is not None else None
        bad = (~torch.isfinite(losses)).any().to(torch.int64) if losses is not None else 0
        if args.world_size > 1 and torch.distributed.is_initialized():
            t = torch.tensor([flag, 0], device=args.device)
            t[1] = bad  # stays on the device: one sync per step, the all-reduce's
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag, bad = int(t[0].item()), int(t[1].item())
        if int(bad):
            mine = losses[~torch.isfinite(losses)] if losses is not None else []
            raise NonFiniteLoss("training loss", float(mine[0]) if len(mine) else "not finite on another rank",
                                state.global_step)
        if state.global_step >= state.max_steps:
            control.should_save = True
        elif flag:
            self.stopped_by = flag
            control.should_save = control.should_training_stop = control.should_log = True
            control.should_evaluate = False
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # the evaluation's gathered loss, the same on every rank: raised before it is written to metrics.jsonl
        # (this callback comes before MetricsWriter) and before this step's checkpoint is saved
        if logs and logs.get("eval_loss") is not None:
            check_finite("evaluation loss", logs["eval_loss"], state.global_step)


class ContinueSchedule(TrainerCallback):
    """Every rank, on a resume from a checkpoint saved under a shorter ``train.max_steps`` (an extension,
    ``memorymodels.extension``): the first added step takes the rebuilt schedule's learning rate. transformers
    rebuilds the schedule for the new total and restores its step count, but the optimizer state saved at the
    checkpoint holds the old schedule's next rate (0 at the end of a linear decay), which the first step would use."""

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if not isinstance(lr_scheduler, LambdaLR):  # DeepSpeed's own scheduler: left as it is
            return
        rates = [base * rule(lr_scheduler.last_epoch) for base, rule in zip(lr_scheduler.base_lrs,
                                                                            lr_scheduler.lr_lambdas)]
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate
        # the rate transformers logs for the step (get_last_lr) is restored from the old schedule too
        lr_scheduler.load_state_dict({**lr_scheduler.state_dict(), "_last_lr": rates})


class StartupRecorder(TrainerCallback):
    """The startup's last phases (a resumed checkpoint loaded, the first step done); then rank 0 writes the attempt's
    startup into the run's history and one line to the log, once (``memorymodels.startup``)."""

    def __init__(self, startup: Startup, run_dir: Path, log):
        self.startup, self.run_dir, self.log = startup, run_dir, log
        self.recorded = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # the Trainer has loaded the checkpoint's weights, optimizer and state
            self.startup.mark("checkpoint")

    def on_step_end(self, args, state, control, **kwargs):
        if self.recorded:
            return
        self.recorded = True
        self.startup.mark("first_step")
        if state.is_world_process_zero:
            record = self.startup.record()
            runrecord.record_startup(self.run_dir, record)
            self.log(f"startup: {describe(record)}")


class HeartbeatCallback(TrainerCallback):
    """Every rank: a heartbeat per step and per phase (``memorymodels.heartbeat``): the step, then what the Trainer is
    about to do after it (evaluate, save), every evaluation batch, and back to stepping once saved."""

    def __init__(self, heartbeat: Heartbeat):
        self.heartbeat = heartbeat

    def on_train_begin(self, args, state, control, **kwargs):
        self.heartbeat.beat("step", state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        # runs after DefaultFlowCallback and StopOnSignal have decided what follows this step
        phase = "evaluate" if control.should_evaluate else "save" if control.should_save else "step"
        self.heartbeat.beat(phase, state.global_step)

    def on_prediction_step(self, args, state, control, **kwargs):
        self.heartbeat.beat("evaluate")

    def on_evaluate(self, args, state, control, **kwargs):
        self.heartbeat.beat("save" if control.should_save else "step")

    def on_save(self, args, state, control, **kwargs):
        self.heartbeat.beat("step")


class MetricsWriter(TrainerCallback, ExportableState):
    """Rank 0: one metrics.jsonl line per logging step (train and eval logs of a step merged), with the run's
    cumulative compute and eval bits per byte from ``accounting`` (``memorymodels.accounting``), whose device-seconds
    total each checkpoint saves (``state``, in trainer_state.json) and a resumed attempt continues from."""

    def __init__(self, run_dir: Path, tokens_per_step: int, show: bool, accounting: RunAccounting | None = None,
                 trackers: Trackers | None = None):
        self.run_dir, self.tokens_per_step, self.show = run_dir, tokens_per_step, show
        self.accounting = accounting
        self.trackers = trackers  # TensorBoard / wandb: fed the same lines as metrics.jsonl (memorymodels.tracking)
        self.pending: dict | None = None
        self.last_step, self.last_time = 0, time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_step, self.last_time = state.global_step, time.time()
        if self.accounting is not None:
            saved = state.stateful_callbacks.get(type(self).__name__) or {}  # the resumed checkpoint's
            self.accounting.begin(saved.get("attributes"), metrics.read_metrics(self.run_dir), self.last_time)
            state.stateful_callbacks[type(self).__name__] = self.state()  # absent in older checkpoints
            self.record_totals(state)
        if self.trackers is not None and state.is_world_process_zero:
            self.trackers.begin(metrics.read_metrics(self.run_dir))  # metrics.jsonl as rolled back to the checkpoint

    def state(self) -> dict:
        return {"args": {}, "attributes": self.accounting.state() if self.accounting is not None else {}}

    def record_totals(self, state):
        if self.accounting is not None and state.is_world_process_zero:
            runrecord.update_run(self.run_dir, heldout=self.accounting.heldout, compute=self.accounting.summary(
                state.global_step, state.global_step * self.tokens_per_step))

    def flush(self):
        if self.pending is not None:
            if self.accounting is not None:
                self.pending = self.accounting.fill(self.pending)
            metrics.append_metrics(self.run_dir, self.pending)
            if self.trackers is not None:
                self.trackers.log(self.pending)
            if self.show:
                p = self.pending
                fields = [f"step {p['step']}"] + [f"{k} {p[k]:.4g}" for k in ("loss", "eval_loss", "eval_bits_per_byte",
                                                                              "tokens_per_s") if p.get(k) is not None]
                print("  ".join(fields), flush=True)
            self.pending = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        step, now = state.global_step, time.time()
        if "loss" in logs:
            self.flush()
            elapsed = now - self.last_time
            rate = (step - self.last_step) * self.tokens_per_step / elapsed if elapsed > 0 else None
            self.last_step, self.last_time = step, now
            self.pending = {"step": step, "loss": logs["loss"], "eval_loss": None,
                            "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                            "tokens_per_s": rate, "tokens": step * self.tokens_per_step, "time": now}
        elif "eval_loss" in logs:
            if self.pending is not None and self.pending["step"] == step:
                self.pending["eval_loss"] = logs["eval_loss"]
            else:
                self.flush()
                self.pending = {"step": step, "loss": None, "eval_loss": logs["eval_loss"],
                                "learning_rate": None, "grad_norm": None, "tokens_per_s": None,
                                "tokens": step * self.tokens_per_step, "time": now}
            self.flush()

    def on_step_end(self, args, state, control, **kwargs):
        if self.pending is not None and self.pending["step"] < state.global_step:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        self.flush()
        self.record_totals(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()
        self.record_totals(state)
        if self.trackers is not None:
            self.trackers.close()
