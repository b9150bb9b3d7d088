"""Data: corpora, byte-level BPE tokenizers, pretokenized safetensors shards and memory-mapped datasets.

    prepared = prepare_data("stdlib-small", vocab_size=512, context=128, cache_dir=".state/cache")
    train = TokenDataset(prepared.data_dir, "train", expect_tokenizer=prepared.tokenizer_dir, expect_context=128)

Commands (each module's docstring has the details):

    python -m memorymodels.data.train_tokenizer --corpus stdlib --vocab-size 8000 --out TOKENIZER_DIR
    python -m memorymodels.data.pretokenize --corpus stdlib --tokenizer TOKENIZER_DIR --context 512 \\
        --mode packed|padded [--padding-side left|right] --out OUT

The functions behind the commands are ``memorymodels.data.pretokenize.pretokenize`` and
``memorymodels.data.train_tokenizer.train_tokenizer`` (defined in ``pipeline`` and ``tokenizer``). They are not
re-exported here: a package attribute named like a submodule would be replaced by the module once it is imported.

Special token ids: ``<|pad|>`` = 0, ``<|endoftext|>`` = 1 (see ``memorymodels.data.tokenizer``).
"""

from memorymodels.data.corpus import Corpus, corpus_problem, open_corpus
from memorymodels.data.errors import DataError
from memorymodels.data.prepare import PreparedData, default_cache_dir, prepare_data
from memorymodels.data.tokenizer import EOS_ID, EOS_TOKEN, PAD_ID, PAD_TOKEN, fingerprint, load_tokenizer

_LAZY = {"IGNORE_INDEX", "TokenDataset", "read_manifest"}  # torch is imported only when the dataset is used


def __getattr__(name: str):
    if name in _LAZY:
        from memorymodels.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'memorymodels.data' has no attribute '{name}'")


__all__ = [
    "Corpus",
    "corpus_problem",
    "DataError",
    "EOS_ID",
    "EOS_TOKEN",
    "IGNORE_INDEX",
    "PAD_ID",
    "PAD_TOKEN",
    "PreparedData",
    "TokenDataset",
    "default_cache_dir",
    "fingerprint",
    "load_tokenizer",
    "open_corpus",
    "prepare_data",
    "read_manifest",
]
