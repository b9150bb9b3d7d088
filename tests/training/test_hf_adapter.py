"""The private transformers and accelerate API we rely on (memorymodels/hf_adapter.py) is still as we expect."""

import subprocess
import sys
from pathlib import Path

import pytest

from memorymodels import hf_adapter


def test_the_private_trainer_methods_we_override_keep_their_signatures():
    problems = hf_adapter.upstream_mismatches()
    assert not problems, "\n".join(problems)


def test_a_changed_signature_is_named_with_what_was_expected(monkeypatch):
    monkeypatch.setitem(hf_adapter.UPSTREAM, "Trainer._save_checkpoint", ("self", "model", "trial", "metrics"))
    monkeypatch.setitem(hf_adapter.UPSTREAM, "Trainer._gone", ("self",))
    problems = hf_adapter.upstream_mismatches()
    assert any("changed Trainer._save_checkpoint: expected parameters (self, model, trial, metrics), found "
               "(self, model, trial); update memorymodels/hf_adapter.py" in p for p in problems), problems
    assert any("has no Trainer._gone" in p for p in problems), problems


def test_building_a_trainer_leaves_deepspeed_unloaded(tmp_path):
    """deepspeed is installed here (the deepspeed launcher), yet a trainer that does not use it never imports it."""
    script = ("import sys, torch\n"
              "from transformers import TrainingArguments\n"
              "from memorymodels.hf_adapter import CheckpointingTrainer\n"
              f"args = TrainingArguments(output_dir={str(tmp_path)!r}, use_cpu=True, report_to='none')\n"
              "CheckpointingTrainer(model=torch.nn.Linear(2, 2), args=args)\n"
              "print('deepspeed' in sys.modules, importlib.util.find_spec('deepspeed') is not None)\n")
    done = subprocess.run([sys.executable, "-c", "import importlib.util\n" + script], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    loaded, installed = done.stdout.split()
    assert loaded == "False", "building the trainer imported deepspeed"
    assert installed == "True" or pytest.skip("deepspeed is not installed: nothing to leave unloaded")


def test_a_changed_unwrap_is_named(monkeypatch):
    monkeypatch.setattr(hf_adapter, "UNWRAP", lambda model: model)
    problems = hf_adapter.upstream_mismatches()
    assert any("no longer asks its module's is_deepspeed_available()" in p for p in problems), problems
