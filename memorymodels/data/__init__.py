"""Data: corpora, byte-level BPE tokenizers, pretokenized safetensors shards and memory-mapped datasets.

    prepared = prepare_data("stdlib-small", vocab_size=512, context=128, cache_dir=".state/cache")
    train = TokenDataset(prepared.data_dir, "train", expect_tokenizer=prepared.tokenizer_dir, expect_context=128)

Commands (each module's docstring has the details):

    python -m memorymodels.data.train_tokenizer --corpus stdlib --vocab-size 8000 --out TOKENIZER_DIR
    python -m memorymodels.data.pretokenize --corpus stdlib --tokenizer TOKENIZER_DIR --context 512 \\
        --mode packed|padded [--padding-side left|right] --out OUT

Special token ids: ``<|pad|>`` = 0, ``<|endoftext|>`` = 1 (see ``memorymodels.data.tokenizer``).
"""

from memorymodels.data.corpus import Corpus, open_corpus
from memorymodels.data.dataset import IGNORE_INDEX, TokenDataset, read_manifest
from memorymodels.data.errors import DataError
from memorymodels.data.prepare import PreparedData, default_cache_dir, prepare_data
from memorymodels.data.pretokenize import pretokenize
from memorymodels.data.tokenizer import EOS_ID, EOS_TOKEN, PAD_ID, PAD_TOKEN, fingerprint, load_tokenizer, train_tokenizer

__all__ = [
    "Corpus",
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
    "pretokenize",
    "read_manifest",
    "train_tokenizer",
]
