"""Tied embeddings (tie_weights=True) share one tensor, which safetensors refuses: checkpoints save it once."""

import torch
from safetensors.torch import load_file, save_file

from memorymodels.models import build_model
from memorymodels.checkpoints import tied_names, without_aliases


def test_tied_head_is_saved_once_and_restored_through_the_tie(tmp_path):
    torch.manual_seed(0)
    model = build_model("language_mixer", preset="debug", n_vocab=50, length=8, tie_weights=True)
    assert model.lm_head.weight is model.wte.weight
    assert tied_names(model) == {"lm_head.weight"}
    save_file(without_aliases(model.state_dict()), str(tmp_path / "model.safetensors"))  # raises if shared

    fresh = build_model("language_mixer", preset="debug", n_vocab=50, length=8, tie_weights=True)
    missing, unexpected = fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    assert set(missing) - {k for k in missing if k.endswith("mask")} == {"lm_head.weight"} and not unexpected
    ids = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(fresh(ids)[1], model(ids)[1])


def test_untied_models_keep_every_tensor():
    model = build_model("language_mixer", preset="debug", n_vocab=50, length=8)
    assert without_aliases(model.state_dict()).keys() == model.state_dict().keys() and not tied_names(model)
