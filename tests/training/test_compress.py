"""The model codec: exact round trips of any bytes, size = the model's cross entropy, refusals in one line."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from memorymodels import compress as codec
from memorymodels.data.tokenizer import EOS_ID, PAD_ID, load_tokenizer
from memorymodels.models import build_model

from .conftest import run_module

SPECIAL_TEXT = b"def f():\n    return '<|endoftext|>' + \"<|pad|>\"\n<|endoftext|><|pad|>"
NON_UTF8 = bytes(range(256)) + b"\xed\xa0\x80 surrogate, \xe2\x82 cut, \xc3\x28 bad pair, caf\xc3\xa9"


@pytest.fixture(scope="module")
def causal_run(tiny_data, tmp_path_factory):
    """A language_mixer (debug preset, 32 tokens per window) trained 30 steps; checkpoints at 15 and 30."""
    tokenizer, data = tiny_data
    root = tmp_path_factory.mktemp("causal")
    config = {
        "model": {"name": "language_mixer", "preset": "debug"},
        "data": {"tokenizer": str(tokenizer), "train_dir": str(data), "context": 32},
        "train": {"learning_rate": 3e-3, "warmup_steps": 2, "max_steps": 30, "batch_size": 8, "eval_steps": 0,
                  "save_steps": 15, "logging_steps": 5, "save_total_limit": 3},
        "output": {"checkpoint_root": str(root / "runs")},
    }
    (root / "causal.yaml").write_text(yaml.safe_dump(config))
    done = run_module("memorymodels.train", "--experiment", str(root / "causal.yaml"), "--no-eval",
                      "--run-dir", str(root / "runs" / "causal"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "causal"


@pytest.fixture(scope="module")
def coder(causal_run):
    return codec.load_coder(causal_run)


@pytest.mark.parametrize("name", ["language_mixer", "llama_clm"])
def test_logits_at_a_position_ignore_later_tokens_bit_for_bit(name):
    # What lets the decoder reproduce the encoder: the same (1, L) window with filler after position i gives the
    # same bits at i as the window holding the real tokens.
    torch.manual_seed(0)
    model = build_model(name, preset="debug", n_vocab=300, length=16).eval()
    tokens = torch.randint(2, 300, (1, 16))
    with codec.deterministic(1):
        full = model(tokens)[1][0]
        for i in range(16):
            known = tokens.clone()
            known[0, i + 1:] = codec.FILLER
            assert torch.equal(model(known)[1][0, i], full[i]), f"{name}: position {i} saw a later token"


def test_any_bytes_map_to_tokens_and_back_exactly(tiny_data):
    tokens = codec.ByteTokens(load_tokenizer(tiny_data[0]))
    rng = np.random.default_rng(0)
    for data in (b"", b"\x00", b"\xff", NON_UTF8, SPECIAL_TEXT, rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        ids = tokens.encode(data)
        assert tokens.decode(ids) == data
        assert not np.isin(ids, [PAD_ID, EOS_ID]).any()  # special ids only ever come from the codec itself
    assert len(tokens.encode(b"<|endoftext|>")) > 1  # spelled out in ordinary tokens


def test_windows_cover_every_token_once_with_the_overlap_as_context():
    assert codec.windows(0, 8, 0) == []
    assert codec.windows(20, 8, 0) == [(0, 1, 7), (7, 8, 14), (14, 15, 20)]
    assert codec.windows(20, 8, 3) == [(0, 1, 7), (4, 8, 11), (8, 12, 15), (12, 16, 19), (16, 20, 20)]
    for n, length, overlap in ((1, 4, 0), (50, 8, 6), (97, 16, 5)):
        plan = codec.windows(n, length, overlap)
        assert [j for _, first, last in plan for j in range(first, last + 1)] == list(range(1, n + 1))
        for start, first, last in plan:
            assert last - 1 - start <= length - 2  # the window's last position, never trained, predicts nothing
        for start, first, last in plan[1:]:
            assert first - 1 - start == overlap
    with pytest.raises(codec.CodecError, match="overlap must be between 0 and"):
        codec.windows(10, 8, 7)


@pytest.mark.parametrize("case", ["empty", "one byte", "non-UTF-8", "several windows", "special tokens",
                                  "several windows, overlap 0", "several windows, overlap L-2"])
def test_round_trip_is_exact(coder, case):
    text = (b"import os\nfor name in sorted(os.listdir('.')):\n    print(name.upper())\n" * 6)  # ~ 8 windows of 32
    broken = text[:100] + b"\x80\xff caf\xc3\xa9 \xed\xa0\x80 \xe2\x82" + text[100:]  # stray, surrogate, cut
    data, overlap = {"empty": (b"", None), "one byte": (b"\x7f", None), "non-UTF-8": (broken, None),
                     "several windows": (text, None), "special tokens": (SPECIAL_TEXT, None),
                     "several windows, overlap 0": (text, 0), "several windows, overlap L-2": (text, 30)}[case]
    blob, stats = codec.compress(coder, data, overlap=overlap, store=False)  # always through the model
    assert codec.decompress(coder, blob)[0] == data
    assert stats["tokens"] <= len(data) and len(blob) == codec.HEADER_BYTES + stats["payload_bytes"]
    if case == "several windows":
        assert stats["tokens"] > 4 * coder.length


def test_bytes_the_model_would_expand_are_stored(coder):
    data = np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes()
    blob, stats = codec.compress(coder, data)
    assert stats["stored"] and stats["estimate_bits"] > 8 * len(data)
    assert len(blob) == codec.HEADER_BYTES + len(data) and codec.decompress(coder, blob)[0] == data
    assert codec.compress(coder, b"")[1]["stored"] and codec.decompress(coder, codec.compress(coder, b"")[0])[0] == b""


def test_size_is_the_models_cross_entropy_plus_the_header(coder):
    data = b"".join(f"def function_{i}(value):\n    return value * {i} + len(str(value))\n\n".encode()
                    for i in range(40))
    blob, stats = codec.compress(coder, data)
    estimate = stats["estimate_bits"] / 8 + codec.HEADER_BYTES  # sum of -log2 p over the tokens, in bytes
    assert estimate < len(blob) <= estimate * 1.02 + 8, (len(blob), estimate)  # + up to two 32-bit flush words
    # the estimate is the model's own cross entropy on the same tokens (evaluated independently here)
    tokens = coder.tokens.encode(data)
    stream = torch.tensor(np.concatenate([[EOS_ID], tokens]))
    nats = 0.0
    with codec.deterministic(1):
        for start, first, last in codec.windows(len(tokens), coder.length, stats["overlap"]):
            logits = codec.window_logits(coder.model, stream.numpy(), start, coder.length)
            targets = stream[first:last + 1]
            nats += torch.nn.functional.cross_entropy(logits[first - 1 - start:last - start], targets,
                                                      reduction="sum").item()
    assert stats["estimate_bits"] == pytest.approx(nats / np.log(2), rel=1e-4)


@pytest.mark.slow  # two interpreters that import transformers: about 40 s on a busy 2-core machine
def test_cli_round_trip_through_the_entry_point(causal_run, tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"import os\n" * 20 + SPECIAL_TEXT + b"\xff\xfe")
    done = run_module("memorymodels.compress", str(causal_run), str(source))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bits/byte" in done.stdout and "stored" not in done.stdout and (tmp_path / "data.bin.mmz").is_file()
    back = run_module("memorymodels.compress", "--decompress", str(causal_run), str(tmp_path / "data.bin.mmz"),
                      "-o", str(tmp_path / "back.bin"))
    assert back.returncode == 0, back.stderr[-3000:]
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "data.bin", "data.bin.mmz"]  # no temp files


def test_compress_onto_a_full_disk_is_one_line_naming_the_output_exit_74(causal_run, tmp_path, full_disk, capsys):
    source = tmp_path / "data.bin"
    source.write_bytes(b"import os\n" * 200)
    out = full_disk / "data.bin.mmz"
    assert codec.main([str(causal_run), str(source), "-o", str(out)]) == 74
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {out}: no space left on device while writing it (0 B free there)"), err
    assert [p.name for p in full_disk.iterdir() if p.name != ".filler"] == []


def _one_line_error(capsys, argv) -> str:
    assert codec.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_decoding_with_another_checkpoint_or_run_is_refused_in_one_line(causal_run, tmp_path, capsys):
    source = tmp_path / "a.txt"
    source.write_bytes(b"print('hello')\n" * 4)
    assert codec.main([str(causal_run), str(source), "--checkpoint", str(causal_run / "checkpoint-15")]) == 0
    mmz = str(source) + ".mmz"
    err = _one_line_error(capsys, ["-d", str(causal_run), mmz, "-o", str(tmp_path / "x"),
                                   "--checkpoint", str(causal_run / "checkpoint-30")])
    identity = json.loads((causal_run / "run.json").read_text())["identity"]
    assert f"run {identity} checkpoint-15" in err and f"run {identity} checkpoint-30" in err

    other = tmp_path / "other"  # another run: its own identity, the same checkpoint names
    shutil.copytree(causal_run, other)
    info = json.loads((other / "run.json").read_text())
    info["identity"] = "0123456789ab"
    (other / "run.json").write_text(json.dumps(info))
    err = _one_line_error(capsys, ["-d", str(other), mmz, "-o", str(tmp_path / "x")])
    assert f"run {identity} checkpoint-15" in err and "run 0123456789ab" in err

    from safetensors.torch import load_file, save_file  # same run and step, retrained weights
    weights = load_file(other / "checkpoint-15" / "model.safetensors")
    weights["lm_head.weight"] += 1e-3
    save_file(weights, other / "checkpoint-15" / "model.safetensors")
    info["identity"] = identity
    (other / "run.json").write_text(json.dumps(info))
    err = _one_line_error(capsys, ["-d", str(other), mmz, "-o", str(tmp_path / "x")])
    assert "weights" in err and err.count(f"run {identity} checkpoint-15") == 2
    assert not (tmp_path / "x").exists()
    assert codec.main(["-d", str(causal_run), mmz, "-o", str(tmp_path / "x")]) == 0  # the right run needs no flag
    assert (tmp_path / "x").read_bytes() == source.read_bytes()


def test_truncated_or_corrupt_files_are_refused_in_one_line(causal_run, coder, tmp_path, capsys):
    blob, _ = codec.compress(coder, b"for i in range(10):\n    print(i)\n" * 3)
    cases = {"truncated": blob[:-5], "header only": blob[:20], "flipped bit": blob[:-3] + bytes([blob[-3] ^ 1])
             + blob[-2:], "not mmz": b"plain text", "empty": b""}
    for case, content in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.mmz"
        path.write_bytes(content)
        err = _one_line_error(capsys, ["-d", str(causal_run), str(path), "-o", str(tmp_path / "out")])
        assert str(path) in err, (case, err)
    assert not (tmp_path / "out").exists()


def test_benchmark_prints_the_table_and_the_overlap_estimates(causal_run, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import compress as benchmark

    (tmp_path / "a.py").write_bytes(b"x = [i * i for i in range(10)]\nprint(x)\n")
    assert benchmark.main([str(causal_run), str(tmp_path / "a.py"), "--overlaps", "0", "30"]) == 0
    out = capsys.readouterr().out
    assert "| a.py | 40 |" in out and "| xz -9 | zstd -19 | gzip -9 |" in out
    assert "| a.py | overlap 30 |" in out and "L-1 new tokens" in out
