"""torch.compile (inductor) gives the eager outputs and gradients."""

import pytest
import torch

from memorymodels.models import build_model

V, L = 64, 8


@pytest.mark.parametrize(
    "name,params",
    [
        ("autoencoding_mixer", dict(kernel=3, compression=2)),
        pytest.param("language_mixer", dict(n_heads=4, kernel=2), marks=pytest.mark.slow),
        pytest.param("variable_memory_mixer", dict(), marks=pytest.mark.slow),
        pytest.param("recurrent_memory_mixer", dict(), marks=pytest.mark.slow),
        pytest.param("llama_clm", dict(), marks=pytest.mark.slow),
        pytest.param("variable_memory_transformer", dict(fixed_memory=False), marks=pytest.mark.slow),
    ],
)
def test_compiled_equals_eager(name, params):
    torch.manual_seed(0)
    model = build_model(name, preset="debug", n_vocab=V, length=L, **params)
    ids = torch.randint(0, V, (2, model.input_length))
    loss, logits = model(ids, labels=ids)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model)
    closs, clogits = compiled(ids, labels=ids)
    closs.backward()
    # inductor reorders float reductions: equal to fp32 rounding, not bit for bit
    assert torch.allclose(clogits, logits, rtol=1e-4, atol=1e-4) and torch.allclose(closs, loss, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-3, atol=1e-5), n
