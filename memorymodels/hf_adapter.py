"""The one place that uses transformers' private ``Trainer`` API, behind hooks with plain names.

transformers has no public hook for "filter the weights before they are written" (safetensors refuses tied tensors)
or "a checkpoint folder has just been written, or failed to be" (our COMPLETE marker, verification, rotation and the
clean-up after a full disk). :class:`CheckpointingTrainer` overrides the two private methods that do those things and
calls :meth:`~CheckpointingTrainer.weights_to_save`, :meth:`~CheckpointingTrainer.checkpoint_written` and
:meth:`~CheckpointingTrainer.checkpoint_failed` instead; ``memorymodels.train.RunTrainer`` implements them.

:data:`UPSTREAM` records the signatures these overrides rely on; ``tests/training/test_hf_adapter.py`` compares
them with the installed transformers (:func:`upstream_mismatches`) and fails naming the function when they change.
Not covered here, because they are not calls: the ``_no_split_modules`` attribute the models set for FSDP (a
transformers convention read by accelerate), and the public-looking ``model_accepts_loss_kwargs`` flag RunTrainer sets.

Two module-level names are replaced too, so that a trainer loads nothing it does not use (BENCHMARKS.md, "Startup"):
transformers' ``is_datasets_available`` while its trainer module is imported (below; ``tests/test_startup.py`` fails
when datasets is loaded anyway), and accelerate's, which its unwrapping asks before importing deepspeed
(:func:`unwrap_without_loading_deepspeed`, checked by :func:`upstream_mismatches`).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import accelerate.utils.other
import transformers.utils

# transformers' trainer module imports datasets (and with it pandas and pyarrow: 0.34 s) when the package is installed,
# only to tell a datasets.Dataset apart from other datasets; ours are torch datasets (memorymodels.data.TokenDataset),
# and datasets is needed only to read hf: corpora (memorymodels.data.corpus imports it there). So the trainer module
# is imported believing datasets absent: it then treats every dataset as the torch dataset it is. The belief stays
# with that module (and the modules it imports first); the rest of transformers sees the truth again.
_datasets_available = transformers.utils.is_datasets_available
transformers.utils.is_datasets_available = lambda: False
from transformers import Trainer  # noqa: E402
transformers.utils.is_datasets_available = _datasets_available

UPSTREAM = {
    "Trainer._save": ("self", "output_dir", "state_dict"),
    "Trainer._save_checkpoint": ("self", "model", "trial"),
}
"""Private transformers functions we override -> the parameter names our overrides pass and expect, in order."""

_OWNERS = {"Trainer": Trainer}

UNWRAP = accelerate.utils.other.extract_model_from_parallel
"""accelerate's unwrapping, which asks ``is_deepspeed_available()`` (a name of its module) before it imports deepspeed."""


def _deepspeed_loaded() -> bool:
    return "deepspeed" in sys.modules


def unwrap_without_loading_deepspeed() -> None:
    """Make accelerate's unwrapping look for a DeepSpeed engine only once deepspeed is loaded (by accelerate for a
    DeepSpeed config, or by anyone): an engine cannot exist before, and the import costs 0.56 s of every trainer's
    startup (BENCHMARKS.md, "Startup"). Idempotent; applies to the whole process."""
    accelerate.utils.other.is_deepspeed_available = _deepspeed_loaded


def upstream_mismatches() -> list[str]:
    """One line per private function in :data:`UPSTREAM` that the installed transformers lacks or changed."""
    import transformers

    problems = []
    if "is_deepspeed_available()" not in inspect.getsource(UNWRAP) or not hasattr(accelerate.utils.other,
                                                                                "is_deepspeed_available"):
        problems.append(f"accelerate {accelerate.__version__} changed accelerate.utils.other."
                        f"extract_model_from_parallel: it no longer asks its module's is_deepspeed_available() "
                        f"before importing deepspeed; update unwrap_without_loading_deepspeed in "
                        f"memorymodels/hf_adapter.py")
    for dotted, expected in UPSTREAM.items():
        owner, name = dotted.split(".")
        function = getattr(_OWNERS[owner], name, None)
        if function is None:
            problems.append(f"transformers {transformers.__version__} has no {dotted}; memorymodels/hf_adapter.py "
                            f"overrides it with parameters ({', '.join(expected)})")
            continue
        found = tuple(inspect.signature(function).parameters)
        if found != expected:
            problems.append(f"transformers {transformers.__version__} changed {dotted}: expected parameters "
                            f"({', '.join(expected)}), found ({', '.join(found)}); update memorymodels/hf_adapter.py")
    return problems


class CheckpointingTrainer(Trainer):
    """A ``Trainer`` whose checkpoint saving goes through overridable hooks with public names; building one never
    loads deepspeed for nothing (:func:`unwrap_without_loading_deepspeed`)."""

    def __init__(self, *args, **kwargs):
        unwrap_without_loading_deepspeed()
        super().__init__(*args, **kwargs)

    def weights_to_save(self, state_dict: dict) -> dict:
        """The state dict actually written as the model's weights (default: unchanged)."""
        return state_dict

    def checkpoint_written(self, folder: Path) -> None:
        """Called on every rank after the Trainer wrote ``folder`` (weights, optimizer, scheduler, RNG, state)."""

    def checkpoint_failed(self, folder: Path, error: Exception) -> None:
        """Called on every rank when writing ``folder`` (or ``checkpoint_written``) raised ``error``; the error is
        re-raised afterwards unless this raises another one."""

    def checkpoint_folder(self) -> Path:
        """The folder the checkpoint of the current step goes to (the Trainer's naming)."""
        return Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"

    # ---- the private overrides (signatures in UPSTREAM) ----

    def _save(self, output_dir=None, state_dict=None):
        state_dict = self.model.state_dict() if state_dict is None else state_dict
        super()._save(output_dir, state_dict=self.weights_to_save(state_dict))

    def _save_checkpoint(self, model, trial):
        folder = self.checkpoint_folder()
        try:
            super()._save_checkpoint(model, trial)
            self.checkpoint_written(folder)
        except Exception as exc:
            self.checkpoint_failed(folder, exc)
            raise
