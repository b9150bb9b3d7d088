"""Training-step throughput of the model library against the seed's formulation, and the fraction of matmul peak.

    .venv/bin/python benchmarks/models.py                          # every family at its reference config (CPU)
    .venv/bin/python benchmarks/models.py --only autoencoding_mixer --rounds 5
    .venv/bin/python benchmarks/models.py --device cuda --dtype bf16 --dim 1024 --depth 8 --length 512 --batch 32

A training step is forward + backward + AdamW step on one batch of random tokens. "Model FLOPs" are the matmul and
token-mixing FLOPs of forward + backward from the library's analytic count, ``memorymodels.compute`` (3 x forward;
the token mixing dense, masked half included, as it is computed; Llama attention included). The same number is used
for every implementation of an architecture, so the % of peak columns compare like with like. The peak is the best
rate of a large matmul in the same dtype, measured in the same run. Implementations are timed in interleaved rounds
(seed, eager, compiled, seed, ...) so that load from other processes hits them alike; the table reports the median
round.

The seed formulations (``tests/models/seed_reference.py``): AutoencodingMixer with the causal mask written into
``conv.weight.data`` every forward, the unroll as a Python loop of L slices + cat, cross entropy on [b, V, t] logits;
VariableMemoryMixer encoding and decoding its chunks one at a time in Python loops.

On CPU the process keeps freed host memory (``memorymodels/hostmemory.py``, as the trainer does) for every
implementation alike; ``--glibc-default-malloc`` measures glibc's defaults instead, under which a quarter of a step
at the reference size is page faults on freshly mapped logits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.models.seed_reference

from memorymodels.compute import model_flops  # noqa: E402
from memorymodels.hostmemory import keep_freed_host_memory  # noqa: E402
from memorymodels.models import build_model  # noqa: E402
from tests.models.seed_reference import SeedAutoencodingMixer, SeedVariableMemoryMixer  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> tuple[float, float]:
    """Best FLOP/s of an n x n x n matmul (the machine's practical peak for this dtype): (per wall s, per CPU s)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best_wall = best_cpu = 0.0
    for _ in range(repeats + 1):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        a @ b
        sync(device)
        best_wall = max(best_wall, 2 * n**3 / (time.perf_counter() - start))
        best_cpu = max(best_cpu, 2 * n**3 / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu


class Runner:
    """One implementation: a model, its optimizer and a timed training step."""

    def __init__(self, label, model, ids, device, dtype, compile=False, compile_mode=None):
        self.label, self.ids, self.device = label, ids, device
        self.model = model.to(device=device, dtype=dtype)
        # fused AdamW for every implementation alike: the unfused update is ~15% of a CPU step at this size
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        self.forward = torch.compile(self.model, mode=compile_mode) if compile else self.model
        self.times: list[float] = []  # wall seconds per step, one entry per round
        self.cpu_times: list[float] = []  # process CPU seconds per step (all threads), one entry per round

    def step(self) -> None:
        loss, _ = self.forward(self.ids, labels=self.ids)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> None:
        sync(self.device)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        sync(self.device)
        self.times.append((time.perf_counter() - start) / steps)
        self.cpu_times.append((time.process_time() - cpu) / steps)


def benchmark(name, runners, flops, tokens, peak_fn, rounds, steps, warmup) -> tuple[list[dict], float]:
    """Interleaved rounds; each round also measures the matmul peak, so % of peak compares within one round.

    Wall-clock columns: median over rounds. CPU-time columns (CPU only): the least disturbed round (minimum CPU
    seconds per step, against the best matmul rate per CPU second); on a shared machine these are the stable ones,
    and tokens per CPU-second times the thread count is the rate on that many dedicated cores.
    """
    for runner in runners:  # compile and warm up first, outside the timing
        for _ in range(warmup):
            runner.step()
    peaks = []
    for _ in range(rounds):
        peaks.append(peak_fn())
        for runner in runners:
            runner.timed(steps)
    rows, base, base_cpu = [], None, None
    best_cpu_peak = max(p[1] for p in peaks)
    for runner in runners:
        seconds = statistics.median(runner.times)
        fraction = statistics.median(flops / t / p[0] for t, p in zip(runner.times, peaks))
        cpu_seconds = min(runner.cpu_times)
        rate, cpu_rate = tokens / seconds, tokens / cpu_seconds
        base, base_cpu = base or rate, base_cpu or cpu_rate
        rows.append({"family": name, "implementation": runner.label, "ms/step": seconds * 1e3, "tokens/s": rate,
                     "% of peak": 100 * fraction, "vs first": rate / base,
                     "tokens/cpu-s": cpu_rate, "cpu % of peak": 100 * flops / cpu_seconds / best_cpu_peak,
                     "cpu vs first": cpu_rate / base_cpu, "GFLOP": flops / 1e9})
    return rows, statistics.median(p[0] for p in peaks)


def families(args) -> dict:
    """name -> (registry params, the seed formulation's constructor or None): the reference configs."""
    V, d, depth, L = args.vocab, args.dim, args.depth, args.length
    chunk = L // 4
    return {
        "autoencoding_mixer": (dict(dim=d, depth=depth, length=L), lambda: SeedAutoencodingMixer(V, d, depth, L)),
        "language_mixer": (dict(dim=d, depth=2 * depth, length=L), None),
        "variable_memory_mixer": (
            dict(encoder_dim=d // 2, dim=d, depth=depth, length=chunk, n_chunks=4),
            lambda: SeedVariableMemoryMixer(V, d // 2, d, depth, chunk, n_chunks=4),
        ),
        "memory_mixer": (dict(encoder_dim=d, dim=d, depth=depth, length=L), None),
        "llama_clm": (dict(dim=d, depth=2 * depth, length=L, n_heads=max(4, d // 64)), None),
        "transformer_autoencoder": (dict(dim=d, depth=depth, length=L, n_heads=max(4, d // 64)), None),
    }


def main(argv=None) -> tuple[list[dict], float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks = decoder blocks")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--only", nargs="*", help="families to run (default: all)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--glibc-default-malloc", action="store_true",
                        help="leave glibc's mmap/trim defaults (the trainer turns them off on CPU: hostmemory.py)")
    args = parser.parse_args(argv)
    # as the trainer does on CPU, for every implementation alike: freed logits are reused, not faulted back in
    kept = args.device == "cpu" and not args.glibc_default_malloc and keep_freed_host_memory()

    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    rows, peaks = [], []
    for name, (params, seed_model) in families(args).items():
        if args.only and name not in args.only:
            continue
        model = build_model(name, n_vocab=args.vocab, **params)
        ids = torch.randint(0, args.vocab, (args.batch, model.input_length), device=args.device)
        flops = args.batch * model_flops(name, n_vocab=args.vocab, **params).training_per_row
        runners = []
        if seed_model is not None:
            runners.append(Runner("seed formulation (eager)", seed_model(), ids, args.device, dtype))
        runners.append(Runner("library (eager)", model, ids, args.device, dtype))
        if not args.no_compile:
            compiled = build_model(name, n_vocab=args.vocab, **params)
            runners.append(Runner("library (torch.compile)", compiled, ids, args.device, dtype, compile=True,
                                  compile_mode=args.compile_mode))
        tokens = args.batch * model.input_length
        new, peak = benchmark(name, runners, flops, tokens, lambda: matmul_peak(args.device, dtype, args.peak_size),
                              args.rounds, args.steps, args.warmup)
        if args.device != "cpu":
            for r in new:
                r["tokens/cpu-s"] = None
        rows += new
        peaks.append(peak)
        print_table(new, file=sys.stderr)  # progress
    peak = statistics.median(peaks)
    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" if args.device == "cpu" else ""
    load += "; host malloc keeps freed memory" if kept else "; host malloc: glibc defaults" if args.device == "cpu" else ""
    print(f"\nmatmul peak ({args.device}, {args.dtype}, n={args.peak_size}, median of rounds): {peak / 1e9:.1f} GFLOP/s"
          f"{load}; threads={args.threads}; V={args.vocab}, d={args.dim}, depth={args.depth}, L={args.length}, "
          f"batch={args.batch}\n")
    print_table(rows)
    return rows, peak


def print_table(rows, file=sys.stdout) -> None:
    cpu = "tokens/cpu-s" in rows[0] and rows[0]["tokens/cpu-s"] is not None
    head = "| family | implementation | GFLOP/step | ms/step | tokens/s | % of peak | vs first |"
    line = "|---|---|---:|---:|---:|---:|---:|"
    if cpu:
        head += " tokens/CPU-s | % of peak (CPU time) | vs first (CPU time) |"
        line += "---:|---:|---:|"
    print(head, file=file)
    print(line, file=file)
    for r in rows:
        text = (f"| {r['family']} | {r['implementation']} | {r['GFLOP']:.1f} | {r['ms/step']:.0f} | "
                f"{r['tokens/s']:.0f} | {r['% of peak']:.0f}% | {r['vs first']:.2f}x |")
        if cpu:
            text += f" {r['tokens/cpu-s']:.0f} | {r['cpu % of peak']:.0f}% | {r['cpu vs first']:.2f}x |"
        print(text, file=file)


if __name__ == "__main__":
    main()
