"""The model codec against xz, zstd and gzip: real .mmz sizes, the model's own estimate, compress and decompress speeds.

    .venv/bin/python benchmarks/compress.py RUN_DIR                         # held-out bytes of the run's test split
    .venv/bin/python benchmarks/compress.py RUN_DIR FILE [FILE ...] --max-bytes 65536 --streams 1 16 auto
    .venv/bin/python benchmarks/compress.py RUN_DIR --overlaps 0 16 32 64   # estimate per window overlap

For each file (by default the run's held-out rows, ``--rows`` of its test split decoded as ``memorymodels.evaluate``
scores them) and each ``--streams`` B, it compresses with ``memorymodels.compress`` (in memory, one process, the
command line's numerics: MKL in strict CNR mode), decompresses, checks the bytes are the same, and prints two
markdown tables:
- sizes in bits per byte: the .mmz file ("stored" where the model would have expanded it), the model's estimate
  (sum of -log2 p over the coded tokens plus the headers), xz -9, zstd -19 and gzip -9 on the same bytes; for the
  held-out rows also the run's own ``eval_bits_per_byte`` at that checkpoint (the cross entropy the training scored);
- speeds in kB/s of input (1 kB = 1,000 bytes), compress and decompress, of all four (model loading not included),
  by the wall clock and per CPU-second of this process (on a shared machine the second is what one core does).

``--repeat N`` reports the fastest of N runs (the machine's other work only ever slows a run down).
``--overlaps`` adds the model's estimate and the compress speed for each window overlap.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before any matrix product, as the codec's command line does

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorymodels import compress as codec  # noqa: E402


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) since ``start``."""
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def baselines(data: bytes) -> dict[str, tuple[int, tuple[float, float], tuple[float, float]]]:
    """(compressed bytes, compress (wall, CPU) seconds, decompress (wall, CPU) seconds) of xz -9, zstd -19 and
    gzip -9."""
    import zstandard

    coders = {"xz -9": (lambda d: lzma.compress(d, preset=9), lzma.decompress),
              "zstd -19": (zstandard.ZstdCompressor(level=19).compress, zstandard.ZstdDecompressor().decompress),
              "gzip -9": (lambda d: gzip.compress(d, 9), gzip.decompress)}
    out = {}
    for name, (pack, unpack) in coders.items():
        began = clocks()
        packed = pack(data)
        packing, middle = since(began), clocks()
        assert unpack(packed) == data
        out[name] = (len(packed), packing, since(middle))
    return out


def heldout(run_dir: Path, rows: int | None) -> tuple[bytes, int]:
    """The held-out text ``memorymodels.evaluate`` scores (the first rows of the run's test split) and the rows."""
    from memorymodels.experiment import experiment_from_dict, load_data, load_fast_tokenizer
    from memorymodels.heldout import heldout_bytes
    from memorymodels.rundir import RunPaths
    from memorymodels.runrecord import read_run_json

    info = read_run_json(run_dir)
    experiment = experiment_from_dict(info["config"], source=str(RunPaths(run_dir).run_json))
    data = load_data(experiment)
    rows = rows or experiment.train.eval_rows or 64
    return heldout_bytes(data.test, load_fast_tokenizer(data.tokenizer_dir), rows)[0], rows


def eval_bits_per_byte(run_dir: Path, step: int) -> float | None:
    """The run's ``eval_bits_per_byte`` logged at ``step`` (its held-out rows), if any."""
    from memorymodels.metrics import read_metrics

    values = [r["eval_bits_per_byte"] for r in read_metrics(run_dir)
              if r.get("step") == step and r.get("eval_bits_per_byte") is not None]
    return values[-1] if values else None


def measure(coder: codec.Coder, name: str, data: bytes, streams: int | None, overlap: int | None, threads: int,
            repeat: int) -> dict:
    """One file at one B; the times are the fastest of ``repeat`` runs (each clock on its own)."""
    runs = []
    for _ in range(repeat):
        blob, stats = codec.compress(coder, data, streams=streams, overlap=overlap, threads=threads)
        back, decoded = codec.decompress(coder, blob, name, threads=threads)
        if back != data:
            raise SystemExit(f"{name}: the round trip changed the bytes")
        runs.append((stats, decoded, baselines(data)))
    fastest = lambda times: tuple(min(t[i] for t in times) for i in range(2))  # noqa: E731
    return {"file": name, "bytes": len(data), "tokens": stats.tokens, "streams": stats.streams, "mmz": len(blob),
            "stored": stats.stored, "estimate": stats.estimate_bits / 8 + stats.output_bytes - stats.payload_bytes,
            "baselines": {k: (size, fastest([r[2][k][1] for r in runs]), fastest([r[2][k][2] for r in runs]))
                          for k, (size, _, _) in runs[0][2].items()},
            "compress_s": fastest([(r[0].seconds, r[0].cpu_seconds) for r in runs]),
            "decompress_s": fastest([(r[1].seconds, r[1].cpu_seconds) for r in runs])}


def size_table(rows: list[dict], reference: float | None) -> str:
    bpb = lambda size, row: f"{8 * size / row['bytes']:.3f}" if row["bytes"] else "-"  # noqa: E731
    lines = ["| file | bytes | tokens | B | .mmz bytes | .mmz bits/byte | estimate | xz -9 | zstd -19 | gzip -9 |",
             "|---" * 10 + "|"]
    for r in rows:
        b = r["baselines"]
        lines.append(f"| {r['file']} | {r['bytes']:,} | {r['tokens']:,} | {r['streams']} | {r['mmz']:,}"
                     f"{' (stored)' if r['stored'] else ''} | {bpb(r['mmz'], r)} | {bpb(r['estimate'], r)} "
                     f"| {bpb(b['xz -9'][0], r)} | {bpb(b['zstd -19'][0], r)} | {bpb(b['gzip -9'][0], r)} |")
    if reference is not None:
        lines.append(f"\nThe run's own eval_bits_per_byte on the held-out rows at this checkpoint: {reference:.3f}")
    return "\n".join(lines)


def speed_table(rows: list[dict], clock: int) -> str:
    """kB/s by the wall clock (``clock`` 0) or per CPU-second (1)."""
    rate = lambda r, seconds: f"{r['bytes'] / seconds[clock] / 1000:,.1f}" if seconds[clock] > 0 else "-"  # noqa
    lines = ["| file | B | .mmz compress / decompress | xz -9 | zstd -19 | gzip -9 |", "|---" * 6 + "|"]
    for r in rows:
        b = r["baselines"]
        cells = " | ".join(f"{rate(r, b[k][1])} / {rate(r, b[k][2])}" for k in ("xz -9", "zstd -19", "gzip -9"))
        lines.append(f"| {r['file']} | {r['streams']} | {rate(r, r['compress_s'])} / {rate(r, r['decompress_s'])} "
                     f"| {cells} |")
    return "\n".join(lines)


def overlap_table(coder: codec.Coder, files: list[tuple[str, bytes]], overlaps: list[int], streams: int | None,
                  threads: int) -> str:
    lines = [f"| file | overlap (L = {coder.length}) | estimate bits/byte | compress kB/s |", "|---|---|---|---|"]
    for name, data in files:
        for overlap in overlaps:
            _, stats = codec.compress(coder, data, overlap=overlap, streams=streams, threads=threads)
            lines.append(f"| {name} | {overlap} | {stats.estimate_bits / len(data):.3f} "
                         f"| {len(data) / stats.seconds / 1000:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained causal LM's run directory")
    parser.add_argument("files", type=Path, nargs="*", help="files to compress (default: the held-out rows)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the newest complete one)")
    parser.add_argument("--rows", type=int, help="held-out rows (default: the run's train.eval_rows)")
    parser.add_argument("--max-bytes", type=int, help="cut each input to this many bytes")
    parser.add_argument("--streams", nargs="*", default=[None], type=lambda v: None if v == "auto" else int(v),
                        help="B values to measure; auto: the codec's choice from the size (the default)")
    parser.add_argument("--overlap", type=int, help="window overlap (default: the codec's, L/8)")
    parser.add_argument("--overlaps", type=int, nargs="*", default=[], help="overlaps for the estimate table")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is reported")
    args = parser.parse_args(argv)

    coder = codec.load_coder(args.run_dir, args.checkpoint)
    files = [(p.name, p.read_bytes()[:args.max_bytes]) for p in args.files]
    reference = None
    if not files:
        data, rows = heldout(args.run_dir, args.rows)
        files = [(f"held-out rows ({rows})", data[:args.max_bytes])]
        reference = eval_bits_per_byte(args.run_dir, coder.step) if args.max_bytes is None else None
    print(f"{args.run_dir} checkpoint-{coder.step}: {type(coder.model).__name__}, "
          f"{sum(p.numel() for p in coder.model.parameters()):,} parameters, L = {coder.length}, overlap "
          f"{args.overlap if args.overlap is not None else 'L/8 (default)'}, {args.threads} thread(s), "
          f"{codec.Numerics.here(args.threads).describe()}\n")
    results = [measure(coder, name, data, streams, args.overlap, args.threads, args.repeat)
               for name, data in files for streams in args.streams]
    print(size_table(results, reference))
    print(f"\nkB/s, compress / decompress, by the wall clock, fastest of {args.repeat} (load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} after the runs):\n")
    print(speed_table(results, 0))
    print(f"\nkB per CPU-second of this process, compress / decompress, fastest of {args.repeat}:\n")
    print(speed_table(results, 1))
    if args.overlaps:
        print()
        print(overlap_table(coder, files, args.overlaps, args.streams[0], args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
