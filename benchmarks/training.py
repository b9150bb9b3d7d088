"""Overhead of the trainer (transformers.Trainer + this project's callbacks) against a bare PyTorch training loop.

    .venv/bin/python benchmarks/training.py                       # debug and cpu-preset autoencoders, CPU
    .venv/bin/python benchmarks/training.py --rounds 5 --steps 30

Both loops train the same model on the same pretokenized rows (stdlib-small, prepared into $MEMORYMODELS_STATE/cache)
with AdamW, the same batch size and gradient clipping. The trainer loop is ``memorymodels.train.RunTrainer`` with the
run's callbacks (metrics.jsonl line every step, the per-step stop-signal check), as ``python -m memorymodels.train``
runs it; checkpoints and evaluation are off. Steps after the first are timed. The loops run in interleaved rounds
(bare, trainer, bare, ...) so that load from other processes hits both alike; the table reports median rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from memorymodels.callbacks import MetricsWriter, StopOnSignal
from memorymodels.experiment import build, experiment_from_dict, load_data, model_build_args
from memorymodels.train import RunTrainer, training_arguments
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

CASES = {
    "debug (d32 n2, ctx 64, b8)": {"preset": "debug", "context": 64, "batch": 8},
    "cpu (d256 n4, ctx 128, b16)": {"preset": "cpu", "context": 128, "batch": 16},
}


def experiment_for(case: dict, steps: int, root: str):
    return experiment_from_dict({
        "model": {"name": "autoencoding_mixer", "preset": case["preset"]},
        "data": {"corpus": "stdlib-small", "vocab_size": 512, "context": case["context"]},
        "train": {"max_steps": steps, "batch_size": case["batch"], "warmup_steps": 0, "eval_steps": 0,
                  "save_steps": 10 * steps, "logging_steps": 1},
        "output": {"checkpoint_root": root},
    }, "benchmarks/training.py")


def bare_loop(experiment, data, steps: int) -> float:
    """Tokens per second of a plain loop: shuffled rows, forward, backward, clip, AdamW, zero_grad."""
    torch.manual_seed(0)
    model = build(model_build_args(experiment, data.n_vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=experiment.train.learning_rate, weight_decay=0.0)
    loader = torch.utils.data.DataLoader(data.train, batch_size=experiment.train.batch_size, shuffle=True)
    batches = iter(loader)
    start = None
    for step in range(steps):
        if step == 1:
            start = time.perf_counter()
        batch = next(batches)
        loss, _ = model(batch["input_ids"], labels=batch["labels"], attention_mask=batch["attention_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return (steps - 1) * experiment.train.batch_size * experiment.data.context / (time.perf_counter() - start)


class StepClock(TrainerCallback):
    """Times from the end of step 1 to the end of the last step."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def trainer_loop(experiment, data, steps: int) -> float:
    """Tokens per second of RunTrainer with the run's callbacks (no checkpoints, no evaluation)."""
    torch.manual_seed(0)
    model = build(model_build_args(experiment, data.n_vocab))
    with tempfile.TemporaryDirectory() as run_dir:
        args = training_arguments(experiment, Path(run_dir), "fp32", show_progress=False)
        args.save_strategy = "no"
        clock = StepClock()
        tokens_per_step = experiment.train.batch_size * experiment.data.context
        trainer = RunTrainer(model=model, args=args, train_dataset=data.train,
                             callbacks=[StopOnSignal(), MetricsWriter(Path(run_dir), tokens_per_step, show=False),
                                        clock])
        trainer.remove_callback(PrinterCallback)  # nothing printed
        trainer.train()
    return (steps - 1) * tokens_per_step / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print("| case | bare loop tokens/s | trainer tokens/s | trainer / bare |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for name, case in CASES.items():
            experiment = experiment_for(case, args.steps, root)
            data = load_data(experiment)
            bare, trained = [], []
            for _ in range(args.rounds):
                bare.append(bare_loop(experiment, data, args.steps))
                trained.append(trainer_loop(experiment, data, args.steps))
            b, t = statistics.median(bare), statistics.median(trained)
            print(f"| {name} | {b:,.0f} | {t:,.0f} | {t / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
