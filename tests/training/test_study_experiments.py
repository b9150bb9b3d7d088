"""The CPU study's two experiment files load, and the mixer and its Llama twin have about the same parameters."""

import pytest

from memorymodels.compute import flops_of_build
from memorymodels.experiment import load_experiment, model_build_args, run_name
from memorymodels.train import build

from .conftest import REPO


def _load(name):
    experiment = load_experiment(REPO / "configs" / "experiments" / f"{name}.yaml")
    args = model_build_args(experiment, experiment.data.vocab_size)
    model = build(args, context=experiment.data.context, source=experiment.source)
    return experiment, args, sum(p.numel() for p in model.parameters())


def test_study_files_load_and_match_in_size():
    mixer, mixer_args, mixer_params = _load("study_mixer_cpu")
    llama, llama_args, llama_params = _load("study_llama_cpu")
    assert mixer_params == pytest.approx(6.8e6, rel=0.02) and llama_params == pytest.approx(mixer_params, rel=0.10)
    assert (mixer.model.name, llama.model.name) == ("language_mixer", "llama_clm")
    assert mixer.data == llama.data and mixer.train == llama.train  # only the model differs
    assert (mixer.data.context, mixer.data.vocab_size, mixer.train.batch_size, mixer.train.learning_rate) == \
        (256, 4096, 16, 2e-3)
    # the run directories the header comments name
    assert run_name(mixer, 1) == "language_mixer_d256_n8_c256_b16x1_stdlib-v4096"
    assert run_name(llama, 1) == "llama_clm_d224_n6_h4_c256_b16x1_stdlib-v4096"
    assert flops_of_build(mixer_args).training_per_token == 34_603_008
