"""Validated configuration dataclasses built from YAML, with errors that name the file and the key.

Every config in the project (experiments, cluster profiles, sweeps) is a ``kw_only`` dataclass. This module turns
plain YAML data into those dataclasses and rejects what does not fit, naming the file, the key and the closest valid
key, so a typo never silently falls back to a default:

    >>> from_dict(TrainConfig, {"lerning_rate": 1e-3}, source="configs/experiments/debug.yaml", section="train")
    ConfigError: configs/experiments/debug.yaml: unknown key 'train.lerning_rate'; did you mean 'learning_rate'?
    valid keys: batch_size, learning_rate, ...

Field docs live in the dataclass (one docstring line per field); ``__post_init__`` of each dataclass checks values.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import re

import yaml


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # the C (libyaml) loader where PyYAML has it
    """SafeLoader that also reads ``5e-4`` and ``1e6`` as floats (YAML 1.1 wants a dot; users do not write one) and
    refuses a key given twice in one mapping (YAML keeps the last silently; a doubled key is a mistake)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice in one mapping; "
                                                            "keep one", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        # Python refuses to convert more than 4300 digits (a ValueError, not a YAMLError); 40 is beyond any int64
        if len(node.value) > 40:
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {len(node.value)} digits is too large",
                                                    node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str):
    """Parse YAML text with the project's loader (safe; exponent floats without a dot; no doubled keys)."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A configuration file or override is invalid. The message names the file, the key and what to do."""


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a newline becomes ``\\n``): what an error message or a comment in
    a generated file shows of a value, so a value cannot end the line it is quoted in."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in str(text))


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 cell``, ``2 cells``, ``0 cells``: a number and its noun agreeing, in every message that counts."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def flag_number(kind: type = float, *, minimum: float | None = None) -> typing.Callable[[str], float]:
    """An argparse ``type=`` for a numeric flag of any command: the value as ``kind``, refusing NaN, infinities, a
    fraction where an integer is meant (``2.5``, and ``1e3``: one number has one spelling) and values below
    ``minimum``; argparse prints the refusal in one line naming the flag."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be {minimum:g} or more")
        return value

    parse.__name__ = kind.__name__  # what argparse calls the type in its messages
    return parse


def closest(name: str, options: typing.Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option closest to ``name`` (for "did you mean"), or None when nothing is within ``cutoff`` (0: always)."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown_key_message(source: str, key: str, valid: typing.Iterable[str], what: str = "key",
                        cutoff: float = 0.6) -> str:
    """``source: unknown key 'a.b'; did you mean 'c'? valid keys: ...`` (``key`` may be dotted)."""
    valid = sorted(valid)
    leaf = str(key).rsplit(".", 1)[-1]
    guess = closest(leaf, valid, cutoff)
    hint = f"; did you mean '{guess}'?" if guess else ";"
    return f"{source}: unknown {what} '{key}'{hint} valid {what}s: {', '.join(valid)}"


def yaml_error_line(exc: yaml.YAMLError, text: str) -> str:
    """A YAML parse error in one line: ``line 3, column 7: did not find expected ',' or ']'``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML refuses (control characters)
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        return f"line {line}: character #x{code:04x} is not allowed ({exc.reason}); remove it"
    if mark is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem or 'not valid YAML'}"


def _repeated_container(data: Any, where: str = "", seen: set | None = None) -> str | None:
    """The dotted key of the first list or mapping that occurs twice in ``data`` (a YAML alias ``*name``), else None.

    Aliases are refused: a few nested ones expand exponentially when the data is copied or written to run.json.
    """
    seen = set() if seen is None else seen
    if not isinstance(data, (dict, list)):
        return None
    if id(data) in seen:
        return where or "(top level)"
    seen.add(id(data))
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        found = _repeated_container(value, f"{where}.{key}" if where else str(key), seen)
        if found:
            return found
    return None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file holding a mapping; every problem is a one-line ConfigError naming the file.

    Refused: a missing file, a directory, an unreadable or empty file, bytes that are not UTF-8 (named by offset), a
    YAML syntax error (named by line), a key given twice, an alias repeating a list or mapping, a non-mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
                          "save the file as UTF-8") from None
    try:
        data = yaml_load(text)
        repeated = _repeated_container(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(exc, text)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: lists or mappings nested too deeply; a config needs a few levels") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (or only comments); expected a mapping of keys to values")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    if repeated:
        raise ConfigError(f"{path}: '{repeated}' repeats another list or mapping through a YAML alias (*name); "
                          "write the value out")
    return data


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """``'train.max_steps=20'`` -> ``('train.max_steps', 20)``; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: expected KEY=VALUE (e.g. train.max_steps=100), got '{item}'")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'``, creating intermediate mappings."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    old = node.get(parts[-1])
    if isinstance(old, dict) and old and not isinstance(value, dict):  # --set train=5 would drop the section
        keys = ", ".join(sorted(map(str, old))[:4]) + (", ..." if len(old) > 4 else "")
        raise ConfigError(f"--set {key}={one_line(value)}: '{key}' is a section ({keys}), not one value; set one of "
                          f"its keys: --set {key}.KEY=VALUE")
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: typing.Iterable[str | tuple[str, Any]]) -> dict:
    """Return a deep copy of ``data`` with each ``KEY=VALUE`` (or ``(key, value)``) override applied in order."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(data, key, value)
    return data


def _strip_optional(tp: Any) -> Any:
    """``Optional[X]`` / ``X | None`` -> ``X``; anything else unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# The largest integer a config may hold: what torch tensors, numpy and Slurm take (int64); larger ones overflow there.
MAX_INT = 2**63 - 1


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (``true``, ``null``, ``.nan``), for messages."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, int) and abs(value) > MAX_INT:  # never printed in full; str() fails beyond 4300 digits
        if value.bit_length() > 14000:
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _item(where: str, suffix: str) -> str:
    """``f.yaml: 'a.b'`` + ``[0]`` -> ``f.yaml: 'a.b[0]'`` (the key stays inside its quotes)."""
    return f"{where[:-1]}{suffix}'" if where.endswith("'") else f"{where}{suffix}"


def _check_values(value: Any, where: str) -> None:
    """Inside free-form values (``Any``, untyped lists and mappings): no NaN or infinity, no integer beyond MAX_INT."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {_show(value)} is not a finite number; give a finite value")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{where}: {_show(value)} is too large (at most 2**63-1)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_values(item, _item(where, f".{key}"))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_values(item, _item(where, f"[{i}]"))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; raise a ConfigError naming ``where`` on a mismatch.

    The one place values are checked for their type, for every config: ints are accepted for floats and integral
    floats (``1e6``) for ints; booleans are not numbers; NaN and infinities are refused in every numeric field (and
    inside free-form values), integers beyond int64 too.
    """
    if value is None:
        return None
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping (section), got {_show(value)}")
        return value  # built by the caller, which knows the source
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        _check_values(value, where)
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)  # YAML 1.1 reads '5e-4' (no dot) as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}") from None
        except OverflowError:
            raise ConfigError(f"{where}: {_show(value)} is too large for a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {_show(number)} is not a finite number; give a finite value")
        return number
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 1e6 reads as a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {_show(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{where}: {_show(value)} is too large (at most 2**63-1)")
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {_show(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:  # True == 1: a bool never matches a number choice
            raise ConfigError(f"{where}: {_show(value)} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {_show(value)}")
    if origin is dict and not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
    if origin in (list, tuple) and typing.get_args(tp) and typing.get_args(tp)[0] in (str, int, float, bool):
        item = typing.get_args(tp)[0]
        return type(value)(_coerce(v, item, _item(where, f"[{i}]")) for i, v in enumerate(value))
    _check_values(value, where)
    return value


@functools.lru_cache(maxsize=None)
def _schema(cls: type) -> tuple[dict, dict]:
    """The resolved annotations and init fields of a dataclass (cached: resolving string annotations is slow)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type, data: Mapping[str, Any] | None, *, source: str, section: str = ""):
    """Build the ``kw_only`` dataclass ``cls`` from ``data``, recursing into dataclass-typed fields.

    Unknown keys are rejected with the closest valid key; values are type-checked against the annotations;
    ``__post_init__`` then checks meanings. ``source`` is the file (or ``--set``) named in every error and
    ``section`` the dotted prefix of this mapping within it.
    """
    data = dict(data or {})
    hints, fields = _schema(cls)
    prefix = f"{section}." if section else ""
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_key_message(source, prefix + str(key), fields))
    kwargs = {}
    for name, value in data.items():
        where = f"{source}: '{prefix}{name}'"
        tp = _strip_optional(hints[name])
        if dataclasses.is_dataclass(tp) and value is not None:
            _coerce(value, tp, where)
            kwargs[name] = from_dict(tp, value, source=source, section=prefix + name)
        else:
            kwargs[name] = _coerce(value, hints[name], where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {section or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain YAML/JSON data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
