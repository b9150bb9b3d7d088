"""The GPU benchmark of the model library: one script to run as-is on one GPU (H100 or H200).

    .venv/bin/python benchmarks/gpu_models.py            # ~3-5 minutes on an H100, compile included
    .venv/bin/python benchmarks/gpu_models.py --quick    # the autoencoder only, fewer rounds

Reference config: bf16 weights and activations, V=8000, d=1024, depth 8 (encoder) + 8 (decoder), L=512, batch 32.
Targets: the library's AutoencodingMixer training step at >= 2x the seed formulation's tokens/s and >= 40% of the
bf16 matmul peak measured in the same run (model FLOPs utilisation). Prints the table, a PASS/FAIL line per target,
and writes both as markdown to $OUT/gpu_models.md when $OUT is set (the device runner's output folder).
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (benchmarks/models.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="autoencoding_mixer only, 3 rounds")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_models.py: no CUDA device; run benchmarks/models.py for the CPU benchmark", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    argv = ["--device", "cuda", "--dtype", "bf16", "--vocab", "8000", "--dim", "1024", "--depth", "8",
            "--length", "512", "--batch", "32", "--peak-size", "8192", "--steps", "5", "--warmup", "3",
            "--rounds", "3" if args.quick else "5"]
    if args.quick:
        argv += ["--only", "autoencoding_mixer"]
    else:
        argv += ["--only", "autoencoding_mixer", "language_mixer", "variable_memory_mixer", "llama_clm"]
    rows, peak = models.main(argv)
    lines, table, ok = report(rows, peak, torch.cuda.get_device_name())
    print("\n".join(lines))
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_models.md"
        tmp = out.with_suffix(".tmp")
        tmp.write_text("\n".join(lines + [""] + table) + "\n")
        tmp.rename(out)
    return 0 if ok else 1


def report(rows, peak, device) -> tuple[list[str], list[str], bool]:
    """PASS/FAIL lines for the two targets, the markdown table, and whether both targets were met."""
    ae = {r["implementation"]: r for r in rows if r["family"] == "autoencoding_mixer"}
    seed = ae["seed formulation (eager)"]
    best = max((r for name, r in ae.items() if name.startswith("library")), key=lambda r: r["tokens/s"])
    speedup, mfu = best["tokens/s"] / seed["tokens/s"], best["% of peak"]
    lines = [
        f"device: {device}; matmul peak {peak / 1e12:.1f} TFLOP/s (measured)",
        f"{'PASS' if speedup >= 2 else 'FAIL'}: {best['implementation']} {speedup:.2f}x the seed formulation (target 2x)",
        f"{'PASS' if mfu >= 40 else 'FAIL'}: {best['implementation']} {mfu:.0f}% of matmul peak (target 40%)",
    ]
    table = ["| family | implementation | GFLOP/step | ms/step | tokens/s | % of peak | vs first |",
             "|---|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['family']} | {r['implementation']} | {r['GFLOP']:.0f} | {r['ms/step']:.1f} | "
              f"{r['tokens/s']:.0f} | {r['% of peak']:.0f}% | {r['vs first']:.2f}x |" for r in rows]
    return lines, table, speedup >= 2 and mfu >= 40


if __name__ == "__main__":
    sys.exit(main())
