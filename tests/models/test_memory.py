"""Memory mixers: batched chunks equal the seed's loops, causality of the decoders, loss conventions, counts."""

import pytest
import torch

from memorymodels.models import (
    FrozenMemoryMixer,
    MemoryMixer,
    ProjMemoryMixer,
    RecurrentMemoryMixer,
    TruncatedModel,
    VariableMemoryMixer,
    chunked_lm_loss,
    copy_task,
)
from tests.models.helpers import assert_all_parameters_used, assert_causal, save_load, train_steps
from tests.models.seed_reference import SeedMemoryMixer, SeedRecurrentMemoryMixer, SeedVariableMemoryMixer
from tests.models.test_mixer import block_params

V, E, D, L, C = 40, 16, 24, 6, 3


def ids_for(T, seed=0):
    return torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(seed))


def padded_labels(ids):
    """Labels with left padding in row 0 and one chunk fully ignored (chunk 1 in both rows)."""
    labels = ids.clone()
    labels[0, :2] = -100
    labels[:, L : 2 * L] = -100
    return labels


@pytest.mark.parametrize("kwargs", [dict(), dict(compression=1, kernel=3), dict(n_heads=4)])
def test_variable_memory_batched_equals_the_seeds_chunk_loop(kwargs):
    torch.manual_seed(0)
    seed = SeedVariableMemoryMixer(V, E, D, 2, L, n_chunks=C, **kwargs)
    model = VariableMemoryMixer(V, E, D, 2, L, n_chunks=C, **kwargs)
    model.load_state_dict({k: v.clone() for k, v in seed.state_dict().items()}, strict=True)
    ids = ids_for(C * L)
    labels = padded_labels(ids)
    seed_loss, seed_out = seed(ids, labels)
    loss, logits = model(ids, labels=labels)
    assert logits.shape == (2, C * L, V) and model.input_length == C * L
    assert torch.allclose(logits, seed_out.permute(0, 2, 1), atol=1e-5)
    assert torch.allclose(loss, seed_loss, atol=1e-6)


def test_recurrent_memory_equals_the_seeds_loop():
    torch.manual_seed(0)
    seed = SeedRecurrentMemoryMixer(V, D, 2, L, kernel=3, n_chunks=C)
    model = RecurrentMemoryMixer(V, D, 2, L, kernel=3, n_chunks=C)
    model.load_state_dict({k: v.clone() for k, v in seed.state_dict().items()}, strict=True)
    ids = ids_for(C * L)
    labels = padded_labels(ids)
    seed_loss, seed_out = seed(ids, labels)
    loss, logits = model(ids, labels=labels)
    assert torch.allclose(logits, seed_out.permute(0, 2, 1), atol=1e-5)
    assert torch.allclose(loss, seed_loss, atol=1e-6)


def test_memory_mixer_token_equals_the_seed():
    torch.manual_seed(0)
    seed = SeedMemoryMixer(V, E, D, 2, L, compression=4, kernel=3)
    model = MemoryMixer(V, E, D, 2, L, compression=4, kernel=3)
    model.load_state_dict({k: v.clone() for k, v in seed.state_dict().items()}, strict=True)
    ids = ids_for(L)
    labels = padded_labels(ids)[:, :L]
    seed_loss, seed_out = seed(ids, labels)
    loss, logits = model(ids, labels=labels)
    assert torch.allclose(logits, seed_out.permute(0, 2, 1)[:, 1:], atol=1e-5)
    assert torch.allclose(loss, seed_loss, atol=1e-6)


MODELS = {
    "variable": lambda: VariableMemoryMixer(V, E, D, 2, L, n_chunks=C, kernel=2, n_heads=2),
    "variable_no_memory": lambda: VariableMemoryMixer(V, E, D, 2, L, n_chunks=C, no_memory=True),
    "recurrent": lambda: RecurrentMemoryMixer(V, D, 2, L, n_chunks=C, n_heads=4),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_chunked_memory_models_are_causal_over_the_whole_input(name):
    """Memories come from earlier chunks only, so logits at t never depend on tokens after t."""
    torch.manual_seed(0)
    model = MODELS[name]()
    ids = ids_for(C * L)
    positions = [0, L - 1, L + 2, 2 * L - 1, C * L - 3]  # (the recurrent model never reads a chunk's last token)
    assert_causal(model, ids, V, positions=positions)
    assert_all_parameters_used(model, ids)
    train_steps(model, ids, steps=2)
    assert_causal(model, ids, V, positions=positions)
    assert_causal(save_load(model, MODELS[name]()), ids, V, positions=positions)


ORACLES = {
    "memory_token": lambda: MemoryMixer(V, E, D, 2, L, compression=2, kernel=3),
    "memory_embedding": lambda: MemoryMixer(V, E, D, 2, L, compression=2, combination_dim="embedding"),
    "proj": lambda: ProjMemoryMixer(V, E, D, 2, L, compression=2, kernel=2),
    "frozen": lambda: FrozenMemoryMixer(V, TruncatedModel.empty(V, E, 2, L), E, D, 2, L, compression=2),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_oracle_decoders_are_causal_given_the_memory(name):
    """The oracle's memory sees the whole chunk; with the memory held fixed the decoder must be causal."""
    torch.manual_seed(0)
    model = ORACLES[name]()
    ids = ids_for(L)
    assert_all_parameters_used(model, ids)
    encode, fixed = model.encode, {}

    def fixed_encode(input_ids, up=True):  # the memory of the first (unperturbed) call, for every later call
        if up not in fixed:
            fixed[up] = encode(input_ids, up=up).detach()
        return fixed[up]

    model.encode = fixed_encode
    assert_causal(model, ids, V)


def test_frozen_memory_mixer_trains_only_the_decoder():
    torch.manual_seed(0)
    encoder = TruncatedModel.empty(V, E, 2, L).requires_grad_(False)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = FrozenMemoryMixer(V, encoder, E, D, 2, L)
    losses = train_steps(model, ids_for(L), steps=3)
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_chunked_loss_on_a_hand_computed_case():
    """Two chunks of 3; chunk 1 has all targets ignored: loss = (chunk-0 mean) / 2, boundary not trained."""
    probs = torch.full((1, 6, 4), 0.25)
    probs[0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log()
    labels = torch.tensor([[0, 3, 2, -100, -100, 1]])  # chunk 0 targets: 3 (p .4), 2 (p .25); chunk 1: only 1 at t=5
    expected = -(torch.log(torch.tensor(0.4)) + torch.log(torch.tensor(0.25))) / 2 / 2 - torch.log(torch.tensor(0.25)) / 2
    assert torch.isclose(chunked_lm_loss(logits, labels, 2), expected)
    labels = torch.tensor([[0, 3, 2, -100, -100, -100]])  # chunk 1 skipped but still counted in / C
    expected = -(torch.log(torch.tensor(0.4)) + torch.log(torch.tensor(0.25))) / 2 / 2
    assert torch.isclose(chunked_lm_loss(logits, labels, 2), expected)
    assert chunked_lm_loss(logits, None, 2) is None


def test_copy_task_does_not_touch_the_batch():
    ids = torch.tensor([[5, 6, 7, 8]])
    new_ids, new_labels = copy_task(ids, ids)
    assert new_ids.tolist() == [[5, 6, 5, 6]] and new_labels.tolist() == [[-100, -100, 5, 6]]
    assert ids.tolist() == [[5, 6, 7, 8]]
    blank_ids, _ = copy_task(ids, None, blank=True, blank_id=1)
    assert blank_ids.tolist() == [[5, 6, 1, 1]]


def test_parameter_counts():
    emb, head = V * D, V * D
    enc = V * E + 2 * block_params(E, L)
    down_up = E * (E // 4) + E // 4 + (E // 4) * E + E
    proj = E * D + D
    model = VariableMemoryMixer(V, E, D, 2, L, n_chunks=C)
    assert sum(p.numel() for p in model.parameters()) == enc + down_up + proj + emb + 2 * block_params(D, L + C) + head
    assert model.embedding_values == (C - 1) * (E // 4)
    model = VariableMemoryMixer(V, E, D, 2, L, n_chunks=C, no_memory=True)
    assert sum(p.numel() for p in model.parameters()) == emb + 2 * block_params(D, L + C) + head
    model = MemoryMixer(V, E, D, 2, L)
    assert sum(p.numel() for p in model.parameters()) == enc + down_up + proj + emb + 2 * block_params(D, L + 1) + head
    model = MemoryMixer(V, E, D, 2, L, combination_dim="embedding")
    w = D + E // 4
    expected = enc + E * (E // 4) + E // 4 + emb + 2 * block_params(w, L) + V * w
    assert sum(p.numel() for p in model.parameters()) == expected
    model = RecurrentMemoryMixer(V, D, 2, L, n_chunks=C)
    assert sum(p.numel() for p in model.parameters()) == emb + 2 * block_params(D, L + 1) + head
