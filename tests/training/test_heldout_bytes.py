"""Bytes per target token on real tiny data: the byte table against decoding, and the targets of each objective."""

import math

import pytest

from memorymodels.data import TokenDataset
from memorymodels.heldout import (NEXT_TOKEN, NEXT_TOKEN_IN_CHUNKS, SAME_POSITION, eval_bits_per_byte, heldout_bytes,
                                  target_bytes, targets_of_row, token_byte_lengths)
from memorymodels.experiment import load_fast_tokenizer as load_tokenizer


def test_targets_of_each_objective():
    labels = [5, 6, 7, 8, 9, 10, -100, -100]
    assert targets_of_row(labels, SAME_POSITION) == [5, 6, 7, 8, 9, 10]
    assert targets_of_row(labels, NEXT_TOKEN) == [6, 7, 8, 9, 10]
    assert targets_of_row(labels, NEXT_TOKEN_IN_CHUNKS, n_chunks=2) == [6, 7, 8, 10]
    assert eval_bits_per_byte(2 * math.log(2), 4.0) == pytest.approx(0.5)  # 2 bits per token, 4 bytes per token
    assert eval_bits_per_byte(None, 4.0) is None and eval_bits_per_byte(1.0, None) is None


def test_byte_table_counts_the_bytes_decoding_gives(tiny_data):
    tokenizer = load_tokenizer(tiny_data[0])
    table = token_byte_lengths(tokenizer)
    test = TokenDataset(tiny_data[1], "test")
    text, tokens = heldout_bytes(test, tokenizer, 20)
    targets, nbytes = target_bytes(test, 20, table, SAME_POSITION)
    # an autoencoder's targets are every real token of the rows: the same tokens and bytes as the decoded text
    # (up to rows cut inside a multi-byte character, which decoding replaces by U+FFFD)
    assert targets == tokens and nbytes == pytest.approx(len(text), rel=0.01)
    assert table[tokenizer.eos_token_id] == 0 and table[tokenizer.pad_token_id] == 0
    causal_targets, causal_bytes = target_bytes(test, 20, table, NEXT_TOKEN)
    first = sum(table[int(test[i]["input_ids"][0])] for i in range(20))
    assert (causal_targets, causal_bytes) == (tokens - 20, nbytes - first)
