"""The model benchmarks run end to end at toy sizes, so a change to the library cannot silently break them.

Their numbers are measured by running them (BENCHMARKS.md), never asserted here; the GPU script's PASS/FAIL report
is checked on the rows the CPU run produces.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_models  # noqa: E402
import models  # noqa: E402

TOY = ["--vocab", "64", "--dim", "32", "--depth", "1", "--length", "16", "--batch", "2", "--threads", "1",
       "--rounds", "1", "--steps", "1", "--warmup", "1", "--peak-size", "64", "--no-compile",
       "--glibc-default-malloc"]  # the malloc setting would outlive the test in this process


def test_model_benchmark_times_the_seed_formulation_beside_the_library():
    threads = torch.get_num_threads()
    try:
        rows, peak = models.main(TOY + ["--only", "autoencoding_mixer", "variable_memory_mixer"])
    finally:
        torch.set_num_threads(threads)
    assert [(r["family"], r["implementation"]) for r in rows] == [
        ("autoencoding_mixer", "seed formulation (eager)"), ("autoencoding_mixer", "library (eager)"),
        ("variable_memory_mixer", "seed formulation (eager)"), ("variable_memory_mixer", "library (eager)"),
    ]
    assert peak > 0 and all(r["GFLOP"] > 0 and r["tokens/s"] > 0 for r in rows)
    lines, table, ok = gpu_models.report(rows, peak, "cpu")
    assert lines[1].startswith(("PASS: library (eager)", "FAIL: library (eager)")) and "target 2x" in lines[1]
    assert "target 40%" in lines[2] and len(table) == 2 + len(rows)
