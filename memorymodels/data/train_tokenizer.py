"""Train a byte-level BPE tokenizer on a corpus's train split and save it for ``AutoTokenizer.from_pretrained``.

    python -m memorymodels.data.train_tokenizer --corpus stdlib --vocab-size 8000 --out TOKENIZER_DIR
    python -m memorymodels.data.train_tokenizer --corpus hf:HuggingFaceFW/fineweb-edu:sample-10BT \\
        --vocab-size 8000 --max-docs 2000000 --out TOKENIZER_DIR

Texts stream through the trainer (memory does not grow with the corpus). Prints characters per token on the
corpus's held-out test split. Special ids: ``<|pad|>`` = 0, ``<|endoftext|>`` = 1.
"""

from __future__ import annotations

import argparse
import sys

from memorymodels.configuration import flag_number
from memorymodels.data.errors import DataError
from memorymodels.data.tokenizer import describe, train_tokenizer  # train_tokenizer: the API of this command
from memorymodels.fileio import exits_on_full_disk


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.data.train_tokenizer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="stdlib", help="stdlib | stdlib-small | PATH/GLOB | hf:NAME[:CONFIG]")
    parser.add_argument("--vocab-size", type=flag_number(int, minimum=258), default=8000, help="tokens in the vocabulary (>= 258)")
    parser.add_argument("--max-docs", type=flag_number(int, minimum=1), default=None, help="train on at most this many documents")
    parser.add_argument("--out", required=True, help="new directory to save the tokenizer in")
    args = parser.parse_args(argv)
    try:
        out = train_tokenizer(args.corpus, args.vocab_size, args.out, max_docs=args.max_docs,
                              progress=sys.stderr.isatty())
        describe(out, args.corpus)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
