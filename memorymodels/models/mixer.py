"""Masked mixers: the causal token mixer, the mixer block and the causal language model built from them.

A masked mixer replaces attention by a learned L x L lower-triangular matrix over the token axis (no positional
encoding: position lives in the position-specific weights, so a block accepts exactly ``length`` tokens). The mixing
is a ``Conv1d(length, length, kernel, padding='same')`` applied to ``x`` of shape (b, L, d): tokens are the conv's
channels and the hidden dim its spatial axis, so ``kernel`` k > 1 does not widen a token window; it gives k causal
L x L matrices, tap m mixing feature j + m - (k-1)//2 into feature j.

The causal mask is a registered ``tril`` buffer multiplied into the weight inside ``forward``: masked entries get
exactly zero gradient and stay zero, and loading a state dict re-masks it. ``forward(input_ids, labels=None,
attention_mask=None)`` returns ``(loss, logits)`` with logits (b, t, vocab); ``labels=None`` gives ``loss=None``.
Parameter names and shapes are the seed's, so its checkpoints load (docs/porting.md says where the math differs).

Incremental inference (``LanguageMixer.new_cache`` / ``step``, what ``memorymodels.compress`` runs): output row t of
the mixing reads the mixing inputs of positions 0..t of the same block, and nothing of later positions. So each block
caches those inputs (``seq_layernorm(x)``, or the heads' projections of it), and a step computes only the new
positions: one row of each mixing matrix against the cache, then the feed-forward of the new tokens. The logits equal
the full forward's within float tolerance (tests/models/test_incremental.py); training never runs this path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def FeedForward(dim: int, expansion_factor: int = 4) -> nn.Sequential:
    """Linear(d, 4d) -> GELU -> Linear(4d, d); a Sequential so parameter names match the seed (``patch_ff.0/2``)."""
    inner_dim = int(dim * expansion_factor)
    return nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU(), nn.Linear(inner_dim, dim))


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Shifted next-token cross entropy: position t predicts ``labels[t+1]``; -100 is ignored; mean over targets.

    The labels are shifted (and padded with -100) rather than the logits sliced, so the (b, t, V) logits are never
    copied; the mean over non-ignored targets is the seed's ``CE(output[..., :-1], labels[..., 1:])``.
    """
    if labels is None:
        return None
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(logits.flatten(0, 1), shifted.flatten(), ignore_index=IGNORE_INDEX)


def reconstruction_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Unshifted cross entropy (position t reconstructs token t), -100 ignored: the autoencoders' loss."""
    if labels is None:
        return None
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def token_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The seed's ``Conv1d(padding='same')`` over the feature axis: PyTorch pads (k-1)//2 left and the rest right.

    conv1d (oneDNN on CPU, cuDNN on GPU) is the fastest dense form of this product we measured; even k is padded
    explicitly, which is what 'same' does internally (and warns about).
    """
    k = weight.shape[-1]
    if k % 2 == 1:
        return F.conv1d(x, weight, bias, padding=(k - 1) // 2, groups=groups)
    return F.conv1d(F.pad(x, ((k - 1) // 2, k // 2)), weight, bias, groups=groups)


def mixing_rows(weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Rows of the token mixing against cached inputs: (h, T, S, k) weights, (h, T) bias, (h, S, b, e) -> (h, T, b, e).

    The same sum as ``token_conv`` (tap m reads feature j + m - (k-1)//2, zeros past the edges), written as matrix
    products with the positions first, so one step of b streams is one (T, S) x (S, b*e) product per head and tap.
    """
    h, T, S, k = weight.shape
    _, _, b, e = inputs.shape
    left = (k - 1) // 2
    if k > 1:
        inputs = F.pad(inputs, (left, k - 1 - left))  # (h, S, b, e + k - 1)
    out = bias[:, :, None]  # (h, T, 1), broadcast over b*e
    for m in range(k):
        taps = inputs[..., m:m + e].reshape(h, S, b * e)  # a view when k == 1
        out = out + torch.matmul(weight[..., m], taps)  # (h, T, b*e)
    return out.view(h, T, b, e)


class CausalTokenMixer(nn.Module):
    """Token mixing ``y[b,t,j] = sum_{s<=t} sum_m W[t,s,m] x[b,s,j+m-pad] + bias[t]`` on x of shape (b, L, d).

    Parameters ``weight`` (L, L, k) and ``bias`` (L,) have the names and shapes of the seed's ``nn.Conv1d`` so its
    checkpoints load; the ``mask`` buffer is not saved (it is rebuilt from ``length``), and loading re-masks.
    """

    def __init__(self, length: int, kernel: int = 1, causal: bool = True):
        super().__init__()
        self.length, self.kernel, self.causal = length, kernel, causal
        self.weight = nn.Parameter(torch.empty(length, length, kernel))
        self.bias = nn.Parameter(torch.empty(length))
        self.register_buffer("mask", torch.empty(length, length, 1), persistent=False)  # broadcast over taps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the mask is rebuilt here too, so meta-device construction + to_empty() + reset_parameters() (FSDP's
        # deferred init) gives a real mask; then nn.Conv1d's default init (uniform, bound 1/sqrt(fan_in), fan_in =
        # L*k), masked so that a freshly initialised model already stores causal weights.
        with torch.no_grad():
            ones = torch.ones(self.length, self.length, device=self.mask.device)
            self.mask.copy_((torch.tril(ones) if self.causal else ones).unsqueeze(-1))
        bound = 1 / math.sqrt(self.length * self.kernel)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask  # (L, L, k); zero gradient flows to the masked entries

    def forward(self, x: torch.Tensor, position: int | None = None) -> torch.Tensor:
        """(b, L, d) -> (b, L, d); with ``position`` only that output token is computed: (b, 1, d)."""
        weight, bias = self.masked_weight(), self.bias
        if position is not None:  # one output row of the mixing matrix; used where only one token is read
            weight, bias = weight.narrow(0, position % self.length, 1), bias.narrow(0, position % self.length, 1)
        return token_conv(x, weight, bias)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked weight rows start..stop-1 over the input positions 0..stop-1: (T, S, k), and their bias (T,)."""
        weight = self.weight[start:stop, :stop] * self.mask[start:stop, :stop]
        return weight, self.bias[start:stop]

    def step(self, x: torch.Tensor, inputs: torch.Tensor, position: int) -> torch.Tensor:
        """Mix new positions: x (b, T, d) at ``position``..; ``inputs`` (1, L, b, d) caches x; returns (b, T, d)."""
        T = x.shape[1]
        inputs[0, position:position + T] = x.transpose(0, 1)  # (T, b, d)
        weight, bias = self.rows(position, position + T)
        y = mixing_rows(weight[None], bias[None], inputs[:, :position + T])  # (1, T, b, d)
        return y[0].transpose(0, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # seed checkpoints were masked only in forward: zero their upper triangles now (skipped for a sharded
        # weight of another shape; forward applies the mask either way)
        if self.weight.shape[:2] == self.mask.shape[:2]:
            with torch.no_grad():
                self.weight.mul_(self.mask)

    def extra_repr(self) -> str:
        return f"length={self.length}, kernel={self.kernel}, causal={self.causal}"


class MixerHead(nn.Module):
    """Multi-head token mixing: per head a projection d -> d/h and a causal L x L (x k) mixing; concat; out_proj.

    Parameter names follow the seed (``proj_head.N``, ``convs.N``, ``out_proj``); the heads run as one matmul for the
    projections and one grouped convolution for the mixing instead of the seed's loop over heads.
    """

    def __init__(self, dim: int, length: int, hidden_dim: int, n_heads: int = 4, kernel: int = 1, causal=True):
        super().__init__()
        if hidden_dim * n_heads != dim:
            raise ValueError(f"MixerHead: n_heads={n_heads} must divide dim={dim} (the heads' concat feeds out_proj)")
        self.n_heads, self.hidden_dim = n_heads, hidden_dim
        self.proj_head = nn.ModuleList([nn.Linear(dim, hidden_dim) for _ in range(n_heads)])
        self.convs = nn.ModuleList([CausalTokenMixer(length, kernel, causal) for _ in range(n_heads)])
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, e = self.n_heads, self.hidden_dim
        proj_w = torch.cat([p.weight for p in self.proj_head])  # (h*e, d)
        proj_b = torch.cat([p.bias for p in self.proj_head])
        p = F.linear(x, proj_w, proj_b).view(b, t, h, e).transpose(1, 2).reshape(b, h * t, e)  # (b, h*L, e)
        conv_w = torch.cat([c.masked_weight() for c in self.convs])  # (h*L, L, k)
        conv_b = torch.cat([c.bias for c in self.convs])
        y = token_conv(p, conv_w, conv_b, groups=h)  # (b, h*L, e)
        y = y.view(b, h, t, e).transpose(1, 2).reshape(b, t, h * e)  # heads concatenated on features, as the seed
        return self.out_proj(y)

    def step(self, x: torch.Tensor, inputs: torch.Tensor, position: int) -> torch.Tensor:
        """Mix new positions: x (b, T, d) at ``position``..; ``inputs`` (h, L, b, e) caches the heads' projections."""
        b, T, _ = x.shape
        h, e = self.n_heads, self.hidden_dim
        proj_w = torch.cat([p.weight for p in self.proj_head])  # (h*e, d)
        proj_b = torch.cat([p.bias for p in self.proj_head])
        inputs[:, position:position + T] = F.linear(x, proj_w, proj_b).view(b, T, h, e).permute(2, 1, 0, 3)
        rows = [c.rows(position, position + T) for c in self.convs]
        weight, bias = torch.stack([w for w, _ in rows]), torch.stack([c for _, c in rows])  # (h, T, S, k), (h, T)
        y = mixing_rows(weight, bias, inputs[:, :position + T])  # (h, T, b, e)
        return self.out_proj(y.permute(2, 1, 0, 3).reshape(b, T, h * e))


class MixerBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(seq_layernorm(x))``, then ``x + patch_ff(patch_layernorm(x))``."""

    def __init__(self, dim: int, length: int, causal: bool = True, n_heads: int = 0, kernel: int = 1):
        super().__init__()
        self.patch_layernorm = nn.LayerNorm(dim)
        self.seq_layernorm = nn.LayerNorm(dim)
        self.patch_ff = FeedForward(dim)
        self.n_heads = n_heads
        if n_heads > 0:
            self.conv = MixerHead(dim, length, dim // n_heads, n_heads=n_heads, kernel=kernel, causal=causal)
        else:
            self.conv = CausalTokenMixer(length, kernel, causal)

    def forward(self, x: torch.Tensor, position: int | None = None) -> torch.Tensor:
        """(b, L, d) -> (b, L, d). With ``position`` (flat mixing only) returns just that token: (b, 1, d).

        Autoencoder encoders read one token of their last block; computing only that row of the mixing and the
        feed-forward for one token is exact and saves that block's per-token work.
        """
        if position is not None and self.n_heads == 0:
            residual = x.narrow(1, position % x.shape[1], 1)
            x = self.conv(self.seq_layernorm(x), position=position) + residual  # (b, 1, d)
        else:
            x = self.conv(self.seq_layernorm(x)) + x
            if position is not None:
                x = x.narrow(1, position % x.shape[1], 1)
        return self.patch_ff(self.patch_layernorm(x)) + x

    def cache_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of the mixing inputs a step reads: (heads, L, batch, features per head); flat mixing is one head."""
        if self.n_heads > 0:
            return (self.n_heads, self.conv.convs[0].length, batch, self.conv.hidden_dim)
        return (1, self.conv.length, batch, self.patch_layernorm.normalized_shape[0])

    def step(self, x: torch.Tensor, inputs: torch.Tensor, position: int) -> torch.Tensor:
        """``forward`` for positions ``position``..+T-1 only: x (b, T, d) -> (b, T, d), given the cached mixing
        inputs of the earlier positions (``inputs``, shape ``cache_shape``), to which it adds the new ones."""
        x = self.conv.step(self.seq_layernorm(x), inputs, position) + x
        return self.patch_ff(self.patch_layernorm(x)) + x


@dataclass
class MixerCache:
    """What the next positions of a causal mixer read: per block, the mixing inputs of the positions so far."""

    inputs: list[torch.Tensor]
    """One (heads, L, batch, features per head) tensor per block; positions ``position`` and later are unused."""
    position: int = 0
    """Positions already in the cache; the next step computes this position on."""


def token_embedding(blocks: nn.ModuleList, x: torch.Tensor, position: int = -1) -> torch.Tensor:
    """(b, L, d) hidden states through ``blocks``, the last computing only token ``position``: (b, 1, d), the
    embedding a mixer encoder stores."""
    for block in blocks[:-1]:
        x = block(x)
    return blocks[-1](x, position=position)


class LanguageMixer(nn.Module):
    """Causal language model: ``wte -> mixerblocks -> lm_head`` with the shifted next-token loss."""

    def __init__(self, n_vocab: int, dim: int, depth: int, length: int, *, n_heads: int = 0, kernel: int = 1,
                 tie_weights: bool = False):
        super().__init__()
        self.wte = nn.Embedding(n_vocab, dim)
        self.mixerblocks = nn.ModuleList(
            [MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        if tie_weights:
            self.wte.weight = self.lm_head.weight
        self.input_length = length
        self.embedding_values = None  # a causal LM stores no embedding

    def forward(self, input_ids, labels=None, attention_mask=None):
        # attention_mask is accepted for the common interface; causal mixing needs none (pads are -100 in labels)
        x = self.wte(input_ids)  # (b, L, d)
        for block in self.mixerblocks:
            x = block(x)
        logits = self.lm_head(x)  # (b, L, V)
        return causal_lm_loss(logits, labels), logits

    def new_cache(self, batch: int) -> MixerCache:
        """An empty cache for ``batch`` rows (zeros, on the weights' device); reset it with ``cache.position = 0``."""
        weight = self.wte.weight
        return MixerCache([weight.new_zeros(block.cache_shape(batch)) for block in self.mixerblocks])

    def step(self, input_ids: torch.Tensor, cache: MixerCache, *, logits: bool = True) -> torch.Tensor | None:
        """Logits (b, T, V) of the T positions after those in ``cache``, for their tokens ``input_ids`` (b, T); the
        cache then holds them. The positions must fit the L the model takes. ``logits=False`` only fills the cache."""
        T = input_ids.shape[1]
        if cache.position + T > self.input_length:
            raise ValueError(f"step: positions {cache.position}..{cache.position + T - 1} are past the "
                             f"{self.input_length} this mixer takes")
        x = self.wte(input_ids)  # (b, T, d)
        for block, inputs in zip(self.mixerblocks, cache.inputs):
            x = block.step(x, inputs, cache.position)
        cache.position += T
        return self.lm_head(x) if logits else None  # (b, T, V)
