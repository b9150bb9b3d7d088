"""Checkpoint folders as the Trainer writes them: full state dicts, and FSDP's sharded ones (merged on the CPU)."""

import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp

from memorymodels.evaluate import load_checkpoint
from memorymodels.models import build_model, frozen_mixer_encoder
from memorymodels.checkpoints import CheckpointError, without_aliases

V, L = 64, 8


def debug_model(seed):
    torch.manual_seed(seed)
    return build_model("autoencoding_mixer", preset="debug", n_vocab=V, length=L, kernel=3)


def save_sharded(model, checkpoint):
    """What accelerate's save_fsdp_model writes under SHARDED_STATE_DICT: {"model": state} through dcp."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is not initialized": one process writes every shard
        dcp.save({"model": model.state_dict()}, checkpoint_id=checkpoint / "pytorch_model_fsdp_0")


def test_a_sharded_fsdp_checkpoint_loads_for_evaluation(tmp_path):
    trained, fresh = debug_model(0), debug_model(1)
    save_sharded(trained, tmp_path / "checkpoint-10")
    load_checkpoint(fresh, tmp_path / "checkpoint-10")
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_sharded_fsdp_checkpoint_serves_as_a_frozen_encoder(tmp_path):
    trained = debug_model(0)
    save_sharded(trained, tmp_path / "checkpoint-10")
    encoder = frozen_mixer_encoder(tmp_path / "checkpoint-10")
    assert torch.equal(encoder.model_wte.weight, trained.wte.weight)
    assert torch.equal(encoder.model_blocks[1].conv.weight, trained.encoderblocks[1].conv.weight)


def test_a_full_checkpoint_loads_as_before(tmp_path):
    from safetensors.torch import save_file

    trained, fresh = debug_model(0), debug_model(1)
    (tmp_path / "checkpoint-10").mkdir()
    save_file(without_aliases(trained.state_dict()), str(tmp_path / "checkpoint-10" / "model.safetensors"))
    load_checkpoint(fresh, tmp_path / "checkpoint-10")
    assert torch.equal(fresh.lm_head.weight, trained.lm_head.weight)


def test_a_folder_without_weights_says_what_it_expected(tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint-10: no model.safetensors, pytorch_model.bin, model.pt or "
                                              r"pytorch_model_fsdp_0/ in this checkpoint directory"):
        load_checkpoint(debug_model(0), tmp_path / "checkpoint-10")
    with pytest.raises(CheckpointError, match="checkpoint-11: not a checkpoint directory"):
        load_checkpoint(debug_model(0), tmp_path / "checkpoint-11")
