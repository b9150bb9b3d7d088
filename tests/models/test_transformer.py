"""Llama baselines: equality with LlamaForCausalLM, explicit masks, batched memory chunks, causality."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from memorymodels.models import (
    AutoencodingTransfixer,
    LlamaCLM,
    MemoryTransformer,
    RecurrentMemoryTransformer,
    TransformerAutoencoder,
    VariableMemoryTransformer,
)
from tests.models.helpers import assert_all_parameters_used, assert_causal, save_load, train_steps

V, E, D, L, C = 40, 16, 32, 6, 3


def ids_for(T, seed=0):
    return torch.randint(2, V, (2, T), generator=torch.Generator().manual_seed(seed))


def left_padding(T, n=2):
    mask = torch.ones(2, T, dtype=torch.long)
    mask[0, :n] = 0
    return mask


def test_llama_clm_equals_llama_for_causal_lm():
    torch.manual_seed(0)
    model = LlamaCLM(V, D, 2, 8, n_heads=4)
    reference = LlamaForCausalLM(model.model.config)
    reference.load_state_dict(model.state_dict(), strict=True)
    ids, mask = ids_for(8), left_padding(8)
    labels = ids.masked_fill(mask == 0, -100)
    # the first real token is predicted from a pad query, whose output no mask convention defines: not compared
    labels[0, 2] = -100
    loss, logits = model(ids, labels=labels, attention_mask=mask)
    out = reference(input_ids=ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    assert torch.allclose(logits[real], out.logits[real], atol=1e-5)
    assert torch.allclose(loss, out.loss, atol=1e-6)
    loss, logits = model(ids, labels=ids)  # no padding: every position
    out = reference(input_ids=ids, labels=ids)
    assert torch.allclose(logits, out.logits, atol=1e-5) and torch.allclose(loss, out.loss, atol=1e-6)


def test_padding_never_changes_real_positions():
    """The ids under padding may be anything: real positions' logits must not move (mask aligned with the tokens)."""
    torch.manual_seed(0)
    T = C * L
    models = {
        "clm": (LlamaCLM(V, D, 2, T), T),
        "variable_fixed": (VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C), T),
        "variable": (VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C, fixed_memory=False), T),
        "recurrent": (RecurrentMemoryTransformer(V, D, 2, L, n_chunks=C), T),
        "memory": (MemoryTransformer(V, E, D, 2, L, transformer_encoder=True), L),
    }
    for name, (model, T) in models.items():
        model.eval()
        ids, mask = ids_for(T), left_padding(T, n=L + 2 if T > L else 2)
        other = torch.where(mask.bool(), ids, (ids + 7) % V)
        with torch.no_grad():
            a, b = model(ids, attention_mask=mask)[1], model(other, attention_mask=mask)[1]
        real = mask.bool()
        assert torch.allclose(a[real], b[real], atol=1e-5), name
        assert not torch.allclose(a, b), name  # the padded positions did change: the check has teeth


def reference_variable_memory(model, ids, mask):
    """Chunk by chunk, as the seed intended: memories encoded one chunk at a time, each chunk decoded on its own."""
    C, L = model.n_chunks, model.length
    memories = []
    for c in range(C - 1):
        x = model.encoder(model.wte(ids[:, c * L : (c + 1) * L]), keys=mask[:, c * L : (c + 1) * L])[:, -1:]
        memories.append(model.decoder_proj(x))
    outputs, total = [], 0
    for c in range(C):
        tokens = model.decoder_wte(ids[:, c * L : (c + 1) * L])
        fill = [torch.ones(ids.shape[0], C - c, model.dim)] if model.fixed_memory else []
        x = torch.cat(memories[:c] + fill + [tokens], dim=1)
        n_slots = x.shape[1] - L
        real = mask.view(-1, C, L).amax(dim=2)[:, :c]  # a memory of an all-padding chunk is masked out
        slot_keys = torch.cat([real, torch.ones(ids.shape[0], n_slots - c, dtype=mask.dtype)], dim=1)
        keys = torch.cat([slot_keys, mask[:, c * L : (c + 1) * L]], dim=1)
        logits = model.lm_head(model.decoder(x, keys=keys)[:, n_slots:])
        labels = ids[:, c * L : (c + 1) * L].masked_fill(mask[:, c * L : (c + 1) * L] == 0, -100)
        if (labels[:, 1:] != -100).any():
            total = total + F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        outputs.append(logits)
    return total / C, torch.cat(outputs, dim=1)


@pytest.mark.parametrize("fixed_memory", [True, False])
def test_variable_memory_transformer_batched_equals_chunk_by_chunk(fixed_memory):
    torch.manual_seed(0)
    model = VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C, fixed_memory=fixed_memory).eval()
    ids, mask = ids_for(C * L), left_padding(C * L, n=L + 2)  # chunk 0 of row 0 fully padded
    labels = ids.masked_fill(mask == 0, -100)
    loss, logits = model(ids, labels=labels, attention_mask=mask)
    with torch.no_grad():
        ref_loss, ref_logits = reference_variable_memory(model, ids, mask)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert torch.allclose(loss, ref_loss, atol=1e-6)


CAUSAL = {
    "clm": lambda: LlamaCLM(V, D, 2, C * L),
    "variable_fixed": lambda: VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C, compression=2),
    "variable": lambda: VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C, fixed_memory=False),
    "variable_no_memory": lambda: VariableMemoryTransformer(V, E, D, 2, L, n_chunks=C, no_memory=True),
    "recurrent": lambda: RecurrentMemoryTransformer(V, D, 2, L, n_chunks=C),
}


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_before_after_training_and_reload(name):
    torch.manual_seed(0)
    model = CAUSAL[name]()
    ids = ids_for(C * L)
    positions = [0, L - 1, L + 2, C * L - 3]  # the recurrent model never reads a chunk's last token
    assert_causal(model, ids, V, positions=positions)
    assert_all_parameters_used(model, ids)
    losses = train_steps(model, ids, steps=3, lr=3e-3)
    assert losses[-1] < losses[0]
    assert_causal(model, ids, V, positions=positions)
    assert_causal(save_load(model, CAUSAL[name]()), ids, V, positions=positions)


AUTOENCODERS = {
    "unrolled": lambda: TransformerAutoencoder(V, D, 2, L, compression=2),
    "repeat": lambda: TransformerAutoencoder(V, D, 2, L, unroll=False),
    "transfixer_transformer_encoder": lambda: AutoencodingTransfixer(V, D, 2, L, compression=2),
    "transfixer_transformer_decoder": lambda: AutoencodingTransfixer(V, D, 2, L, use_transformer_encoder=False),
    "memory_token": lambda: MemoryTransformer(V, E, D, 2, L, compression=2),
    "memory_embedding": lambda: MemoryTransformer(V, E, D, 2, L, compression=2, combination_dim="embedding"),
    "memory_transformer_encoder": lambda: MemoryTransformer(V, E, D, 2, L, transformer_encoder=True),
}


@pytest.mark.parametrize("name", sorted(AUTOENCODERS))
def test_autoencoders_and_oracles_train_and_their_decoders_are_causal(name):
    torch.manual_seed(0)
    model = AUTOENCODERS[name]()
    ids = ids_for(L)
    assert_all_parameters_used(model, ids)
    losses = train_steps(model, ids, steps=4, lr=3e-3)
    assert losses[-1] < losses[0], losses
    # decoders are causal given the memory: fix what the encoder hands over, perturb the tokens after t
    decoder_input = {"memory": "encode"}.get(name.split("_")[0])
    if decoder_input:
        encode, fixed = model.encode, []
        model.encode = lambda *a: fixed[0] if fixed else fixed.append(encode(*a).detach()) or fixed[0]
        assert_causal(model, ids, V)
    else:  # autoencoders: the decoder reads only the embedding, so outputs at t depend on nothing after t
        model.eval()
        torch.manual_seed(0)
        x = torch.randn(2, L, D)
        y = x.clone()
        y[:, 3:] += 1
        stack = getattr(model, "decoder", None)
        run = stack if stack is not None else lambda h: [h := blk(h) for blk in model.decoderblocks][-1]
        with torch.no_grad():
            a, b = run(x), run(y)
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5) and not torch.allclose(a[:, 3:], b[:, 3:])


def test_noise_embedding_only_while_training():
    torch.manual_seed(0)
    model = MemoryTransformer(V, E, D, 2, L, noise_embedding=True)
    ids = ids_for(L)
    with torch.no_grad():
        assert not torch.equal(model(ids)[1], model(ids)[1])
        model.eval()
        assert torch.equal(model(ids)[1], model(ids)[1])


def test_bad_head_count_is_reported():
    with pytest.raises(ValueError, match="n_heads=3 must divide dim=32"):
        LlamaCLM(V, D, 2, L, n_heads=3)
