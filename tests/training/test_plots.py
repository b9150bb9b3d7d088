"""The loss figure, read off the matplotlib objects: title, units on every axis, legends outside the data, no
tokens panel, gzip and xz reference lines on the bits-per-byte panel."""

import pytest

from memorymodels import fileio, metrics
from memorymodels.plot import curves, loss_figure

BASELINES = {"gzip": 2.4, "bz2": 2.3, "xz": 2.2, "zstd": 2.1}


def fake_run(run_dir, losses, *, bpb=True):
    run_dir.mkdir(parents=True)
    fileio.write_json(run_dir / "run.json", {"model": {"embedding_values": None, "parameters": 1000},
                                           "config": {"data": {"context": 64}},
                                           "heldout": {"baselines": BASELINES, "bytes_per_target": 3.0}})
    for step, loss in enumerate(losses, 1):
        evaluated = step % 2 == 0
        metrics.append_metrics(run_dir, {"step": step, "loss": loss, "eval_loss": loss + 0.1 if evaluated else None,
                                      "eval_bits_per_byte": (loss + 0.1) / 2.08 if evaluated and bpb else None,
                                      "tokens": step * 512, "flops": step * 10**9, "device_seconds": step * 2.0})
    return run_dir


def outside(legend, ax) -> bool:
    """The legend's box does not overlap the axes' box (drawn figure, display coordinates)."""
    renderer = ax.figure.canvas.get_renderer()
    a, b = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return a.x0 >= b.x1 or a.x1 <= b.x0 or a.y0 >= b.y1 or a.y1 <= b.y0


def test_loss_figure_has_title_units_outside_legends_and_reference_lines(tmp_path):
    a = fake_run(tmp_path / "sweep" / "a", [5.0, 4.0, 3.0, 2.5])
    b = fake_run(tmp_path / "sweep" / "b", [5.0, 4.5, 4.2, 4.0])
    assert curves(a)["bits_per_byte"] == [(2, 2 * 10**9, pytest.approx(4.1 / 2.08)), (4, 4 * 10**9, 1.25)]
    fig = loss_figure([a, b])
    fig.canvas.draw()
    assert fig._suptitle.get_text() == "sweep: loss and bits per byte of 2 runs, up to step 4"
    loss_ax, bpb_ax = fig.axes[:2]
    assert len(fig.axes) == 2  # no tokens-seen panel repeating the steps
    assert loss_ax.get_ylabel() == "cross entropy (nats/token)"
    assert bpb_ax.get_ylabel() == "held-out bits per byte (bits/byte)"
    assert bpb_ax.get_xlabel() == "optimizer steps"
    for ax in (loss_ax, bpb_ax):
        assert ax.get_legend() is not None and outside(ax.get_legend(), ax)
    lines = {line.get_label(): line for line in bpb_ax.get_lines()}
    assert lines["gzip -9 (same held-out bytes)"].get_ydata()[0] == 2.4
    assert lines["xz -9 (same held-out bytes)"].get_ydata()[0] == 2.2
    assert [line.get_label() for line in loss_ax.get_lines()] == ["a (train)", "a (eval)", "b (train)", "b (eval)"]


def test_runs_without_bits_per_byte_get_the_loss_panel_only(tmp_path):
    old = fake_run(tmp_path / "old", [5.0, 4.0], bpb=False)
    fig = loss_figure([old])
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "optimizer steps"
    assert fig._suptitle.get_text() == "old: loss, up to step 2"


@pytest.mark.parametrize("command", ["plot", "frontier"])
def test_metrics_with_a_bad_byte_or_a_string_for_a_number_are_left_out_with_a_note(tmp_path, capsys, command):
    import importlib

    run_dir = fake_run(tmp_path / "run", [3.0, 2.5, 2.0, 1.8])
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 5, "loss": "1.7\xff"}\n{"step": 6, "loss": "abc", "eval_loss": 1.9}\n')
    out = tmp_path / "figure.png"
    main = importlib.import_module(f"memorymodels.{command}").main
    assert main([str(run_dir), "--out" if command == "plot" else "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: {run_dir / 'metrics.jsonl'}: 1 unreadable line(s) (line 5); 1 value(s) left out ('loss': " \
           "\"abc\" is not a number)" in err, err
    assert "Traceback" not in err and out.stat().st_size > 0


@pytest.mark.parametrize("command", ["plot", "frontier"])
def test_an_image_into_a_missing_folder_is_refused_before_anything_runs(tmp_path, capsys, command):
    import importlib

    run_dir = fake_run(tmp_path / "run", [3.0, 2.5])
    out = tmp_path / "no" / "such" / "figure.png"
    main = importlib.import_module(f"memorymodels.{command}").main
    assert main([str(run_dir), "--out" if command == "plot" else "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {out.parent}: no such directory for the image; make it first", err
    assert not (tmp_path / "no").exists()
