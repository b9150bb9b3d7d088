import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memorymodels.data import EOS_ID, PAD_ID, DataError, load_tokenizer, open_corpus
from memorymodels.data.pretokenize import pretokenize
from memorymodels.data.shards import open_shard, read_header

from .conftest import make_docs, write_txt_corpus


def split_docs(corpus, split):
    return [d for d in open_corpus(str(corpus)).documents(split)]


def split_tokens(out, split):
    manifest = json.loads((out / "manifest.json").read_text())
    arrays = [np.asarray(open_shard(out / s["file"])) for s in manifest["splits"][split]["shards"]]
    return np.concatenate(arrays)


@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_round_trip_with_separators(tiny_corpus, tokenizer_dir, tmp_path, side):
    out = tmp_path / "out"
    manifest = pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16, mode="packed", padding_side=side,
                           shard_rows=7)
    tok = load_tokenizer(tokenizer_dir)
    for split in ("train", "test"):
        docs = split_docs(tiny_corpus, split)
        rows = split_tokens(out, split)
        assert rows.dtype == np.uint16 and rows.shape[1] == 16
        # only the very last row holds pads, on the chosen side
        assert not (rows[:-1] == PAD_ID).any()
        last = rows[-1] == PAD_ID
        if last.any():
            pads = np.flatnonzero(last)
            assert (pads == (np.arange(len(pads)) if side == "left" else np.arange(16 - len(pads), 16))).all()
        stream = rows[rows != PAD_ID].tolist()
        assert stream[-1] == EOS_ID
        pieces, current = [], []
        for t in stream:
            if t == EOS_ID:
                pieces.append(tok.decode(current))
                current = []
            else:
                current.append(t)
        assert pieces == docs  # every document, in order, nothing dropped, one eos after each
        info = manifest["splits"][split]
        assert info["docs"] == len(docs)
        assert info["rows"] == len(rows)
        assert info["tokens"] == len(stream)
        assert info["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        assert sum(s["rows"] for s in info["shards"]) == len(rows)
    assert manifest["splits"]["test"]["docs"] > 0 and manifest["tokenizer"]["pad_id"] == PAD_ID
    assert read_header(out / manifest["splits"]["train"]["shards"][0]["file"])[0]["input_ids"]["dtype"] == "U16"


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_truncate_or_pad_each_document(tiny_corpus, tokenizer_dir, tmp_path, side):
    context = 24
    out = tmp_path / "out"
    manifest = pretokenize(str(tiny_corpus), tokenizer_dir, out, context=context, mode="padded", padding_side=side)
    tok = load_tokenizer(tokenizer_dir)
    docs = split_docs(tiny_corpus, "train")
    rows = split_tokens(out, "train")
    assert len(rows) == len(docs) == manifest["splits"]["train"]["docs"]
    truncated = 0
    expected_bytes = 0
    for row, doc in zip(rows, docs):
        ids = tok.encode(doc, add_special_tokens=False).ids
        real = row[row != PAD_ID]
        n = len(real)
        assert n == min(len(ids), context)
        assert (row[context - n:] if side == "left" else row[:n]).tolist() == ids[:context]
        if len(ids) <= context:
            assert tok.decode(real.tolist()) == doc
            expected_bytes += len(doc.encode())
        else:
            truncated += 1
            assert doc.startswith(tok.decode(ids[:context]).rstrip("\ufffd"))  # a cut may split a character
    assert truncated > 10  # the corpus exercises truncation
    assert manifest["splits"]["train"]["bytes"] > expected_bytes
    assert manifest["splits"]["train"]["tokens"] == int((rows != PAD_ID).sum())


def test_rerun_skips_a_finished_dataset(tiny_corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    first = pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16, shard_rows=50)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16, shard_rows=50)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps


def test_resume_continues_inside_a_document(tiny_corpus, tokenizer_dir, tmp_path):
    """Remove the manifest and the later shards of a finished run: the rerun rewrites exactly what was removed."""
    full = tmp_path / "full"
    pretokenize(str(tiny_corpus), tokenizer_dir, full, context=16, shard_rows=20)
    shards = sorted((full / "train").glob("*.safetensors"))
    from memorymodels.data.shards import shard_metadata

    cut = next(i for i, p in enumerate(shards[2:], start=2) if int(shard_metadata(p)["next_offset"]) > 0)
    partial = tmp_path / "partial"
    shutil.copytree(full, partial)
    (partial / "manifest.json").unlink()
    for p in sorted((partial / "train").glob("*.safetensors"))[cut + 1:]:
        p.unlink()
    (partial / "train" / ".00099.safetensors.tmp-1").write_bytes(b"half")  # a killed write
    kept = {p.name: p.stat().st_mtime_ns for p in (partial / "train").glob("*.safetensors")}
    pretokenize(str(tiny_corpus), tokenizer_dir, partial, context=16, shard_rows=20)
    for path in full.rglob("*.safetensors"):
        assert path.read_bytes() == (partial / path.relative_to(full)).read_bytes(), path
    assert {p.name: p.stat().st_mtime_ns for p in (partial / "train").glob("*.safetensors") if p.name in kept} == kept
    assert not list(partial.rglob("*.tmp-*"))
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (full, partial))
    assert a["splits"] == b["splits"]


def test_resume_after_a_killed_run(tmp_path, tokenizer_dir):
    corpus = write_txt_corpus(tmp_path / "big", make_docs(1500, seed=3, max_words=200))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "memorymodels.data.pretokenize", "--corpus", str(corpus), "--tokenizer",
               str(tokenizer_dir), "--context", "32", "--shard-rows", "32", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(list((out / "train").glob("*.safetensors"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make the corpus bigger"
    assert not (out / "manifest.json").exists()  # nothing looks complete
    for path in out.rglob("*.safetensors"):
        open_shard(path)  # every file with a shard name is whole
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    clean = tmp_path / "clean"
    pretokenize(str(corpus), tokenizer_dir, clean, context=32, shard_rows=32)
    for split in ("train", "test"):
        assert np.array_equal(split_tokens(out, split), split_tokens(clean, split))
    assert json.loads((out / "manifest.json").read_text())["splits"] == json.loads(
        (clean / "manifest.json").read_text())["splits"]


def test_output_holding_a_different_dataset_is_left_alone(tiny_corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=r"holds a different dataset \(context 16 there, 32 asked"):
        pretokenize(str(tiny_corpus), tokenizer_dir, out, context=32)
    with pytest.raises(DataError, match="mode 'packed' there, 'padded' asked"):
        pretokenize(str(tiny_corpus), tokenizer_dir, out, context=16, mode="padded")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and not a pretokenized dataset"):
        pretokenize(str(tiny_corpus), tokenizer_dir, other, context=16)
    assert (other / "notes.txt").read_text() == "mine"


def test_bad_arguments(tiny_corpus, tokenizer_dir, tmp_path):
    with pytest.raises(DataError, match="at least 2"):
        pretokenize(str(tiny_corpus), tokenizer_dir, tmp_path / "a", context=1)
    with pytest.raises(DataError, match="mode 'stacked'"):
        pretokenize(str(tiny_corpus), tokenizer_dir, tmp_path / "a", context=8, mode="stacked")
    with pytest.raises(DataError, match="padding side 'middle'"):
        pretokenize(str(tiny_corpus), tokenizer_dir, tmp_path / "a", context=8, padding_side="middle")
    with pytest.raises(DataError, match="no tokenizer.json"):
        pretokenize(str(tiny_corpus), tmp_path, tmp_path / "a", context=8)
    with pytest.raises(DataError, match="no such file"):
        pretokenize(str(tmp_path / "missing.txt"), tokenizer_dir, tmp_path / "a", context=8)
    assert not (tmp_path / "a").exists()


def test_empty_corpus_and_empty_test_split(tmp_path, tokenizer_dir):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="test split .* has no documents"):
        pretokenize(str(tmp_path / "empty.jsonl"), tokenizer_dir, tmp_path / "a", context=8)
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_undecodable_bytes_name_the_file(tmp_path, tokenizer_dir):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "ok.txt").write_text("fine")
    (tmp_path / "c" / "bad.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"bad.txt: bytes at offset 3 are not valid UTF-8"):
        pretokenize(str(tmp_path / "c"), tokenizer_dir, tmp_path / "a", context=8)


def test_cli_reports_errors_without_a_traceback(tiny_corpus, tokenizer_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "memorymodels.data.pretokenize", "--corpus", str(tiny_corpus), "--tokenizer",
         str(tokenizer_dir), "--context", "1", "--out", str(tmp_path / "x")], capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr  # refused by the flag's own check now
    assert "argument --context: 1: must be 2 or more" in result.stderr, result.stderr
