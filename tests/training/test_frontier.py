"""python -m memorymodels.frontier on two real tiny runs (a mixer autoencoder and a causal mixer): the figure read
off its matplotlib objects, the CSV, the best-so-far frontier, and bad arguments refused before anything is written."""

import csv

import pytest

from memorymodels.frontier import best_so_far, collect, frontier_figure

from .conftest import run_module
from .test_plots import outside


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("frontier") / "sweep"
    for name, model in (("ae", "autoencoding_mixer"), ("lm", "language_mixer")):
        config = {"model": {"name": model, "preset": "debug"},
                  "data": {"tokenizer": str(tiny_data[0]), "train_dir": str(tiny_data[1]), "context": 32},
                  "train": {"learning_rate": 3e-3, "warmup_steps": 1, "max_steps": 6, "batch_size": 8,
                            "eval_steps": 2, "eval_rows": 16, "save_steps": 1000, "logging_steps": 2},
                  "output": {"checkpoint_root": str(root)}}
        path = root.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        done = run_module("memorymodels.train", "--experiment", str(path), "--no-eval")
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def xz(root):
    import json

    return json.loads(next(root.glob("*/run.json")).read_text())["heldout"]["baselines"]["xz"]


def test_frontier_plot_and_csv_of_real_runs(two_runs, tmp_path):
    done = run_module("memorymodels.frontier", str(two_runs), "-o", str(tmp_path / "f.png"), "--csv",
                      str(tmp_path / "f.csv"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 evaluations of 2 runs" in done.stdout and (tmp_path / "f.png").stat().st_size > 10_000
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert list(rows[0]) == ["run", "family", "params", "step", "flops", "device_seconds", "eval_bits_per_byte"]
    assert {r["family"] for r in rows} == {"autoencoding_mixer", "language_mixer"}
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 2, 4, 6]
    assert all(float(r["flops"]) > 0 and float(r["device_seconds"]) > 0 and 0 < float(r["eval_bits_per_byte"]) < 20
               for r in rows)
    # the table: each run's last evaluation, the same numbers as the CSV, and its ratio to xz
    table = [line for line in done.stdout.splitlines() if line.startswith("| ") and "| run |" not in line]
    last = {r["run"]: r for r in rows if r["step"] == "6"}
    assert len(table) == 2, done.stdout
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = last[cells[0]]
        assert cells[1] == row["family"] and cells[3] == "6" and cells[6] == f"{float(row['eval_bits_per_byte']):.3f}"
        assert float(cells[7]) == pytest.approx(float(row["eval_bits_per_byte"]) / xz(two_runs), abs=2e-3)
    assert f"the same held-out bytes: xz -9 {xz(two_runs):.3f}" in done.stdout

    run_dirs, points = collect([str(two_runs / "*")], tmp_path / "g.png", None)
    fig = frontier_figure(run_dirs, points)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert fig._suptitle.get_text() == "sweep: bits per byte against training compute of 2 runs, up to step 6"
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "cumulative training compute (FLOPs)"
    assert ax.get_ylabel() == "held-out bits per byte (bits/byte)"
    # compute ticks: labelled majors only (minor labels overlapped within a decade), compact and distinct
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and len(set(labels)) == len(labels) and all("e" in label for label in labels), labels
    assert not [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    assert outside(ax.get_legend(), ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("gzip -9", "xz -9", "zstd -19"):
        assert f"{name} (same held-out bytes)" in lines
    front = lines["best so far (all runs)"]
    assert list(front.get_ydata()) == [p["eval_bits_per_byte"] for p in best_so_far(points)]
    curves = [line for label, line in lines.items() if "mixer" in label]
    assert len(curves) == 2 and curves[0].get_color() != curves[1].get_color()  # one colour per family


def test_best_so_far_keeps_only_improvements():
    points = [{"flops": f, "eval_bits_per_byte": b} for f, b in ((1, 5.0), (2, 6.0), (3, 4.0), (3, 4.5), (9, 4.2))]
    assert [(p["flops"], p["eval_bits_per_byte"]) for p in best_so_far(points)] == [(1, 5.0), (3, 4.0)]


@pytest.mark.parametrize("args,message", [
    (["{missing}"], "{missing}: no such file or directory"),
    (["{empty}"], "{empty}: not a run directory (no run.json or metrics.jsonl) and holds none"),
    (["{runs}", "-o", "{out}.jpg2"], "{out}.jpg2: image must end in .png, .pdf, .svg"),
    (["{runs}", "--csv", "{tmp}/nowhere/f.csv"], "{tmp}/nowhere: no such directory for the CSV file; make it first"),
    (["{damaged}"], "{damaged}/run.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 "
                    "column 2 (char 1)); 3 bytes; restore it from run.json.bak beside it, or leave this run out"),
])
def test_bad_arguments_are_named_in_one_line_and_nothing_is_written(two_runs, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    damaged = tmp_path / "damaged"  # a run whose metrics are fine and whose run.json is not
    damaged.mkdir()
    (damaged / "metrics.jsonl").write_text(next(two_runs.glob("*/metrics.jsonl")).read_text())
    (damaged / "run.json").write_text("{x\n")
    values = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "damaged": damaged, "runs": two_runs,
              "out": tmp_path / "f", "tmp": tmp_path}
    argv = [a.format(**values) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "f.png")]
    done = run_module("memorymodels.frontier", *argv)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {message.format(**values)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "empty"]
