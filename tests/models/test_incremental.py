"""Incremental inference: a model stepped through a window, one position or a chunk at a time, gives the logits of
its full forward pass on every position."""

import pytest
import torch

from memorymodels.models import build_model

FAMILIES = {
    "language_mixer, flat": ("language_mixer", {}),
    "language_mixer, 4 heads, kernel 3": ("language_mixer", {"n_heads": 4, "kernel": 3}),
    "language_mixer, kernel 2": ("language_mixer", {"kernel": 2}),
    "llama_clm": ("llama_clm", {}),
}


def _model(case: str, length: int = 16):
    name, params = FAMILIES[case]
    torch.manual_seed(0)
    return build_model(name, preset="debug", n_vocab=300, length=length, **params).eval()


@pytest.mark.parametrize("case", FAMILIES)
@pytest.mark.parametrize("chunks", [[1] * 16, [5, 1, 1, 4, 2, 3]], ids=["one position a step", "chunks"])
def test_steps_give_the_full_forward_logits_on_every_position(case, chunks):
    model = _model(case)
    tokens = torch.randint(2, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(tokens)[1]  # (3, 16, V)
        cache, stepped = model.new_cache(3), []
        for size in chunks:
            stepped.append(model.step(tokens[:, cache.position:cache.position + size], cache))
        stepped = torch.cat(stepped, dim=1)
    assert cache.position == 16 and stepped.shape == full.shape
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["language_mixer, flat", "llama_clm"])
def test_a_reset_cache_starts_a_new_window_and_rows_are_independent(case):
    model = _model(case)
    first, second = (torch.randint(2, 300, (2, 16), generator=torch.Generator().manual_seed(s)) for s in (2, 3))
    with torch.inference_mode():
        cache = model.new_cache(2)
        assert model.step(first[:, :7], cache, logits=False) is None and cache.position == 7
        model.step(first[:, 7:], cache)
        cache.position = 0  # the codec's next window reuses the buffers
        again = torch.cat([model.step(second[:, :9], cache), model.step(second[:, 9:], cache)], dim=1)
        torch.testing.assert_close(again, model(second)[1], rtol=1e-5, atol=1e-5)
        one = model.new_cache(1)  # a row's logits do not depend on the other rows of its batch
        torch.testing.assert_close(model.step(second[1:, :9], one), again[1:, :9], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["language_mixer, flat", "llama_clm"])
def test_stepping_past_the_window_is_refused(case):
    model = _model(case, length=8)
    cache = model.new_cache(1)
    with torch.inference_mode():
        model.step(torch.ones(1, 6, dtype=torch.long), cache)
        with pytest.raises(ValueError, match=r"positions 6\.\.8 are past the 8"):
            model.step(torch.ones(1, 3, dtype=torch.long), cache)
