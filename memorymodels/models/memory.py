"""Memory models built from masked mixers: a mixer encoder compresses a chunk into one embedding (a "memory") that a
causal mixer decoder reads next to the tokens it predicts.

- ``MemoryMixer`` (the oracle / embedding-augmented model): the encoder sees the same L tokens the decoder predicts;
  the memory is prepended as a token (``'token'``) or concatenated to every token's features (``'embedding'``).
- ``ProjMemoryMixer``: the projected memory is added to every token embedding.
- ``FrozenMemoryMixer``: ``MemoryMixer('token')`` with a frozen pretrained encoder.
- ``VariableMemoryMixer`` (context extension, encoder-decoder): the input holds C chunks of L tokens; chunks 0..C-2 are
  encoded (as one batch), and chunk c is decoded from ``[m_0 .. m_{c-1}, 0 x (C-c), tokens_c]`` (all C chunks as one
  batch; memories left-aligned, tokens at fixed positions C .. C+L-1).
- ``RecurrentMemoryMixer`` (RMT-style): one decoder, a memory carried from chunk to chunk with full backpropagation.

Loss conventions (the seed's): next-token cross entropy shifted within each chunk (the prediction across a chunk
boundary is not trained), -100 ignored, chunks whose targets are all ignored are skipped, and the sum of chunk losses
is divided by the number of chunks C. The returned logits hold the token positions only: (b, C*L, V).

Chunks are encoded and decoded as batches; only the modules a configuration uses are built (no ``up`` for the
``'embedding'`` combination, no encoder with ``no_memory``). docs/porting.md lists what differs from the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import encoder_parts
from .mixer import IGNORE_INDEX, MixerBlock, causal_lm_loss, token_embedding


def chunked_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None, n_chunks: int) -> torch.Tensor | None:
    """Next-token loss shifted within each of ``n_chunks`` chunks of (b, C*L, V) logits, mean per chunk, / C.

    A chunk whose targets are all -100 contributes nothing but still counts in the division by C (as the seed).
    """
    if labels is None:
        return None
    b, T, V = logits.shape
    L = T // n_chunks
    chunks = labels.view(b, n_chunks, L)
    targets = F.pad(chunks[..., 1:], (0, 1), value=IGNORE_INDEX)  # (b, C, L): token t predicts t+1 in its chunk
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    valid = (targets != IGNORE_INDEX).transpose(0, 1).reshape(n_chunks, -1)  # (C, b*L)
    per_chunk = nll.view(b, n_chunks, L).transpose(0, 1).reshape(n_chunks, -1).sum(1)  # (C,)
    count = valid.sum(1)
    return (per_chunk / count.clamp(min=1)).sum() / n_chunks


def slot_mask(n_chunks: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(C, C) with 1 where slot j of chunk c's decoder input holds memory j (j < c), 0 where it is padding."""
    return torch.tril(torch.ones(n_chunks, n_chunks, device=device, dtype=dtype), diagonal=-1)


class MixerMemoryModel(nn.Module):
    """Shared parts: the mixer encoder (``wte``, ``encoderblocks``), ``down``/``up``, ``decoder_proj``, ``encode``."""

    def build_encoder(self, n_vocab, encoder_dim, depth, length, n_heads, kernel, frozen_encoder=None):
        if frozen_encoder is not None:
            self.wte, self.encoderblocks = encoder_parts(frozen_encoder)
            for p in list(self.wte.parameters()) + list(self.encoderblocks.parameters()):
                p.requires_grad_(False)
        else:
            self.wte = nn.Embedding(n_vocab, encoder_dim)
            self.encoderblocks = nn.ModuleList(
                [MixerBlock(encoder_dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
            )

    def build_bottleneck(self, encoder_dim, dim, compression, up=True, project=None):
        """``down``/``up`` when compressing; ``decoder_proj`` (encoder_dim -> dim) when the widths differ."""
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(encoder_dim, encoder_dim // compression)
            if up:
                self.up = nn.Linear(encoder_dim // compression, encoder_dim)
        self.project = encoder_dim != dim if project is None else project
        if self.project:
            self.decoder_proj = nn.Linear(encoder_dim, dim)

    def encode(self, input_ids: torch.Tensor, up: bool = True) -> torch.Tensor:
        """(n, L) ids -> (n, 1, width) the memory: last-token embedding, [down, up], [decoder_proj]."""
        e = token_embedding(self.encoderblocks, self.wte(input_ids))  # (n, 1, encoder_dim): the last token
        if self.compression:
            e = self.down(e)
            if not up:
                return e
            e = self.up(e)
        return self.decoder_proj(e) if self.project else e


class MemoryMixer(MixerMemoryModel):
    """Oracle memory model: the decoder predicts the L tokens the encoder has already seen (see module docstring)."""

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, *, compression=4, combination_dim="token",
                 n_heads=0, kernel=1, random=False):
        super().__init__()
        if combination_dim not in ("token", "embedding"):
            raise ValueError(f"MemoryMixer: combination_dim must be 'token' or 'embedding', got {combination_dim!r}")
        self.combination_dim, self.random_input, self.n_vocab = combination_dim, random, n_vocab
        self.build_encoder(n_vocab, encoder_dim, depth, length, n_heads, kernel)
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        code = encoder_dim // compression if compression > 1 else encoder_dim
        if combination_dim == "token":
            self.build_bottleneck(encoder_dim, dim, compression)
            width, decoder_length = dim, length + 1  # the memory is one extra (first) token
        else:
            self.build_bottleneck(encoder_dim, dim, compression, up=False, project=False)
            width, decoder_length = dim + code, length  # the memory widens every token
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(width, decoder_length, causal=True, n_heads=0, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(width, n_vocab, bias=False)
        self.length = length
        self.input_length = length
        self.embedding_values = code

    def forward(self, input_ids, labels=None, attention_mask=None):
        encoder_ids = input_ids
        if self.random_input:  # control: the memory carries no information about the tokens
            encoder_ids = torch.randint(1, self.n_vocab, input_ids.shape, device=input_ids.device)
        tokens = self.decoder_wte(input_ids)  # (b, L, dim)
        if self.combination_dim == "token":
            memory = self.encode(encoder_ids)  # (b, 1, dim)
            x = torch.cat([memory, tokens], dim=1)  # (b, 1+L, dim)
        else:
            memory = self.encode(encoder_ids, up=False)  # (b, 1, code)
            x = torch.cat([memory.expand(-1, self.length, -1), tokens], dim=2)  # (b, L, code+dim)
        for block in self.decoderblocks:
            x = block(x)
        if self.combination_dim == "token":
            x = x[:, 1:]  # token positions; the memory position predicts nothing
        logits = self.lm_head(x)
        return causal_lm_loss(logits, labels), logits


class ProjMemoryMixer(MixerMemoryModel):
    """``decoder_wte(ids) + decoder_proj(memory)`` on every token, then a causal mixer decoder."""

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, *, compression=4, n_heads=0, kernel=1):
        super().__init__()
        self.build_encoder(n_vocab, encoder_dim, depth, length, n_heads, kernel)
        self.build_bottleneck(encoder_dim, dim, compression, project=True)  # always projected, as the seed
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.input_length = length
        self.embedding_values = encoder_dim // compression if compression > 1 else encoder_dim

    def forward(self, input_ids, labels=None, attention_mask=None):
        x = self.decoder_wte(input_ids) + self.encode(input_ids)  # (b, L, dim) + (b, 1, dim)
        for block in self.decoderblocks:
            x = block(x)
        logits = self.lm_head(x)
        return causal_lm_loss(logits, labels), logits


class FrozenMemoryMixer(MixerMemoryModel):
    """``MemoryMixer('token')`` whose encoder is a frozen trained mixer (a ``TruncatedModel`` or any mixer model)."""

    def __init__(self, n_vocab, encoder_model, encoder_dim, dim, depth, length, *, compression=4, n_heads=0,
                 kernel=1):
        super().__init__()
        self.build_encoder(n_vocab, encoder_dim, depth, length, n_heads, kernel, frozen_encoder=encoder_model)
        self.build_bottleneck(encoder_dim, dim, compression)
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(dim, length + 1, causal=True, n_heads=0, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.input_length = length
        self.embedding_values = encoder_dim // compression if compression > 1 else encoder_dim

    def forward(self, input_ids, labels=None, attention_mask=None):
        x = torch.cat([self.encode(input_ids), self.decoder_wte(input_ids)], dim=1)  # (b, 1+L, dim)
        for block in self.decoderblocks:
            x = block(x)
        logits = self.lm_head(x[:, 1:])
        return causal_lm_loss(logits, labels), logits


def copy_task(input_ids, labels, blank=False, blank_id=1):
    """The copy objective: inputs ``[first_half, first_half]`` (or ``[first_half, blank]``), labels ``[-100, first_half]``.

    Returns new tensors (the seed mutated the batch in place, row by row).
    """
    half = input_ids.shape[1] // 2
    first = input_ids[:, :half]
    second = torch.full_like(first, blank_id) if blank else first
    new_ids = torch.cat([first, second], dim=1)
    source = labels if labels is not None else input_ids
    new_labels = torch.cat([torch.full_like(first, IGNORE_INDEX), source[:, :half]], dim=1)
    return new_ids, new_labels


class VariableMemoryMixer(MixerMemoryModel):
    """Parallel memory model over C chunks of L tokens (see the module docstring); input length C*L."""

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, *, compression=4, n_heads=0, kernel=1, n_chunks=4,
                 no_memory=False, frozen_encoder=None, copy=False, encoder_ctx=None, blank_copy=False, pad_id=1):
        super().__init__()
        self.n_chunks, self.length, self.no_memory = n_chunks, length, no_memory
        self.copy, self.blank_copy, self.pad_id = copy, blank_copy, pad_id
        # encoder_ctx: chunks are right-padded with pad_id to this length (a frozen encoder trained on longer inputs)
        self.encoder_ctx = encoder_ctx or length
        if not no_memory:
            self.build_encoder(n_vocab, encoder_dim, depth, self.encoder_ctx, n_heads, kernel, frozen_encoder)
            self.build_bottleneck(encoder_dim, dim, compression)
        self.dim = dim
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        # the decoder is flat with one tap (as the seed): n_heads and kernel shape the encoder only
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(dim, length + n_chunks, causal=True, n_heads=0, kernel=1) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.input_length = length * n_chunks
        code = encoder_dim // compression if compression > 1 else encoder_dim
        self.embedding_values = 0 if no_memory else (n_chunks - 1) * code

    def memories(self, chunks: torch.Tensor) -> torch.Tensor:
        """(b, C, L) ids -> (b, C, dim): memories of chunks 0..C-2 (all encoded as one batch), then a zero slot."""
        b, C, L = chunks.shape
        if self.no_memory:
            return chunks.new_zeros((b, C, self.dim), dtype=self.decoder_wte.weight.dtype)
        ids = chunks[:, :-1].reshape(b * (C - 1), L)
        if self.encoder_ctx > L:
            ids = F.pad(ids, (0, self.encoder_ctx - L), value=self.pad_id)
        m = self.encode(ids).view(b, C - 1, -1)  # (b, C-1, dim)
        return F.pad(m, (0, 0, 0, 1))  # (b, C, dim); the last chunk's memory is never used

    def forward(self, input_ids, labels=None, attention_mask=None):
        if self.copy:
            input_ids, labels = copy_task(input_ids, labels, blank=self.blank_copy, blank_id=self.pad_id)
        b, T = input_ids.shape
        C, L = self.n_chunks, self.length
        if T != C * L:
            raise ValueError(f"VariableMemoryMixer: input has {T} tokens; expected n_chunks*length = {C}*{L} = {C * L}")
        chunks = input_ids.view(b, C, L)
        used = slot_mask(C, input_ids.device, self.decoder_wte.weight.dtype)  # (C, C)
        slots = self.memories(chunks)[:, None, :, :] * used[None, :, :, None]  # (b, C, C, dim)
        x = torch.cat([slots, self.decoder_wte(chunks)], dim=2).view(b * C, C + L, self.dim)
        for block in self.decoderblocks:
            x = block(x)
        logits = self.lm_head(x[:, C:]).view(b, T, -1)  # token positions of every chunk, in order
        return chunked_lm_loss(logits, labels, C), logits


class RecurrentMemoryMixer(nn.Module):
    """RMT-style memory mixer: chunk c is decoded from ``[m, tokens_c[:-1], m]`` and its last output is the next m.

    As the seed: the memory enters twice (first position, and over the chunk's last token, which is therefore never
    an input) and gradients flow through all chunks. Logits of token t sit at decoder position t+1.
    """

    def __init__(self, n_vocab, dim, depth, length, *, n_heads=0, kernel=1, n_chunks=4, no_memory=False):
        super().__init__()
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(dim, length + 1, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.n_chunks, self.length, self.no_memory = n_chunks, length, no_memory
        self.input_length = length * n_chunks
        self.embedding_values = 0 if no_memory else dim  # the carried memory: one d-vector

    def forward(self, input_ids, labels=None, attention_mask=None):
        b, T = input_ids.shape
        C, L = self.n_chunks, self.length
        if T != C * L:
            raise ValueError(f"RecurrentMemoryMixer: input has {T} tokens; expected n_chunks*length = {C * L}")
        tokens = self.decoder_wte(input_ids).view(b, C, L, -1)
        memory = tokens.new_zeros((b, 1, tokens.shape[-1]))
        outputs = []
        for c in range(C):  # sequential by design: chunk c reads the memory written by chunk c-1
            x = torch.cat([memory, tokens[:, c, :-1], memory], dim=1)  # (b, L+1, d)
            for block in self.decoderblocks:
                x = block(x)
            if not self.no_memory:
                memory = x[:, -1:]
            outputs.append(x[:, 1:])
        logits = self.lm_head(torch.cat(outputs, dim=1))  # (b, C*L, V)
        return chunked_lm_loss(logits, labels, C), logits
