"""Model registry: validated config dataclasses, size presets, and ``build_model`` for the experiment configs.

    >>> build_model("autoencoding_mixer", preset="debug", n_vocab=512, length=32)
    >>> model_config("autoencoding_mixer", preset="cpu", n_vocab=8000, length=256, kernel=4)
    >>> build_model("autoencoding_mixer", n_vocab=8000, length=256, dimm=256)
    ConfigError: model 'autoencoding_mixer': unknown key 'dimm'; did you mean 'dim'? valid keys: ...

Parameters keep the seed's argument names. Preset values are defaults that params override; ``n_vocab`` and
``length`` are always given by the caller (the trainer fills them from the tokenizer and the data context).
Presets: ``debug`` trains on a CPU in seconds; ``cpu`` is the size of the demo on a 2-core machine; the rest are the
seed's cluster sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import nn

from ..configuration import ConfigError, from_dict, unknown_key_message


def _check(source: str, condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(f"{source}: {message}")


@dataclass(kw_only=True)
class MixerConfig:
    """Fields shared by every model: vocabulary, width, depth and tokens per chunk."""

    n_vocab: int = 0
    """Vocabulary size; the trainer fills it from the tokenizer."""
    dim: int = 256
    """Hidden width (of the decoder, for memory models)."""
    depth: int = 4
    """Blocks in each of the encoder and the decoder (in the whole model for causal LMs)."""
    length: int = 0
    """Tokens per chunk (the whole input for non-chunked models); the trainer fills it from the data context."""

    def check(self, source: str) -> None:
        for key in ("n_vocab", "length"):
            _check(source, getattr(self, key) > 0,
                   f"'{key}' is required and must be positive (the trainer fills it from the data; got {getattr(self, key)})")
        for key in ("dim", "depth"):
            _check(source, getattr(self, key) > 0, f"'{key}' must be positive, got {getattr(self, key)}")
        for key in ("kernel", "compression", "n_chunks"):
            if hasattr(self, key):
                _check(source, getattr(self, key) >= 1, f"'{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("dim", "encoder_dim"):
            width = getattr(self, key, None)
            heads = getattr(self, "n_heads", 0)
            if width and heads > 0 and key in self.headed_widths():
                _check(source, width % heads == 0, f"'n_heads' ({heads}) must divide '{key}' ({width})")
            if width and getattr(self, "compression", 1) > 1 and key in self.compressed_widths():
                _check(source, width % self.compression == 0,
                       f"'compression' ({self.compression}) must divide '{key}' ({width})")

    def headed_widths(self) -> tuple[str, ...]:
        """Widths that multi-head mixing splits (must be divisible by ``n_heads``)."""
        return ("dim",)

    def compressed_widths(self) -> tuple[str, ...]:
        """Widths that ``down`` divides by ``compression``."""
        return ("dim",)


@dataclass(kw_only=True)
class LanguageMixerConfig(MixerConfig):
    n_heads: int = 0
    """Token-mixing heads (0: one flat L x L mixing per tap)."""
    kernel: int = 1
    """Taps on the feature axis; each tap is its own causal L x L matrix (the seed's Conv1d kernel)."""
    tie_weights: bool = False
    """Share the token embedding and the output head."""


@dataclass(kw_only=True)
class AutoencodingMixerConfig(MixerConfig):
    compression: int = 1
    """Embedding compression factor: ``down`` d -> d/compression and ``up`` back (1: none)."""
    kernel: int = 1
    """Taps on the feature axis of the token mixing."""
    n_heads: int = 0
    """Token-mixing heads (0: flat)."""
    unroll: bool = True
    """Feed the decoder the sliding-window unroll of the embedding (False: the embedding repeated L times)."""
    random: bool = False
    """Control experiment: the encoder sees uniformly random tokens."""
    clm_encoder: bool = False
    """Read the embedding at the second-to-last token (for encoders trained as causal LMs)."""


@dataclass(kw_only=True)
class ModelEntry:
    """One registered model: its class, its config dataclass and how the config becomes constructor arguments."""

    cls: Callable[..., nn.Module]
    config: type
    positional: tuple[str, ...] = ("n_vocab", "dim", "depth", "length")

    def build(self, config) -> nn.Module:
        values = dataclasses.asdict(config)
        args = [values.pop(name) for name in self.positional]
        return self.cls(*args, **values)


def _entries() -> dict[str, ModelEntry]:
    from .autoencoder import AutoencodingMixer
    from .mixer import LanguageMixer

    return {
        "language_mixer": ModelEntry(cls=LanguageMixer, config=LanguageMixerConfig),
        "autoencoding_mixer": ModelEntry(cls=AutoencodingMixer, config=AutoencodingMixerConfig),
    }


MODELS: dict[str, ModelEntry] = _entries()

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "language_mixer": {
        "debug": {"dim": 32, "depth": 2},
        "cpu": {"dim": 256, "depth": 8},
        "d512": {"dim": 512, "depth": 8},
        "d1024": {"dim": 1024, "depth": 16},
    },
    "autoencoding_mixer": {
        "debug": {"dim": 32, "depth": 2},
        "cpu": {"dim": 256, "depth": 4},
        "d512": {"dim": 512, "depth": 8},
        "d1024": {"dim": 1024, "depth": 8, "kernel": 8},
    },
}


def _entry(name: str, source: str) -> ModelEntry:
    if name not in MODELS:
        raise ConfigError(unknown_key_message(source, name, MODELS, what="model"))
    return MODELS[name]


def model_config(name: str, *, preset: str | None = None, source: str | None = None, **params):
    """The validated config dataclass for model ``name``: preset values, overridden by ``params``.

    ``source`` names where the values came from (e.g. the experiment file) in every error message.
    """
    entry = _entry(name, source or "models")
    where = f"{source}: model '{name}'" if source else f"model '{name}'"
    values: dict[str, Any] = {}
    if preset is not None:
        presets = PRESETS.get(name, {})
        if preset not in presets:
            raise ConfigError(unknown_key_message(where, preset, presets, what="preset"))
        values.update(presets[preset])
    values.update(params)
    config = from_dict(entry.config, values, source=where)
    config.check(where)
    return config


def build_model(name: str, *, preset: str | None = None, source: str | None = None, **params) -> nn.Module:
    """Build model ``name`` (a key of ``MODELS``) from a preset and params; unknown params are a ConfigError."""
    config = model_config(name, preset=preset, source=source, **params)
    return MODELS[name].build(config)
