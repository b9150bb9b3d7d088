"""Tiny corpora written in temporary directories and one small tokenizer shared by the data tests."""

import random

import pytest

from memorymodels.data.train_tokenizer import train_tokenizer

WORDS = ["the", "memory", "mixer", "token", "def", "return", "x", "é", "漢字", "(", ")", ":", "\n", "    ", "42",
         "compress", "<|endoftext|>", "ü", "🙂", "data"]


def make_docs(n: int, seed: int = 0, max_words: int = 120) -> list[str]:
    """``n`` deterministic pseudo-random documents of 1..max_words words (multi-byte characters included)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) for _ in range(n)]


def write_txt_corpus(directory, docs: list[str]):
    directory.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(docs):
        (directory / f"doc{i:05d}.txt").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def tiny_docs():
    return make_docs(160)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_docs):
    """A directory of 160 small .txt documents (about 8 of them in the test split)."""
    return write_txt_corpus(tmp_path_factory.mktemp("corpus") / "txt", tiny_docs)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, tiny_corpus):
    return train_tokenizer(str(tiny_corpus), 300, tmp_path_factory.mktemp("tok") / "tokenizer")
