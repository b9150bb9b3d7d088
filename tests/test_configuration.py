"""The config helpers every YAML file goes through: unknown keys, types, overrides, messages naming file and key."""

from dataclasses import dataclass, field

import pytest

from memorymodels.configuration import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict


@dataclass(kw_only=True)
class Inner:
    learning_rate: float = 1e-3
    """Peak learning rate."""
    steps: int = 10
    """Optimizer steps."""

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"'train.steps' must be at least 1, got {self.steps}")


@dataclass(kw_only=True)
class Outer:
    name: str = "x"
    """A name."""
    train: Inner = field(default_factory=Inner)
    """Training section."""
    tags: list = field(default_factory=list)
    """Free tags."""


def test_builds_nested_dataclasses_and_accepts_ints_and_yaml_floats_for_floats():
    cfg = from_dict(Outer, {"name": "a", "train": {"learning_rate": "5e-4", "steps": 3}}, source="f.yaml")
    assert cfg.train.learning_rate == 5e-4 and cfg.train.steps == 3
    assert from_dict(Inner, {"learning_rate": 1}, source="f.yaml").learning_rate == 1.0
    assert to_dict(cfg) == {"name": "a", "train": {"learning_rate": 5e-4, "steps": 3}, "tags": []}


def test_unknown_key_names_file_dotted_key_and_closest_match():
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"train": {"lerning_rate": 1.0}}, source="configs/experiments/x.yaml")
    message = str(err.value)
    assert message.startswith("configs/experiments/x.yaml: unknown key 'train.lerning_rate'")
    assert "did you mean 'learning_rate'?" in message
    assert "valid keys: learning_rate, steps" in message


def test_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match=r"f.yaml: 'train.steps': expected int, got 'many'"):
        from_dict(Outer, {"train": {"steps": "many"}}, source="f.yaml")
    with pytest.raises(ConfigError, match=r"'train.learning_rate': expected a number, got 'fast'"):
        from_dict(Outer, {"train": {"learning_rate": "fast"}}, source="f.yaml")
    with pytest.raises(ConfigError, match=r"'train': expected a mapping"):
        from_dict(Outer, {"train": 3}, source="f.yaml")


def test_post_init_checks_run():
    with pytest.raises(ConfigError, match="'train.steps' must be at least 1"):
        from_dict(Outer, {"train": {"steps": 0}}, source="f.yaml")


def test_overrides_parse_yaml_values_and_create_sections():
    data = apply_overrides({"train": {"steps": 1}}, ["train.steps=20", "train.learning_rate=1e-3", "name=run"])
    assert data == {"train": {"steps": 20, "learning_rate": 1e-3}, "name": "run"}
    assert parse_override("tags=[a, b]") == ("tags", ["a", "b"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys to values"):
        load_yaml(listy)
