"""torch.compile (inductor) gives the eager outputs and gradients."""

import pytest
import torch

from memorymodels.models import build_model

V, L = 64, 8


@pytest.mark.parametrize("name,params", [("autoencoding_mixer", dict(kernel=3, compression=2))])
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
    assert torch.allclose(clogits, logits, atol=1e-5) and torch.allclose(closs, loss, atol=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-5), n
