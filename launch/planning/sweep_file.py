"""The sweep file: a YAML file of axes over dotted config keys, expanded into named cells. Pure and torch-free.

    python launch/submit.py --profile local-slurm --sweep sweeps/kernel_heads_debug.yaml --dry-run --json

A sweep file names a base experiment and the cells to run::

    experiment: configs/experiments/autoencoder.yaml
    profile: local-slurm                                   # optional; --profile wins
    overrides: {train.max_steps: 200}                      # set in every cell
    grid: {model.params.kernel: [1, 2, 4], model.params.n_heads: [0, 4]}   # the product of the lists
    zip: {model.params.dim: [64, 128], train.batch_size: [16, 8]}          # lists taken in parallel
    cells: [{model.params.compression: 2}, {model.params.compression: 4}]  # explicit override sets

The cells are the product of the three (an absent one counts once); duplicates are removed. Each cell runs in its own
directory ``<checkpoint root>/<sweep name>/<cell name>``, the cell name spelled from its overrides
(``kernel=2,n_heads=4``). This module reads and checks the file (:func:`load_sweep`), expands and names the cells
(:func:`expand_cells`, :func:`cell_names`, :func:`plan_cells`), spells overrides for ``--set`` (:func:`cell_items`)
and cuts the cells into arrays (:func:`chunk`); planning a sweep is ``launch.planning.sweep``, submitting it ``launch.submission.sweep``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memorymodels.configuration import ConfigError, from_dict, load_yaml, parse_override
from memorymodels.experiment import REPO_ROOT


# Characters kept as they are in a cell's directory name; anything else becomes '_'.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
MAX_NAME = 120  # longer cell names are cut and suffixed with a hash so every file system accepts them


@dataclass(kw_only=True)
class SweepConfig:
    """One sweep file (``sweeps/*.yaml``)."""

    experiment: str = ""
    """The base experiment file (a path relative to the current directory, else to the sweep file's folder)."""
    profile: str | None = None
    """Cluster profile used when ``--profile`` is not given."""
    name: str | None = None
    """Folder under the checkpoint root holding the cells' run directories; defaults to the sweep file's stem."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted keys set to the same value in every cell (``train.max_steps: 200``)."""
    grid: dict[str, list] = field(default_factory=dict)
    """Dotted key -> list of values; the cells take the product of the lists."""
    zip: dict[str, list] = field(default_factory=dict)
    """Dotted key -> list of values, all lists the same length; taken in parallel (one value of each per cell)."""
    cells: list[dict[str, Any]] = field(default_factory=list)
    """Explicit override sets (``{model.compression: 2}``), crossed with ``grid`` and ``zip``."""
    source: str = field(default="<dict>", init=False, compare=False, repr=False)
    """The file this sweep was read from, named in errors (set by ``load_sweep``)."""

    def __post_init__(self):
        if not self.experiment:
            raise ConfigError("'experiment' is required: the base experiment file, "
                              "e.g. experiment: configs/experiments/debug.yaml")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9._+=-]+", self.name):
            raise ConfigError(f"'name: {self.name}' must be a non-empty folder name of letters, digits, "
                              f"'.', '_', '+', '=' or '-'")
        for section in ("overrides", "grid", "zip"):
            for key in getattr(self, section):
                _check_key(section, key)
        for key, values in {**self.grid, **self.zip}.items():
            section = "grid" if key in self.grid else "zip"
            if not isinstance(values, list) or not values:
                raise ConfigError(f"'{section}.{key}' must be a non-empty list of values, got {values!r}")
        lengths = {key: len(values) for key, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k} ({n})" for k, n in lengths.items())
            raise ConfigError(f"the 'zip' lists must all have the same length; got {listed}")
        _check_disjoint([("overrides", self.overrides), ("grid", self.grid), ("zip", self.zip)])
        axis_keys = set(self.overrides) | set(self.grid) | set(self.zip)
        for i, cell in enumerate(self.cells):
            if not isinstance(cell, dict):
                raise ConfigError(f"'cells[{i}]' must be a mapping of dotted keys to values, got {cell!r}")
            for key in cell:
                _check_key(f"cells[{i}]", key)
                if key in axis_keys:
                    raise ConfigError(f"'cells[{i}].{key}' is also set in overrides, grid or zip; "
                                      f"set each key in one place")

    @property
    def axes(self) -> list[str]:
        """The dotted keys that vary between cells, in file order (grid, zip, then cells)."""
        keys = list(self.grid) + list(self.zip)
        for cell in self.cells:
            keys += [k for k in cell if k not in keys]
        return keys


def _check_key(section: str, key: Any) -> None:
    if not isinstance(key, str) or "." not in key or not all(key.split(".")):
        raise ConfigError(f"'{section}' key {key!r} must be a dotted config key such as 'model.params.kernel'")


def _check_disjoint(sections: list[tuple[str, dict]]) -> None:
    for (a, da), (b, db) in itertools.combinations(sections, 2):
        both = sorted(set(da) & set(db))
        if both:
            raise ConfigError(f"'{both[0]}' is in both '{a}' and '{b}'; set each key in one place")


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep file; errors are ConfigErrors naming the file and the key."""
    source = str(path)
    data = load_yaml(path)
    try:
        sweep = from_dict(SweepConfig, data, source=source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None
    for key in ("grid", "zip", "cells"):
        if key in data and not data[key]:
            raise ConfigError(f"{source}: '{key}' is empty; list the values to sweep (or remove '{key}')")
    if not (sweep.grid or sweep.zip or sweep.cells):
        raise ConfigError(f"{source}: no 'grid', 'zip' or 'cells': a sweep needs at least one axis "
                          f"(for one job, use launch/submit.py --experiment with --set)")
    sweep.source = source
    if sweep.name is None:
        sweep.name = Path(path).stem
    return sweep


def resolve_experiment_path(sweep: SweepConfig) -> Path:
    """The base experiment file: as written if it exists from here, else beside the sweep file, else in the project."""
    path = Path(sweep.experiment)
    if path.is_absolute() or path.exists():
        return path
    for base in (Path(sweep.source).parent, REPO_ROOT):
        if (base / path).exists():
            return base / path
    raise ConfigError(f"{sweep.source}: 'experiment: {sweep.experiment}' does not exist (looked in the current "
                      f"directory, beside the sweep file and in {REPO_ROOT})")


def expand_cells(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The sweep's cells as override mappings (axis keys only, file order), duplicates removed (first kept)."""
    grid = [dict(zip(sweep.grid, values)) for values in itertools.product(*sweep.grid.values())]
    zipped = [dict(zip(sweep.zip, values)) for values in zip(*sweep.zip.values())] or [{}]
    explicit = [dict(cell) for cell in sweep.cells] or [{}]
    cells, seen = [], set()
    for g, z, c in itertools.product(grid, zipped, explicit):
        cell = {**g, **z, **c}
        key = canonical(cell)
        if key not in seen:
            seen.add(key)
            cells.append(cell)
    return cells


def canonical(overrides: dict[str, Any]) -> str:
    """One string per distinct override set (key order does not matter)."""
    return json.dumps(overrides, sort_keys=True, default=str)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Dotted key -> its shortest dotted suffix no other key ends with (``model.kernel`` -> ``kernel``)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
                break
        out[key] = suffix
    return out


def _spell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def cell_names(cells: list[dict[str, Any]], axes: list[str]) -> list[str]:
    """A directory name per cell, spelled from its overrides (``kernel=2,n_heads=4``) and unique within the sweep.

    Values that need escaping, names over MAX_NAME characters and names that would still collide get a short hash of
    the cell's overrides appended, so two different cells never share a directory.
    """
    short = short_keys(axes)
    names = []
    for cell in cells:
        parts = [f"{short[k]}={_spell(cell[k])}" for k in axes if k in cell]
        raw = ",".join(parts) or "base"
        name = _UNSAFE.sub("_", raw)
        if name != raw or len(name) > MAX_NAME:
            name = f"{name[:MAX_NAME]}-{_digest(cell)}"
        names.append(name)
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{n}-{_digest(c)}" if counts[n] > 1 else n for n, c in zip(names, cells)]


def _digest(cell: dict[str, Any]) -> str:
    return hashlib.sha1(canonical(cell).encode()).hexdigest()[:8]


def chunk(indices: list[int], size: int) -> list[list[int]]:
    """Split ``indices`` into consecutive arrays of at most ``size`` tasks."""
    if size < 1:
        raise ValueError(f"max_array_size must be at least 1, got {size}")
    return [indices[i:i + size] for i in range(0, len(indices), size)]


@dataclass
class Cell:
    """One cell of a sweep: its overrides and the run directory it trains in."""

    index: int
    overrides: dict[str, Any]
    run_dir: Path

    def as_json(self) -> dict:
        return {"overrides": self.overrides, "run_dir": str(self.run_dir)}


def plan_cells(sweep: SweepConfig, checkpoint_root: str | Path) -> list[Cell]:
    """Every cell of ``sweep`` with its run directory ``checkpoint_root/<sweep name>/<cell name>``. Pure."""
    overrides = expand_cells(sweep)
    root = Path(checkpoint_root) / (sweep.name or Path(sweep.source).stem)
    names = cell_names(overrides, sweep.axes)
    return [Cell(i, o, root / n) for i, (o, n) in enumerate(zip(overrides, names))]


def dry_run_json(cells: list[Cell], arrays: list[list[int]]) -> dict:
    """``{"cells": [{"overrides", "run_dir"}...], "arrays": [[cell index, ...], ...]}``."""
    return {"cells": [c.as_json() for c in cells], "arrays": [list(a) for a in arrays]}


def sweep_summary(sweep: SweepConfig) -> dict:
    """The sweep file in short: ``{"name", "file", "experiment", "profile", "axes", "spec"}`` (``spec``: the file's
    ``overrides``, ``grid``, ``zip`` and ``cells``)."""
    return {"name": sweep.name, "file": str(Path(sweep.source).resolve()), "experiment": sweep.experiment,
            "profile": sweep.profile, "axes": sweep.axes,
            "spec": {"overrides": sweep.overrides, "grid": sweep.grid, "zip": sweep.zip, "cells": sweep.cells}}


def cell_items(overrides: dict[str, Any]) -> list[str]:
    """``{"model.params.kernel": 2}`` -> ``["model.params.kernel=2"]``, spelled so ``--set`` reads the value back."""
    items = []
    for key, value in overrides.items():
        text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
        if isinstance(value, (str, float)) and _reads_back(text) != value:
            text = json.dumps(value)  # quote strings YAML would read as something else ('1', 'null', 'a: b')
            if _reads_back(text) != value:
                raise ConfigError(f"'{key}: {value!r}': cannot be passed to the trainer as --set {key}=...; "
                                  f"write the value differently")
        items.append(f"{key}={text}")
    return items


def _reads_back(text: str) -> Any:
    return parse_override(f"k={text}")[1]
