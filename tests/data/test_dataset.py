import time

import numpy as np
import pytest
import torch

from memorymodels.data import IGNORE_INDEX, DataError, TokenDataset
from memorymodels.data.pretokenize import pretokenize
from memorymodels.data.train_tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_corpus, tokenizer_dir):
    out = tmp_path_factory.mktemp("ds") / "packed"
    pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16, mode="packed", padding_side="right", shard_rows=5)
    return out


def test_rows_are_int64_tensors_with_pads_masked(packed, tokenizer_dir):
    data = TokenDataset(packed, "train", expect_tokenizer=tokenizer_dir, expect_context=16)
    assert len(data) == data.manifest["splits"]["train"]["rows"] and len(data.tokens) > 2
    assert data.pad_id == 0 and data.eos_id == 1
    last = data[-1]
    assert set(last) == {"input_ids", "attention_mask", "labels"}
    assert all(v.dtype == torch.int64 and v.shape == (16,) for v in last.values())
    pads = last["input_ids"] == data.pad_id
    assert pads.any() and (last["attention_mask"] == (~pads).long()).all()
    assert (last["labels"][pads] == IGNORE_INDEX).all()
    assert (last["labels"][~pads] == last["input_ids"][~pads]).all()
    assert (data[0]["labels"] == data[0]["input_ids"]).all()  # a full row: every token is a target


def test_random_access_matches_the_raw_rows_across_shards(packed):
    data = TokenDataset(packed, "train")
    raw = data.rows()
    assert raw.dtype == np.int64 and raw.shape == (len(data), 16)
    rng = np.random.default_rng(0)
    for index in rng.integers(0, len(data), 50):
        assert data[int(index)]["input_ids"].tolist() == raw[index].tolist()
    assert np.array_equal(data.rows(3, 12), raw[3:12])  # spans a shard boundary (5 rows per shard)
    batch = data.batch([0, 7, len(data) - 1])
    assert batch["input_ids"].shape == (3, 16) and batch["labels"][2].tolist() == data[-1]["labels"].tolist()
    with pytest.raises(IndexError):
        data[len(data)]


def test_opening_maps_the_shards_without_reading_them(packed):
    start = time.perf_counter()
    data = TokenDataset(packed, "test")
    assert time.perf_counter() - start < 1.0
    assert data.tokens.arrays == [None] * len(data.tokens)  # nothing mapped yet
    first = data.tokens[0]
    assert not first.flags.owndata and not first.flags.writeable  # a view of the mapped file, not a copy


def test_works_with_a_dataloader(packed):
    data = TokenDataset(packed, "train")
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 16) and batch["labels"].dtype == torch.int64
    ordered = next(iter(torch.utils.data.DataLoader(data, batch_size=len(data))))
    assert ordered["labels"].tolist() == [data[i]["labels"].tolist() for i in range(len(data))]


def test_pickles_without_the_mapped_data_and_verifies_checksums(packed, tmp_path):
    import pickle
    import shutil

    data = TokenDataset(packed, "train")
    unmapped = len(pickle.dumps(data))
    data.rows()  # map every shard
    blob = pickle.dumps(data)
    assert len(blob) == unmapped  # paths and manifest, not rows
    copy = pickle.loads(blob)
    assert copy[len(copy) - 1]["input_ids"].tolist() == data[-1]["input_ids"].tolist()
    data.verify()
    damaged = shutil.copytree(packed, tmp_path / "damaged")
    shard = damaged / data.manifest["splits"]["train"]["shards"][1]["file"]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum differs"):
        TokenDataset(damaged, "train").verify()


def test_expectation_mismatch_names_both_sides(packed, tiny_corpus, tokenizer_dir, tmp_path):
    with pytest.raises(DataError, match=r"context is 16 tokens per row, but the experiment expects 32"):
        TokenDataset(packed, expect_context=32)
    other = train_tokenizer(str(tiny_corpus), 290, tmp_path / "other")
    with pytest.raises(DataError) as info:
        TokenDataset(packed, expect_tokenizer=other)
    message = str(info.value)
    from memorymodels.data import fingerprint

    assert str(tokenizer_dir.resolve()) in message and fingerprint(tokenizer_dir) in message
    assert str(other) in message and fingerprint(other) in message


def test_missing_or_unfinished_dataset(tmp_path, packed):
    with pytest.raises(DataError, match="no manifest.json: no pretokenized dataset"):
        TokenDataset(tmp_path)
    (tmp_path / "plan.json").write_text("{}")
    with pytest.raises(DataError, match="unfinished pretokenize run"):
        TokenDataset(tmp_path)
    with pytest.raises(DataError, match="no split 'valid'"):
        TokenDataset(packed, "valid")
