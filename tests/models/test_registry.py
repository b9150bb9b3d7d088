"""The registry: names, presets, validation errors, and that every registered model honours the common interface."""

import pytest
import torch

from memorymodels.configuration import ConfigError
from memorymodels.models import MODELS, PRESETS, build_model, length_for_context, model_config
from tests.models.helpers import assert_all_parameters_used

V, L = 64, 8


def test_unknown_param_names_the_model_and_the_closest_key():
    with pytest.raises(ConfigError, match=r"model 'autoencoding_mixer': unknown key 'dimm'; did you mean 'dim'\?"):
        build_model("autoencoding_mixer", n_vocab=V, length=L, dimm=32)


def test_unknown_model_and_preset_suggest_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'autoencoding_mixer'"):
        build_model("autoencodin_mixer", n_vocab=V, length=L)
    with pytest.raises(ConfigError, match="unknown preset 'debg'; did you mean 'debug'"):
        build_model("autoencoding_mixer", preset="debg", n_vocab=V, length=L)


def test_errors_name_the_source_file():
    with pytest.raises(ConfigError, match=r"configs/experiments/x.yaml: model 'language_mixer': 'n_heads' \(3\)"):
        build_model("language_mixer", preset="debug", source="configs/experiments/x.yaml", n_vocab=V, length=L, n_heads=3)


def test_n_vocab_and_length_are_required():
    with pytest.raises(ConfigError, match="'n_vocab' is required"):
        build_model("language_mixer", preset="debug", length=L)
    with pytest.raises(ConfigError, match="'length' is required"):
        build_model("language_mixer", preset="debug", n_vocab=V)


def test_params_override_preset_values():
    config = model_config("autoencoding_mixer", preset="d1024", n_vocab=V, length=L, depth=2)
    assert (config.dim, config.depth, config.kernel) == (1024, 2, 8)


def test_every_model_has_debug_and_cpu_presets():
    for name in MODELS:
        assert {"debug", "cpu"} <= set(PRESETS[name]), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_debug_preset_follows_the_common_interface(name):
    torch.manual_seed(0)
    model = build_model(name, preset="debug", n_vocab=V, length=L)
    ids = torch.randint(0, V, (2, model.input_length))
    loss, logits = model(ids)
    assert loss is None and logits.shape == (2, model.input_length, V)
    loss, logits = model(ids, labels=ids, attention_mask=torch.ones_like(ids))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.embedding_values is None or model.embedding_values >= 0
    assert_all_parameters_used(model, ids)  # DDP needs no find_unused_parameters
    assert not any(b.device.type != "cpu" for b in model.buffers())  # models never move themselves


def test_head_counts_are_checked_without_torch_naming_the_keys_and_the_valid_counts():
    with pytest.raises(ConfigError, match="model 'llama_clm': 'n_heads' \\(3\\) must divide 'dim' \\(32\\)"):
        model_config("llama_clm", preset="debug", n_vocab=V, length=L, n_heads=3)
    with pytest.raises(ConfigError, match=r"'n_heads' \(32\) must divide 'dim' \(32\) into heads of an even size "
                                          r"\(RoPE\); use one of 1, 2, 4, 8, 16$"):
        model_config("llama_clm", preset="debug", n_vocab=V, length=L, n_heads=32)
    with pytest.raises(ConfigError, match="'n_heads' must be at least 1 \\(attention heads\\), got 0"):
        model_config("recurrent_memory_transformer", preset="debug", n_vocab=V, length=L, n_heads=0)
    with pytest.raises(ConfigError, match="'n_heads' \\(3\\) must divide 'dim' \\(32\\); use 0 or one of"):
        model_config("proj_memory_mixer", preset="debug", n_vocab=V, length=L, encoder_dim=24, n_heads=3)
    with pytest.raises(ConfigError, match="'attention_heads' \\(4\\) must divide 'dim \\+ encoder_dim/compression' "
                                          "\\(36\\)"):
        model_config("memory_transformer", preset="debug", n_vocab=V, length=L, combination_dim="embedding",
                     encoder_dim=16, compression=4)


def test_every_preset_passes_the_config_checks():
    for name, presets in PRESETS.items():
        for preset in presets:
            model_config(name, preset=preset, n_vocab=V, length=L)


def test_missing_frozen_encoder_checkpoint_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        build_model("variable_memory_mixer", preset="debug", n_vocab=V, length=L, frozen_encoder=str(tmp_path / "x.pt"))


def test_frozen_encoder_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = build_model("autoencoding_mixer", preset="debug", n_vocab=V, length=L, kernel=3)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    model = build_model("variable_memory_mixer", preset="debug", n_vocab=V, length=L, encoder_dim=32, kernel=3,
                        frozen_encoder=str(tmp_path))
    assert torch.equal(model.encoderblocks[1].conv.weight, trained.encoderblocks[1].conv.weight)
    assert not any(p.requires_grad for p in model.encoderblocks.parameters())
    assert_all_parameters_used(model, torch.randint(0, V, (2, model.input_length)))


def test_length_for_context_fills_chunked_models():
    assert length_for_context("autoencoding_mixer", 256) == 256
    assert length_for_context("variable_memory_mixer", 256, preset="debug") == 128  # debug: 2 chunks
    assert length_for_context("variable_memory_mixer", 256, n_chunks=4) == 64
    length = length_for_context("recurrent_memory_transformer", 64, preset="debug")
    assert build_model("recurrent_memory_transformer", preset="debug", n_vocab=V, length=length).input_length == 64
    with pytest.raises(ConfigError, match=r"context \(30\) must be a multiple of n_chunks \(4\)"):
        length_for_context("variable_memory_mixer", 30, n_chunks=4)
