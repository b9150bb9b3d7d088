"""Experiments: one YAML file (sections model, data, train, output) validated into dataclasses.

    >>> exp = load_experiment("configs/experiments/debug.yaml", ["train.max_steps=20"])
    >>> exp.model.name, exp.data.context, exp.train.max_steps
    ('autoencoding_mixer', 64, 20)

Unknown keys are rejected naming the file and the key (``memorymodels.configuration.from_dict``); ``--set`` overrides
take dotted keys and are applied before validation. The model section is checked against the registry when the
experiment is loaded (:func:`check_model`, torch-free), so a dry run refuses what the model constructor would. The run directory a config trains in is derived from it by
``memorymodels.runs.run_dir_for``; :func:`run_name` and :func:`identity` here are the pure parts of that.
:func:`load_data` and :func:`build` (at the end) build what an experiment names; the trainer and the evaluation
share them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from memorymodels.configuration import ConfigError, apply_overrides, from_dict, load_yaml, to_dict

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """Project state (caches, local cluster): ``$MEMORYMODELS_STATE`` or ``<repo>/.state``."""
    return Path(os.environ.get("MEMORYMODELS_STATE") or REPO_ROOT / ".state")


@dataclass(kw_only=True)
class ModelConfig:
    name: str = "autoencoding_mixer"
    """Registry name in ``memorymodels.models.MODELS`` (e.g. autoencoding_mixer, language_mixer)."""
    preset: str | None = None
    """A named parameter set of that model (``memorymodels.models.PRESETS[name]``), e.g. debug, cpu."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters for ``build_model`` on top of the preset; ``n_vocab`` and ``length`` are filled in unless set."""

    def __post_init__(self):
        from memorymodels.models.registry import model_entry, preset_values  # torch-free

        if not self.name:
            raise ConfigError("'model.name' must name a model of memorymodels.models.MODELS")
        model_entry(self.name, "'model.name'")  # an unknown model is named before its preset
        preset_values(self.name, self.preset, source="'model.preset'")


@dataclass(kw_only=True)
class DataConfig:
    corpus: str | None = None
    """Corpus spec prepared automatically and cached: ``stdlib``, ``stdlib-small``, a path/glob, ``hf:NAME[:CONFIG]``."""
    vocab_size: int = 8000
    """Tokenizer vocabulary size trained for ``corpus``."""
    context: int = 512
    """Tokens per row (the model's ``input_length``)."""
    mode: Literal["packed", "padded"] = "packed"
    """How documents become rows: packed (documents + eos cut into rows) or padded (one document per row)."""
    padding_side: Literal["left", "right"] = "left"
    """Where pads go in padded rows (left puts the real last token at the end, for memory encoders)."""
    tokenizer: str | None = None
    """Instead of ``corpus``: a prepared tokenizer directory."""
    train_dir: str | None = None
    """Instead of ``corpus``: a pretokenized data directory holding the train split."""
    test_dir: str | None = None
    """Instead of ``corpus``: a pretokenized data directory holding the test split (default: ``train_dir``)."""
    cache_dir: str | None = None
    """Where ``corpus`` is prepared and cached, shared by every run and every code snapshot (entries are keyed on
    the corpus, these settings and the data code); null: ``<state>/cache`` (:func:`state_dir`). The launcher sets
    the profile's ``data_root``, so a job never prepares data inside its code snapshot."""

    def __post_init__(self):
        for key in ("corpus", "tokenizer", "train_dir", "test_dir", "cache_dir"):
            value = getattr(self, key)
            if value is not None and (not value.strip() or "\0" in value):
                what = "a corpus spec or a path" if key == "corpus" else "a path"
                raise ConfigError(f"'data.{key}' must be {what}, got {value!r}; remove it or fill it in")
        explicit = self.tokenizer is not None or self.train_dir is not None
        if self.corpus is None and not explicit:
            raise ConfigError("'data': set either 'data.corpus' or 'data.tokenizer' and 'data.train_dir'")
        if self.corpus is not None and explicit:
            raise ConfigError("'data': 'data.corpus' and 'data.tokenizer'/'data.train_dir' exclude each other; keep one")
        if explicit and (self.tokenizer is None or self.train_dir is None):
            raise ConfigError("'data': pretokenized data needs both 'data.tokenizer' and 'data.train_dir'")
        if self.context < 2:
            raise ConfigError(f"'data.context' must be at least 2 tokens, got {self.context}")
        if self.vocab_size < 2:
            raise ConfigError(f"'data.vocab_size' must be at least 2, got {self.vocab_size}")
        if self.corpus is not None:  # the tokenizer is trained here: its limits apply now rather than in the job
            from memorymodels.data.tokenizer import MIN_VOCAB

            if not MIN_VOCAB <= self.vocab_size <= 2**31 - 1:  # the upper bound: train_tokenizer's int32 token ids
                raise ConfigError(f"'data.vocab_size' must be {MIN_VOCAB} to {2**31 - 1} for a byte-level tokenizer "
                                  f"(256 bytes + special tokens; int32 ids), got {self.vocab_size}")


@dataclass(kw_only=True)
class TrainConfig:
    learning_rate: float = 5e-4
    """Peak learning rate (AdamW), reached after the warmup, then decayed linearly to 0 at max_steps."""
    warmup_steps: int = 500
    """Linear warmup steps."""
    max_steps: int = 1000
    """Optimizer steps of the whole run, however often it is interrupted."""
    batch_size: int = 16
    """Rows per device per micro-batch; global batch = batch_size x gradient_accumulation_steps x world size."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    eval_steps: int = 500
    """Evaluate the held-out loss every this many steps (0: never during training)."""
    eval_rows: int | None = 512
    """Held-out rows used by evaluations during training (the first ones of the test split; null: all)."""
    save_steps: int = 1000
    """Save a checkpoint every this many steps (also saved at the end and on SIGTERM/SIGUSR1)."""
    save_total_limit: int | None = 2
    """Keep at most this many complete checkpoints (oldest removed first; null: keep all); 2 or more leaves one to
    fall back to when the newest turns out damaged (memorymodels.checkpoints)."""
    logging_steps: int = 10
    """Write a metrics.jsonl line every this many steps."""
    precision: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    """auto: the device's best, bf16 from compute capability 8 (A100, H100), fp16 on 7.x (V100), fp32 on CPU; fp16 and
    bf16 need GPUs (``memorymodels.precision``, which the launcher plans with too)."""
    compile: bool = False
    """torch.compile the model."""
    seed: int = 42
    """Seed for initialisation and data order."""
    weight_decay: float = 0.0
    """AdamW weight decay (the seed used 0)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""
    dataloader_workers: int = 0
    """DataLoader worker processes per rank."""
    report_to: list[str] = field(default_factory=list)
    """Trackers that also get the metrics: tensorboard (RUN_DIR/tensorboard/) and/or wandb (WANDB_MODE=offline
    works without network); one curve per run across requeues (memorymodels.tracking)."""

    def __post_init__(self):
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'train.{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("warmup_steps", "eval_steps", "dataloader_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'train.{key}' must be 0 or more, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"'train.learning_rate' must be positive, got {self.learning_rate}")
        for key in ("weight_decay", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'train.{key}' must be 0 (off) or more, got {getattr(self, key)}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range (transformers seeds numpy, torch and random with it)
            raise ConfigError(f"'train.seed' must be 0 to 2**32-1, got {self.seed}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"'train.save_total_limit' must be at least 1 or null, got {self.save_total_limit}")
        unknown = [name for name in self.report_to if name not in ("tensorboard", "wandb")]
        if unknown or len(set(self.report_to)) != len(self.report_to):
            raise ConfigError(f"'train.report_to' takes tensorboard and/or wandb (a list, each once), got "
                              f"{self.report_to!r}")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise ConfigError(f"'train.eval_rows' must be at least 1 or null, got {self.eval_rows}")


@dataclass(kw_only=True)
class OutputConfig:
    checkpoint_root: str = "runs"
    """Directory holding run directories (relative paths are relative to the current directory)."""
    name: str | None = None
    """Run directory name; default derived from the config (model, dims, depth, context, batch x devices, data)."""

    def __post_init__(self):
        if not self.checkpoint_root.strip() or "\0" in self.checkpoint_root:
            raise ConfigError(f"'output.checkpoint_root' must be a directory, got {self.checkpoint_root!r}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._=,+-]*", self.name):
            raise ConfigError(f"'output.name' must be one directory name (letters, digits and ._=,+- , not starting "
                              f"with a dot; no '/'), got {self.name!r}")


@dataclass(kw_only=True)
class Experiment:
    model: ModelConfig = field(default_factory=ModelConfig)
    """What to train."""
    data: DataConfig = field(default_factory=lambda: DataConfig(corpus="stdlib"))
    """What to train on."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How to train."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where runs go."""
    source: str = field(default="<dict>", init=False, compare=False, repr=False)
    """The file (and overrides) this experiment was read from, named in errors."""


def experiment_from_dict(data: dict, source: str = "<dict>") -> Experiment:
    """Validate ``data`` into an Experiment, its model parameters included; every error names ``source``."""
    try:
        experiment = from_dict(Experiment, data, source=source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None
    experiment.source = source
    check_model(experiment)
    return experiment


def check_model(experiment: Experiment) -> None:
    """The model section checked against the registry, without torch: parameter names, types and the rules between
    them (``memorymodels.models.model_config``), and that one data row fills the model (length x n_chunks =
    data.context). ``data.vocab_size`` stands in for n_vocab: the tokenizer's exact size is known in the job.
    ``model.params`` keep the values as the model's config reads them (``kernel: 1.0`` becomes ``1``): two
    spellings of one number are one model, one identity and one run directory, never a second run of it."""
    from memorymodels.models.registry import length_for_context, model_config

    for key in experiment.model.params:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{experiment.source}: 'model.params': {key!r} is not a parameter name")
    args = model_build_args(experiment, experiment.data.vocab_size)
    config = model_config(args["name"], preset=args["preset"], source=experiment.source, **args["params"])
    for key, value in experiment.model.params.items():
        read = getattr(config, key, value)
        if read == value and type(read) is not type(value):  # 1.0 -> 1 (equal values only: nothing else changes)
            experiment.model.params[key] = read
    if "length" in experiment.model.params:
        params = {k: v for k, v in preset_params(experiment).items() if k != "length"}
        length, context = experiment.model.params["length"], experiment.data.context
        wanted = length_for_context(args["name"], context, preset=args["preset"], source=experiment.source, **params)
        if length != wanted:
            raise ConfigError(f"{experiment.source}: 'model.params.length' ({length}) does not fill a row of "
                              f"'data.context' ({context}) tokens; remove it (it is derived from data.context) or "
                              f"set it to {wanted}")


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> Experiment:
    """Read an experiment YAML file, apply ``--set`` overrides (``train.max_steps=20``) and validate it."""
    overrides = list(overrides)
    data = load_yaml(path)
    try:
        data = apply_overrides(data, overrides)
    except ConfigError as exc:  # a malformed --set item: name the file it was meant for too
        raise ConfigError(f"{path}: {exc}") from None
    source = str(path) + (f" (with --set {' '.join(map(str, overrides))})" if overrides else "")
    return experiment_from_dict(data, source)


def experiment_dict(experiment: Experiment) -> dict:
    """The experiment as plain data (what run.json records and what reloads into the same Experiment)."""
    data = to_dict(experiment)
    data.pop("source", None)
    return data


def preset_params(experiment: Experiment) -> dict:
    """The preset's parameters merged with ``model.params`` (no n_vocab/length filling; no tokenizer needed)."""
    from memorymodels.models.registry import preset_values  # torch-free

    params = preset_values(experiment.model.name, experiment.model.preset, source=f"{experiment.source}: 'model'")
    params.update(experiment.model.params)
    return params


# Settings that change how often things are logged or kept, not what is trained: a run whose config differs only in
# these is the same run (it finds the same directory and resumes).
NOT_IDENTITY = {"train": ("eval_steps", "eval_rows", "save_steps", "save_total_limit", "logging_steps",
                          "dataloader_workers", "report_to"), "output": ("checkpoint_root", "name"),
                "data": ("cache_dir",)}


def identity(experiment: Experiment, world_size: int) -> str:
    """A short hash of everything that determines the trained model (config and world size)."""
    return config_identity(experiment_dict(experiment), world_size)


def config_identity(config: dict, world_size: int, ignore: dict[str, tuple[str, ...]] = NOT_IDENTITY) -> str:
    """:func:`identity` of a config as plain data (``experiment_dict``, run.json's ``config``), leaving out the
    ``ignore`` keys per section (``memorymodels.extension`` also leaves out the schedule's length)."""
    data = {section: ({key: value for key, value in values.items() if key not in ignore.get(section, ())}
                      if isinstance(values, dict) else values) for section, values in config.items()}
    data["world_size"] = world_size
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Parameter -> prefix in run names, in this order (the seed's `{enc}c{comp}_d{dim}_n{depth}_c{ctx}_b{batch}x{n}`).
NAME_PARTS = (("encoder_dim", "e"), ("dim", "d"), ("depth", "n"), ("compression", "z"), ("kernel", "k"),
              ("n_heads", "h"), ("n_chunks", "ch"))


def data_label(data: DataConfig) -> str:
    """A short name of the training data: the corpus spec or the data directory's name, filename-safe."""
    if data.corpus is not None:
        spec = data.corpus
        if spec.startswith("hf:"):
            spec = spec[3:].split("/")[-1]
        else:
            spec = Path(spec.replace("*", "")).stem or spec
        label = f"{spec}-v{data.vocab_size}" if data.vocab_size != 8000 else spec
        if data.mode != "packed":
            label += f"-{data.mode}"
    else:
        label = Path(data.train_dir).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "data"


def run_name(experiment: Experiment, world_size: int) -> str:
    """The run directory's name: model, dims, depth, compression, kernel, heads, context, batch x devices, data."""
    if experiment.output.name:
        return experiment.output.name
    params = preset_params(experiment)
    parts = [experiment.model.name]
    for key, prefix in NAME_PARTS:
        value = params.get(key)
        if value is not None and value is not False:
            parts.append(f"{prefix}{value}")
    parts.append(f"c{experiment.data.context}")
    batch = f"b{experiment.train.batch_size}x{world_size}"
    if experiment.train.gradient_accumulation_steps > 1:
        batch += f"ga{experiment.train.gradient_accumulation_steps}"
    parts.append(batch)
    parts.append(data_label(experiment.data))
    return "_".join(parts)


def model_build_args(experiment: Experiment, n_vocab: int) -> dict:
    """``{"name", "preset", "params"}`` for ``build_model``: n_vocab and length filled in unless set.

    ``length`` is the data context, or context / n_chunks for chunked memory models; the result is recorded in
    run.json so evaluation rebuilds exactly the trained model.
    """
    params = dict(experiment.model.params)
    merged = preset_params(experiment)
    params.setdefault("n_vocab", n_vocab)
    if "length" not in params:
        context, chunks = experiment.data.context, merged.get("n_chunks")
        if chunks:
            if context % chunks:
                raise ConfigError(f"{experiment.source}: 'data.context' {context} is not a multiple of "
                                  f"'model.params.n_chunks' {chunks}; set model.params.length explicitly")
            params["length"] = context // chunks
        else:
            params["length"] = context
    return {"name": experiment.model.name, "preset": experiment.model.preset, "params": params}


# ---- what an experiment names, built: data, tokenizer, model (the trainer and the evaluation share these) -----


@dataclass
class Data:
    tokenizer_dir: Path
    train: object  # TokenDataset
    test: object  # TokenDataset
    n_vocab: int


def load_fast_tokenizer(tokenizer_dir: str | Path):
    """The prepared tokenizer as a ``transformers`` fast tokenizer (``memorymodels.data.load_tokenizer`` gives the
    plain ``tokenizers`` one)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def data_cache_dir(cfg: DataConfig) -> Path:
    """Where ``cfg.corpus`` is prepared: ``data.cache_dir``, else the state directory's ``cache/``."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else state_dir() / "cache"


def load_data(experiment: Experiment, *, progress: bool = False) -> Data:
    """Prepare (or find in the cache) the tokenizer and the pretokenized splits of ``experiment.data``."""
    from memorymodels.data import TokenDataset, prepare_data

    cfg = experiment.data
    if cfg.corpus is not None:
        prepared = prepare_data(cfg.corpus, vocab_size=cfg.vocab_size, context=cfg.context, mode=cfg.mode,
                                padding_side=cfg.padding_side, cache_dir=data_cache_dir(cfg), progress=progress)
        tokenizer_dir, train_dir = Path(prepared.tokenizer_dir), Path(prepared.data_dir)
        test_dir = train_dir
    else:
        tokenizer_dir, train_dir = Path(cfg.tokenizer), Path(cfg.train_dir)
        test_dir = Path(cfg.test_dir) if cfg.test_dir else train_dir
        for key, path in (("tokenizer", tokenizer_dir), ("train_dir", train_dir), ("test_dir", test_dir)):
            if not path.exists():
                raise ConfigError(f"{experiment.source}: 'data.{key}': {path} does not exist")
    train = TokenDataset(train_dir, "train", expect_tokenizer=tokenizer_dir, expect_context=cfg.context)
    test = TokenDataset(test_dir, "test", expect_tokenizer=tokenizer_dir, expect_context=cfg.context)
    return Data(tokenizer_dir, train, test, len(load_fast_tokenizer(tokenizer_dir)))


def build(args: dict, *, context: int | None = None, source: str = ""):
    """Build the model from :func:`model_build_args`' output and check it takes ``context`` tokens per row."""
    from memorymodels.models import build_model

    model = build_model(args["name"], preset=args["preset"], **args["params"])
    taken = getattr(model, "input_length", None)
    if context is not None and taken is not None and taken != context:
        raise ConfigError(f"{source}: model '{args['name']}' takes {taken} tokens per row but 'data.context' is "
                          f"{context}; make them agree (model.params.length / n_chunks or data.context)")
    return model
