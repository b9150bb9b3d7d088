"""Each family's declared loss targets (memorymodels.heldout.LOSS_TARGETS) are the predictions its loss averages,
so that eval_loss converts to bits per byte over exactly those tokens' bytes."""

import pytest
import torch
import torch.nn.functional as F

from memorymodels.heldout import LOSS_TARGETS, objective_of, scored_positions
from memorymodels.models import MODELS, build_model

V, L = 64, 8


def test_every_registered_model_declares_its_targets():
    assert set(LOSS_TARGETS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_loss_is_the_mean_over_the_declared_targets(name):
    torch.manual_seed(0)
    build = {"name": name, "preset": "debug", "params": {"n_vocab": V, "length": L}}
    model = build_model(name, preset="debug", n_vocab=V, length=L).eval()
    ids = torch.randint(2, V, (3, model.input_length))
    with torch.no_grad():
        loss, logits = model(ids, labels=ids)
    objective, n_chunks = objective_of(build)
    pairs = scored_positions(model.input_length, objective, n_chunks)
    rows = [logits[:, i] for i, _ in pairs]
    targets = [ids[:, j] for _, j in pairs]
    expected = F.cross_entropy(torch.cat(rows), torch.cat(targets))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_copy_objectives_get_no_conversion():
    build = {"name": "variable_memory_mixer", "preset": "debug", "params": {"n_vocab": V, "length": L, "copy": True}}
    assert objective_of(build) is None
