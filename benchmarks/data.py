"""Data pipeline benchmark: pretokenization speed against raw ``tokenizers``, peak memory as the corpus grows,
dataset open time and random-access rows/s. Writes a markdown report.

    .venv/bin/python benchmarks/data.py                                  # sizes 8, 32, 96 MB; writes benchmarks/data.md
    .venv/bin/python benchmarks/data.py --sizes-mb 2 4 --out /tmp/data.md    # a quick look

What it does, all in one run on the same machine:

1. trains an 8000-token byte-level BPE tokenizer on ``stdlib-small``;
2. builds ``.jsonl`` corpora of the given sizes from the standard library's source files (cycled);
3. for each size: times ``encode_batch`` of the raw ``tokenizers`` tokenizer over the corpus texts already in memory
   (1 MB batches, as the pipeline uses), then runs ``python -m memorymodels.data.pretokenize`` on the same corpus
   in a subprocess (reading, encoding, packing, writing shards, checksums) and records its time and peak RSS;
   the ratio is pipeline tokens/s over raw tokens/s (target >= 0.8);
4. opens the largest dataset, and a dataset of 1000 shards (hard links to one real shard: ~16 B tokens), timing
   ``TokenDataset(...)`` (target < 1 s);
5. reads random rows (``data[i]``, one at a time, and ``data.batch(...)`` of 128) and compares with what training
   the reference model consumes: the seed's FineWeb runs take 200k steps of 128 rows in ~24 h on 4 V100s
   (docs/porting.md), ~300 rows/s; the target is 100x that, 30 000 rows/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorymodels.data import TokenDataset, load_tokenizer, open_corpus  # noqa: E402
from memorymodels.data.tokenizer import train_tokenizer  # noqa: E402
from memorymodels.data.pipeline import BATCH_CHARS  # noqa: E402

REFERENCE_ROWS_PER_S = 200_000 * 128 / (24 * 3600)  # seed FineWeb runs: 200k steps x 128 rows in ~24 h


MAX_DOC_BYTES = 64 * 1024


def make_corpus(path: Path, megabytes: float) -> int:
    """A .jsonl corpus of about ``megabytes`` MB of stdlib source files of at most 64 KB (cycled); returns its bytes.

    Bounded documents, so that every size has the same mix: peak memory also follows the largest single document
    (its encoding is held whole), which is not what this measures.
    """
    docs = [d for split in ("train", "test") for d in open_corpus("stdlib").documents(split) if len(d) <= MAX_DOC_BYTES]
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as handle:
        for doc in itertools.cycle(docs):
            handle.write(json.dumps({"text": doc}) + "\n")
            written += len(doc.encode("utf-8"))
            if written >= target:
                break
    return written


def raw_tokens_per_s(tokenizer, corpus: str, fast: bool = False) -> tuple[float, float, int]:
    """Tokens per second and per CPU second of bare ``encode_batch`` (or ``encode_batch_fast``, no offsets) over the
    corpus's texts, read into memory first (not timed); and the token count."""
    texts = [d for split in ("test", "train") for d in open_corpus(corpus).documents(split)]
    batches, batch, chars = [], [], 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS:
            batches.append(batch)
            batch, chars = [], 0
    batches.append(batch)
    encode = tokenizer.encode_batch_fast if fast else tokenizer.encode_batch
    start, cpu = time.perf_counter(), cpu_seconds()
    tokens = sum(len(e.ids) for b in batches for e in encode(b, add_special_tokens=False))
    return tokens / (time.perf_counter() - start), tokens / (cpu_seconds() - cpu), tokens


# Peak RSS through a small helper process: a child forked from this (large) process would report this process's
# pages as its own peak, since Linux keeps the high-water mark across exec.
PEAK_HELPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
    "sys.exit(code)\n"
)


def run_pretokenize(corpus: str, tokenizer_dir: Path, out: Path, context: int, mode: str,
                    shard_rows: int | None = None) -> dict:
    """Run the command in a subprocess; its wall time, peak RSS (MB), CPU seconds and manifest."""
    command = [sys.executable, "-m", "memorymodels.data.pretokenize", "--corpus", corpus, "--tokenizer",
               str(tokenizer_dir), "--context", str(context), "--mode", mode, "--out", str(out)]
    if shard_rows:
        command += ["--shard-rows", str(shard_rows)]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_HELPER, *command], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"pretokenize failed ({result.returncode}): {result.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    peak_kb, cpu = result.stdout.split()[-2:]
    return {"wall": wall, "peak_mb": int(peak_kb) / 1024, "cpu": float(cpu), "manifest": manifest}


def cpu_seconds() -> float:
    """CPU time of this process, all threads (tokenizers encodes on a thread pool)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def many_shard_dataset(source: Path, target: Path, copies: int) -> Path:
    """A dataset whose train split is ``copies`` hard links to the first train shard of ``source``."""
    manifest = json.loads((source / "manifest.json").read_text())
    first = manifest["splits"]["train"]["shards"][0]
    (target / "train").mkdir(parents=True)
    shards = []
    for i in range(copies):
        name = f"train/{i:05d}.safetensors"
        os.link(source / first["file"], target / name)
        shards.append({**first, "file": name})
    split = {"docs": 0, "rows": first["rows"] * copies, "tokens": 0, "bytes": 0, "shards": shards}
    manifest["splits"] = {"train": split, "test": manifest["splits"]["test"]}
    shutil.copytree(source / "test", target / "test")
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def time_open(path: Path) -> tuple[float, TokenDataset]:
    os.sync()
    start = time.perf_counter()
    data = TokenDataset(path, "train")
    return time.perf_counter() - start, data


def random_access(data: TokenDataset, n: int = 20_000, batch: int = 128) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(data), n)
    start = time.perf_counter()
    for i in index:
        data[int(i)]
    single = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for chunk in range(0, n, batch):
        data.batch(index[chunk: chunk + batch])
    batched = n / (time.perf_counter() - start)
    return single, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[8, 32, 96])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best is reported")
    parser.add_argument("--memory-shard-rows", type=int, default=None,
                        help="only measure peak memory of pretokenize, with shards of this many rows")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-bench-", dir=args.work))
    try:
        report = memory_only(args, work) if args.memory_shard_rows else run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(report)
    print(report)


def memory_only(args, work: Path) -> str:
    """Peak RSS of pretokenize (packed) as the corpus grows, with small shards so that every size fills several."""
    tokenizer_dir = train_tokenizer("stdlib-small", args.vocab_size, work / "tokenizer")
    lines = ["| corpus | text + eos tokens | shards | peak RSS MB |", "|---|---|---|---|"]
    for size in args.sizes_mb:
        corpus = work / f"corpus-{size:g}mb.jsonl"
        make_corpus(corpus, size)
        result = run_pretokenize(str(corpus), tokenizer_dir, work / f"out-{size:g}", args.context, "packed",
                                 shard_rows=args.memory_shard_rows)
        splits = result["manifest"]["splits"].values()
        lines.append(f"| {size:g} MB | {sum(s['tokens'] for s in splits):,} | "
                     f"{sum(len(s['shards']) for s in splits)} | {result['peak_mb']:.0f} |")
        print(lines[-1], flush=True)
        corpus.unlink()
    command = (f"    .venv/bin/python benchmarks/data.py --sizes-mb {' '.join(map('{:g}'.format, args.sizes_mb))} "
               f"--vocab-size {args.vocab_size} --context {args.context} --memory-shard-rows {args.memory_shard_rows}")
    return "\n".join([
        f"Peak memory only, with shards of {args.memory_shard_rows} rows "
        f"({args.memory_shard_rows * args.context * 2 / 1e6:.1f} MB of uint16), so that every size fills several shards:",
        "",
        command,
        "",
        *lines,
        "",
    ])


def run(args, work: Path) -> str:
    tokenizer_dir = train_tokenizer("stdlib-small", args.vocab_size, work / "tokenizer")
    tokenizer = load_tokenizer(tokenizer_dir)
    lines = ["| corpus | mode | text tokens | raw encode_batch tok/s | raw encode_batch_fast tok/s | pretokenize tok/s "
             "| ratio | raw tok per CPU s | pretokenize tok per CPU s | CPU ratio | wall s | peak RSS MB | shards |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = []
    for size in args.sizes_mb:
        corpus = work / f"corpus-{size:g}mb.jsonl"
        make_corpus(corpus, size)
        modes = ("packed", "padded") if size == args.sizes_mb[0] else ("packed",)
        for mode in modes:
            out = work / f"out-{size:g}-{mode}"
            raw = raw_cpu = 0.0
            runs = []
            for _ in range(args.repeats):  # alternate, keep the best of each: the machine may be shared
                rate, rate_cpu, raw_tokens = raw_tokens_per_s(tokenizer, str(corpus))
                raw, raw_cpu = max(raw, rate), max(raw_cpu, rate_cpu)
                shutil.rmtree(out, ignore_errors=True)
                runs.append(run_pretokenize(str(corpus), tokenizer_dir, out, args.context, mode))
            raw_fast = raw_tokens_per_s(tokenizer, str(corpus), fast=True)[0]
            result = min(runs, key=lambda r: r["manifest"]["seconds"])
            result["peak_mb"] = max(r["peak_mb"] for r in runs)
            cpu = min(r["cpu"] for r in runs)
            manifest = result["manifest"]
            splits = manifest["splits"].values()
            eos = sum(s["docs"] for s in splits) if mode == "packed" else 0
            text_tokens = sum(s["tokens"] for s in splits) - eos
            if mode == "packed":
                assert text_tokens == raw_tokens, (text_tokens, raw_tokens)  # the same texts were timed
            speed = raw_tokens / manifest["seconds"]
            speed_cpu = raw_tokens / cpu
            shards = sum(len(s["shards"]) for s in splits)
            lines.append(f"| {size:g} MB | {mode} | {raw_tokens:,} | {raw:,.0f} | {raw_fast:,.0f} | {speed:,.0f} | "
                         f"**{speed / raw:.2f}** | {raw_cpu:,.0f} | {speed_cpu:,.0f} | **{speed_cpu / raw_cpu:.2f}** | "
                         f"{result['wall']:.1f} | {result['peak_mb']:.0f} | {shards} |")
            results.append((size, mode, out))
            print(lines[-1], flush=True)

    largest = [out for size, mode, out in results if mode == "packed"][-1]
    open_large, data = time_open(largest)
    single, batched = random_access(data)
    many = many_shard_dataset(largest, work / "many", 1000)
    open_many, many_data = time_open(many)
    single_many, batched_many = random_access(many_data)
    target = 100 * REFERENCE_ROWS_PER_S
    access = [
        "| dataset | rows | shards | open s | data[i] rows/s | batch(128) rows/s | target rows/s |",
        "|---|---|---|---|---|---|---|",
        f"| {args.sizes_mb[-1]:g} MB packed | {len(data):,} | {len(data.tokens)} | {open_large:.4f} | {single:,.0f} | "
        f"{batched:,.0f} | {target:,.0f} |",
        f"| 1000 shards (hard links, {len(many_data) * args.context / 1e9:.1f} B tokens) | {len(many_data):,} | "
        f"{len(many_data.tokens)} | {open_many:.4f} | {single_many:,.0f} | {batched_many:,.0f} | {target:,.0f} |",
    ]
    command = "    .venv/bin/python benchmarks/data.py " + " ".join(
        ["--sizes-mb", *map("{:g}".format, args.sizes_mb), "--vocab-size", str(args.vocab_size), "--context",
         str(args.context), "--repeats", str(args.repeats)])
    cpus = os.cpu_count()
    return "\n".join([
        "## Data pipeline (benchmarks/data.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {cpus} CPU cores "
        f"({platform.python_implementation()} {platform.python_version()}), vocabulary {args.vocab_size}, "
        f"context {args.context}, default shard size. Command:",
        "",
        command,
        "",
        "Pretokenization against raw `tokenizers` `encode_batch` on the same texts in the same run (target ratio "
        f">= 0.8), each measured {args.repeats} times, alternating, best kept. Raw: texts already in memory, encoding only. Pretokenize: the whole command (read the corpus, "
        "encode, pack or pad, write and checksum shards) measured by its own clock (`manifest.seconds`, which "
        "leaves out interpreter start-up; `wall s` includes it). Both modes encode with `encode_batch_fast` (no "
        "character offsets; nothing needs them); the ratio is against plain `encode_batch`, as the issue asks, and "
        "the `encode_batch_fast` column (one run) shows the bare speed of the call the pipeline makes. On a shared "
        "machine wall-clock rates swing with the load, so the table also gives tokens per CPU second (all threads; "
        "for the pipeline the whole process including start-up), which the load does not change much. Tokens are "
        "text tokens (packed mode's eos separators not counted). Peak RSS of the pretokenize process (target: flat "
        "as the corpus grows): it is the interpreter and libraries, two batches of about 1 MB of text with their "
        "encodings, and the buffer of one shard (16M tokens, 32 MB), which fills up to the first shard's size.",
        "",
        *lines,
        "",
        "Opening a dataset (target < 1 s whatever its size) and random access, one process, no DataLoader workers. "
        f"Target: 100x the ~{REFERENCE_ROWS_PER_S:.0f} rows/s the reference model consumes in training (seed "
        "FineWeb runs: 200k steps of 128 rows in ~24 h on 4 V100s).",
        "",
        *access,
        "",
    ])


if __name__ == "__main__":
    main()
