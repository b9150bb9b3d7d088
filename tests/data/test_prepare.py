import multiprocessing
import shutil
from pathlib import Path

from memorymodels.data import TokenDataset, prepare, prepare_data
from memorymodels.data.corpus import open_corpus


def _prepare(args):
    corpus, cache = args
    prepared = prepare_data(corpus, vocab_size=280, context=32, cache_dir=cache)
    return str(prepared.data_dir), prepared.manifest["splits"]["train"]["shards"][0]["sha256"]


def test_concurrent_callers_build_once_and_share(tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_prepare, [(str(tiny_corpus), str(cache))] * 3)
    assert len(set(results)) == 1
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {"tokenizer", "data"}
    assert not list(cache.rglob("*.tmp-*"))

    prepared = prepare_data(str(tiny_corpus), vocab_size=280, context=32, cache_dir=cache)
    stamps = {p: p.stat().st_mtime_ns for p in entries[0].rglob("*") if p.is_file()}
    again = prepare_data(str(tiny_corpus), vocab_size=280, context=32, cache_dir=cache)
    assert again == prepared
    assert {p: p.stat().st_mtime_ns for p in entries[0].rglob("*") if p.is_file()} == stamps
    data = TokenDataset(prepared.data_dir, "test", expect_tokenizer=prepared.tokenizer_dir, expect_context=32)
    assert len(data) > 0


def test_different_arguments_get_different_entries(tiny_corpus, tmp_path):
    a = prepare_data(str(tiny_corpus), vocab_size=280, context=16, mode="padded", padding_side="right",
                     cache_dir=tmp_path)
    b = prepare_data(str(tiny_corpus), vocab_size=280, context=16, mode="packed", cache_dir=tmp_path)
    assert a.data_dir != b.data_dir
    assert (a.manifest["mode"], a.manifest["padding_side"]) == ("padded", "right")
    assert "padded-right" in a.data_dir.parent.name


def test_an_edited_local_corpus_is_prepared_again(tmp_path, monkeypatch):
    from .conftest import make_docs, write_txt_corpus

    corpus = write_txt_corpus(tmp_path / "c", make_docs(80, seed=5))
    first = prepare_data(str(corpus), vocab_size=270, context=16, cache_dir=tmp_path / "cache")
    monkeypatch.chdir(tmp_path)  # the same files named by a relative path: the same entry
    assert prepare_data("c", vocab_size=270, context=16, cache_dir=tmp_path / "cache") == first
    (corpus / "doc00000.txt").write_text("a different first document")
    second = prepare_data(str(corpus), vocab_size=270, context=16, cache_dir=tmp_path / "cache")
    assert second.data_dir != first.data_dir


def test_the_cache_key_follows_the_data_code_and_settings_not_the_rest_of_the_project(tiny_corpus, tmp_path,
                                                                                     monkeypatch):
    """A job runs from a copy of the code (``<checkpoint_root>/.code/<hash>/``): the same data code anywhere finds the
    same entry; a change outside memorymodels/data keeps it, a change of the data code or a setting does not."""
    library = Path(prepare.__file__).resolve().parents[1]
    copy = tmp_path / "runs" / ".code" / "0123456789abcdef" / "memorymodels"
    shutil.copytree(library, copy, ignore=shutil.ignore_patterns("__pycache__"))
    corpus = open_corpus(str(tiny_corpus))

    def key(**changes):
        return prepare.cache_name(corpus, **{"vocab_size": 280, "context": 32, "mode": "packed",
                                             "padding_side": "left", **changes})

    here = key()
    monkeypatch.setattr(prepare, "DATA_PACKAGE", copy / "data")  # the code as a job's snapshot holds it
    assert key() == here
    (copy / "train.py").write_text((copy / "train.py").read_text() + "# a change outside the data code\n")
    (copy / "models" / "mixer.py").write_text("")
    assert key() == here
    tokenizer = copy / "data" / "tokenizer.py"
    tokenizer.write_text(tokenizer.read_text() + "# a change of the code that trains tokenizers\n")
    changed = key()
    assert changed != here
    (copy / "data" / "rows.py").write_text((copy / "data" / "rows.py").read_text() + "\n")
    assert key() not in (here, changed)
    others = [key(vocab_size=300), key(context=64), key(mode="padded"), key(padding_side="right")]
    assert len({*others, key()}) == 5
    moved = tmp_path / "elsewhere" / "txt"  # the same files copied with their times: the same corpus
    shutil.copytree(tiny_corpus, moved)
    assert prepare.cache_name(open_corpus(str(moved)), vocab_size=280, context=32, mode="packed",
                              padding_side="left") == key()
