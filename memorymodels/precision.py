"""The one precision rule: what a requested training precision means on a device (torch-free).

    >>> resolve_precision("auto", Device("gpu", capability=(7, 0), name="V100"))
    'fp16'
    >>> resolve_precision("bf16", Device("cpu"))
    ConfigError: 'train.precision: bf16' needs GPUs; CPU-only nodes train in fp32

Both sides of a job ask this module, with the same words: the launcher's planner with the device a profile names
(``launch.planning.profiles.Profile.device``: its GPU model's compute capability), the trainer with the device it
runs on (``memorymodels.train.training_device``: ``torch.cuda``). So a precision the plan accepts is one the trainer
accepts on that hardware, and ``auto`` means the same on both: the device's best.

- ``auto``: bf16 on compute capability 8 or more (A100, H100, ...), fp16 on 7.x (V100), fp32 on CPU.
- ``fp32``: everywhere.
- ``fp16``: GPUs only.
- ``bf16``: GPUs of compute capability 8 or more. Not on CPU: the profiles promise that CPU-only nodes train in fp32,
  and mixed bf16 on a CPU without bf16 instructions (AVX512-BF16, AMX) is emulated and slower than fp32; a CPU run
  that asks for it is refused rather than silently slowed down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from memorymodels.configuration import ConfigError

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
BF16_CAPABILITY = 8
"""The first CUDA compute capability (major) with native bf16 (Ampere)."""


@dataclass(frozen=True)
class Device:
    """What the precision rule needs to know of the device a run trains on."""

    kind: Literal["cpu", "gpu"]
    """cpu or gpu."""
    capability: tuple[int, int] | None = None
    """The GPU's CUDA compute capability (major, minor), e.g. (7, 0) for V100; None on CPU."""
    name: str = ""
    """The GPU model for messages (V100, or what torch.cuda reports)."""

    def __post_init__(self):
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"Device kind {self.kind!r}: use 'cpu' or 'gpu'")
        if (self.kind == "gpu") != (self.capability is not None):
            raise ValueError(f"Device({self.kind!r}): a GPU has a compute capability, a CPU none")

    @property
    def label(self) -> str:
        major, minor = self.capability or (0, 0)
        return self.name or f"compute capability {major}.{minor}"


def best_precision(device: Device) -> str:
    """What ``auto`` means on ``device``."""
    if device.kind == "cpu":
        return "fp32"
    return "bf16" if device.capability[0] >= BF16_CAPABILITY else "fp16"


def resolve_precision(requested: str, device: Device, *, key: str = "train.precision") -> str:
    """The precision training runs in when ``requested`` (asked for as ``key``) on ``device``: fp32, fp16 or bf16.
    A ConfigError of one line naming ``key`` when the device cannot train in it (callers add the file)."""
    if requested not in PRECISIONS:
        raise ConfigError(f"'{key}: {requested}' is not a precision; use one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return best_precision(device)
    if device.kind == "cpu" and requested != "fp32":
        raise ConfigError(f"'{key}: {requested}' needs GPUs; CPU-only nodes train in fp32")
    if requested == "bf16" and device.capability[0] < BF16_CAPABILITY:
        raise ConfigError(f"'{key}: bf16' is not supported by {device.label} GPUs; use fp16")
    return requested
