"""Evaluation numbers on hand-computed cases, compression baselines, and the loss plot."""

import bz2
import gzip
import lzma
import math

import pytest
import torch
import torch.nn.functional as F
import zstandard

from memorymodels import fileio, metrics
from memorymodels.evaluate import embedding_cost, evaluate_model, format_table
from memorymodels.heldout import compression_baselines, eval_bits_per_byte
from memorymodels.plot import curves, embedding_offset, plot_runs

LN = math.log


class TableModel(torch.nn.Module):
    """Follows the model contract with logits fixed per position: ``table[t]`` (shift 0) or predicting t+1."""

    def __init__(self, table, shift):
        super().__init__()
        self.table, self.shift = torch.tensor(table), shift
        self.input_length = len(table)

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.table.expand(input_ids.shape[0], -1, -1)
        if labels is None:
            return None, logits
        if self.shift:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, 2), labels[:, 1:].reshape(-1), ignore_index=-100)
        else:
            loss = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), ignore_index=-100)
        return loss, logits


def _rows(ids_list):
    rows = []
    for ids in ids_list:
        ids = torch.tensor(ids)
        mask = (ids >= 0).long()
        rows.append({"input_ids": ids.clamp(min=0), "attention_mask": mask,
                     "labels": torch.where(mask.bool(), ids, torch.tensor(-100))})
    return rows


def test_evaluation_on_a_hand_computed_autoencoder_case():
    # Every position says p(0) = 3/4, p(1) = 1/4 (logits ln 3, 0). Targets: 0 1 0 | 1 1 (the -1 is a pad).
    model = TableModel([[LN(3), 0.0]] * 3, shift=0)
    data = _rows([[0, 1, 0], [1, 1, -1]])
    scores = evaluate_model(model, data, batch_size=1)  # batches of unequal targets: weighted by tokens
    expected = (2 * LN(4 / 3) + 3 * LN(4)) / 5
    assert scores["loss"] == pytest.approx(expected, rel=1e-6)
    assert scores["token_accuracy"] == pytest.approx(2 / 5)
    assert scores["targets"] == 5 and scores["alignment"] == "same-position"


def test_evaluation_finds_next_token_alignment_of_causal_models():
    # Position 0 predicts token 1, position 1 predicts token 2: p(1) = 1/2 then p(0) = 3/4.
    model = TableModel([[0.0, 0.0], [LN(3), 0.0], [0.0, 0.0]], shift=1)
    scores = evaluate_model(model, _rows([[1, 1, 0], [0, 1, 1]]), batch_size=2)
    assert scores["alignment"] == "next-token"
    assert scores["loss"] == pytest.approx((LN(2) + LN(4 / 3) + LN(2) + LN(4)) / 4, rel=1e-6)
    # Argmax is 0 at both positions (a tie picks 0): only row 0 position 1 (target 0) is right.
    assert scores["token_accuracy"] == pytest.approx(1 / 4)


def test_bits_per_byte_and_embedding_cost_by_hand():
    # 2 nats/token over 100 tokens of 400 bytes: 200 nats = 288.54 bits over 400 bytes.
    assert eval_bits_per_byte(2.0, 400 / 100) == pytest.approx(200 / math.log(2) / 400)
    # 64 values x 4 bits for each of 10 rows over 5120 bytes.
    assert embedding_cost(64, 4, 10, 5120) == pytest.approx(0.5)


def test_baselines_are_the_compressors_bits_per_byte():
    data = ("def f(x):\n    return x * 2  # comment\n" * 200 + "".join(chr(65 + i % 26) for i in range(3000))).encode()
    result = compression_baselines(data)
    assert result["gzip"] == 8 * len(gzip.compress(data, 9)) / len(data)
    assert result["bz2"] == 8 * len(bz2.compress(data, 9)) / len(data)
    assert result["xz"] == 8 * len(lzma.compress(data, preset=9)) / len(data)
    assert result["zstd"] == 8 * len(zstandard.ZstdCompressor(level=19).compress(data)) / len(data)
    assert 0 < result["zstd"] < 8
    table = format_table({"run_dir": "r", "checkpoint": "checkpoint-1", "rows": 2, "bytes": len(data),
                          "bytes_per_token": 3.0, "loss": 1.0, "token_accuracy": 0.5, "bits_per_byte": 0.48,
                          "baselines": result, "embedding": {"values": 32, "bits": 8, "bits_per_byte": 0.1,
                                                             "total_bits_per_byte": 0.58}})
    assert "gzip -9" in table and "zstd -19" in table and "model + embedding" in table


def _fake_run(run_dir, losses, embedding_values=None):
    run_dir.mkdir()
    fileio.write_json(run_dir / "run.json", {"model": {"embedding_values": embedding_values},
                                           "config": {"data": {"context": 64}}})
    for step, loss in enumerate(losses, 1):
        metrics.append_metrics(run_dir, {"step": step, "loss": loss, "eval_loss": loss + 0.1 if step % 2 == 0 else None,
                                      "tokens": step * 512})


def test_plot_writes_overlaid_runs(tmp_path):
    _fake_run(tmp_path / "a", [5.0, 4.0, 3.0, 2.5], embedding_values=32)
    _fake_run(tmp_path / "b", [5.0, 4.5, 4.2, 4.0])
    assert curves(tmp_path / "a")["eval"] == [(2, 1024, 4.1), (4, 2048, 2.6)]
    assert embedding_offset(tmp_path / "a", 8) == pytest.approx(32 * 8 * math.log(2) / 64)
    assert embedding_offset(tmp_path / "b", 8) == 0.0
    out = plot_runs(metrics.find_run_dirs([tmp_path]), tmp_path / "plots" / "loss.png", embedding_bits=8)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left behind
