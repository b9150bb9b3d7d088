"""FSDP units: accelerate's TRANSFORMER_BASED_WRAP (configs/fsdp_config.yaml) shards every block of every model.

FSDP itself needs a GPU; the wrap policy that accelerate builds from ``_no_split_modules`` is what decides the units,
and it is computed here exactly as accelerate computes it in ``prepare``.
"""

import pytest
import yaml
from accelerate.utils import FullyShardedDataParallelPlugin
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from memorymodels.experiment import REPO_ROOT
from memorymodels.models import MODELS, build_model
from memorymodels.models.mixer import MixerBlock

V, L = 64, 8
HYBRIDS = {  # configurations whose blocks differ from the default's
    "memory_transformer": dict(transformer_encoder=True),
    "autoencoding_transfixer": dict(use_transformer_encoder=False),
}


def wrap_policy(model):
    template = yaml.safe_load((REPO_ROOT / "configs" / "fsdp_config.yaml").read_text())["fsdp_config"]
    plugin = FullyShardedDataParallelPlugin(auto_wrap_policy=template["fsdp_auto_wrap_policy"].lower())
    plugin.set_auto_wrap_policy(model)  # what accelerate does in prepare(); raises for a class the model lacks
    return plugin.auto_wrap_policy


@pytest.mark.parametrize("name, params", [(n, {}) for n in sorted(MODELS)] + sorted(HYBRIDS.items()))
def test_every_block_is_its_own_fsdp_unit(name, params):
    model = build_model(name, preset="debug", n_vocab=V, length=L, **params)
    policy = wrap_policy(model)
    blocks = [m for m in model.modules() if isinstance(m, (MixerBlock, LlamaDecoderLayer))]
    wrapped = [m for m in model.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    assert blocks and wrapped == blocks


def test_frozen_encoder_models_get_use_orig_params():
    # the root unit of a frozen-encoder model holds the frozen embedding next to trained parameters, which FSDP
    # flattens together only with use_orig_params
    model = build_model("frozen_memory_mixer", preset="debug", n_vocab=V, length=L)
    policy = wrap_policy(model)
    in_units = {id(p) for m in model.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)
                for p in m.parameters()}
    assert {p.requires_grad for p in model.parameters() if id(p) not in in_units} == {True, False}
    template = yaml.safe_load((REPO_ROOT / "configs" / "fsdp_config.yaml").read_text())["fsdp_config"]
    assert template["fsdp_use_orig_params"] is True
