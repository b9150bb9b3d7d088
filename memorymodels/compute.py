"""Analytic training FLOPs of every model family in the registry, from its config alone (no torch).

    >>> from memorymodels.compute import model_flops
    >>> count = model_flops("language_mixer", preset="cpu", n_vocab=4096, length=256)
    >>> count.training_per_token / 1e6, count.forward        # MFLOPs per token; the forward per row, by part
    >>> flops_of_build({"name": ..., "preset": ..., "params": ...})   # what run.json records as model.build

This module owns the FLOP count: the trainer's ``flops`` in metrics.jsonl, ``python -m memorymodels.frontier`` and
``benchmarks/models.py`` (% of matmul peak) all read it; ``tests/models/test_compute.py`` checks it against
``torch.utils.flop_counter`` on every family.

What is counted: the matrix products the model runs, 2 FLOPs per multiply-add, dense as they are computed:
- a mixer's token mixing, a dense (L x L x k taps) product over d features: ``2 L^2 k d`` per row and block. The
  masked upper triangle is included: it is computed and multiplied by zero weights (half of it is useful work);
  a headed mixer adds its d x d input projection and ``out_proj``; the feed-forward d -> 4d -> d is ``16 d^2`` per
  token;
- a Llama layer: q, k, v, o (``8 d^2`` per token), the SwiGLU MLP of width 4d (``24 d^2`` per token) and the
  attention scores and values (``4 T^2 d`` per row, dense: masked scores are computed too);
- the output head's vocabulary projection, ``2 d V`` per position it is applied to;
- autoencoders: encoder, bottleneck (``down``/``up``), the unroll projection and the decoder; memory models: the
  encoder over every memorised chunk, the decoder over every chunk with its memory slots, the recurrent models' C
  sequential passes. Mixer encoders compute only the token their last block is read at (as the models do).
Not counted: embedding lookups, norms, activations, softmax, rotary tables, the loss and the optimizer update: each
is linear in the tokens with no d^2 or L^2 factor (a few percent at most at the shipped sizes).

Training FLOPs = 3 x forward: the backward pass of each product computes two products of its size (the gradient
of its input and of its weight). Frozen encoders (``frozen_encoder``, ``frozen_memory_mixer``) run forward only:
their weights and their input (the frozen embedding) need no gradient, so no backward runs through them (the
first trained product after them computes only its weight gradient; the count gives it an input gradient too, one
product per token, within 2% at the debug size and less at larger ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memorymodels.models.registry import model_config

BACKWARD_FACTOR = 2
"""Backward FLOPs per forward FLOP of a trained product (input gradient + weight gradient)."""


def linear(tokens: int, d_in: int, d_out: int) -> int:
    """A dense layer d_in -> d_out applied to ``tokens`` tokens."""
    return 2 * tokens * d_in * d_out


def mixer_block(dim: int, length: int, *, n_heads: int = 0, kernel: int = 1, tokens_out: int | None = None) -> int:
    """One ``MixerBlock`` on a (length, dim) row; ``tokens_out=1`` when only one output token is computed.

    Flat mixing computes only the output rows asked for; headed mixing computes all L before one is taken.
    """
    out = length if tokens_out is None else tokens_out
    if n_heads:  # proj_head (d -> d over the heads), grouped L x L mixing, out_proj: all on the full row
        mixing = linear(length, dim, dim) + 2 * length * length * kernel * dim + linear(length, dim, dim)
    else:
        mixing = 2 * out * length * kernel * dim
    return mixing + linear(out, dim, 4 * dim) + linear(out, 4 * dim, dim)


def mixer_stack(dim: int, length: int, depth: int, *, n_heads: int = 0, kernel: int = 1,
                last_token_only: bool = False) -> int:
    """``depth`` mixer blocks; with ``last_token_only`` the last computes one token (``mixer.token_embedding``)."""
    full = mixer_block(dim, length, n_heads=n_heads, kernel=kernel)
    if not last_token_only:
        return depth * full
    return (depth - 1) * full + mixer_block(dim, length, n_heads=n_heads, kernel=kernel, tokens_out=1)


def llama_stack(dim: int, positions: int, depth: int) -> int:
    """``depth`` Llama layers (q, k, v, o; SwiGLU of width 4d; attention over ``positions``) on one row."""
    projections = 4 * linear(positions, dim, dim)
    mlp = 2 * linear(positions, dim, 4 * dim) + linear(positions, 4 * dim, dim)
    attention = 2 * 2 * positions * positions * dim  # scores q k^T and the weighted sum of values
    return depth * (projections + mlp + attention)


@dataclass
class ModelFlops:
    """FLOPs of one input row of a model: the forward pass by part, which parts are frozen, tokens per row."""

    forward: dict[str, int]
    """Forward FLOPs per input row, by part (encoder, bottleneck, decoder, head, ...)."""
    tokens_per_row: int
    """Input tokens per row (the model's ``input_length``)."""
    frozen: tuple[str, ...] = field(default=())
    """Parts that run forward only (no gradient reaches them)."""

    @property
    def forward_per_row(self) -> int:
        return sum(self.forward.values())

    @property
    def training_per_row(self) -> int:
        """Forward + backward of one row: 3 x forward for trained parts, 1 x for frozen ones."""
        frozen = sum(v for k, v in self.forward.items() if k in self.frozen)
        return self.forward_per_row * (1 + BACKWARD_FACTOR) - BACKWARD_FACTOR * frozen

    @property
    def training_per_token(self) -> float:
        return self.training_per_row / self.tokens_per_row


def model_flops(name: str, *, preset: str | None = None, **params) -> ModelFlops:
    """The FLOP count of registry model ``name`` built from ``preset`` and ``params`` (as ``build_model`` takes)."""
    config = model_config(name, preset=preset, **params)
    return COUNTS[name](config)


def flops_of_build(build: dict) -> ModelFlops:
    """The FLOP count of a model from its build arguments (``{"name", "preset", "params"}``, run.json's
    ``model.build``)."""
    return model_flops(build["name"], preset=build.get("preset"), **build.get("params", {}))


# ---- per family ------------------------------------------------------------------------------------------------


def _code(width: int, compression: int) -> int:
    """Width of a compressed embedding: ``down`` maps width -> width / compression (none when compression is 1)."""
    return width // compression if compression > 1 else width


def _bottleneck(width: int, compression: int, *, up: bool = True) -> int:
    """``down`` (and ``up`` back) on one embedding token."""
    if compression <= 1:
        return 0
    code = _code(width, compression)
    return linear(1, width, code) + (linear(1, code, width) if up else 0)


def _language_mixer(c) -> ModelFlops:
    L = c.length
    return ModelFlops({"blocks": mixer_stack(c.dim, L, c.depth, n_heads=c.n_heads, kernel=c.kernel),
                       "head": linear(L, c.dim, c.n_vocab)}, L)


def _autoencoding_mixer(c) -> ModelFlops:
    d, L = c.dim, c.length
    parts = {
        "encoder": mixer_stack(d, L, c.depth, n_heads=c.n_heads, kernel=c.kernel, last_token_only=True),
        "bottleneck": _bottleneck(d, c.compression) + (linear(L, d // 2, d) if c.unroll else 0),
        "decoder": mixer_stack(d, L, c.depth, n_heads=c.n_heads, kernel=c.kernel),
        "head": linear(L, d, c.n_vocab),
    }
    return ModelFlops(parts, L, frozen=("encoder",) if c.frozen_encoder else ())


def _mixer_encoder(c, length: int | None = None) -> int:
    """A memory model's mixer encoder (width ``encoder_dim``) on one chunk, read at its last token."""
    return mixer_stack(c.encoder_dim, length or c.length, c.depth, n_heads=c.n_heads, kernel=c.kernel,
                       last_token_only=True)


def _memory_bottleneck(c, *, project: bool | None = None) -> int:
    """``down``/``up`` and ``decoder_proj`` (encoder_dim -> dim, when they differ) on one memory."""
    project = c.encoder_dim != c.dim if project is None else project
    return _bottleneck(c.encoder_dim, c.compression) + (linear(1, c.encoder_dim, c.dim) if project else 0)


def _memory_mixer(c) -> ModelFlops:
    L = c.length
    if c.combination_dim == "token":  # the memory is one more (first) position of the decoder
        bottleneck, width, positions = _memory_bottleneck(c), c.dim, L + 1
    else:  # the compressed memory widens every token
        bottleneck, width, positions = _bottleneck(c.encoder_dim, c.compression, up=False), \
            c.dim + _code(c.encoder_dim, c.compression), L
    return ModelFlops({"encoder": _mixer_encoder(c), "bottleneck": bottleneck,
                       "decoder": mixer_stack(width, positions, c.depth, kernel=c.kernel),
                       "head": linear(L, width, c.n_vocab)}, L)


def _proj_memory_mixer(c) -> ModelFlops:
    L = c.length
    return ModelFlops({"encoder": _mixer_encoder(c), "bottleneck": _memory_bottleneck(c, project=True),
                       "decoder": mixer_stack(c.dim, L, c.depth, n_heads=c.n_heads, kernel=c.kernel),
                       "head": linear(L, c.dim, c.n_vocab)}, L)


def _frozen_memory_mixer(c) -> ModelFlops:
    # sizes from the config: a checkpoint's encoder must match them (the encoder reads encoder_dim, depth, length)
    L = c.length
    return ModelFlops({"encoder": _mixer_encoder(c), "bottleneck": _memory_bottleneck(c),
                       "decoder": mixer_stack(c.dim, L + 1, c.depth, kernel=c.kernel),
                       "head": linear(L, c.dim, c.n_vocab)}, L, frozen=("encoder",))


def _variable_memory_mixer(c) -> ModelFlops:
    C, L = c.n_chunks, c.length
    parts = {}
    if not c.no_memory:  # chunks 0..C-2 are encoded (right-padded to encoder_ctx), one memory each
        parts["encoder"] = (C - 1) * _mixer_encoder(c, c.encoder_ctx or L)
        parts["bottleneck"] = (C - 1) * _memory_bottleneck(c)
    # every chunk is decoded from C memory slots + its L tokens; the decoder is flat with one tap
    parts["decoder"] = C * mixer_stack(c.dim, C + L, c.depth)
    parts["head"] = linear(C * L, c.dim, c.n_vocab)
    frozen = ("encoder",) if c.frozen_encoder and not c.no_memory else ()
    return ModelFlops(parts, C * L, frozen=frozen)


def _recurrent_memory_mixer(c) -> ModelFlops:
    C, L = c.n_chunks, c.length
    return ModelFlops({"decoder": C * mixer_stack(c.dim, L + 1, c.depth, n_heads=c.n_heads, kernel=c.kernel),
                       "head": linear(C * L, c.dim, c.n_vocab)}, C * L)


def _llama_clm(c) -> ModelFlops:
    L = c.length
    return ModelFlops({"blocks": llama_stack(c.dim, L, c.depth), "head": linear(L, c.dim, c.n_vocab)}, L)


def _transformer_autoencoder(c) -> ModelFlops:
    d, L = c.dim, c.length
    return ModelFlops({"encoder": llama_stack(d, L, c.depth),
                       "bottleneck": _bottleneck(d, c.compression) + (linear(L, d // 2, d) if c.unroll else 0),
                       "decoder": llama_stack(d, L, c.depth), "head": linear(L, d, c.n_vocab)}, L)


def _autoencoding_transfixer(c) -> ModelFlops:
    d, L = c.dim, c.length
    if c.use_transformer_encoder:
        encoder = llama_stack(d, L, c.depth)
        decoder = mixer_stack(d, L, c.depth, n_heads=c.n_heads, kernel=c.kernel)
    else:
        encoder = mixer_stack(d, L, c.depth, n_heads=c.n_heads, kernel=c.kernel, last_token_only=True)
        decoder = llama_stack(d, L, c.depth)
    return ModelFlops({"encoder": encoder, "bottleneck": _bottleneck(d, c.compression), "decoder": decoder,
                       "head": linear(L, d, c.n_vocab)}, L)


def _variable_memory_transformer(c) -> ModelFlops:
    C, L = c.n_chunks, c.length
    parts = {}
    if not c.no_memory:
        parts["encoder"] = (C - 1) * llama_stack(c.encoder_dim, L, c.depth)
        parts["bottleneck"] = (C - 1) * _memory_bottleneck(c)
    parts["decoder"] = C * llama_stack(c.dim, C + L, c.depth)
    parts["head"] = linear(C * L, c.dim, c.n_vocab)
    return ModelFlops(parts, C * L)


def _recurrent_memory_transformer(c) -> ModelFlops:
    C, L = c.n_chunks, c.length
    return ModelFlops({"decoder": C * llama_stack(c.dim, L + 1, c.depth),
                       "head": linear(C * L, c.dim, c.n_vocab)}, C * L)


def _memory_transformer(c) -> ModelFlops:
    L = c.length
    if c.transformer_encoder:
        encoder = llama_stack(c.encoder_dim, L, c.depth)
    else:
        encoder = _mixer_encoder(c)
    if c.combination_dim == "token":
        bottleneck, width, positions = _memory_bottleneck(c), c.dim, L + 1
    else:
        bottleneck, width, positions = _bottleneck(c.encoder_dim, c.compression, up=False), \
            c.dim + _code(c.encoder_dim, c.compression), L
    return ModelFlops({"encoder": encoder, "bottleneck": bottleneck, "decoder": llama_stack(width, positions, c.depth),
                       "head": linear(L, width, c.n_vocab)}, L)


COUNTS = {
    "language_mixer": _language_mixer,
    "autoencoding_mixer": _autoencoding_mixer,
    "memory_mixer": _memory_mixer,
    "proj_memory_mixer": _proj_memory_mixer,
    "frozen_memory_mixer": _frozen_memory_mixer,
    "variable_memory_mixer": _variable_memory_mixer,
    "recurrent_memory_mixer": _recurrent_memory_mixer,
    "llama_clm": _llama_clm,
    "transformer_autoencoder": _transformer_autoencoder,
    "autoencoding_transfixer": _autoencoding_transfixer,
    "variable_memory_transformer": _variable_memory_transformer,
    "recurrent_memory_transformer": _recurrent_memory_transformer,
    "memory_transformer": _memory_transformer,
}
"""Registry name -> the count of its forward pass per row (every key of ``models.MODELS`` has one; a test checks)."""
