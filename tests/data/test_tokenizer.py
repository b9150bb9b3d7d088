import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from memorymodels.data import EOS_ID, EOS_TOKEN, PAD_ID, PAD_TOKEN, DataError, fingerprint, load_tokenizer
from memorymodels.data.train_tokenizer import train_tokenizer


def test_autotokenizer_loads_with_documented_special_ids(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert (tok.pad_token, tok.pad_token_id) == (PAD_TOKEN, PAD_ID)
    assert (tok.eos_token, tok.eos_token_id) == (EOS_TOKEN, EOS_ID)
    assert len(tok) == 300
    text = "def f(x):\n    return x  # é漢字🙂 \n\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert PAD_ID not in ids and tok.decode(ids) == text


def test_special_token_text_is_plain_text_when_pretokenizing(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    ids = tok.encode("a <|endoftext|> b <|pad|>", add_special_tokens=False).ids
    assert EOS_ID not in ids and PAD_ID not in ids
    assert tok.decode(ids) == "a <|endoftext|> b <|pad|>"


def test_fingerprint_ignores_location(tokenizer_dir, tmp_path):
    import shutil

    copy = shutil.copytree(tokenizer_dir, tmp_path / "elsewhere")
    assert fingerprint(copy) == fingerprint(tokenizer_dir)
    assert len(fingerprint(copy)) == 16


def test_bad_arguments(tiny_corpus, tokenizer_dir, tmp_path):
    with pytest.raises(DataError, match="at least 258"):
        train_tokenizer(str(tiny_corpus), 100, tmp_path / "small")
    with pytest.raises(DataError, match="already exists"):
        train_tokenizer(str(tiny_corpus), 300, tokenizer_dir)
    with pytest.raises(DataError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_empty_corpus_is_an_error_and_leaves_nothing(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text("")
    with pytest.raises(DataError, match="no documents"):
        train_tokenizer(str(tmp_path / "c"), 300, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_characters_per_token(tiny_corpus, tmp_path):
    out = tmp_path / "tok"
    result = subprocess.run(
        [sys.executable, "-m", "memorymodels.data.train_tokenizer", "--corpus", str(tiny_corpus), "--vocab-size",
         "280", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "characters per token on the test split" in result.stdout
    assert (out / "tokenizer.json").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "memorymodels.data.train_tokenizer", "--corpus", str(tiny_corpus), "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
