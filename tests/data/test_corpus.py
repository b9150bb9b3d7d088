import json
import os
import subprocess
import sys

import pytest

from memorymodels.data import DataError, open_corpus
from memorymodels.data.corpus import SMALL_TOTAL_BYTES, StdlibCorpus, split_of, stable_hash


def test_stdlib_is_deterministic_with_a_disjoint_held_out_split():
    corpus = open_corpus("stdlib")
    files = corpus.files()
    assert len(files) > 500 and files == sorted(files) == StdlibCorpus().files()
    assert all("site-packages" not in key for key, _ in files)
    test_keys = [key for key, _ in files if split_of(key) == "test"]
    assert 0.02 < len(test_keys) / len(files) < 0.09
    first = next(corpus.documents("test"))
    assert first == next(open_corpus("stdlib").documents("test"))


def test_stable_hash_does_not_depend_on_the_process():
    code = "from memorymodels.data.corpus import stable_hash; print(stable_hash('json/__init__.py'))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(other.stdout) == stable_hash("json/__init__.py")


def test_stdlib_small_is_a_deterministic_subset_of_about_1_5_mb():
    small = open_corpus("stdlib-small")
    files = small.files()
    size = sum(path.stat().st_size for _, path in files)
    assert SMALL_TOTAL_BYTES <= size < 2_000_000
    assert set(files) <= set(StdlibCorpus().files()) and files == sorted(files)
    train, test = list(small.documents("train")), list(small.documents("test"))
    assert len(test) >= 5 and len(train) > 10 * len(test)
    assert not set(train) & set(test)


def test_local_files_jsonl_parquet_glob_and_directory(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "beta"}) + "\n\n" + json.dumps({"content": "gamma"}) + "\n")
    pq.write_table(pa.table({"text": ["delta", None, "epsilon"], "id": [1, 2, 3]}), tmp_path / "c.parquet")
    everything = sorted(open_corpus(str(tmp_path)).documents("train") ) + sorted(
        open_corpus(str(tmp_path)).documents("test"))
    assert sorted(everything) == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert sorted(list(open_corpus(str(tmp_path / "*.jsonl")).documents("train"))
                  + list(open_corpus(str(tmp_path / "*.jsonl")).documents("test"))) == ["beta", "gamma"]
    one = open_corpus(str(tmp_path / "c.parquet"))
    assert sorted(list(one.documents("train")) + list(one.documents("test"))) == ["delta", "epsilon"]


def test_split_does_not_depend_on_where_the_corpus_lives(tmp_path):
    for root in (tmp_path / "x", tmp_path / "y" / "z"):
        root.mkdir(parents=True)
        for i in range(60):
            (root / f"{i}.txt").write_text(str(i))
    x, y = open_corpus(str(tmp_path / "x")), open_corpus(str(tmp_path / "y" / "z" / "*.txt"))
    assert list(x.documents("test")) == list(y.documents("test")) != []


def test_bad_specs_and_files(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        open_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="matches no files"):
        open_corpus(str(tmp_path / "*.jsonl"))
    (tmp_path / "notes.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported file type"):
        open_corpus(str(tmp_path / "notes.csv"))
    with pytest.raises(DataError, match="empty corpus name"):
        open_corpus("")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no text field; expected one of text, content, found title"):
        list(open_corpus(str(tmp_path / "bad.jsonl")).documents("train"))
    (tmp_path / "broken.jsonl").write_text('{"text": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:1: not valid JSON"):
        list(open_corpus(str(tmp_path / "broken.jsonl")).documents("train"))
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:1: bytes at offset 13 are not valid UTF-8"):
        list(open_corpus(str(tmp_path / "latin.jsonl")).documents("train"))
    with pytest.raises(DataError, match="unknown split"):
        list(open_corpus("stdlib-small").documents("validation"))


def test_hub_corpus_from_a_locally_saved_dataset(tmp_path):
    import datasets

    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": [f"train {i}" for i in range(20)]}),
        "test": datasets.Dataset.from_dict({"text": ["held out 0", "held out 1"]}),
    })
    splits.save_to_disk(str(tmp_path / "saved"))
    corpus = open_corpus(f"hf:{tmp_path / 'saved'}")
    assert list(corpus.documents("test")) == ["held out 0", "held out 1"]
    assert list(corpus.documents("train")) == [f"train {i}" for i in range(20)]
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    (files / "validation.jsonl").write_text(json.dumps({"text": "val"}) + "\n")
    streamed = open_corpus(f"hf:{files}")  # through datasets.load_dataset(..., streaming=True)
    assert list(streamed.documents("test")) == ["val"]
    assert list(streamed.documents("train")) == [f"doc {i}" for i in range(5)]


def test_unreachable_hub_gives_a_clear_error():
    code = ("from memorymodels.data import open_corpus\n"
            "list(open_corpus('hf:memorymodels-test/no-such-dataset:cfg').documents('train'))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("memorymodels.data.errors.DataError: corpus 'hf:memorymodels-test/no-such-dataset:cfg'")
    assert "could not read the dataset through the Hugging Face hub" in last and "save the dataset" in last
