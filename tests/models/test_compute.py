"""The analytic FLOP count (memorymodels.compute): by hand on a tiny config, and against torch's flop counter on every
family and the variants that change the computation (heads, taps, compression, memory layouts, frozen encoders)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from memorymodels.compute import COUNTS, model_flops
from memorymodels.models import MODELS, build_model
from memorymodels.models.autoencoder import AutoencodingMixer, TruncatedModel

V, L, BATCH = 64, 8, 2


def test_every_registered_model_has_a_count():
    assert set(COUNTS) == set(MODELS)


def test_language_mixer_by_hand():
    # V=10, d=4, one block, L=3, flat mixing with one tap:
    #   token mixing  2 * L * L * d           = 2*3*3*4       =  72
    #   feed-forward  2 * L * (d*4d + 4d*d)   = 2*3*(64+64)   = 768
    #   head          2 * L * d * V           = 2*3*4*10      = 240   -> forward 1080 per row of 3 tokens
    count = model_flops("language_mixer", n_vocab=10, dim=4, depth=1, length=3)
    assert count.forward == {"blocks": 72 + 768, "head": 240}
    assert count.tokens_per_row == 3
    assert count.training_per_row == 3 * 1080 and count.training_per_token == 1080


def test_autoencoder_encoder_computes_one_token_in_its_last_block():
    # d=4, 2 + 2 blocks, L=3, V=10, unrolled: the last encoder block mixes and feeds forward one token only
    count = model_flops("autoencoding_mixer", n_vocab=10, dim=4, depth=2, length=3)
    full, one = 2 * 3 * 3 * 4 + 2 * 3 * 128, 2 * 1 * 3 * 4 + 2 * 1 * 128
    assert count.forward == {"encoder": full + one, "bottleneck": 2 * 3 * 2 * 4, "decoder": 2 * full, "head": 240}


def _measured(model, ids) -> tuple[int, int]:
    """Matmul/conv FLOPs of one forward and of its backward, as torch counts them."""
    for module in model.modules():  # torch's counter misses CPU sdpa kernels; eager attention is plain matmuls
        if hasattr(getattr(module, "config", None), "_attn_implementation"):
            module.config._attn_implementation = "eager"
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = model(ids, labels=ids)
    forward = counter.get_total_flops()
    with counter:  # entering resets the counts
        loss.backward()
    return forward, counter.get_total_flops()


CASES = [
    ("language_mixer", {}),
    ("language_mixer", {"n_heads": 2, "kernel": 3}),
    ("autoencoding_mixer", {}),
    ("autoencoding_mixer", {"n_heads": 2, "kernel": 2, "compression": 2, "unroll": False}),
    ("memory_mixer", {}),
    ("memory_mixer", {"combination_dim": "embedding", "encoder_dim": 16, "kernel": 3}),
    ("proj_memory_mixer", {"n_heads": 2}),
    ("frozen_memory_mixer", {}),
    ("variable_memory_mixer", {}),
    ("variable_memory_mixer", {"no_memory": True}),
    ("recurrent_memory_mixer", {"n_heads": 2}),
    ("llama_clm", {}),
    ("transformer_autoencoder", {"compression": 2}),
    ("autoencoding_transfixer", {}),
    ("autoencoding_transfixer", {"use_transformer_encoder": False, "compression": 4}),
    ("variable_memory_transformer", {}),
    ("recurrent_memory_transformer", {}),
    ("memory_transformer", {}),
    ("memory_transformer", {"transformer_encoder": True, "combination_dim": "embedding"}),
]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_count_matches_torch_flop_counter(name, params):
    torch.manual_seed(0)
    model = build_model(name, preset="debug", n_vocab=V, length=L, **params)
    count = model_flops(name, preset="debug", n_vocab=V, length=L, **params)
    ids = torch.randint(0, V, (BATCH, model.input_length))
    assert count.tokens_per_row == model.input_length
    forward, backward = _measured(model, ids)
    # Llama's rotary table (inv_freq x positions) is a tiny matmul the count leaves out
    assert forward == pytest.approx(BATCH * count.forward_per_row, rel=2e-3)
    if name.endswith("mixer") and params.get("n_heads"):
        return  # torch counts a grouped convolution's weight gradient once per group (g + 1 x forward, not 2 x)
    assert backward == pytest.approx(BATCH * (count.training_per_row - count.forward_per_row), rel=2e-3)


def test_frozen_encoder_runs_forward_only():
    torch.manual_seed(0)
    frozen = TruncatedModel.empty(V, 32, 2, L).requires_grad_(False)
    model = AutoencodingMixer(V, 32, 2, L, frozen_encoder=frozen)
    count = model_flops("autoencoding_mixer", preset="debug", n_vocab=V, length=L, frozen_encoder="ckpt")
    assert count.frozen == ("encoder",)
    assert count.training_per_row == 3 * count.forward_per_row - 2 * count.forward["encoder"]
    ids = torch.randint(0, V, (BATCH, L))
    forward, backward = _measured(model, ids)
    assert forward == BATCH * count.forward_per_row
    # the count gives the unroll projection after the frozen encoder an input gradient that is not computed
    assert backward == pytest.approx(BATCH * 2 * (count.forward_per_row - count.forward["encoder"]), rel=0.02)


def test_the_count_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, memorymodels.compute; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # the launcher can count without torch
