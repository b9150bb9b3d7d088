"""A run's cumulative training compute and its evaluations in bits per byte: what each metrics.jsonl record carries.

The trainer's ``MetricsWriter`` holds one :class:`RunAccounting` and passes every record through :meth:`fill`:

- ``flops``: training FLOPs so far, ``tokens x training FLOPs per token`` (``memorymodels.compute``). ``tokens``
  counts whole steps (``step x tokens per step``), so after a resume from checkpoint-S the count continues from S:
  the steps an interrupted attempt ran past its last checkpoint are rolled back with their metrics lines
  (``runs.roll_back_metrics``) and counted once, when they are trained again.
- ``device_seconds``: wall seconds inside the training loop (steps, evaluations, checkpoints) x processes, summed
  over attempts. The total at each checkpoint is saved in that checkpoint (``trainer_state.json``, through the
  Trainer's ``stateful_callbacks``) and a resumed attempt starts from it, so it too is counted up to the checkpoint
  only; data preparation and model building before training are not counted.
- ``eval_bits_per_byte``: ``eval_loss`` converted with the held-out split's bytes per target token
  (``memorymodels.heldout``), where there is an ``eval_loss``.

``run.json`` gets ``compute`` (the per-token count and the totals at the last checkpoint or end) and ``heldout``
(the held-out bytes and the compressor baselines on them).
"""

from __future__ import annotations

import time

from memorymodels.compute import BACKWARD_FACTOR, ModelFlops, flops_of_build
from memorymodels.heldout import eval_bits_per_byte, heldout_summary

RULE = (f"training FLOPs = (1 + {BACKWARD_FACTOR}) x forward matmul and token-mixing FLOPs (frozen parts 1 x), "
        "dense as computed; memorymodels/compute.py")


class RunAccounting:
    """Cumulative FLOPs and device seconds of one run, and the eval-loss conversion (see the module docstring)."""

    STATE_KEY = "device_seconds"

    def __init__(self, count: ModelFlops, *, world_size: int, heldout: dict | None = None):
        self.count, self.world_size = count, world_size
        self.heldout = heldout or {}
        self.base_seconds, self.start = 0.0, time.time()

    @classmethod
    def for_run(cls, build: dict, world_size: int, test_set, tokenizer, eval_rows: int, *,
                recorded: dict | None = None, writes_metrics: bool = True) -> "RunAccounting":
        """The accounting of a model (``model_build_args``) evaluated on the first ``eval_rows`` rows of
        ``test_set``. The held-out summary is computed once per run: an attempt that resumes takes ``recorded``
        (run.json's ``heldout``) when it covers the same rows (xz -9 and zstd -19 of the held-out text take seconds
        at thousands of rows); a process that writes no metrics (ranks other than 0) needs none."""
        rows = min(eval_rows, len(test_set))
        if not writes_metrics:
            heldout = None
        elif recorded and recorded.get("rows") == rows and "bytes_per_target" in recorded:
            heldout = recorded
        else:
            heldout = heldout_summary(test_set, tokenizer, eval_rows, build)
        return cls(flops_of_build(build), world_size=world_size, heldout=heldout)

    def begin(self, saved: dict | None, records: list[dict], now: float | None = None) -> None:
        """Start counting device seconds: from the resumed checkpoint's saved total, else from the last metrics
        record (a checkpoint written before this accounting existed), else from 0."""
        self.start = time.time() if now is None else now
        if saved and saved.get(self.STATE_KEY) is not None:
            self.base_seconds = float(saved[self.STATE_KEY])
        else:
            last = next((r["device_seconds"] for r in reversed(records) if r.get("device_seconds") is not None), 0.0)
            self.base_seconds = float(last)

    def device_seconds(self, now: float | None = None) -> float:
        return self.base_seconds + ((time.time() if now is None else now) - self.start) * self.world_size

    def flops(self, tokens: int) -> int:
        """Training FLOPs of ``tokens`` input tokens (whole rows)."""
        return tokens * self.count.training_per_row // self.count.tokens_per_row

    def fill(self, record: dict) -> dict:
        """The record with ``flops``, ``device_seconds`` (at its ``time``) and ``eval_bits_per_byte`` added."""
        record = dict(record)
        record["flops"] = self.flops(record["tokens"])
        record["device_seconds"] = self.device_seconds(record.get("time"))
        record["eval_bits_per_byte"] = eval_bits_per_byte(record.get("eval_loss"),
                                                          self.heldout.get("bytes_per_target"))
        return record

    def state(self) -> dict:
        """What the checkpoint saves (``{"device_seconds": total now}``)."""
        return {self.STATE_KEY: self.device_seconds()}

    def summary(self, step: int, tokens: int) -> dict:
        """run.json's ``compute``: the count per token and row, and the totals at ``step``."""
        return {"training_flops_per_token": self.count.training_per_token,
                "training_flops_per_row": self.count.training_per_row,
                "forward_flops_per_row": dict(self.count.forward), "frozen": list(self.count.frozen),
                "tokens_per_row": self.count.tokens_per_row, "rule": RULE, "world_size": self.world_size,
                "step": step, "tokens": tokens, "flops": self.flops(tokens), "device_seconds": self.device_seconds()}
