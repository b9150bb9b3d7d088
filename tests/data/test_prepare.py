import multiprocessing

from memorymodels.data import TokenDataset, prepare_data


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
