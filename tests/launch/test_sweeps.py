"""Sweeps: expansion, deduplication, cell directories, chunking, and real submissions to the local Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launch.sweeps import chunk, expand_cells, load_sweep, plan_cells, short_keys
from memorymodels.configuration import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, data: dict, name: str = "abl.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the sweep file --------------------------------------------------------------------------------------------------


def test_grid_is_the_product_in_file_order(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"experiment": "x.yaml",
                                              "grid": {"model.kernel": [1, 2, 4], "model.n_heads": [0, 4]}}))
    cells = expand_cells(sweep)
    assert cells == [{"model.kernel": k, "model.n_heads": h} for k in (1, 2, 4) for h in (0, 4)]
    assert sweep.name == "abl" and sweep.axes == ["model.kernel", "model.n_heads"]


def test_zip_takes_lists_in_parallel_and_crosses_grid_and_cells(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "grid": {"model.kernel": [1, 2]},
        "zip": {"model.dim": [32, 64], "train.batch_size": [8, 4]},
        "cells": [{"model.compression": 2}, {"model.compression": 4}],
    }))
    cells = expand_cells(sweep)
    assert len(cells) == 2 * 2 * 2
    assert {(c["model.dim"], c["train.batch_size"]) for c in cells} == {(32, 8), (64, 4)}
    assert cells[0] == {"model.kernel": 1, "model.dim": 32, "train.batch_size": 8, "model.compression": 2}


def test_duplicate_cells_are_removed_keeping_the_first(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "cells": [{"model.kernel": 1, "model.n_heads": 0}, {"model.kernel": 2},
                  {"model.n_heads": 0, "model.kernel": 1}, {"model.kernel": 2}],
    }))
    assert expand_cells(sweep) == [{"model.kernel": 1, "model.n_heads": 0}, {"model.kernel": 2}]


@pytest.mark.parametrize("data, message", [
    ({"experiment": "x.yaml", "gird": {"model.kernel": [1]}}, "unknown key 'gird'; did you mean 'grid'?"),
    ({"grid": {"model.kernel": [1]}}, "'experiment' is required"),
    ({"experiment": "x.yaml", "zip": {"model.dim": [1, 2], "model.depth": [1]}},
     "the 'zip' lists must all have the same length; got model.dim (2), model.depth (1)"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": []}}, "'grid.model.kernel' must be a non-empty list"),
    ({"experiment": "x.yaml", "grid": {"kernel": [1, 2]}}, "'grid' key 'kernel' must be a dotted config key"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": [1]}, "zip": {"model.kernel": [2]}},
     "'model.kernel' is in both 'grid' and 'zip'"),
    ({"experiment": "x.yaml", "grid": {"model.kernel": [1]}, "cells": [{"model.kernel": 2}]},
     "'cells[0].model.kernel' is also set in overrides, grid or zip"),
    ({"experiment": "x.yaml", "name": "a/b"}, "'name: a/b' must be a non-empty folder name"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, data, message):
    path = write_sweep(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


# --- cell directories ------------------------------------------------------------------------------------------------


def test_cell_directories_are_named_by_overrides(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"experiment": "x.yaml", "name": "kh",
                                              "grid": {"model.kernel": [1, 2], "model.n_heads": [0, 4]}}))
    cells = plan_cells(sweep, tmp_path / "runs")
    assert [c.run_dir.relative_to(tmp_path / "runs").as_posix() for c in cells] == [
        "kh/kernel=1,n_heads=0", "kh/kernel=1,n_heads=4", "kh/kernel=2,n_heads=0", "kh/kernel=2,n_heads=4"]


def test_cell_directories_stay_distinct_when_spellings_collide(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {
        "experiment": "x.yaml",
        "grid": {"model.dim": [8], "data.dim": [8]},
        "cells": [{"data.corpus": "a/b"}, {"data.corpus": "a_b"}, {"data.corpus": "x" * 300}],
    }))
    dirs = [c.run_dir.name for c in plan_cells(sweep, tmp_path)]
    assert len(set(dirs)) == 3
    assert dirs[0].startswith("model.dim=8,data.dim=8,corpus=a_b-")  # escaped, so a hash keeps it unique
    assert dirs[1] == "model.dim=8,data.dim=8,corpus=a_b"
    assert all(len(d) <= 130 and "/" not in d for d in dirs)


def test_short_keys_use_the_shortest_unambiguous_suffix():
    assert short_keys(["model.kernel", "model.dim", "data.dim", "train.lr"]) == {
        "model.kernel": "kernel", "model.dim": "model.dim", "data.dim": "data.dim", "train.lr": "lr"}


def test_chunking_by_max_array_size():
    arrays = chunk(list(range(2500)), 1001)
    assert [len(a) for a in arrays] == [1001, 1001, 498]
    assert sum(arrays, []) == list(range(2500))
    assert chunk([], 5) == []
