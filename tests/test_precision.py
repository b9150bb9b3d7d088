"""One precision rule (``memorymodels.precision``): the launcher's planner and the trainer give the same answer for the
same request on the same hardware, ``auto`` included.

    .venv/bin/pytest tests/test_precision.py -q
"""

from __future__ import annotations

import pytest
import torch

from launch.planning.plan import plan_precision
from launch.planning.profiles import GPU_TYPES, list_profiles, load_profile
from memorymodels.configuration import ConfigError
from memorymodels.precision import Device, resolve_precision
from memorymodels.train import trainer_precision

CPU_REFUSED = "'train.precision: {}' needs GPUs; CPU-only nodes train in fp32"
V100_REFUSED = "'train.precision: bf16' is not supported by V100 GPUs; use fp16"
CASES = [  # (profile, its GPU model or None for CPU, requested, the precision trained in or the refusal)
    ("local", None, "auto", "fp32"),
    ("local", None, "fp32", "fp32"),
    ("local", None, "fp16", CPU_REFUSED.format("fp16")),
    ("local", None, "bf16", CPU_REFUSED.format("bf16")),  # refused on both sides (the trainer used to accept it)
    ("v100x8", "V100", "auto", "fp16"),
    ("v100x8", "V100", "fp16", "fp16"),
    ("v100x8", "V100", "fp32", "fp32"),
    ("v100x8", "V100", "bf16", V100_REFUSED),
    ("a100x8", "A100", "auto", "bf16"),
    ("a100x8", "A100", "bf16", "bf16"),
    ("a100x8", "A100", "fp16", "fp16"),
    ("h100x8", "H100", "auto", "bf16"),
    ("h100x8", "H100", "fp32", "fp32"),
]


def planner(profile, requested: str) -> str:
    return plan_precision(profile, ["train.max_steps=3", f"train.precision={requested}"])


def trainer(requested: str, gpu: str | None, monkeypatch) -> str:
    """The trainer's path on a machine with ``gpu`` (None: no CUDA device), as torch.cuda would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu is not None)
    if gpu is not None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPU_TYPES[gpu]["capability"])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    return trainer_precision(requested, "x.yaml")


def outcome(call) -> str:
    try:
        return call()
    except ConfigError as exc:
        return str(exc)


@pytest.mark.parametrize("profile_name, gpu, requested, expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_planner_and_trainer_agree(profile_name, gpu, requested, expected, monkeypatch):
    profile = load_profile(profile_name)
    assert profile.gpu_type == gpu
    planned = outcome(lambda: planner(profile, requested))
    trained = outcome(lambda: trainer(requested, gpu, monkeypatch))
    if expected in ("fp32", "fp16", "bf16"):
        assert planned == trained == expected
    else:  # the same one-line refusal, each naming where the request came from
        assert planned == f"--set train.precision={requested}: {expected} (profile {profile_name}: {profile.source})"
        assert trained == f"x.yaml: {expected}"


def test_every_shipped_profile_trains_in_its_devices_best_precision():
    """So ``--set train.precision=auto`` plans what the profile plans, and the trainer's ``auto`` agrees."""
    for name in list_profiles():
        profile = load_profile(name)
        assert resolve_precision("auto", profile.device) == profile.precision, name


def test_a_profile_is_held_to_the_same_rule():
    with pytest.raises(ConfigError) as err:
        load_profile("local", ["precision=bf16"])
    assert str(err.value) == ("cluster_profiles/local.yaml (with --set profile.precision=bf16): "
                              "'precision: bf16' needs GPUs; CPU-only nodes train in fp32")


@pytest.mark.parametrize("device, expected", [
    (Device("cpu"), "fp32"), (Device("gpu", capability=(6, 1)), "fp16"), (Device("gpu", capability=(7, 5)), "fp16"),
    (Device("gpu", capability=(8, 0)), "bf16"), (Device("gpu", capability=(8, 9)), "bf16"),
    (Device("gpu", capability=(9, 0)), "bf16"),
])
def test_auto_is_the_devices_best(device, expected):
    assert resolve_precision("auto", device) == expected


def test_the_rule_names_the_key_and_refuses_what_is_not_a_precision():
    with pytest.raises(ConfigError, match=r"^'train.precision: fp8' is not a precision; use one of auto, fp16, bf16, "
                                          r"fp32$"):
        resolve_precision("fp8", Device("cpu"))
    with pytest.raises(ConfigError, match=r"^'precision: bf16' is not supported by compute capability 7.5 GPUs; "
                                          r"use fp16$"):
        resolve_precision("bf16", Device("gpu", capability=(7, 5)), key="precision")
    with pytest.raises(ValueError, match="a GPU has a compute capability"):
        Device("gpu")
