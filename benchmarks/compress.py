"""The model codec against xz, zstd and gzip: real .mmz sizes, the model's own estimate, encode/decode seconds.

    .venv/bin/python benchmarks/compress.py RUN_DIR                       # held-out bytes of the run's test split
    .venv/bin/python benchmarks/compress.py RUN_DIR FILE [FILE ...] --overlaps 0 32 64 96 126

For each file (by default the first ``--rows`` held-out rows of the run's test split, decoded as in
``memorymodels.evaluate``, cut to ``--max-bytes``) it compresses with ``memorymodels.compress``, decompresses,
checks the bytes are the same, and prints a markdown table: bytes, .mmz bytes ("stored" where the model would have
expanded the file and the codec kept its bytes), bits per byte of the .mmz file, the model's estimate (sum of -log2 p
over the tokens plus the header, in bits per byte), xz -9, zstd -19 and gzip -9 on the same bytes, and the encode and
decode seconds (one CPU thread by default; model loading not included).

``--overlaps`` adds a second table: the model's estimate for each window overlap, and for windows that each start
with ``<|endoftext|>`` instead of carried context, with the encoder's seconds (the decoder's are the same for all:
one forward pass per token).
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorymodels import compress as codec  # noqa: E402
from memorymodels.data.tokenizer import EOS_ID  # noqa: E402


def baselines(data: bytes) -> dict[str, int]:
    """Compressed sizes in bytes of xz -9, zstd -19 and gzip -9."""
    import zstandard

    return {"xz -9": len(lzma.compress(data, preset=9)),
            "zstd -19": len(zstandard.ZstdCompressor(level=19).compress(data)),
            "gzip -9": len(gzip.compress(data, 9))}


def heldout(run_dir: Path, rows: int | None, max_bytes: int) -> bytes:
    """The held-out text ``memorymodels.evaluate`` scores: the first rows of the run's test split, decoded."""
    from memorymodels.heldout import heldout_bytes
    from memorymodels.experiment import experiment_from_dict, load_data, load_fast_tokenizer
    from memorymodels.rundir import RunPaths
    from memorymodels.runrecord import read_run_json

    info = read_run_json(run_dir)
    experiment = experiment_from_dict(info["config"], source=str(RunPaths(run_dir).run_json))
    data = load_data(experiment)
    rows = rows or experiment.train.eval_rows or 64
    return heldout_bytes(data.test, load_fast_tokenizer(data.tokenizer_dir), rows)[0][:max_bytes]


def bos_windows_bits(coder: codec.Coder, data: bytes, threads: int) -> tuple[float, float]:
    """(estimate in bits, seconds) when every window starts with <|endoftext|> and predicts L-1 new tokens."""
    tokens, length = coder.tokens.encode(data), coder.length
    began, bits = time.perf_counter(), 0.0
    with codec.deterministic(threads):
        for start in range(0, len(tokens), length - 1):
            chunk = tokens[start:start + length - 1]
            logits = codec.window_logits(coder.model, np.concatenate([[EOS_ID], chunk]), 0, length)
            for p, token in enumerate(chunk):
                bits -= float(np.log2(codec.probabilities(logits[p])[token]))
    return bits, time.perf_counter() - began


def measure(coder: codec.Coder, name: str, data: bytes, overlap: int, threads: int) -> dict:
    blob, stats = codec.compress(coder, data, overlap=overlap, threads=threads)
    back, decoded = codec.decompress(coder, blob, name)
    if back != data:
        raise SystemExit(f"{name}: the round trip changed the bytes")
    return {"file": name, "bytes": len(data), "tokens": stats["tokens"], "mmz": len(blob), "stored": stats["stored"],
            "estimate": stats["estimate_bits"] / 8 + codec.HEADER_BYTES, "baselines": baselines(data),
            "encode_s": stats["seconds"], "decode_s": decoded["seconds"]}


def table(rows: list[dict]) -> str:
    bpb = lambda size, row: f"{8 * size / row['bytes']:.3f}"  # noqa: E731
    lines = ["| file | bytes | tokens | .mmz bytes | .mmz bits/byte | model estimate | xz -9 | zstd -19 | gzip -9 "
             "| encode s | decode s | decode ms/token |", "|---" * 12 + "|"]
    for r in rows:
        b = r["baselines"]
        stored = " (stored)" if r["stored"] else ""
        lines.append(f"| {r['file']} | {r['bytes']:,} | {r['tokens']:,} | {r['mmz']:,}{stored} | {bpb(r['mmz'], r)} "
                     f"| {bpb(r['estimate'], r)} | {bpb(b['xz -9'], r)} | {bpb(b['zstd -19'], r)} "
                     f"| {bpb(b['gzip -9'], r)} | {r['encode_s']:.1f} | {r['decode_s']:.1f} "
                     f"| {'-' if r['stored'] else format(1000 * r['decode_s'] / max(r['tokens'], 1), '.2f')} |")
    return "\n".join(lines)


def overlap_table(coder: codec.Coder, files: list[tuple[str, bytes]], overlaps: list[int], threads: int) -> str:
    lines = [f"| file | window start (L = {coder.length}) | estimate bits/byte | encode s |", "|---|---|---|---|"]
    for name, data in files:
        bits, seconds = bos_windows_bits(coder, data, threads)
        lines.append(f"| {name} | <\\|endoftext\\|>, L-1 new tokens | {bits / len(data):.3f} | {seconds:.1f} |")
        for overlap in overlaps:
            _, stats = codec.compress(coder, data, overlap=overlap, threads=threads)
            lines.append(f"| {name} | overlap {overlap} | {stats['estimate_bits'] / len(data):.3f} "
                         f"| {stats['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained causal LM's run directory")
    parser.add_argument("files", type=Path, nargs="*", help="files to compress (default: held-out bytes)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the newest complete one)")
    parser.add_argument("--rows", type=int, help="held-out rows (default: the run's train.eval_rows)")
    parser.add_argument("--max-bytes", type=int, default=16384, help="cut each input to this many bytes")
    parser.add_argument("--overlap", type=int, help="window overlap for the main table (default: the codec's, L/4)")
    parser.add_argument("--overlaps", type=int, nargs="*", default=[], help="overlaps for the estimate table")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    coder = codec.load_coder(args.run_dir, args.checkpoint)
    files = [(p.name, p.read_bytes()[:args.max_bytes]) for p in args.files]
    if not files:
        files = [("held-out rows", heldout(args.run_dir, args.rows, args.max_bytes))]
    print(f"{args.run_dir} checkpoint-{coder.step}: {type(coder.model).__name__}, "
          f"{sum(p.numel() for p in coder.model.parameters()):,} parameters, L = {coder.length}, "
          f"overlap {args.overlap if args.overlap is not None else 'L/4 (default)'}, {args.threads} thread(s)\n")
    print(table([measure(coder, name, data, args.overlap, args.threads) for name, data in files]))
    if args.overlaps:
        print()
        print(overlap_table(coder, files, args.overlaps, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
