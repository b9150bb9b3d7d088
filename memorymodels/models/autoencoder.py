"""The masked-mixer autoencoder: encode L tokens into one embedding, regenerate all L tokens from it.

``wte -> encoderblocks -> last-token embedding (b, 1, d) -> [down -> up] -> unroll or repeat to (b, L, d) ->
decoderblocks -> lm_head``, trained with the unshifted cross entropy (position t reconstructs token t). The decoder
sees the input only through the embedding: ``embedding_values`` numbers per row (d, or d / compression).

The unroll gives decoder position t the cyclic window ``e[t mod d : t mod d + d/2]`` (one gather, ``unroll_index``);
``projection`` exists only when unrolling. ``frozen_encoder`` is a trained mixer's ``wte`` and blocks, frozen
(``TruncatedModel``, ``frozen_mixer_encoder``). Seed checkpoints load strictly; docs/porting.md lists what differs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .mixer import MixerBlock, reconstruction_loss, token_embedding


def unroll_index(length: int, dim: int, device=None) -> torch.Tensor:
    """(L, d//2) gather index of the seed's sliding-window unroll: row t holds ``((t mod d) + w) mod d``.

    Decoder position t receives the cyclic window ``e[t mod d : t mod d + d/2]`` of the embedding, e.g. for d=8:
    [0..3], [1..4], ..., [5, 6, 7, 0], [6, 7, 0, 1], [7, 0, 1, 2], [0..3], ... (period d).
    """
    positions, window = torch.arange(length, device=device), torch.arange(dim // 2, device=device)
    return (positions[:, None] % dim + window[None, :]) % dim


def encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The token embedding and blocks of a trained mixer (autoencoder, language mixer or TruncatedModel)."""
    if isinstance(model, TruncatedModel):
        return model.model_wte, model.model_blocks
    for name in ("encoderblocks", "mixerblocks"):
        if hasattr(model, name) and hasattr(model, "wte"):
            return model.wte, getattr(model, name)
    raise TypeError(f"frozen_encoder: {type(model).__name__} has no 'wte' with 'encoderblocks' or 'mixerblocks'")


class TruncatedModel(nn.Module):
    """A trained mixer's ``wte`` and blocks, returning the final hidden states (b, L, d): a frozen encoder.

    Attribute names are the seed's (``model_wte``, ``model_blocks``), so models holding one load seed checkpoints.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model_wte, self.model_blocks = encoder_parts(model)

    @classmethod
    def empty(cls, n_vocab, dim, depth, length, *, n_heads=0, kernel=1) -> "TruncatedModel":
        """A freshly initialised encoder of these sizes (to load weights into)."""
        model = nn.Module()
        model.wte = nn.Embedding(n_vocab, dim)
        model.mixerblocks = nn.ModuleList(
            [MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
        )
        return cls(model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.model_wte(input_ids)
        for block in self.model_blocks:
            x = block(x)
        return x


FSDP_SHARDS = "pytorch_model_fsdp_0"  # accelerate's SHARDED_STATE_DICT model folder (configs/fsdp_config.yaml)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` / ``.bin`` / ``.pt`` file, or from a checkpoint directory holding one.

    A checkpoint directory written under FSDP with sharded state dicts holds ``pytorch_model_fsdp_0/`` instead; its
    shards are merged here on the CPU, without a process group, into the same full state dict.
    """
    path = Path(path)
    if path.is_dir():
        names = ("model.safetensors", "pytorch_model.bin", "model.pt")
        found = [path / n for n in names if (path / n).is_file()]
        if not found and (path / FSDP_SHARDS / ".metadata").is_file():
            return load_sharded(path / FSDP_SHARDS)
        if not found:
            raise FileNotFoundError(f"{path}: no {', '.join(names)} or {FSDP_SHARDS}/ in this checkpoint directory")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file (give a .safetensors/.bin/.pt file or its directory)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_sharded(folder: Path) -> dict[str, torch.Tensor]:
    """The full state dict of a torch.distributed.checkpoint folder (accelerate saves ``{"model": state_dict}``)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "model.pt"
        dcp_to_torch_save(folder, merged)
        state = torch.load(merged, map_location="cpu", weights_only=True)
    return state["model"] if set(state) == {"model"} else state


def frozen_mixer_encoder(path: str | Path) -> "TruncatedModel":
    """The frozen encoder (``wte`` + blocks) of a trained mixer checkpoint, its sizes read from the weights.

    Accepts the state dict of an ``AutoencodingMixer`` / memory mixer (``encoderblocks``), a ``LanguageMixer``
    (``mixerblocks``) or a ``TruncatedModel`` (``model_blocks``), e.g. the seed's or this library's checkpoints.
    """
    state = load_state_dict_file(path)
    wte_key = next((k for k in ("wte.weight", "model_wte.weight") if k in state), None)
    blocks = next((p for p in ("encoderblocks.", "mixerblocks.", "model_blocks.") if any(k.startswith(p) for k in state)), None)
    if wte_key is None or blocks is None:
        raise ValueError(f"{path}: not a mixer checkpoint (needs 'wte.weight' and 'encoderblocks.*' or 'mixerblocks.*')")
    n_vocab, dim = state[wte_key].shape
    depth = 1 + max(int(k[len(blocks):].split(".")[0]) for k in state if k.startswith(blocks))
    conv = f"{blocks}0.conv."
    n_heads = len({k.split(".")[4] for k in state if k.startswith(conv + "convs.")})
    weight = state[conv + ("convs.0.weight" if n_heads else "weight")]  # (L, L, k)
    encoder = TruncatedModel.empty(n_vocab, dim, depth, weight.shape[0], n_heads=n_heads, kernel=weight.shape[-1])
    encoder.model_wte.weight.data.copy_(state[wte_key])
    encoder.model_blocks.load_state_dict(
        {k[len(blocks):]: v for k, v in state.items() if k.startswith(blocks)}, strict=True
    )
    return encoder.requires_grad_(False)


class AutoencodingMixer(nn.Module):
    """Masked-mixer autoencoder (see the module docstring); ``embedding_values`` numbers per row are stored."""

    def __init__(self, n_vocab: int, dim: int, depth: int, length: int, *, compression: int = 1, kernel: int = 1,
                 n_heads: int = 0, unroll: bool = True, random: bool = False, frozen_encoder: nn.Module | None = None,
                 clm_encoder: bool = False):
        super().__init__()
        if frozen_encoder is not None:
            self.wte, self.encoderblocks = encoder_parts(frozen_encoder)
            for p in list(self.wte.parameters()) + list(self.encoderblocks.parameters()):
                p.requires_grad_(False)
        else:
            self.wte = nn.Embedding(n_vocab, dim)
            self.encoderblocks = nn.ModuleList(
                [MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
            )
        self.decoderblocks = nn.ModuleList(
            [MixerBlock(dim, length, causal=True, n_heads=n_heads, kernel=kernel) for _ in range(depth)]
        )
        self.lm_head = nn.Linear(dim, n_vocab, bias=False)
        if compression > 1:
            self.down = nn.Linear(dim, dim // compression)
            self.up = nn.Linear(dim // compression, dim)
        if unroll:
            self.projection = nn.Linear(dim // 2, dim)
        else:
            self.register_load_state_dict_pre_hook(_drop_unused_projection)
        self.n_vocab, self.dim, self.length = n_vocab, dim, length
        self.compression, self.unroll, self.random_input = compression > 1, unroll, random
        # the seed's clm_encoder reads the second-to-last token: a causal LM's last position is never trained
        self.embedding_position = -2 if clm_encoder else -1
        self.input_length = length
        self.embedding_values = dim // compression if compression > 1 else dim

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(b, L) token ids -> (b, 1, d') the stored embedding (after ``down`` when compressing)."""
        if self.random_input:  # the seed's "trivial encoding" control: the encoder sees random tokens
            input_ids = torch.randint(1, self.n_vocab, input_ids.shape, device=input_ids.device)
        e = token_embedding(self.encoderblocks, self.wte(input_ids), self.embedding_position)  # (b, 1, d)
        return self.down(e) if self.compression else e

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """(b, 1, d') embedding -> (b, L, V) logits."""
        e = self.up(embedding) if self.compression else embedding  # (b, 1, d)
        if self.unroll:
            windows = e[:, 0, unroll_index(self.length, self.dim, e.device)]  # (b, L, d//2)
            x = self.projection(windows)  # (b, L, d)
        else:
            x = e.expand(-1, self.length, -1)  # (b, L, d) the repeated embedding
        for block in self.decoderblocks:
            x = block(x)
        return self.lm_head(x)

    def forward(self, input_ids, labels=None, attention_mask=None):
        # attention_mask is accepted for the common interface: pads are -100 in the labels and mixing is causal
        logits = self.decode(self.encode(input_ids))
        return reconstruction_loss(logits, labels), logits


def _drop_unused_projection(module, state_dict, prefix, *args, **kwargs):
    """Seed checkpoints of repeat-mode autoencoders carry an unused ``projection``; drop it so strict loading works."""
    for key in (prefix + "projection.weight", prefix + "projection.bias"):
        state_dict.pop(key, None)
