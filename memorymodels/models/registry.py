"""Model registry: validated config dataclasses, size presets, and ``build_model`` for the experiment configs.

    >>> build_model("autoencoding_mixer", preset="debug", n_vocab=512, length=32)
    >>> model_config("autoencoding_mixer", preset="cpu", n_vocab=8000, length=256, kernel=4)
    >>> build_model("autoencoding_mixer", n_vocab=8000, length=256, dimm=256)
    ConfigError: model 'autoencoding_mixer': unknown key 'dimm'; did you mean 'dim'? valid keys: ...

Parameters keep the seed's argument names. Preset values are defaults that params override; ``n_vocab`` and
``length`` are always given by the caller (the trainer fills them from the tokenizer and the data context).
Presets: ``debug`` trains on a CPU in seconds; ``cpu`` is the size of the demo on a 2-core machine; the rest are the
seed's cluster sizes.

Every rule between parameters (head counts per width, compression, the copy task, ...) lives in the model config's
``check``, without torch: ``model_config`` runs it for the launcher's dry run, the experiment loader and
``build_model`` alike, so a constructor never sees a combination it would refuse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:  # the registry itself needs no torch: the launcher validates configs without importing it
    from torch import nn

from ..configuration import ConfigError, from_dict, unknown_key_message


def _check(source: str, condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(f"{source}: {message}")


def head_counts(width: int, even: bool) -> list[int]:
    """The head counts that split ``width`` evenly (into heads of an even size when ``even``: RoPE rotates pairs)."""
    return [h for h in range(1, width + 1) if width % h == 0 and (not even or (width // h) % 2 == 0)]


@dataclass(frozen=True)
class HeadSplit:
    """One layer stack that splits a width into heads: which key counts the heads and which width they split."""

    heads: str
    """The config key holding the head count (``n_heads``, ``attention_heads``)."""
    width: str
    """The width's name in messages (a config key, or an expression of keys)."""
    value: int
    """The width."""
    attention: bool
    """Llama attention (at least one head, even head size) rather than mixer heads (0: flat mixing)."""


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

    # Every rule between fields is checked here, without torch, so that a launcher's dry run refuses what the model
    # constructors would; n_vocab and length are checked here rather than in __post_init__ because presets leave
    # them to the caller.

    def check(self, source: str) -> None:
        for key in ("n_vocab", "length"):
            _check(source, getattr(self, key) > 0,
                   f"'{key}' is required and must be positive (the trainer fills it from the data; got {getattr(self, key)})")
        for key in ("dim", "depth", "encoder_dim"):
            if hasattr(self, key):
                _check(source, getattr(self, key) > 0, f"'{key}' must be positive, got {getattr(self, key)}")
        for key in ("kernel", "compression", "n_chunks"):
            if hasattr(self, key):
                _check(source, getattr(self, key) >= 1, f"'{key}' must be at least 1, got {getattr(self, key)}")
        for split in self.head_splits():
            heads = getattr(self, split.heads)
            valid = head_counts(split.value, even=split.attention)
            choices = ", ".join(map(str, valid[:12])) + (", ..." if len(valid) > 12 else "")
            if split.attention:
                _check(source, heads >= 1, f"'{split.heads}' must be at least 1 (attention heads), got {heads}")
                _check(source, heads in valid, f"'{split.heads}' ({heads}) must divide '{split.width}' "
                                               f"({split.value}) into heads of an even size (RoPE); use one of {choices}")
            else:
                _check(source, heads >= 0, f"'{split.heads}' must be 0 (flat mixing) or more, got {heads}")
                _check(source, heads == 0 or heads in valid, f"'{split.heads}' ({heads}) must divide "
                                                             f"'{split.width}' ({split.value}); use 0 or one of {choices}")
        compression = getattr(self, "compression", 1)
        for key in self.compressed_widths():
            width = getattr(self, key)
            _check(source, compression <= 1 or width % compression == 0,
                   f"'compression' ({compression}) must divide '{key}' ({width})")

    def head_splits(self) -> list[HeadSplit]:
        """The widths that heads split: by default mixer heads (``n_heads``, 0: flat) over ``dim``."""
        return [HeadSplit("n_heads", "dim", self.dim, attention=False)] if hasattr(self, "n_heads") else []

    def compressed_widths(self) -> tuple[str, ...]:
        """Widths that ``down`` divides by ``compression``."""
        return ("dim",) if hasattr(self, "compression") else ()


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
    frozen_encoder: str | None = None
    """Checkpoint (file or directory) of a trained mixer whose wte and blocks become the frozen encoder."""


@dataclass(kw_only=True)
class MemoryConfig(MixerConfig):
    """Fields shared by the encoder-decoder memory mixers."""

    encoder_dim: int = 128
    """Encoder width (the seed's memory runs use half the decoder width)."""
    compression: int = 4
    """Memory compression: ``down`` encoder_dim -> encoder_dim/compression (1: none)."""
    n_heads: int = 0
    """Encoder token-mixing heads (0: flat)."""
    kernel: int = 1
    """Taps on the feature axis of the token mixing."""

    def head_splits(self) -> list[HeadSplit]:
        # the decoder mixes flat (one tap): n_heads shapes the encoder only
        return [HeadSplit("n_heads", "encoder_dim", self.encoder_dim, attention=False)]

    def compressed_widths(self) -> tuple[str, ...]:
        return ("encoder_dim",)


@dataclass(kw_only=True)
class MemoryMixerConfig(MemoryConfig):
    combination_dim: Literal["token", "embedding"] = "token"
    """How the decoder reads the memory: as a prepended token, or concatenated to every token's features."""
    random: bool = False
    """Control experiment: the encoder sees uniformly random tokens."""


@dataclass(kw_only=True)
class ProjMemoryMixerConfig(MemoryConfig):
    def head_splits(self) -> list[HeadSplit]:
        # n_heads shapes the encoder and the decoder blocks
        return [HeadSplit("n_heads", "encoder_dim", self.encoder_dim, attention=False),
                HeadSplit("n_heads", "dim", self.dim, attention=False)]


@dataclass(kw_only=True)
class FrozenMemoryMixerConfig(MemoryConfig):
    encoder_checkpoint: str | None = None
    """Trained mixer checkpoint for the frozen encoder (sizes read from it); None: a random frozen encoder."""


@dataclass(kw_only=True)
class VariableMemoryMixerConfig(MemoryConfig):
    n_chunks: int = 4
    """Chunks per input row (the input has n_chunks * length tokens); chunks 0..C-2 are encoded as memories."""
    no_memory: bool = False
    """Baseline: decode every chunk with zero memories (no encoder is built)."""
    frozen_encoder: str | None = None
    """Checkpoint (file or directory) of a trained mixer whose wte and blocks become the frozen encoder."""
    copy: bool = False
    """Copy objective: the second half of each row repeats the first and only it is scored."""
    blank_copy: bool = False
    """With copy: the second half is blanked (pad_id), so it must be recalled from memory."""
    encoder_ctx: int = 0
    """Right-pad each chunk with pad_id to this many tokens for the encoder (0: length)."""
    pad_id: int = 1
    """Token id used by encoder_ctx padding and blank_copy."""

    def check(self, source: str) -> None:
        super().check(source)
        check_copy_task(self, source)
        _check(source, self.encoder_ctx == 0 or self.encoder_ctx >= self.length,
               f"'encoder_ctx' ({self.encoder_ctx}) must be 0 (the chunk length) or at least 'length' "
               f"({self.length}); a shorter one would cut the chunks")


@dataclass(kw_only=True)
class RecurrentMemoryMixerConfig(MixerConfig):
    n_heads: int = 0
    """Token-mixing heads (0: flat)."""
    kernel: int = 1
    """Taps on the feature axis of the token mixing."""
    n_chunks: int = 4
    """Chunks per input row, decoded in order with the memory carried between them."""
    no_memory: bool = False
    """Baseline: carry no memory between chunks."""


@dataclass(kw_only=True)
class LlamaCLMConfig(MixerConfig):
    n_heads: int = 4
    """Attention heads (must split dim into an even head size)."""
    tie_weights: bool = False
    """Share the token embedding and the output head."""

    def head_splits(self) -> list[HeadSplit]:
        return [HeadSplit("n_heads", "dim", self.dim, attention=True)]


@dataclass(kw_only=True)
class TransformerAutoencoderConfig(MixerConfig):
    n_heads: int = 4
    """Attention heads."""
    compression: int = 1
    """Embedding compression factor (1: none)."""
    unroll: bool = True
    """Sliding-window unroll of the embedding for the decoder (False: repeat)."""

    def head_splits(self) -> list[HeadSplit]:
        return [HeadSplit("n_heads", "dim", self.dim, attention=True)]


@dataclass(kw_only=True)
class AutoencodingTransfixerConfig(MixerConfig):
    compression: int = 1
    """Embedding compression factor (1: none)."""
    use_transformer_encoder: bool = True
    """Llama encoder + mixer decoder (False: mixer encoder + Llama decoder)."""
    n_heads: int = 0
    """Mixer token-mixing heads (0: flat)."""
    kernel: int = 1
    """Mixer taps on the feature axis."""
    attention_heads: int = 4
    """Llama attention heads."""

    def head_splits(self) -> list[HeadSplit]:
        return [HeadSplit("n_heads", "dim", self.dim, attention=False),
                HeadSplit("attention_heads", "dim", self.dim, attention=True)]


@dataclass(kw_only=True)
class VariableMemoryTransformerConfig(MixerConfig):
    encoder_dim: int = 128
    """Encoder width."""
    compression: int = 1
    """Memory compression factor (1: none)."""
    n_heads: int = 4
    """Attention heads of the encoder and the decoder."""
    n_chunks: int = 4
    """Chunks per input row; chunks 0..C-2 are encoded as memories."""
    fixed_memory: bool = True
    """Tokens at fixed positions after C memory slots (False: right after the c memories of chunk c)."""
    no_memory: bool = False
    """Baseline: all memory slots are ones (no encoder is built)."""
    copy: bool = False
    """Copy objective: the second half of each row repeats the first and only it is scored."""
    blank_copy: bool = False
    """With copy: the second half is blanked (pad_id)."""
    pad_id: int = 1
    """Token id for blank_copy."""

    def check(self, source: str) -> None:
        super().check(source)
        check_copy_task(self, source)

    def head_splits(self) -> list[HeadSplit]:
        splits = [HeadSplit("n_heads", "dim", self.dim, attention=True)]
        if not self.no_memory:  # no encoder is built without memories
            splits.append(HeadSplit("n_heads", "encoder_dim", self.encoder_dim, attention=True))
        return splits

    def compressed_widths(self) -> tuple[str, ...]:
        return ("encoder_dim",)


@dataclass(kw_only=True)
class RecurrentMemoryTransformerConfig(MixerConfig):
    n_heads: int = 4
    """Attention heads."""
    n_chunks: int = 4
    """Chunks per input row, decoded in order with the memory carried between them."""

    def head_splits(self) -> list[HeadSplit]:
        return [HeadSplit("n_heads", "dim", self.dim, attention=True)]


@dataclass(kw_only=True)
class MemoryTransformerConfig(MemoryConfig):
    combination_dim: Literal["token", "embedding"] = "token"
    """How the decoder reads the memory: as a prepended token, or concatenated to every token's features."""
    transformer_encoder: bool = False
    """Llama encoder (False: mixer encoder shaped by n_heads and kernel)."""
    random: bool = False
    """Control experiment: the encoder sees uniformly random tokens."""
    noise_embedding: bool = False
    """Add uniform noise of width `noise` to the compressed memory during training (quantisation-aware)."""
    noise: float = 0.125
    """Width of the uniform training noise, centred on zero."""
    attention_heads: int = 4
    """Llama attention heads of the decoder (and of a transformer encoder)."""

    def check(self, source: str) -> None:
        super().check(source)
        _check(source, self.noise >= 0, f"'noise' must be 0 or more (the width of the noise), got {self.noise}")

    def head_splits(self) -> list[HeadSplit]:
        if self.combination_dim == "token":
            decoder = HeadSplit("attention_heads", "dim", self.dim, attention=True)
        else:  # the compressed memory widens every token's features
            code = self.encoder_dim // self.compression
            decoder = HeadSplit("attention_heads", "dim + encoder_dim/compression", self.dim + code, attention=True)
        if self.transformer_encoder:
            return [HeadSplit("attention_heads", "encoder_dim", self.encoder_dim, attention=True), decoder]
        return [HeadSplit("n_heads", "encoder_dim", self.encoder_dim, attention=False), decoder]


def check_copy_task(config, source: str) -> None:
    """The copy objective's rules (variable memory mixer and transformer): a row splits in two halves, the blank
    and padding token is a token of the vocabulary, and blanking needs the copy objective."""
    _check(source, 0 <= config.pad_id < config.n_vocab,
           f"'pad_id' ({config.pad_id}) must be a token id, 0 to n_vocab-1 ({config.n_vocab - 1})")
    _check(source, config.copy or not config.blank_copy, "'blank_copy' needs 'copy: true' (it blanks the copied half)")
    tokens = config.n_chunks * config.length
    _check(source, not config.copy or tokens % 2 == 0,
           f"'copy' needs an even number of tokens per row; n_chunks x length is {tokens}")


MIXER_ARGS = ("n_vocab", "dim", "depth", "length")
MEMORY_ARGS = ("n_vocab", "encoder_dim", "dim", "depth", "length")


@dataclass(kw_only=True)
class ModelEntry:
    """One registered model: its class, its config dataclass, and how a config becomes constructor arguments."""

    cls: Callable[..., nn.Module]
    config: type
    args: tuple[str, ...] = MIXER_ARGS
    """Config fields passed positionally, in the constructor's (the seed's) order; the rest go by keyword."""
    modules: Callable[[Any], dict[str, Any]] | None = None
    """Builds constructor arguments that are modules (frozen encoders) from config fields (e.g. a checkpoint path)."""
    drop: tuple[str, ...] = ()
    """Config fields consumed by ``modules`` and not passed to the constructor."""

    def build(self, config) -> nn.Module:
        values = dataclasses.asdict(config)
        if self.modules is not None:
            values.update(self.modules(config))
        for key in self.drop:
            del values[key]
        return mark_blocks(self.cls(*[values.pop(name) for name in self.args], **values))


BLOCK_CLASSES = ("MixerBlock", "LlamaDecoderLayer")


def mark_blocks(model: nn.Module) -> nn.Module:
    """Name the model's block classes in ``_no_split_modules`` (the transformers convention), for FSDP.

    accelerate's ``TRANSFORMER_BASED_WRAP`` (``configs/fsdp_config.yaml``) shards each module of these classes as one
    unit; with none named it wraps only the root, and every rank gathers the whole model at once. The classes present
    depend on the configuration (a memory transformer's encoder is mixer or Llama blocks), so they are read from the
    built model; accelerate refuses a named class that the model does not contain.
    """
    model._no_split_modules = sorted({type(m).__name__ for m in model.modules()} & set(BLOCK_CLASSES))
    return model


def _frozen_encoder(config) -> dict[str, Any]:
    """``frozen_encoder``: a checkpoint path in the config, the loaded frozen encoder for the constructor."""
    from .autoencoder import frozen_mixer_encoder

    return {"frozen_encoder": frozen_mixer_encoder(config.frozen_encoder) if config.frozen_encoder else None}


def _frozen_memory_encoder(config) -> dict[str, Any]:
    """The encoder of ``frozen_memory_mixer``: loaded from ``encoder_checkpoint``, or random (the untrained control)."""
    from .autoencoder import TruncatedModel, frozen_mixer_encoder

    if config.encoder_checkpoint:
        return {"encoder_model": frozen_mixer_encoder(config.encoder_checkpoint)}
    encoder = TruncatedModel.empty(config.n_vocab, config.encoder_dim, config.depth, config.length,
                                   n_heads=config.n_heads, kernel=config.kernel)
    return {"encoder_model": encoder.requires_grad_(False)}


def _lazy(module: str, name: str) -> Callable[..., nn.Module]:
    """A model class imported when first built: the classes import torch (and the Llama baselines transformers),
    seconds that the launcher, which validates configs here before submitting, should not pay."""

    def construct(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(f".{module}", __package__), name)(*args, **kwargs)

    construct.__name__ = construct.__qualname__ = name
    return construct


def _entries() -> dict[str, ModelEntry]:
    return {
        "language_mixer": ModelEntry(cls=_lazy("mixer", "LanguageMixer"), config=LanguageMixerConfig),
        "autoencoding_mixer": ModelEntry(cls=_lazy("autoencoder", "AutoencodingMixer"),
                                         config=AutoencodingMixerConfig, modules=_frozen_encoder),
        "memory_mixer": ModelEntry(cls=_lazy("memory", "MemoryMixer"), config=MemoryMixerConfig, args=MEMORY_ARGS),
        "proj_memory_mixer": ModelEntry(cls=_lazy("memory", "ProjMemoryMixer"), config=ProjMemoryMixerConfig,
                                        args=MEMORY_ARGS),
        "frozen_memory_mixer": ModelEntry(cls=_lazy("memory", "FrozenMemoryMixer"), config=FrozenMemoryMixerConfig,
                                          args=("n_vocab", "encoder_model", "encoder_dim", "dim", "depth", "length"),
                                          modules=_frozen_memory_encoder, drop=("encoder_checkpoint",)),
        "variable_memory_mixer": ModelEntry(cls=_lazy("memory", "VariableMemoryMixer"),
                                            config=VariableMemoryMixerConfig, args=MEMORY_ARGS,
                                            modules=_frozen_encoder),
        "recurrent_memory_mixer": ModelEntry(cls=_lazy("memory", "RecurrentMemoryMixer"),
                                             config=RecurrentMemoryMixerConfig),
        "llama_clm": ModelEntry(cls=_lazy("transformer", "LlamaCLM"), config=LlamaCLMConfig),
        "transformer_autoencoder": ModelEntry(cls=_lazy("transformer", "TransformerAutoencoder"),
                                              config=TransformerAutoencoderConfig),
        "autoencoding_transfixer": ModelEntry(cls=_lazy("transformer", "AutoencodingTransfixer"),
                                              config=AutoencodingTransfixerConfig),
        "variable_memory_transformer": ModelEntry(cls=_lazy("transformer", "VariableMemoryTransformer"),
                                                  config=VariableMemoryTransformerConfig, args=MEMORY_ARGS),
        "recurrent_memory_transformer": ModelEntry(cls=_lazy("transformer", "RecurrentMemoryTransformer"),
                                                   config=RecurrentMemoryTransformerConfig),
        "memory_transformer": ModelEntry(cls=_lazy("transformer", "MemoryTransformer"),
                                         config=MemoryTransformerConfig, args=MEMORY_ARGS),
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
    "memory_mixer": {
        "debug": {"encoder_dim": 32, "dim": 32, "depth": 2},
        "cpu": {"encoder_dim": 256, "dim": 256, "depth": 4},
        "d1024": {"encoder_dim": 1024, "dim": 1024, "depth": 8, "kernel": 4},
    },
    "proj_memory_mixer": {
        "debug": {"encoder_dim": 32, "dim": 32, "depth": 2},
        "cpu": {"encoder_dim": 128, "dim": 256, "depth": 4},
        "d1024": {"encoder_dim": 512, "dim": 1024, "depth": 8},
    },
    "frozen_memory_mixer": {
        "debug": {"encoder_dim": 32, "dim": 32, "depth": 2},
        "cpu": {"encoder_dim": 256, "dim": 256, "depth": 4},
        "d1024": {"encoder_dim": 1024, "dim": 1024, "depth": 8},
    },
    "variable_memory_mixer": {
        "debug": {"encoder_dim": 16, "dim": 32, "depth": 2, "n_chunks": 2},
        "cpu": {"encoder_dim": 128, "dim": 256, "depth": 4, "n_chunks": 4},
        "d1024": {"encoder_dim": 512, "dim": 1024, "depth": 8, "n_chunks": 4},
    },
    "llama_clm": {
        "debug": {"dim": 32, "depth": 2, "n_heads": 4},
        "cpu": {"dim": 128, "depth": 8, "n_heads": 4},
        "d512": {"dim": 512, "depth": 16, "n_heads": 4},
    },
    "transformer_autoencoder": {
        "debug": {"dim": 32, "depth": 2, "n_heads": 4},
        "cpu": {"dim": 256, "depth": 4, "n_heads": 4},
        "d512": {"dim": 512, "depth": 8, "n_heads": 4},
    },
    "autoencoding_transfixer": {
        "debug": {"dim": 32, "depth": 2},
        "cpu": {"dim": 256, "depth": 4},
        "d512": {"dim": 512, "depth": 8},
    },
    "variable_memory_transformer": {
        "debug": {"encoder_dim": 16, "dim": 32, "depth": 2, "n_chunks": 2, "n_heads": 4},
        "cpu": {"encoder_dim": 128, "dim": 256, "depth": 4, "n_chunks": 4, "n_heads": 4},
        "d512": {"encoder_dim": 256, "dim": 512, "depth": 16, "n_chunks": 4, "n_heads": 4},
    },
    "recurrent_memory_transformer": {
        "debug": {"dim": 32, "depth": 2, "n_chunks": 2, "n_heads": 4},
        "cpu": {"dim": 256, "depth": 4, "n_chunks": 4, "n_heads": 4},
        "d512": {"dim": 512, "depth": 16, "n_chunks": 4, "n_heads": 4},
    },
    "memory_transformer": {
        "debug": {"encoder_dim": 32, "dim": 32, "depth": 2},
        "cpu": {"encoder_dim": 256, "dim": 256, "depth": 4},
        "d512": {"encoder_dim": 256, "dim": 512, "depth": 16},
    },
    "recurrent_memory_mixer": {
        "debug": {"dim": 32, "depth": 2, "n_chunks": 2},
        "cpu": {"dim": 256, "depth": 4, "n_chunks": 4},
        "d1024": {"dim": 1024, "depth": 8, "n_chunks": 4},
    },
}


def model_entry(name: str, source: str = "models") -> ModelEntry:
    """The registered model ``name``; an unknown one is a ConfigError naming it first, with the closest valid one."""
    if name not in MODELS:
        raise ConfigError(unknown_key_message(source, name, MODELS, what="model", cutoff=0))  # always a suggestion
    return MODELS[name]


def preset_values(name: str, preset: str | None, source: str | None = None) -> dict[str, Any]:
    """The parameters of ``preset`` of model ``name`` ({} for None); the model is checked first, then the preset."""
    model_entry(name, source or "models")
    if preset is None:
        return {}
    presets = PRESETS.get(name, {})
    if preset not in presets:
        where = f"{source}: model '{name}'" if source else f"model '{name}'"
        raise ConfigError(unknown_key_message(where, preset, presets, what="preset"))
    return dict(presets[preset])


def model_config(name: str, *, preset: str | None = None, source: str | None = None, **params):
    """The validated config dataclass for model ``name``: preset values, overridden by ``params``.

    ``source`` names where the values came from (e.g. the experiment file) in every error message.
    """
    entry = model_entry(name, source or "models")
    where = f"{source}: model '{name}'" if source else f"model '{name}'"
    values = preset_values(name, preset, source)
    values.update(params)
    config = from_dict(entry.config, values, source=where)
    config.check(where)
    return config


def build_model(name: str, *, preset: str | None = None, source: str | None = None, **params) -> nn.Module:
    """Build model ``name`` (a key of ``MODELS``) from a preset and params; unknown params are a ConfigError."""
    config = model_config(name, preset=preset, source=source, **params)
    try:
        return MODELS[name].build(config)
    except (ValueError, FileNotFoundError) as exc:  # a combination the constructor rejects, a missing checkpoint
        where = f"{source}: model '{name}'" if source else f"model '{name}'"
        raise ConfigError(f"{where}: {exc}") from None


def length_for_context(name: str, context: int, *, preset: str | None = None, source: str | None = None,
                       **params) -> int:
    """The ``length`` to build model ``name`` with so that one input row holds ``context`` tokens.

    ``context`` for single-chunk models; ``context / n_chunks`` for chunked memory models (``n_chunks`` from the
    params or the preset). The built model's ``input_length`` then equals ``context``.
    """
    entry = model_entry(name, source or "models")
    where = f"{source}: model '{name}'" if source else f"model '{name}'"
    if "n_chunks" not in {f.name for f in dataclasses.fields(entry.config)}:
        return context
    n_chunks = params.get("n_chunks", PRESETS.get(name, {}).get(preset or "", {}).get("n_chunks", 4))
    if n_chunks < 1 or context % n_chunks:
        raise ConfigError(f"{where}: the data context ({context}) must be a multiple of n_chunks ({n_chunks})")
    return context // n_chunks
