"""AutoencodingMixer: seed equivalence, unroll windows, the decoder's only input, loss, counts, compile."""

import pytest
import torch

from memorymodels.models import AutoencodingMixer, LanguageMixer, TruncatedModel, unroll_index
from memorymodels.models.mixer import reconstruction_loss
from tests.models.helpers import assert_all_parameters_used, save_load, train_steps
from tests.models.seed_reference import SeedAutoencodingMixer
from tests.models.test_mixer import block_params

V, D, L = 50, 16, 12


@pytest.fixture
def ids():
    return torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(0))


def test_unroll_windows_are_the_seeds():
    """Digest §1.2 (observed when run), d=8, L=12: [0..3], [1..4], ..., [5,6,7,0], [6,7,0,1], [7,0,1,2], [0..3], ..."""
    index = unroll_index(12, 8)
    assert index[0].tolist() == [0, 1, 2, 3] and index[1].tolist() == [1, 2, 3, 4]
    assert index[5].tolist() == [5, 6, 7, 0] and index[6].tolist() == [6, 7, 0, 1] and index[7].tolist() == [7, 0, 1, 2]
    assert index[8].tolist() == [0, 1, 2, 3] and index[11].tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(unroll=False), dict(compression=4, kernel=3), dict(n_heads=4, kernel=2), dict(compression=2, unroll=False)],
)
def test_seed_state_dict_loads_strict_and_gives_the_seed_outputs(ids, kwargs):
    torch.manual_seed(0)
    seed = SeedAutoencodingMixer(V, D, 2, L, **kwargs)
    model = AutoencodingMixer(V, D, 2, L, **kwargs)
    model.load_state_dict({k: v.clone() for k, v in seed.state_dict().items()}, strict=True)
    labels = ids.clone()
    labels[0, :3] = -100  # padding
    seed_loss, seed_out = seed(ids, labels=labels)
    loss, logits = model(ids, labels=labels)
    assert logits.shape == (2, L, V)
    assert torch.allclose(logits, seed_out.permute(0, 2, 1), atol=1e-5)
    assert torch.allclose(loss, seed_loss, atol=1e-6)
    assert_all_parameters_used(model, ids)
    reloaded = save_load(model, AutoencodingMixer(V, D, 2, L, **kwargs))
    assert torch.equal(reloaded(ids)[1], model(ids)[1])


def test_decoder_sees_the_input_only_through_the_embedding(ids):
    torch.manual_seed(0)
    model = AutoencodingMixer(V, D, 2, L, compression=2).eval()
    other = (ids + 1) % V
    fixed = model.encode(ids)
    hook = model.down.register_forward_hook(lambda module, args, out: fixed)  # same embedding for any input
    with torch.no_grad():
        assert torch.equal(model(ids)[1], model(other)[1])
    hook.remove()
    with torch.no_grad():
        assert not torch.allclose(model(ids)[1], model(other)[1])  # without the hook the input matters


def test_encoder_and_decoder_are_causal(ids):
    torch.manual_seed(0)
    model = AutoencodingMixer(V, D, 2, L, kernel=3, clm_encoder=True).eval()
    with torch.no_grad():
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % V
        # clm_encoder reads token L-2, which the causal encoder computes without the last token
        assert torch.equal(model.encode(ids), model.encode(changed))
        x = torch.randn(2, L, D)
        y = x.clone()
        y[:, 7:] += 1.0
        for block in model.decoderblocks:
            x, y = block(x), block(y)
        assert torch.allclose(x[:, :7], y[:, :7], atol=1e-6) and not torch.allclose(x[:, 7:], y[:, 7:])


def test_reconstruction_loss_is_unshifted_and_ignores_padding():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    labels = torch.tensor([[0, -100, 1]])
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.8))) / 2
    assert torch.isclose(reconstruction_loss(logits, labels), expected)
    assert reconstruction_loss(logits, None) is None


@pytest.mark.parametrize("compression,unroll,n_heads,kernel", [(1, True, 0, 1), (4, False, 0, 2), (2, True, 4, 1)])
def test_parameter_count(compression, unroll, n_heads, kernel):
    model = AutoencodingMixer(V, D, 3, L, compression=compression, unroll=unroll, n_heads=n_heads, kernel=kernel)
    c = D // compression
    expected = 2 * V * D + 6 * block_params(D, L, kernel, n_heads)
    expected += (D // 2 * D + D) if unroll else 0
    expected += (D * c + c + c * D + D) if compression > 1 else 0
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.embedding_values == c and model.input_length == L


def test_frozen_encoder_is_not_trained(ids):
    torch.manual_seed(0)
    clm = LanguageMixer(V, D, 2, L)
    model = AutoencodingMixer(V, D, 2, L, frozen_encoder=TruncatedModel(clm), clm_encoder=True)
    before = {k: v.clone() for k, v in clm.state_dict().items()}
    losses = train_steps(model, ids, steps=3)
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in clm.state_dict().items())
    assert_all_parameters_used(model, ids)


def test_random_input_control_ignores_the_tokens(ids):
    torch.manual_seed(0)
    model = AutoencodingMixer(V, D, 1, L, random=True)
    torch.manual_seed(1)
    a = model(ids)[1]
    torch.manual_seed(1)
    b = model((ids + 3) % V)[1]
    assert torch.equal(a, b)


def test_debug_size_learns_in_seconds(ids):
    torch.manual_seed(0)
    model = AutoencodingMixer(V, 32, 2, L)
    losses = train_steps(model, ids, steps=30, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses
