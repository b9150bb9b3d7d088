"""Transformer baselines on transformers' Llama: causal LM, autoencoders, hybrid "transfixer", memory transformers.

Llama layers as the seed configures them: ``hidden=d, intermediate=4d, layers=depth, heads=n_heads`` (RoPE, RMSNorm,
SwiGLU, untied). Every attention mask is explicit: a 4-d additive mask (b, 1, T, T) built here from the causal
pattern and the padding mask aligned with any prepended memory slots (a query with no real key reads itself, so no
row is NaN; padded positions are never read by other positions nor scored). Memories of chunks without a real
token are masked out like padding. Attention never falls back to a backend's implicit ``is_causal``.

Encoder and decoder stacks are ``LlamaStack`` (layers, final norm, rotary embedding; no token embedding of their own).
Head counts must split each width into heads of an even size (RoPE); the registry checks this before anything is
built. docs/porting.md lists what differs from the seed.

Incremental inference for the causal baseline (``LlamaCLM.new_cache`` / ``step``, what ``memorymodels.compress``
runs): a key/value cache of fixed size (b, heads, L, head size) per layer, written in place, that the Llama layers
read through the ``cache.update`` call of their attention; every step gets its explicit mask too. The logits equal the
full forward's within float tolerance (tests/models/test_incremental.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from .autoencoder import unroll_index
from .memory import chunked_lm_loss, copy_task, slot_mask
from .mixer import MixerBlock, causal_lm_loss, reconstruction_loss, token_embedding


def llama_config(n_vocab: int, dim: int, depth: int, n_heads: int, positions: int) -> LlamaConfig:
    """The seed's Llama configuration, with sdpa attention (always given an explicit mask)."""
    if n_heads < 1 or dim % n_heads or (dim // n_heads) % 2:
        raise ValueError(f"Llama: n_heads={n_heads} must divide dim={dim} into an even head size (RoPE)")
    return LlamaConfig(hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=depth,
                       num_attention_heads=n_heads, num_key_value_heads=n_heads, vocab_size=n_vocab,
                       max_position_embeddings=positions, attn_implementation="sdpa")


def attention_mask_4d(keys: torch.Tensor | None, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """(b, 1, T, T) additive mask for embeddings x (b, T, d): 0 where query t may read key s, dtype minimum elsewhere.

    ``keys`` (b, T) is 1 for real keys and 0 for padding (None: all real).
    """
    b, T = x.shape[:2]
    allowed = torch.ones(T, T, dtype=torch.bool, device=x.device)
    if causal:
        allowed = torch.tril(allowed)
    allowed = allowed[None, None].expand(b, 1, T, T)
    if keys is not None:
        allowed = allowed & keys.bool()[:, None, None, :]
        # a query with no real key to read (a pad before the first real token) reads itself: no NaN rows
        empty = ~allowed.any(dim=-1, keepdim=True)
        allowed = allowed | (empty & torch.eye(T, dtype=torch.bool, device=x.device))
    return torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)


class LlamaStack(nn.Module):
    """Llama decoder layers + final RMSNorm on embeddings (b, T, d), with an explicit mask and optional positions."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)

    def forward(self, x, keys=None, position_ids=None, causal=True):
        """``keys``: (b, T) padding mask of the keys (None: no padding); ``position_ids``: (b, T) or None (arange)."""
        if position_ids is None:
            position_ids = torch.arange(x.shape[1], device=x.device)[None]
        mask = attention_mask_4d(keys, x, causal=causal)
        rope = self.rotary_emb(x, position_ids=position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=mask, position_embeddings=rope, position_ids=position_ids)
        return self.norm(x)


@dataclass
class KVCache:
    """Keys and values of the positions so far, per layer, in fixed buffers; the Llama layers' ``cache`` argument."""

    keys: list[torch.Tensor]
    """One (b, heads, L, head size) tensor per layer (after RoPE); positions ``position`` and later are unused."""
    values: list[torch.Tensor]
    position: int = 0
    """Positions already cached; the step under way writes its T positions after them."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Store the step's (b, heads, T, head size) keys and values; return the keys and values of positions
        0..position+T-1 (what ``transformers``' attention calls, as it does on its own ``Cache``)."""
        stop = self.position + key_states.shape[2]
        self.keys[layer_idx][:, :, self.position:stop] = key_states
        self.values[layer_idx][:, :, self.position:stop] = value_states
        return self.keys[layer_idx][:, :, :stop], self.values[layer_idx][:, :, :stop]


def step_mask(x: torch.Tensor, position: int) -> torch.Tensor:
    """(1, 1, T, position+T) additive mask for the T new queries of embeddings x (b, T, d): key s is readable by
    query t when s <= position + t."""
    T = x.shape[1]
    keys = torch.arange(position + T, device=x.device)
    allowed = keys[None, :] <= position + torch.arange(T, device=x.device)[:, None]  # (T, S)
    mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)
    return mask[None, None]


class LlamaCLM(nn.Module):
    """Causal LM baseline: a ``LlamaModel`` + ``lm_head`` whose state dict is ``LlamaForCausalLM``'s."""

    def __init__(self, n_vocab, dim, depth, length, *, n_heads=4, tie_weights=False):
        super().__init__()
        self.model = LlamaModel(llama_config(n_vocab, dim, depth, n_heads, length))
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        if tie_weights:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.input_length = length
        self.embedding_values = None

    def forward(self, input_ids, labels=None, attention_mask=None):
        x = self.model.embed_tokens(input_ids)  # (b, L, d)
        hidden = self.model(inputs_embeds=x, attention_mask=attention_mask_4d(attention_mask, x)).last_hidden_state
        logits = self.lm_head(hidden)
        return causal_lm_loss(logits, labels), logits

    def new_cache(self, batch: int) -> KVCache:
        """An empty key/value cache for ``batch`` rows (zeros, on the weights' device); reset with ``position = 0``."""
        config, weight = self.model.config, self.lm_head.weight
        heads = config.num_key_value_heads
        shape = (batch, heads, self.input_length, config.hidden_size // config.num_attention_heads)
        depth = config.num_hidden_layers
        return KVCache([weight.new_zeros(shape) for _ in range(depth)], [weight.new_zeros(shape) for _ in range(depth)])

    def step(self, input_ids: torch.Tensor, cache: KVCache, *, logits: bool = True) -> torch.Tensor | None:
        """Logits (b, T, V) of the T positions after those in ``cache``, for their tokens ``input_ids`` (b, T); the
        cache then holds them. The positions must fit the L the model takes. ``logits=False`` only fills the cache."""
        T, start = input_ids.shape[1], cache.position
        if start + T > self.input_length:
            raise ValueError(f"step: positions {start}..{start + T - 1} are past the {self.input_length} this "
                             f"Llama takes")
        x = self.model.embed_tokens(input_ids)  # (b, T, d)
        position_ids = torch.arange(start, start + T, device=x.device)[None]
        rope, mask = self.model.rotary_emb(x, position_ids=position_ids), step_mask(x, start)
        for layer in self.model.layers:
            x = layer(x, attention_mask=mask, position_embeddings=rope, position_ids=position_ids, cache=cache)
        cache.position += T
        return self.lm_head(self.model.norm(x)) if logits else None  # (b, T, V)


class TransformerAutoencoder(nn.Module):
    """Transformer autoencoder: Llama encoder -> last-token embedding -> [down, up] -> unroll/repeat -> Llama decoder."""

    def __init__(self, n_vocab, dim, depth, length, *, n_heads=4, compression=1, unroll=True):
        super().__init__()
        config = llama_config(n_vocab, dim, depth, n_heads, length)
        self.wte = nn.Embedding(n_vocab, dim)
        self.encoder = LlamaStack(config)
        self.decoder = LlamaStack(config)
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(dim, dim // compression)
            self.up = nn.Linear(dim // compression, dim)
        self.unroll, self.length = unroll, length
        if unroll:
            self.projection = nn.Linear(dim // 2, dim)
        self.dim = dim
        self.input_length = length
        self.embedding_values = dim // compression if self.compression else dim

    def forward(self, input_ids, labels=None, attention_mask=None):
        x = self.encoder(self.wte(input_ids), keys=attention_mask)
        e = x[:, -1:]  # (b, 1, d); with left padding (the data's default) the last token is real
        if self.compression:
            e = self.up(self.down(e))
        if self.unroll:
            x = self.projection(e[:, 0, unroll_index(self.length, self.dim, e.device)])  # (b, L, d)
        else:
            x = e.expand(-1, self.length, -1)
        logits = self.lm_head(self.decoder(x))  # decoder positions are outputs, not tokens: causal mask only
        return reconstruction_loss(logits, labels), logits


class AutoencodingTransfixer(nn.Module):
    """Hybrid autoencoder: Llama encoder + mixer decoder, or (``use_transformer_encoder=False``) the reverse.

    ``n_heads``/``kernel`` shape the mixer blocks, ``attention_heads`` the Llama layers (the seed hard-coded 4).
    The decoder reads the repeated embedding, as the seed.
    """

    def __init__(self, n_vocab, dim, depth, length, *, compression=1, use_transformer_encoder=True, n_heads=0,
                 kernel=1, attention_heads=4):
        super().__init__()
        config = llama_config(n_vocab, dim, depth, attention_heads, length)
        self.wte = nn.Embedding(n_vocab, dim)
        mixer = nn.ModuleList([MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)])
        self.use_transformer_encoder = use_transformer_encoder
        if use_transformer_encoder:
            self.encoder, self.decoderblocks = LlamaStack(config), mixer
        else:
            self.encoderblocks, self.decoder = mixer, LlamaStack(config)
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(dim, dim // compression)
            self.up = nn.Linear(dim // compression, dim)
        self.length = length
        self.input_length = length
        self.embedding_values = dim // compression if self.compression else dim

    def forward(self, input_ids, labels=None, attention_mask=None):
        x = self.wte(input_ids)
        if self.use_transformer_encoder:
            e = self.encoder(x, keys=attention_mask)[:, -1:]
        else:
            e = token_embedding(self.encoderblocks, x)
        if self.compression:
            e = self.up(self.down(e))
        x = e.expand(-1, self.length, -1)  # (b, L, d) repeated embedding
        if self.use_transformer_encoder:
            for block in self.decoderblocks:
                x = block(x)
        else:
            x = self.decoder(x)
        logits = self.lm_head(x)
        return reconstruction_loss(logits, labels), logits


class VariableMemoryTransformer(nn.Module):
    """Llama twin of ``VariableMemoryMixer``: C-1 chunk memories, every chunk decoded in one batch.

    ``fixed_memory=True``: chunk c reads ``[m_0..m_{c-1}, ones x (C-c), tokens]`` (tokens at fixed positions).
    ``fixed_memory=False``: chunk c reads ``[m_0..m_{c-1}, tokens]`` (positions 0..c+L-1); batched by placing the
    unused slots as masked fillers and giving every row its own position ids, which is exact under RoPE.
    """

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, *, compression=1, n_heads=4, n_chunks=4,
                 fixed_memory=True, no_memory=False, copy=False, blank_copy=False, pad_id=1):
        super().__init__()
        self.n_chunks, self.length, self.dim = n_chunks, length, dim
        self.fixed_memory, self.no_memory, self.copy, self.blank_copy, self.pad_id = (
            fixed_memory, no_memory, copy, blank_copy, pad_id)
        if not no_memory:
            self.wte = nn.Embedding(n_vocab, encoder_dim)
            self.encoder = LlamaStack(llama_config(n_vocab, encoder_dim, depth, n_heads, length))
            self.compression = compression > 1
            if self.compression:
                self.down = nn.Linear(encoder_dim, encoder_dim // compression)
                self.up = nn.Linear(encoder_dim // compression, encoder_dim)
            if encoder_dim != dim:
                self.decoder_proj = nn.Linear(encoder_dim, dim)
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoder = LlamaStack(llama_config(n_vocab, dim, depth, n_heads, length + n_chunks))
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.input_length = length * n_chunks
        code = encoder_dim // compression if compression > 1 else encoder_dim
        self.embedding_values = 0 if no_memory else (n_chunks - 1) * code

    def memories(self, chunks, keys):
        """(b, C, L) ids -> (b, C, dim): memories of chunks 0..C-2 (one encoder batch), then an unused slot."""
        b, C, L = chunks.shape
        ids = chunks[:, :-1].reshape(b * (C - 1), L)
        chunk_keys = None if keys is None else keys[:, :-1].reshape(b * (C - 1), L)
        e = self.encoder(self.wte(ids), keys=chunk_keys)[:, -1:]
        if self.compression:
            e = self.up(self.down(e))
        if hasattr(self, "decoder_proj"):
            e = self.decoder_proj(e)
        return F.pad(e.view(b, C - 1, self.dim), (0, 0, 0, 1))

    def forward(self, input_ids, labels=None, attention_mask=None):
        if self.copy:
            input_ids, labels = copy_task(input_ids, labels, blank=self.blank_copy, blank_id=self.pad_id)
        b, T = input_ids.shape
        C, L = self.n_chunks, self.length
        if T != C * L:
            raise ValueError(f"VariableMemoryTransformer: input has {T} tokens; expected n_chunks*length = {C * L}")
        chunks = input_ids.view(b, C, L)
        keys = None if attention_mask is None else attention_mask.view(b, C, L)
        tokens = self.decoder_wte(chunks)  # (b, C, L, dim)
        used = slot_mask(C, chunks.device, tokens.dtype)[None, :, :, None]  # (1, C, C, 1): slot j of chunk c holds m_j
        if self.no_memory:
            memory = tokens.new_ones((b, C, C, self.dim))
        else:
            m = self.memories(chunks, keys)[:, None]  # (b, 1, C, dim)
            memory = m * used + (1 - used)  # unused slots are ones, as the seed's transformer
        x = torch.cat([memory, tokens], dim=2).view(b * C, C + L, self.dim)
        token_keys = torch.ones_like(chunks) if keys is None else keys
        # memory j is read unless chunk j was all padding (its "memory" would encode pad ids only)
        real = token_keys.amax(dim=2).to(token_keys.dtype)[:, None, :]  # (b, 1, C)
        holds = slot_mask(C, chunks.device, token_keys.dtype)[None]  # (1, C, C)
        if self.no_memory:
            slot_keys, position_ids = torch.ones_like(holds * real), None
        elif self.fixed_memory:  # unused slots (ones) stay readable, as the seed
            slot_keys, position_ids = holds * real + (1 - holds), None
        else:  # variable layout: unused slots are masked fillers, tokens of chunk c start at position c
            slot_keys = holds * real
            c = torch.arange(C, device=x.device)[:, None]
            slots = torch.arange(C, device=x.device).expand(C, C)
            token_pos = c + torch.arange(L, device=x.device)[None]
            position_ids = torch.cat([slots, token_pos], dim=1).repeat(b, 1)  # (b*C, C+L)
        keys_all = torch.cat([slot_keys, token_keys], dim=2).view(b * C, C + L)
        hidden = self.decoder(x, keys=keys_all, position_ids=position_ids)
        logits = self.lm_head(hidden[:, C:]).view(b, T, -1)
        return chunked_lm_loss(logits, labels, C), logits


class RecurrentMemoryTransformer(nn.Module):
    """Llama twin of ``RecurrentMemoryMixer``: chunk c reads ``[m, tokens_c[:-1], m]``, initial memory ones."""

    def __init__(self, n_vocab, dim, depth, length, *, n_heads=4, n_chunks=4):
        super().__init__()
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoder = LlamaStack(llama_config(n_vocab, dim, depth, n_heads, length + 1))
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.n_chunks, self.length = n_chunks, length
        self.input_length = length * n_chunks
        self.embedding_values = dim

    def forward(self, input_ids, labels=None, attention_mask=None):
        b, T = input_ids.shape
        C, L = self.n_chunks, self.length
        if T != C * L:
            raise ValueError(f"RecurrentMemoryTransformer: input has {T} tokens; expected n_chunks*length = {C * L}")
        tokens = self.decoder_wte(input_ids).view(b, C, L, -1)
        keys = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keys = keys.view(b, C, L)
        memory = tokens.new_ones((b, 1, tokens.shape[-1]))
        one = keys.new_ones((b, 1))
        outputs = []
        for c in range(C):  # sequential: chunk c reads the memory written by chunk c-1
            x = torch.cat([memory, tokens[:, c, :-1], memory], dim=1)  # (b, L+1, d)
            hidden = self.decoder(x, keys=torch.cat([one, keys[:, c, :-1], one], dim=1))
            memory = hidden[:, -1:]
            outputs.append(hidden[:, 1:])
        logits = self.lm_head(torch.cat(outputs, dim=1))
        return chunked_lm_loss(logits, labels, C), logits


class MemoryTransformer(nn.Module):
    """Oracle memory model with a Llama decoder (``attention_heads`` heads; the seed hard-coded 4).

    The encoder is mixer blocks (``n_heads``, ``kernel``) or, with ``transformer_encoder=True``, Llama layers.
    ``combination_dim='token'`` prepends the memory (attendable by every token); ``'embedding'`` concatenates the
    compressed memory to every token's features (decoder width dim + encoder_dim/compression).
    """

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, *, compression=4, combination_dim="token",
                 transformer_encoder=False, n_heads=0, kernel=1, random=False, noise_embedding=False,
                 noise=2.0**-3, attention_heads=4):
        super().__init__()
        if combination_dim not in ("token", "embedding"):
            raise ValueError(f"MemoryTransformer: combination_dim must be 'token' or 'embedding', got {combination_dim!r}")
        self.combination_dim, self.random_input, self.n_vocab = combination_dim, random, n_vocab
        self.noise_embedding, self.noise, self.length = noise_embedding, noise, length
        self.wte = nn.Embedding(n_vocab, encoder_dim)
        if transformer_encoder:
            self.encoder = LlamaStack(llama_config(n_vocab, encoder_dim, depth, attention_heads, length))
        else:
            self.encoderblocks = nn.ModuleList(
                [MixerBlock(encoder_dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
            )
        self.compression = compression > 1
        code = encoder_dim // compression if self.compression else encoder_dim
        if self.compression:
            self.down = nn.Linear(encoder_dim, code)
            if combination_dim == "token":
                self.up = nn.Linear(code, encoder_dim)
        if combination_dim == "token":
            width, positions = dim, length + 1
            if encoder_dim != dim:
                self.decoder_proj = nn.Linear(encoder_dim, dim)
        else:
            width, positions = dim + code, length
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoder = LlamaStack(llama_config(n_vocab, width, depth, attention_heads, positions))
        self.lm_head = nn.Linear(width, n_vocab, bias=False)
        self.input_length = length
        self.embedding_values = code

    def encode(self, input_ids, attention_mask=None):
        """(b, L) ids -> (b, 1, width) the memory as the decoder reads it."""
        if self.random_input:
            input_ids = torch.randint(1, self.n_vocab, input_ids.shape, device=input_ids.device)
        x = self.wte(input_ids)
        if hasattr(self, "encoder"):
            e = self.encoder(x, keys=attention_mask)[:, -1:]
        else:
            e = token_embedding(self.encoderblocks, x)
        if self.compression:
            e = self.down(e)
        if self.noise_embedding and self.training:  # noise-based quantisation-aware training of the stored code
            e = e + (torch.rand_like(e) - 0.5) * self.noise
        if self.combination_dim == "embedding":
            return e
        if self.compression:
            e = self.up(e)
        return self.decoder_proj(e) if hasattr(self, "decoder_proj") else e

    def forward(self, input_ids, labels=None, attention_mask=None):
        memory = self.encode(input_ids, attention_mask)
        tokens = self.decoder_wte(input_ids)
        if self.combination_dim == "token":
            x = torch.cat([memory, tokens], dim=1)  # (b, 1+L, dim)
            keys = None if attention_mask is None else F.pad(attention_mask, (1, 0), value=1)
            hidden = self.decoder(x, keys=keys)[:, 1:]
        else:
            x = torch.cat([memory.expand(-1, self.length, -1), tokens], dim=2)  # (b, L, code+dim)
            hidden = self.decoder(x, keys=attention_mask)
        logits = self.lm_head(hidden)
        return causal_lm_loss(logits, labels), logits
