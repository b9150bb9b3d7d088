"""The seed's formulation of the masked mixer and its autoencoder, for equivalence tests and the benchmark.

Written from the seed digest (``/work/shared/spec/seed-digest.md`` §1.1-1.2), keeping what the seed does that the
library does not: the causal mask written into ``conv.weight.data`` every forward, the Python loop over heads and over
the L unroll windows, the loss on ``[b, V, t]`` logits. Parameter names are the seed's, so a state dict of these
modules is a state dict "saved by the seed's code". Not used by the library.
"""

import torch
from torch import nn


def FeedForward(dim, expansion_factor=4):
    inner_dim = int(dim * expansion_factor)
    return nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU(), nn.Linear(inner_dim, dim))


def mask_in_place(conv):
    # the seed: W <- tril per tap, written through .data (outside autograd)
    conv.weight.data = torch.tril(conv.weight.permute(2, 0, 1)).permute(1, 2, 0).contiguous()


class SeedMixerHead(nn.Module):
    def __init__(self, dim, length, hidden_dim, n_heads=4, kernel=1):
        super().__init__()
        self.n_heads = n_heads
        self.proj_head = nn.ModuleList([nn.Linear(dim, hidden_dim) for _ in range(n_heads)])
        self.convs = nn.ModuleList([nn.Conv1d(length, length, kernel, padding="same") for _ in range(n_heads)])
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):
        for conv in self.convs:
            mask_in_place(conv)
        heads = [self.convs[h](self.proj_head[h](x)) for h in range(self.n_heads)]
        return self.out_proj(torch.cat(heads, dim=2))


class SeedMixerBlock(nn.Module):
    def __init__(self, dim, length, causal=True, n_heads=0, kernel=1):
        super().__init__()
        self.patch_layernorm = nn.LayerNorm(dim)
        self.seq_layernorm = nn.LayerNorm(dim)
        self.patch_ff = FeedForward(dim)
        self.multiheaded = n_heads > 0
        if self.multiheaded:
            self.conv = SeedMixerHead(dim, length, dim // n_heads, n_heads=n_heads, kernel=kernel)
        else:
            self.conv = nn.Conv1d(length, length, kernel, padding="same")
        self.causal = causal

    def forward(self, x):
        if self.causal and not self.multiheaded:
            mask_in_place(self.conv)
        x = self.conv(self.seq_layernorm(x)) + x
        return self.patch_ff(self.patch_layernorm(x)) + x


class SeedLanguageMixer(nn.Module):
    def __init__(self, n_vocab, dim, depth, length, tie_weights=False, n_heads=0, kernel=1):
        super().__init__()
        self.wte = nn.Embedding(n_vocab, dim)
        self.mixerblocks = nn.ModuleList([SeedMixerBlock(dim, length, True, n_heads, kernel) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        if tie_weights:
            self.wte.weight = self.lm_head.weight
        self.cel = nn.CrossEntropyLoss()

    def forward(self, input_ids, labels=None):
        x = self.wte(input_ids)
        for block in self.mixerblocks:
            x = block(x)
        output = self.lm_head(x).permute(0, 2, 1)  # [b, V, t]
        loss = self.cel(output[..., :-1].contiguous(), labels[..., 1:].contiguous())
        return loss, output


class SeedAutoencodingMixer(nn.Module):
    def __init__(self, n_vocab, dim, depth, length, compression=1, kernel=1, n_heads=0, unroll=True):
        super().__init__()
        self.wte = nn.Embedding(n_vocab, dim)
        self.encoderblocks = nn.ModuleList([SeedMixerBlock(dim, length, True, n_heads, kernel) for _ in range(depth)])
        self.decoderblocks = nn.ModuleList([SeedMixerBlock(dim, length, True, n_heads, kernel) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.cel = nn.CrossEntropyLoss()
        self.tokenized_length = length
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(dim, dim // compression)
            self.up = nn.Linear(dim // compression, dim)
        self.unroll = unroll
        self.dim = dim
        self.projection = nn.Linear(dim // 2, dim)  # always built, as the seed

    def forward(self, input_ids, labels=None):
        x = self.wte(input_ids)
        for block in self.encoderblocks:
            x = block(x)
        e = x[:, -1, :].unsqueeze(1)
        if self.compression:
            e = self.up(self.down(e))
        if self.unroll:
            stack = []
            for i in range(self.tokenized_length):
                i %= self.dim
                window = e[..., i : i + self.dim // 2]
                if i + self.dim // 2 > self.dim:
                    window = torch.cat((window, e[..., : i + self.dim // 2 - self.dim]), dim=2)
                stack.append(window)
            e = self.projection(torch.cat(stack, dim=1))
        else:
            e = e.repeat(1, self.tokenized_length, 1)
        x = e
        for block in self.decoderblocks:
            x = block(x)
        output = self.lm_head(x).permute(0, 2, 1)  # [b, V, t]
        loss = self.cel(output, labels) if labels is not None else 0
        return loss, output


def seed_chunk_loss(cel, output_bvt, labels):
    """The seed's per-chunk loss on [b, V, t] logits; returns None for a chunk it skips (all targets ignored)."""
    if (labels == -100).all():
        return None
    loss = cel(output_bvt, labels)
    return None if torch.isnan(loss) else loss


class SeedMemoryMixer(nn.Module):
    """MemoryMixer with combination_dim='token' as the seed: loop-free already; used for naming and the loss slice."""

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, compression=4, n_heads=0, kernel=1):
        super().__init__()
        self.wte = nn.Embedding(n_vocab, encoder_dim)
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.encoderblocks = nn.ModuleList([SeedMixerBlock(encoder_dim, length, True, n_heads, kernel) for _ in range(depth)])
        self.decoderblocks = nn.ModuleList([SeedMixerBlock(dim, length + 1, True, 0, kernel) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.decoder_proj = nn.Linear(encoder_dim, dim) if encoder_dim != dim else None
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(encoder_dim, encoder_dim // compression)
            self.up = nn.Linear(encoder_dim // compression, encoder_dim)
        self.cel = nn.CrossEntropyLoss()

    def forward(self, input_ids, labels):
        x = self.wte(input_ids)
        for block in self.encoderblocks:
            x = block(x)
        e = x[:, -1, :].unsqueeze(1)
        if self.compression:
            e = self.up(self.down(e))
        if self.decoder_proj is not None:
            e = self.decoder_proj(e)
        x = torch.cat((e, self.decoder_wte(input_ids)), dim=1)
        for block in self.decoderblocks:
            x = block(x)
        output = self.lm_head(x).permute(0, 2, 1)
        loss = self.cel(output[..., 1:-1].contiguous(), labels[..., 1:].contiguous())
        return loss, output


class SeedVariableMemoryMixer(nn.Module):
    """The seed's VariableMemoryMixer: chunks encoded one by one, then decoded one by one (Python loops)."""

    def __init__(self, n_vocab, encoder_dim, dim, depth, length, compression=4, n_heads=0, kernel=1, n_chunks=4):
        super().__init__()
        self.wte = nn.Embedding(n_vocab, encoder_dim)
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.encoderblocks = nn.ModuleList([SeedMixerBlock(encoder_dim, length, True, n_heads, kernel) for _ in range(depth)])
        self.decoderblocks = nn.ModuleList([SeedMixerBlock(dim, length + n_chunks, True, 0, 1) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.decoder_proj = nn.Linear(encoder_dim, dim) if encoder_dim != dim else None
        self.cel = nn.CrossEntropyLoss()
        self.tokenized_length = length
        self.compression = compression > 1
        if self.compression:
            self.down = nn.Linear(encoder_dim, encoder_dim // compression)
            self.up = nn.Linear(encoder_dim // compression, encoder_dim)
        self.n_chunks = n_chunks

    def forward(self, input_ids, labels):
        L, C = self.tokenized_length, self.n_chunks
        memories, i = [], 0
        while input_ids.shape[1] - L > i:
            x = self.wte(input_ids[:, i : i + L])
            for block in self.encoderblocks:
                x = block(x)
            e = x[:, -1, :].unsqueeze(1)
            if self.compression:
                e = self.up(self.down(e))
            if self.decoder_proj is not None:
                e = self.decoder_proj(e)
            memories.append(e)
            i += L
        tokens = self.decoder_wte(input_ids)
        total, outputs = 0, []
        for c in range(C):
            pad = tokens.new_zeros(input_ids.shape[0], C - c, tokens.shape[2])  # the seed: zeros(...).to(device)
            x = torch.cat(memories[:c] + [pad] + [tokens[:, c * L : (c + 1) * L]], dim=1)
            for block in self.decoderblocks:
                x = block(x)
            output = self.lm_head(x).permute(0, 2, 1)
            loss = seed_chunk_loss(self.cel, output[..., C : C + L - 1], labels[..., c * L + 1 : (c + 1) * L])
            if loss is not None:
                total = total + loss
            outputs.append(output[..., C : C + L])
        return total / C, torch.cat(outputs, dim=2)


class SeedRecurrentMemoryMixer(nn.Module):
    """The seed's RecurrentMemoryMixer (all chunks' outputs returned here, the seed returned the last only)."""

    def __init__(self, n_vocab, dim, depth, length, n_heads=0, kernel=1, n_chunks=4):
        super().__init__()
        self.decoder_wte = nn.Embedding(n_vocab, dim)
        self.decoderblocks = nn.ModuleList([SeedMixerBlock(dim, length + 1, True, n_heads, kernel) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        self.cel = nn.CrossEntropyLoss()
        self.tokenized_length, self.n_chunks = length, n_chunks

    def forward(self, input_ids, labels):
        L, C = self.tokenized_length, self.n_chunks
        memory = self.decoder_wte.weight.new_zeros(input_ids.shape[0], 1, self.decoder_wte.weight.shape[1])
        total, outputs = 0, []
        for c in range(C):
            emb = self.decoder_wte(input_ids[:, c * L : (c + 1) * L]).clone()
            emb[:, -1, :] = memory[:, 0]
            x = torch.cat((memory, emb), dim=1)
            for block in self.decoderblocks:
                x = block(x)
            memory = x[:, -1, :].unsqueeze(1)
            output = self.lm_head(x).permute(0, 2, 1)
            loss = seed_chunk_loss(self.cel, output[..., 1:-1], labels[..., c * L + 1 : (c + 1) * L])
            if loss is not None:
                total = total + loss
            outputs.append(output[..., 1:])
        return total / C, torch.cat(outputs, dim=2)
