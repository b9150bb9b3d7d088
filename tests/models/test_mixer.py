"""The causal token mixer, MixerBlock and LanguageMixer: causality, masking, seed compatibility, loss, counts."""

import pytest
import torch
import torch.nn.functional as F

from memorymodels.models import CausalTokenMixer, LanguageMixer, MixerBlock
from tests.models.helpers import assert_all_parameters_used, assert_causal, save_load, train_steps
from tests.models.seed_reference import SeedLanguageMixer

V, D, L = 50, 16, 12


@pytest.fixture
def ids():
    return torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("n_heads,kernel", [(0, 1), (0, 3), (0, 4), (4, 1), (2, 3)])
def test_language_mixer_causal_before_after_training_and_reload(ids, n_heads, kernel):
    torch.manual_seed(0)
    model = LanguageMixer(V, D, 2, L, n_heads=n_heads, kernel=kernel)
    assert_causal(model, ids, V)
    assert_all_parameters_used(model, ids)
    losses = train_steps(model, ids, steps=3)
    assert losses[-1] < losses[0]
    assert_causal(model, ids, V)
    reloaded = save_load(model, LanguageMixer(V, D, 2, L, n_heads=n_heads, kernel=kernel))
    assert_causal(reloaded, ids, V)


def test_masked_entries_get_zero_gradient_and_stay_zero(ids):
    torch.manual_seed(0)
    model = LanguageMixer(V, D, 2, L, kernel=3)
    upper = torch.triu(torch.ones(L, L), diagonal=1).bool()
    loss, _ = model(ids, labels=ids)
    loss.backward()
    for block in model.mixerblocks:
        grad = block.conv.weight.grad.permute(2, 0, 1)  # (k, L, L)
        assert grad[:, upper].abs().max() == 0
        assert grad[:, ~upper].abs().max() > 0
    train_steps(model, ids, steps=2)
    for name, tensor in model.state_dict().items():  # a saved checkpoint is causal as stored
        if name.endswith("conv.weight"):
            assert tensor.permute(2, 0, 1)[:, upper].abs().max() == 0, name


def test_token_mixer_matches_definition():
    """y[b,t,j] = sum_{s<=t} sum_m W[t,s,m] x[b,s,j+m-pad] + bias[t] (pad = (k-1)//2, zeros outside)."""
    torch.manual_seed(0)
    k, d = 3, 5
    mixer = CausalTokenMixer(4, kernel=k)
    x = torch.randn(2, 4, d)
    W = mixer.weight.detach()
    xp = F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2))
    expected = torch.zeros(2, 4, d)
    for t in range(4):
        for s in range(t + 1):
            for m in range(k):
                expected[:, t, :] += W[t, s, m] * xp[:, s, m : m + d]
        expected[:, t, :] += mixer.bias.detach()[t]
    assert torch.allclose(mixer(x), expected, atol=1e-5)
    # one output row on its own, as the autoencoder's last encoder block uses it
    assert torch.allclose(mixer(x, position=-1), expected[:, -1:], atol=1e-5)
    assert torch.allclose(mixer(x, position=1), expected[:, 1:2], atol=1e-5)


@pytest.mark.parametrize("n_heads,kernel", [(0, 1), (0, 4), (4, 1), (2, 3)])
def test_block_single_position_equals_full(n_heads, kernel):
    torch.manual_seed(0)
    block = MixerBlock(D, L, n_heads=n_heads, kernel=kernel)
    x = torch.randn(3, L, D)
    full = block(x)
    assert torch.allclose(block(x, position=-1), full[:, -1:], atol=1e-5)
    assert torch.allclose(block(x, position=-2), full[:, -2:-1], atol=1e-5)


@pytest.mark.parametrize("n_heads,kernel,tie", [(0, 1, False), (0, 3, False), (4, 1, False), (2, 3, True)])
def test_seed_state_dict_loads_strict_and_gives_the_seed_outputs(ids, n_heads, kernel, tie):
    torch.manual_seed(0)
    seed = SeedLanguageMixer(V, D, 2, L, tie_weights=tie, n_heads=n_heads, kernel=kernel)
    state = {k: v.clone() for k, v in seed.state_dict().items()}
    # the seed's checkpoints carry non-causal upper triangles (it masked only inside forward)
    assert any(v.permute(2, 0, 1).triu(1).abs().sum() > 0 for k, v in state.items() if k.endswith("weight") and v.dim() == 3)
    model = LanguageMixer(V, D, 2, L, n_heads=n_heads, kernel=kernel, tie_weights=tie)
    model.load_state_dict(state, strict=True)
    for name, tensor in model.state_dict().items():
        if tensor.dim() == 3:
            assert tensor.permute(2, 0, 1).triu(1).abs().sum() == 0, f"{name} not re-masked on load"
    seed_loss, seed_out = seed(ids, labels=ids)
    loss, logits = model(ids, labels=ids)
    assert torch.allclose(logits, seed_out.permute(0, 2, 1), atol=1e-5)
    assert torch.allclose(loss, seed_loss, atol=1e-6)


def test_causal_loss_on_hand_computed_case():
    """Shifted CE: logits at t score labels[t+1]; -100 ignored; mean over the remaining targets."""
    model = LanguageMixer(4, 4, 1, 3)
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]]))
    from memorymodels.models.mixer import causal_lm_loss

    labels = torch.tensor([[2, 3, -100]])  # targets: pos0 -> 3 (p=0.4), pos1 -> -100 (ignored)
    assert torch.isclose(causal_lm_loss(logits, labels), -torch.log(torch.tensor(0.4)))
    labels = torch.tensor([[2, 3, 1]])  # pos0 -> 3 (0.4), pos1 -> 1 (0.25)
    expected = -(torch.log(torch.tensor(0.4)) + torch.log(torch.tensor(0.25))) / 2
    assert torch.isclose(causal_lm_loss(logits, labels), expected)
    assert model(torch.tensor([[0, 1, 2]]))[0] is None  # labels=None gives loss None


def block_params(d, L, k=1, h=0):
    """Digest §1.1: LayerNorms 4d, FeedForward 8d^2 + 5d, mixing k L^2 + L (flat) or h(d d/h + d/h + k L^2 + L) + d^2 + d."""
    mixing = k * L * L + L if h == 0 else h * (d * (d // h) + d // h + k * L * L + L) + d * d + d
    return 4 * d + 8 * d * d + 5 * d + mixing


@pytest.mark.parametrize("n_heads,kernel,tie", [(0, 1, False), (0, 4, True), (4, 2, False)])
def test_language_mixer_parameter_count(n_heads, kernel, tie):
    model = LanguageMixer(V, D, 3, L, n_heads=n_heads, kernel=kernel, tie_weights=tie)
    expected = V * D * (1 if tie else 2) + 3 * block_params(D, L, kernel, n_heads)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.input_length == L and model.embedding_values is None


def test_deferred_meta_device_init_rebuilds_the_mask(ids):
    """FSDP-style deferred init: build on meta, to_empty, reset_parameters: the mask is real and the model causal."""
    with torch.device("meta"):
        model = LanguageMixer(V, D, 2, L, kernel=3)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert torch.equal(model.mixerblocks[0].conv.mask[..., 0], torch.tril(torch.ones(L, L)))
    assert_causal(model, ids, V)
