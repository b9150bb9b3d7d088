"""Hostile inputs: every bad experiment file, ``--set`` override or YAML file is one ConfigError of one line that
names the file and the key (or flag), and nothing is written.

Three tables: values in an experiment file (``FILE_CASES``), ``--set`` overrides on a valid file
(``OVERRIDE_CASES``), and files that are not valid YAML mappings at all (``YAML_CASES``); then a few
profile-shaped dataclasses through ``from_dict`` (the launcher's profiles are read that way).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from memorymodels.configuration import ConfigError, from_dict, load_yaml
from memorymodels.experiment import load_experiment

# A valid experiment (the debug one), as YAML text per section: each case replaces one line or adds one.
SECTIONS = {
    "model": {"name": "autoencoding_mixer", "preset": "debug"},
    "data": {"corpus": "stdlib-small", "vocab_size": "512", "context": "64"},
    "train": {"learning_rate": "2.0e-3", "max_steps": "40", "batch_size": "8", "warmup_steps": "5"},
    "output": {"checkpoint_root": "RUNS"},
}


def experiment_text(root: Path, **raw: str) -> str:
    """The valid experiment with ``section__key='raw YAML'`` replaced or added (``model__params='{n_heads: 5}'``)."""
    sections = {name: dict(values) for name, values in SECTIONS.items()}
    sections["output"]["checkpoint_root"] = str(root / "runs")
    for dotted, value in raw.items():
        section, key = dotted.split("__")
        sections.setdefault(section, {})[key] = value
    lines = []
    for name, values in sections.items():
        lines.append(f"{name}:")
        lines += [f"  {key}: {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


# (id, {section__key: raw YAML}, text the message must contain besides the file)
FILE_CASES = [
    ("lr-nan", {"train__learning_rate": ".nan"}, "'train.learning_rate': .nan is not a finite number"),
    ("lr-inf", {"train__learning_rate": ".inf"}, "'train.learning_rate': .inf is not a finite number"),
    ("lr-minus-inf", {"train__learning_rate": "-.inf"}, "'train.learning_rate': -.inf is not a finite number"),
    ("lr-nan-string", {"train__learning_rate": "nan"}, "'train.learning_rate': .nan is not a finite number"),
    ("lr-huge-exponent", {"train__learning_rate": "1e400"}, "'train.learning_rate': .inf is not a finite number"),
    ("lr-bool", {"train__learning_rate": "true"}, "'train.learning_rate': expected a number, got true"),
    ("lr-zero", {"train__learning_rate": "0"}, "'train.learning_rate' must be positive"),
    ("lr-negative", {"train__learning_rate": "-1e-3"}, "'train.learning_rate' must be positive"),
    ("lr-word", {"train__learning_rate": "fast"}, "'train.learning_rate': expected a number, got 'fast'"),
    ("steps-bool", {"train__max_steps": "true"}, "'train.max_steps': expected int, got true"),
    ("steps-zero", {"train__max_steps": "0"}, "'train.max_steps' must be at least 1"),
    ("steps-fraction", {"train__max_steps": "2.5"}, "'train.max_steps': expected int, got 2.5"),
    ("steps-nan", {"train__max_steps": ".nan"}, "'train.max_steps': expected int, got .nan"),
    ("steps-beyond-int64", {"train__max_steps": "1e30"}, "'train.max_steps': an integer of 31 digits is too large"),
    ("steps-20-digits", {"train__max_steps": "99999999999999999999"}, "'train.max_steps': an integer of 20 digits"),
    ("batch-negative", {"train__batch_size": "-8"}, "'train.batch_size' must be at least 1"),
    ("accumulation-zero", {"train__gradient_accumulation_steps": "0"}, "'train.gradient_accumulation_steps' must be"),
    ("warmup-negative", {"train__warmup_steps": "-1"}, "'train.warmup_steps' must be 0 or more"),
    ("eval-steps-negative", {"train__eval_steps": "-5"}, "'train.eval_steps' must be 0 or more"),
    ("save-steps-zero", {"train__save_steps": "0"}, "'train.save_steps' must be at least 1"),
    ("logging-steps-zero", {"train__logging_steps": "0"}, "'train.logging_steps' must be at least 1"),
    ("eval-rows-zero", {"train__eval_rows": "0"}, "'train.eval_rows' must be at least 1 or null"),
    ("save-limit-zero", {"train__save_total_limit": "0"}, "'train.save_total_limit' must be at least 1 or null"),
    ("weight-decay-negative", {"train__weight_decay": "-0.1"}, "'train.weight_decay' must be 0 (off) or more"),
    ("grad-norm-nan", {"train__max_grad_norm": ".nan"}, "'train.max_grad_norm': .nan is not a finite number"),
    ("seed-negative", {"train__seed": "-1"}, "'train.seed' must be 0 to 2**32-1"),
    ("seed-too-large", {"train__seed": "4294967296"}, "'train.seed' must be 0 to 2**32-1"),
    ("precision-unknown", {"train__precision": "fp8"}, "'train.precision': 'fp8' is not one of"),
    ("compile-number", {"train__compile": "1"}, "'train.compile': expected bool, got 1"),
    ("workers-negative", {"train__dataloader_workers": "-1"}, "'train.dataloader_workers' must be 0 or more"),
    ("train-misspelt", {"train__lerning_rate": "1e-3"}, "unknown key 'train.lerning_rate'; did you mean"),
    ("context-one", {"data__context": "1"}, "'data.context' must be at least 2"),
    ("context-inf", {"data__context": ".inf"}, "'data.context': expected int, got .inf"),
    ("vocab-below-bytes", {"data__vocab_size": "100"}, "'data.vocab_size' must be 258 to"),
    ("vocab-bool", {"data__vocab_size": "false"}, "'data.vocab_size': expected int, got false"),
    ("mode-unknown", {"data__mode": "zipped"}, "'data.mode': 'zipped' is not one of 'packed', 'padded'"),
    ("corpus-empty", {"data__corpus": "''"}, "'data.corpus' must be a corpus spec or a path"),
    ("corpus-and-dirs", {"data__train_dir": "/x"}, "'data.corpus' and 'data.tokenizer'/'data.train_dir' exclude"),
    ("name-escapes-root", {"output__name": "../escape"}, "'output.name' must be one directory name"),
    ("name-with-slash", {"output__name": "a/b"}, "'output.name' must be one directory name"),
    ("root-empty", {"output__checkpoint_root": "''"}, "'output.checkpoint_root' must be a directory"),
    ("model-unknown", {"model__name": "gpt5"}, "'model.name': unknown model 'gpt5'; did you mean 'language_mixer'?"),
    ("preset-misspelt", {"model__preset": "debg"}, "'model.preset': model 'autoencoding_mixer': unknown preset 'debg'"),
    ("heads-5-of-32", {"model__params": "{n_heads: 5}"}, "'n_heads' (5) must divide 'dim' (32)"),
    ("heads-negative", {"model__params": "{n_heads: -2}"}, "'n_heads' must be 0 (flat mixing) or more"),
    ("heads-bool", {"model__params": "{n_heads: true}"}, "'n_heads': expected int, got true"),
    ("dim-zero", {"model__params": "{dim: 0}"}, "'dim' must be positive"),
    ("dim-nan", {"model__params": "{dim: .nan}"}, "'model.params.dim': .nan is not a finite number"),
    ("depth-negative", {"model__params": "{depth: -1}"}, "'depth' must be positive"),
    ("kernel-zero", {"model__params": "{kernel: 0}"}, "'kernel' must be at least 1"),
    ("compression-3-of-32", {"model__params": "{compression: 3}"}, "'compression' (3) must divide 'dim' (32)"),
    ("param-misspelt", {"model__params": "{dimm: 32}"}, "unknown key 'dimm'; did you mean 'dim'?"),
    ("param-not-a-name", {"model__params": "{1: 2}"}, "'model.params': 1 is not a parameter name"),
    ("length-not-context", {"model__params": "{length: 32}"}, "'model.params.length' (32) does not fill a row"),
    ("llama-odd-head-size", {"model__name": "llama_clm", "model__params": "{n_heads: 32}"},
     "'n_heads' (32) must divide 'dim' (32) into heads of an even size (RoPE)"),
    ("llama-no-heads", {"model__name": "llama_clm", "model__params": "{n_heads: 0}"},
     "'n_heads' must be at least 1 (attention heads)"),
    ("chunks-not-dividing", {"model__name": "variable_memory_mixer", "model__params": "{n_chunks: 3}"},
     "'data.context' 64 is not a multiple of 'model.params.n_chunks' 3"),
    ("pad-id-outside-vocab", {"model__name": "variable_memory_mixer", "model__params": "{pad_id: 512}"},
     "'pad_id' (512) must be a token id"),
    ("blank-copy-alone", {"model__name": "variable_memory_transformer", "model__params": "{blank_copy: true}"},
     "'blank_copy' needs 'copy: true'"),
    ("section-misspelt", {"trian__max_steps": "3"}, "unknown key 'trian'; did you mean 'train'?"),
]

# (id, --set items, text the message must contain besides the file and '--set')
OVERRIDE_CASES = [
    ("set-lr-nan", ["train.learning_rate=.nan"], "'train.learning_rate': .nan is not a finite number"),
    ("set-lr-nan-word", ["train.learning_rate=nan"], "'train.learning_rate': .nan is not a finite number"),
    ("set-lr-inf", ["train.learning_rate=inf"], "'train.learning_rate': .inf is not a finite number"),
    ("set-steps-bool", ["train.max_steps=true"], "'train.max_steps': expected int, got true"),
    ("set-steps-overflow", ["train.max_steps=1e400"], "'train.max_steps': expected int, got .inf"),
    ("set-batch-zero", ["train.batch_size=0"], "'train.batch_size' must be at least 1"),
    ("set-heads", ["model.params.n_heads=5"], "'n_heads' (5) must divide 'dim' (32)"),
    ("set-dim-keeps-heads-valid", ["model.params.n_heads=4", "model.params.dim=30"], "'n_heads' (4) must divide 'dim' (30)"),
    ("set-unknown-model", ["model.name=gpt5"], "'model.name': unknown model 'gpt5'"),
    ("set-preset", ["model.preset=debg"], "unknown preset 'debg'; did you mean 'debug'?"),
    ("set-context-negative", ["data.context=-4"], "'data.context' must be at least 2"),
    ("set-unknown-key", ["train.bogus=1"], "unknown key 'train.bogus'"),
    ("set-no-equals", ["train.max_steps"], "expected KEY=VALUE"),
    ("set-no-key", ["=5"], "expected KEY=VALUE"),
    ("set-into-a-value", ["train.max_steps.x=1"], "'train.max_steps' is a value, not a section"),
    ("set-section-to-value", ["model=3"], "--set model=3: 'model' is a section (name, preset), not one value"),
    ("set-train-to-value", ["train=5"], "--set train=5: 'train' is a section (batch_size, learning_rate, max_steps,"),
    ("set-name-escape", ["output.name=../../etc"], "'output.name' must be one directory name"),
    ("set-pad-id", ["model.name=variable_memory_mixer", "model.params.pad_id=-1"], "'pad_id' (-1) must be a token id"),
    ("set-free-nan", ["model.params.noise=.nan", "model.name=memory_transformer"], "'model.params.noise': .nan is not a finite"),
]

# (id, file bytes, text the message must contain besides the file)
YAML_CASES = [
    ("latin-1-byte", b"model:\n  name: caf\xe9\n", "not UTF-8: byte 0xe9 at offset 18 (line 2)"),
    ("utf-16", "model: {}\n".encode("utf-16"), "not UTF-8: byte 0xff at offset 0 (line 1)"),
    ("syntax", b"model:\n  name: x\n   preset: [debug\n", "not valid YAML: line 3"),
    ("tab-indent", b"model:\n\tname: x\n", "not valid YAML: line 2"),
    ("duplicate-key", b"train:\n  max_steps: 10\n  max_steps: 20\n", "line 3, column 3: key 'max_steps' is given twice"),
    ("duplicate-section", b"train: {}\ndata: {}\ntrain: {}\n", "line 3, column 1: key 'train' is given twice"),
    ("top-level-list", b"- model\n- data\n", "expected a mapping of keys to values at the top level, got list"),
    ("top-level-scalar", b"hello\n", "expected a mapping of keys to values at the top level, got str"),
    ("empty", b"", "the file is empty"),
    ("only-comments", b"# model: x\n", "the file is empty (or only comments)"),
    ("control-character", b"model:\n  name: a\x01b\n", "line 2: character #x0001 is not allowed"),
    ("python-tag", b"model: !!python/object/apply:os.system ['touch PWNED']\n", "could not determine a constructor"),
    ("alias-bomb", b"a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "'b.0' repeats another list or mapping"),
    ("giant-integer", b"train:\n  max_steps: " + b"9" * 5000 + b"\n", "an integer of 5000 digits is too large"),
    ("deep-nesting", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid YAML: line 1"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def refuse(path: Path, overrides=()) -> str:
    """Load ``path`` expecting a refusal; return the message after checking its shape and that nothing was written."""
    before = snapshot(path.parent)
    with pytest.raises(ConfigError) as err:
        load_experiment(path, overrides)
    assert type(err.value) is ConfigError
    message = str(err.value)
    assert "\n" not in message and message.strip() == message, message
    assert message.startswith(str(path)), message  # the file first
    assert snapshot(path.parent) == before and not (path.parent / "runs").exists()
    return message


def test_the_base_experiment_is_valid(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(experiment_text(tmp_path))
    experiment = load_experiment(path, ["train.max_steps=1e3"])
    assert experiment.train.max_steps == 1000 and isinstance(experiment.train.max_steps, int)


@pytest.mark.parametrize("raw, expected", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_value_in_an_experiment_file(tmp_path, raw, expected):
    path = tmp_path / "exp.yaml"
    path.write_text(experiment_text(tmp_path, **raw))
    message = refuse(path)
    assert expected in message, message


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_set_override(tmp_path, overrides, expected):
    path = tmp_path / "exp.yaml"
    path.write_text(experiment_text(tmp_path))
    message = refuse(path, overrides)
    assert "--set" in message and expected in message, message


@pytest.mark.parametrize("content, expected", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_file_that_is_not_a_yaml_mapping(tmp_path, monkeypatch, content, expected):
    monkeypatch.chdir(tmp_path)  # the python tag would write here if it ran
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    message = refuse(path)
    assert expected in message, message
    assert not (tmp_path / "PWNED").exists()


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'nope.yaml'}: no such file$"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"^{tmp_path}: is a directory; give a YAML file$"):
        load_yaml(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- profile-shaped configs through from_dict (the launcher's profiles are read this way) ----------------------


@dataclass(kw_only=True)
class Node:
    gpus_per_node: int = 8
    """GPUs per node."""
    mem_per_gpu_gb: float = 40.0
    """Memory per GPU."""
    precision: Literal["fp16", "bf16", "fp32"] = "bf16"
    """Precision."""
    setup: list[str] = field(default_factory=list)
    """Shell lines."""
    sbatch_extra: dict[str, Any] = field(default_factory=dict)
    """Further sbatch options."""


PROFILE_CASES = [
    ("mem-nan", {"mem_per_gpu_gb": float("nan")}, "'mem_per_gpu_gb': .nan is not a finite number"),
    ("mem-inf-word", {"mem_per_gpu_gb": "inf"}, "'mem_per_gpu_gb': .inf is not a finite number"),
    ("mem-bool", {"mem_per_gpu_gb": True}, "'mem_per_gpu_gb': expected a number, got true"),
    ("gpus-fraction", {"gpus_per_node": 1.5}, "'gpus_per_node': expected int, got 1.5"),
    ("gpus-huge", {"gpus_per_node": 10**30}, "'gpus_per_node': an integer of 31 digits is too large"),
    ("precision-bool", {"precision": True}, "'precision': true is not one of"),
    ("setup-number", {"setup": ["module load x", 3]}, "'setup[1]': expected str, got 3"),
    ("extra-inf", {"sbatch_extra": {"mem": float("inf")}}, "'sbatch_extra.mem': .inf is not a finite number"),
    ("extra-nested-nan", {"sbatch_extra": {"a": [1, float("nan")]}}, "'sbatch_extra.a[1]': .nan is not a finite"),
]


@pytest.mark.parametrize("data, expected", [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES])
def test_profile_shaped_values(data, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(Node, data, source="cluster_profiles/x.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("cluster_profiles/x.yaml: ") and expected in message, message


# ---- one number, one spelling: the same model never trains under a second name ----

SPELLINGS = [
    ("model.params.kernel=1", "model.params.kernel=1.0"),
    ("model.params.dim=32", "model.params.dim=32.0"),
    ("model.params.depth=2", "model.params.depth=2e0"),
    ("train.max_steps=40", "train.max_steps=4e1"),
    ("train.learning_rate=0.002", "train.learning_rate=2e-3"),
    ("data.vocab_size=512", "data.vocab_size=512.0"),
    ("train.seed=7", "train.seed=7.0"),
    ("train.weight_decay=0", "train.weight_decay=0.0"),
]


@pytest.mark.parametrize("one, other", SPELLINGS, ids=[f"{a} {b}" for a, b in SPELLINGS])
def test_two_spellings_of_one_number_are_one_run(tmp_path, one, other):
    from memorymodels.experiment import identity, run_name
    from memorymodels.runs import run_dir_for

    path = tmp_path / "exp.yaml"
    path.write_text(experiment_text(tmp_path))
    first, second = load_experiment(path, [one]), load_experiment(path, [other])
    assert (identity(first, 1), run_name(first, 1)) == (identity(second, 1), run_name(second, 1))
    assert run_dir_for(first, 1) == run_dir_for(second, 1)


# ---- every command's numeric flags: NaN, infinities, zero, negatives, fractions where integers are meant ----

LIBRARY_FLAGS = [
    # (module, arguments before the flag, flag, value, text of the one error line)
    ("memorymodels.plot", ["RUN", "--out", "x.png"], "--offset", "nan", "argument --offset: 'nan' is not a finite"),
    ("memorymodels.plot", ["RUN", "--out", "x.png"], "--offset", "inf", "argument --offset: 'inf' is not a finite"),
    ("memorymodels.plot", ["RUN", "--out", "x.png"], "--embedding-bits", "0", "argument --embedding-bits: 0: must be 1"),
    ("memorymodels.plot", ["RUN", "--out", "x.png"], "--embedding-bits", "2.5", "'2.5' is not an integer"),
    ("memorymodels.evaluate", ["RUN"], "--rows", "-3", "argument --rows: -3: must be 1 or more"),
    ("memorymodels.evaluate", ["RUN"], "--rows", "1e3", "argument --rows: '1e3' is not an integer"),
    ("memorymodels.evaluate", ["RUN"], "--batch-size", "0", "argument --batch-size: 0: must be 1 or more"),
    ("memorymodels.evaluate", ["RUN"], "--embedding-bits", "nan", "argument --embedding-bits: 'nan' is not an int"),
    ("memorymodels.compress", ["RUN", "FILE"], "--overlap", "-1", "argument --overlap: -1: must be 0 or more"),
    ("memorymodels.compress", ["RUN", "FILE"], "--threads", "0", "argument --threads: 0: must be 1 or more"),
    ("memorymodels.compress", ["RUN", "FILE"], "--threads", "1.5", "argument --threads: '1.5' is not an integer"),
    ("memorymodels.train", ["--experiment", "X"], "--collective-timeout-s", "-5", "must be 10 or more"),
    ("memorymodels.data.train_tokenizer", ["--out", "X"], "--vocab-size", "100", "100: must be 258 or more"),
    ("memorymodels.data.train_tokenizer", ["--out", "X"], "--max-docs", "0", "argument --max-docs: 0: must be 1"),
    ("memorymodels.data.train_tokenizer", ["--out", "X"], "--vocab-size", "inf", "'inf' is not an integer"),
    ("memorymodels.data.pretokenize", ["--tokenizer", "T", "--out", "X"], "--context", "1", "1: must be 2 or more"),
    ("memorymodels.data.pretokenize", ["--tokenizer", "T", "--out", "X", "--context", "8"], "--shard-rows", "-1",
     "argument --shard-rows: -1: must be 1 or more"),
]


@pytest.mark.parametrize("module, before, flag, value, message", LIBRARY_FLAGS,
                         ids=[f"{m.rsplit('.', 1)[1]} {f} {v}" for m, _, f, v, _ in LIBRARY_FLAGS])
def test_numeric_flags_of_the_library_commands(capsys, tmp_path, module, before, flag, value, message):
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / a) if a.isupper() else a for a in before] + [flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err
    assert err.strip().splitlines()[-1].count("error:") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
