"""Shared fixtures: a tiny tokenizer and pretokenized stdlib-small data, made once per test session."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(tokenizer_dir, data_dir) for stdlib-small, vocabulary 300, context 32 (packed rows)."""
    from memorymodels.data.pretokenize import pretokenize
    from memorymodels.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_data")
    tokenizer = train_tokenizer("stdlib-small", 300, root / "tokenizer")
    pretokenize("stdlib-small", tokenizer, root / "data", context=32, mode="packed")
    return root / "tokenizer", root / "data"


@pytest.fixture(scope="session")
def padded_data(tiny_data, tmp_path_factory):
    """(tokenizer_dir, data_dir): short documents of 2 to 28 words, one per row, right-padded to 32 tokens, so
    micro-batches hold different numbers of targets."""
    from memorymodels.data.pretokenize import pretokenize

    root = tmp_path_factory.mktemp("padded_data")
    words = "def return import class self value for while lambda yield with print".split()
    for i in range(240):
        n = 2 + (i * 7) % 27
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / f"{i:03d}.txt").write_text(" ".join(words[(i + j * j) % len(words)] for j in range(n)))
    pretokenize(str(root / "docs"), tiny_data[0], root / "data", context=32, mode="padded", padding_side="right")
    return tiny_data[0], root / "data"


@pytest.fixture
def write_experiment(tiny_data, tmp_path):
    """Write an experiment YAML on the tiny data (debug autoencoder) with train overrides; returns its path."""

    def write(name="exp", root=None, model=None, data=None, **train):
        tokenizer, data = data or tiny_data
        config = {
            "model": model or {"name": "autoencoding_mixer", "preset": "debug"},
            "data": {"tokenizer": str(tokenizer), "train_dir": str(data), "context": 32},
            "train": {"learning_rate": 3e-3, "warmup_steps": 2, "max_steps": 12, "batch_size": 8, "eval_steps": 0,
                      "save_steps": 1000, "logging_steps": 1, "save_total_limit": 2, **train},
            "output": {"checkpoint_root": str(root or tmp_path / "runs")},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def run_module(*args, timeout=180, env=None, **kwargs):
    """Run ``python -m ARGS`` from the repository root; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([PYTHON, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env, **kwargs)


def make_checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    """A small but real checkpoint-STEP folder (weights, optimizer, trainer state), marked complete unless not."""
    import torch
    from safetensors.torch import save_file

    from memorymodels import checkpoints

    path = Path(run_dir) / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}, "param_groups": []}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if complete:
        checkpoints.mark_complete(path)
    return path
