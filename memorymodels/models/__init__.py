"""Models: masked mixers, mixer autoencoders, memory models and Llama baselines, plus the registry.

    from memorymodels.models import build_model
    model = build_model("autoencoding_mixer", preset="debug", n_vocab=512, length=32)
    loss, logits = model(input_ids, labels=input_ids)   # logits (batch, tokens, vocab)

Every model: ``forward(input_ids, labels=None, attention_mask=None) -> (loss, logits)``, ``input_length`` (tokens per
row) and ``embedding_values`` (numbers stored per row; None for causal LMs). Models never move themselves to a device.
"""

from .registry import (MODELS, PRESETS, ModelEntry, build_model, length_for_context, model_config, model_entry,
                       preset_values)

# The model classes import torch (and the Llama baselines transformers): seconds that the launcher, which only
# validates configs through the registry, should not pay. They load on first use.
_LAZY = {
    "autoencoder": ["AutoencodingMixer", "TruncatedModel", "frozen_mixer_encoder", "load_state_dict_file",
                    "unroll_index"],
    "memory": ["FrozenMemoryMixer", "MemoryMixer", "ProjMemoryMixer", "RecurrentMemoryMixer", "VariableMemoryMixer",
               "chunked_lm_loss", "copy_task"],
    "mixer": ["CausalTokenMixer", "FeedForward", "LanguageMixer", "MixerBlock", "MixerHead"],
    "transformer": ["AutoencodingTransfixer", "LlamaCLM", "LlamaStack", "MemoryTransformer",
                    "RecurrentMemoryTransformer", "TransformerAutoencoder", "VariableMemoryTransformer",
                    "attention_mask_4d"],
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    if name in _MODULE_OF:
        import importlib

        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module 'memorymodels.models' has no attribute '{name}'")


__all__ = [
    "AutoencodingTransfixer",
    "LlamaCLM",
    "LlamaStack",
    "MemoryTransformer",
    "RecurrentMemoryTransformer",
    "TransformerAutoencoder",
    "VariableMemoryTransformer",
    "attention_mask_4d",
    "AutoencodingMixer",
    "FrozenMemoryMixer",
    "MemoryMixer",
    "ProjMemoryMixer",
    "RecurrentMemoryMixer",
    "VariableMemoryMixer",
    "chunked_lm_loss",
    "copy_task",
    "frozen_mixer_encoder",
    "load_state_dict_file",
    "CausalTokenMixer",
    "FeedForward",
    "LanguageMixer",
    "MODELS",
    "MixerBlock",
    "MixerHead",
    "ModelEntry",
    "PRESETS",
    "TruncatedModel",
    "build_model",
    "length_for_context",
    "model_config",
    "model_entry",
    "preset_values",
    "unroll_index",
]
