"""Pretokenize a corpus into fixed-length rows stored as safetensors shards, with a manifest.

    python -m memorymodels.data.pretokenize --corpus stdlib --tokenizer DIR --context 512 --mode packed --out OUT
    python -m memorymodels.data.pretokenize --corpus stdlib --tokenizer DIR --context 512 --mode padded \\
        --padding-side left --out OUT

``padded`` (the seed's default) gives one row per document, truncated or padded (left by default); ``packed`` joins
documents, each followed by ``<|endoftext|>``, and cuts rows, padding only the last row. Writes ``OUT/manifest.json``
(last, when everything is done), ``OUT/train/*.safetensors`` and ``OUT/test/*.safetensors``. Uses all cores, keeps
memory bounded, and a rerun after an interruption continues where it stopped. Details: ``memorymodels.data.pipeline``.
"""

from __future__ import annotations

import argparse
import sys

from memorymodels.configuration import flag_number
from memorymodels.data.corpus import SPLITS
from memorymodels.data.errors import DataError
from memorymodels.data.pipeline import MODES, PADDING_SIDES, SHARD_TOKENS, pretokenize
from memorymodels.fileio import exits_on_full_disk


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.data.pretokenize",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="stdlib", help="stdlib | stdlib-small | PATH/GLOB | hf:NAME[:CONFIG]")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (from train_tokenizer)")
    parser.add_argument("--context", type=flag_number(int, minimum=2), required=True, help="tokens per row")
    parser.add_argument("--mode", choices=MODES, default="packed")
    parser.add_argument("--padding-side", choices=PADDING_SIDES, default="left")
    parser.add_argument("--shard-rows", type=flag_number(int, minimum=1), default=None, help=f"rows per shard (default {SHARD_TOKENS} tokens)")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    try:
        manifest = pretokenize(args.corpus, args.tokenizer, args.out, context=args.context, mode=args.mode,
                               padding_side=args.padding_side, shard_rows=args.shard_rows, progress=None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split in SPLITS:
        info = manifest["splits"][split]
        print(f"{args.out}: {split}: {info['docs']} docs, {info['rows']} rows, {info['tokens']} tokens, "
              f"{info['bytes']} bytes, {len(info['shards'])} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
