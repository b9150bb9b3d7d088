"""Experiment trackers that continue across requeues: TensorBoard and Weights & Biases (``train.report_to``).

    python -m memorymodels.train --experiment configs/experiments/debug.yaml --set 'train.report_to=[tensorboard]'
    tensorboard --logdir runs/                      # every run's curve, under RUN_DIR/tensorboard/
    WANDB_MODE=offline ... --set 'train.report_to=[wandb]'; wandb sync RUN_DIR/wandb/offline-run-*   # no network

A run's tracker identity lives in its run directory (``RUN_DIR/tracking.json``: ``id``, ``name``, ``group``), so
every attempt of a requeued or resubmitted run writes to the same curve; the launcher sets ``group`` to the sweep's
name for a sweep's cells (:func:`tracker_identity`).

One curve, each logged step once, whatever interrupted the run: ``metrics.jsonl`` is the record (on resume the
trainer moves lines logged after the checkpoint aside, ``memorymodels.metrics.roll_back_metrics``), and the trackers
follow it:

- TensorBoard: each attempt rewrites ``RUN_DIR/tensorboard/`` from metrics.jsonl as resumed (one events file, the
  original wall times), then appends as it logs; an attempt killed after its checkpoint leaves no extra steps behind.
- wandb (``wandb.init(id=..., resume="allow")``): wandb keeps a step once it has it, so an attempt logs only the
  steps after the last one the earlier attempts logged (those between a checkpoint and a kill stay as first logged);
  the first attempt with wandb sends the run's earlier lines. Offline mode (``WANDB_MODE=offline``) needs no network.

The trackers' packages are imported only when asked for (``pip install -e '.[tracking]'``); the launcher reads this
module without torch.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from memorymodels.fileio import read_json, read_json_lines, write_json
from memorymodels.rundir import RunPaths

TRACKERS = ("tensorboard", "wandb")
SCALARS = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
           "tokens_per_s": "train/tokens_per_s", "eval_loss": "eval/loss", "eval_bits_per_byte": "eval/bits_per_byte",
           "tokens": "compute/tokens", "flops": "compute/flops", "device_seconds": "compute/device_seconds"}
"""metrics.jsonl keys -> tracker names."""


PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
"""The package each tracker needs (``pip install -e '.[tracking]'``)."""
WANDB_QUIET_MODES = ("offline", "disabled", "dryrun")
"""``WANDB_MODE`` values that need no account."""


def tracker_problems(report_to: list[str], environ: dict[str, str], *, packages: bool = True) -> list[str]:
    """Why the trackers of ``train.report_to`` would stop a job that has the environment ``environ``, found before it
    is queued (torch-free; the job would fail only after making its run directory): a tracker's package missing
    (``packages``: asked of this interpreter, the job's unless it runs in a container), wandb without an account
    (no ``WANDB_API_KEY``, no ``api.wandb.ai`` entry in ~/.netrc) and not ``WANDB_MODE=offline``."""
    import importlib.util
    import netrc

    problems = []
    for name in report_to:
        package = PACKAGES.get(name)
        if packages and package and importlib.util.find_spec(package) is None:
            problems.append(f"'train.report_to: [{name}]' needs the {package} package, which this Python lacks: "
                            f"pip install -e '.[tracking]', or remove {name}")
    if "wandb" in report_to and environ.get("WANDB_MODE", "").lower() not in WANDB_QUIET_MODES \
            and not environ.get("WANDB_API_KEY"):
        try:
            logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        if not logged_in:
            problems.append("'train.report_to: [wandb]' has no wandb account here (no WANDB_API_KEY, no `wandb "
                            "login` in ~/.netrc) and WANDB_MODE is not offline: the job would stop at its start. Log "
                            "in, or set WANDB_MODE=offline (the profile's env:, or the shell's)")
    return problems


def tracker_identity(run_dir: Path, group: str | None = None) -> dict:
    """``RUN_DIR/tracking.json``, created on first use (a random id, the run's name); ``group`` (a sweep's name)
    recorded when given."""
    path = RunPaths(run_dir).tracking
    info = read_json(path) or {}
    before = dict(info)
    info.setdefault("id", secrets.token_hex(8))
    info.setdefault("name", Path(run_dir).name)
    if group is not None:
        info["group"] = group
    if info != before:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json(path, info)
    return info


def scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl line's values, by tracker name (missing and null values left out)."""
    return {name: float(record[key]) for key, name in SCALARS.items() if record.get(key) is not None}


class Trackers:
    """Rank 0's trackers for one attempt: :meth:`begin` with metrics.jsonl as resumed, :meth:`log` per line,
    :meth:`close` at the end."""

    def __init__(self, run_dir: Path, report_to: list[str], config: dict):
        self.run_dir, self.report_to, self.config = Path(run_dir), list(report_to), config
        self.tensorboard = None
        self.wandb = None
        self.wandb_after = 0

    def begin(self, records: list[dict]) -> None:
        identity = tracker_identity(self.run_dir)
        if "tensorboard" in self.report_to:
            self._begin_tensorboard(records)
        if "wandb" in self.report_to:
            self._begin_wandb(records, identity)

    def _begin_tensorboard(self, records: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (the tracking extra)

        folder = RunPaths(self.run_dir).tensorboard
        shutil.rmtree(folder, ignore_errors=True)  # rebuilt from metrics.jsonl, which the resume rolled back
        self.tensorboard = SummaryWriter(log_dir=str(folder))
        for record in records:
            self._write_tensorboard(record)
        self.tensorboard.flush()

    def _write_tensorboard(self, record: dict) -> None:
        for name, value in scalars(record).items():
            self.tensorboard.add_scalar(name, value, global_step=int(record["step"]), walltime=record.get("time"))

    def _begin_wandb(self, records: list[dict], identity: dict) -> None:
        import wandb  # the tracking extra; WANDB_MODE=offline works without network

        earlier = records + read_json_lines(RunPaths(self.run_dir).metrics_rolled_back)
        self.wandb = wandb.init(id=identity["id"], name=identity["name"], group=identity.get("group"),
                                resume="allow", dir=str(self.run_dir), config=self.config, project="memorymodels")
        if identity.get("wandb_started"):
            self.wandb_after = max((int(r.get("step", 0)) for r in earlier), default=0)
        else:  # the first attempt with wandb: the run's lines so far
            for record in records:
                self._write_wandb(record)
            write_json(RunPaths(self.run_dir).tracking, {**identity, "wandb_started": True})

    def _write_wandb(self, record: dict) -> None:
        step = int(record["step"])
        if step > self.wandb_after:
            self.wandb.log(scalars(record), step=step)
            self.wandb_after = step

    def log(self, record: dict) -> None:
        if self.tensorboard is not None:
            self._write_tensorboard(record)
            self.tensorboard.flush()  # the line is in metrics.jsonl now; the curve shows it too
        if self.wandb is not None:
            self._write_wandb(record)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
