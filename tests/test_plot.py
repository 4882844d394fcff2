"""`charrnn plot`: the PNG, the text chart, and the errors, through click's CliRunner."""

import math
import shutil
import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.model import checkpoint
from charrnn.plot import load_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LN2 = math.log(2.0)


def run(*args):
    return CliRunner().invoke(main, ["plot", *(str(a) for a in args)])


def png_size(path):
    """(width, height) in pixels from the PNG header."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


BASE_HIDDEN = 8


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A real model directory (charrnn.training.loop.train, a few steps), whatever its files hold."""
    from conftest import make_text

    from charrnn.training.loop import Budget, train

    root = tmp_path_factory.mktemp("plot-base")
    text = root / "corpus.txt"
    text.write_text(make_text(2000))
    train(
        text,
        root / "m",
        overrides={"hidden": BASE_HIDDEN, "seq_length": 8, "batch_size": 2, "eval_every": 5},
        budget=Budget(steps=5),
        threads=1,
    )
    return root / "m"


@pytest.fixture
def make_model_dir(base_model):
    """make_model_dir(path, records): a copy of the real model whose metrics log holds `records`."""

    def make(path, records, hidden=BASE_HIDDEN):
        assert hidden == BASE_HIDDEN, "the base model has BASE_HIDDEN units"
        shutil.copytree(base_model, path)
        (path / checkpoint.METRICS_FILE).unlink()
        for record in records:
            checkpoint.append_metrics(path, record)
        return path

    return make


def record(step, val_bpc, train_bits=None, elapsed=None):
    return {
        "step": step,
        "elapsed": step * 0.5 if elapsed is None else elapsed,
        "train_loss": None if train_bits is None else train_bits * LN2,
        "val_bpc": val_bpc,
        "chars_per_sec": 1000.0,
    }


def chart_body(output):
    """The plotting area's rows (between the y-axis label line and the x axis), gutter removed."""
    return chart_rows(output)[1]


def chart_rows(output):
    """({y tick label: row}, [plotting area rows]) of a text chart."""
    lines = output.splitlines()
    start = lines.index("bits/char") + 1
    end = next(i for i in range(start, len(lines)) if set(lines[i].strip()) <= {"+", "-"})
    gutter = lines[end].index("+") + 1
    labels = {
        line[: gutter - 2].strip(): row for row, line in enumerate(lines[start:end]) if line[: gutter - 2].strip()
    }
    return labels, [line[gutter:] for line in lines[start:end]]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    from conftest import make_text

    from charrnn.training.loop import Budget, train

    root = tmp_path_factory.mktemp("plot")
    text = root / "corpus.txt"
    text.write_text(make_text(4000))
    out = root / "tiny"
    train(
        text,
        out,
        overrides={"hidden": 16, "seq_length": 8, "batch_size": 2, "eval_every": 5},
        budget=Budget(steps=30),
        threads=1,
    )
    return out


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make every `import matplotlib...` fail, as in an environment without the extra."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


# --- reading the metrics ------------------------------------------------------------------------


def test_training_loss_is_converted_from_nats_to_bits(tmp_path, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(10, 3.0, train_bits=2.0), record(20, 1.5)], hidden=8)
    curves = load_curves(d)
    np.testing.assert_allclose(curves.train_bpc[0], 2.0)
    assert math.isnan(curves.train_bpc[1])
    assert curves.best_val_bpc == 1.5 and curves.hidden == 8 and curves.name == "m"


def test_torn_last_line_is_skipped_and_records_sorted_by_step(tmp_path, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(20, 2.0), record(10, 3.0)])
    with open(d / checkpoint.METRICS_FILE, "a") as f:
        f.write('{"step": 30, "val')
    curves = load_curves(d)
    assert curves.steps.tolist() == [10.0, 20.0]


# --- PNG ----------------------------------------------------------------------------------------


def test_png_of_a_trained_model_goes_to_the_model_dir_by_default(trained_dir):
    pytest.importorskip("matplotlib")
    (trained_dir / "curves.png").write_bytes(b"an old picture")
    result = run(trained_dir)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(trained_dir / "curves.png")
    width, height = png_size(trained_dir / "curves.png")
    assert width > height  # two panels side by side
    assert not list(trained_dir.glob(".curves.png.*"))  # the temporary file was renamed into place


def test_png_out_and_single_panel(tmp_path, make_model_dir):
    pytest.importorskip("matplotlib")
    d = make_model_dir(tmp_path / "m", [record(100 * i, 3.0 / i, 3.2 / i) for i in range(1, 6)])
    both, steps = tmp_path / "both.png", tmp_path / "steps.png"
    assert run(d, "--out", both).exit_code == 0
    result = run(d, "--out", steps, "--x", "steps")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(steps)
    assert png_size(steps)[0] < png_size(both)[0]
    assert not (d / "curves.png").exists()


def test_png_with_one_point_and_no_training_loss(tmp_path, make_model_dir):
    pytest.importorskip("matplotlib")
    d = make_model_dir(tmp_path / "m", [record(5, 4.2)])
    assert run(d, "--x", "time").exit_code == 0
    assert (d / "curves.png").read_bytes()[:8] == PNG_MAGIC


def test_bad_out_is_a_one_line_error(tmp_path, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(5, 4.2)])
    result = run(d, "--out", tmp_path / "nowhere" / "c.png")
    assert result.exit_code != 0 and "no such directory" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_matplotlib_says_how_to_install_it(tmp_path, no_matplotlib, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(5, 4.2, 4.0)])
    result = run(d)
    assert result.exit_code != 0
    assert 'pip install "charrnn[plot]"' in result.output and "--ascii" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (d / "curves.png").exists()


# --- text chart ---------------------------------------------------------------------------------


def test_ascii_chart_of_a_trained_model(trained_dir, no_matplotlib):
    result = run(trained_dir, "--ascii")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 22 and max(map(len, lines)) <= 79
    assert lines[0].startswith("tiny, 16 hidden units")
    assert "bits/char" in lines and lines[-2].strip() == "step"
    assert "o validation" in lines[-1] and "x training" in lines[-1]
    body = "".join(chart_body(result.output))
    assert "o" in body and "x" in body and body.count("*") == 1
    best = min(r["val_bpc"] for r in checkpoint.read_metrics(trained_dir))
    assert f"best {best:.3f}" in lines[-1]
    assert f"{checkpoint.read_meta(trained_dir)['best_val_bpc']:.3f}" in lines[0]


def test_ascii_points_sit_where_their_values_are(tmp_path, make_model_dir):
    # val 3 and then 1 at the last step; training 2 bits between them, at the first step.
    d = make_model_dir(tmp_path / "m", [record(10, 3.0, train_bits=2.0), record(20, 1.0)])
    result = run(d, "--ascii", "--width", 40, "--height", 16)
    assert result.exit_code == 0, result.output
    labels, body = chart_rows(result.output)
    where = {mark: [(r, c) for r, row in enumerate(body) for c, ch in enumerate(row) if ch == mark] for mark in "ox*"}
    [(first_row, first_col)], [(train_row, train_col)], [(best_row, best_col)] = where["o"], where["x"], where["*"]
    assert (labels["3"], labels["2"], labels["1"]) == (first_row, train_row, best_row)
    assert first_col == train_col == len(body[0]) // 2 and best_col == len(body[0]) - 1


@pytest.mark.parametrize("width, height", [(30, 10), (50, 14), (120, 40)])
def test_ascii_fits_the_size_asked_for_with_many_points(tmp_path, width, height, make_model_dir):
    rng = np.random.default_rng(0)
    records = [
        record(
            100 * i,
            1.4 + 3 * math.exp(-i / 300),
            None if i % 7 == 0 else 1.3 + 3 * math.exp(-i / 300) + 0.1 * rng.standard_normal(),
        )
        for i in range(1, 3001)
    ]
    d = make_model_dir(tmp_path / "m", records)
    result = run(d, "--ascii", "--width", width, "--height", height)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == height and max(map(len, lines)) <= width
    assert "200k" in result.output  # compact step labels
    assert "best 1.4" in lines[-1]


def test_ascii_with_one_point_and_no_training_loss(tmp_path, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(1000, 3.21)])
    result = run(d, "--ascii")
    assert result.exit_code == 0, result.output
    assert "*" in "".join(chart_body(result.output))
    assert "training: none recorded" in result.output and "3.210" in result.output


def test_ascii_against_time_and_both(tmp_path, make_model_dir):
    d = make_model_dir(
        tmp_path / "m", [record(i, 3.0 - 0.1 * i, 3.1 - 0.1 * i, elapsed=60.0 * i) for i in range(1, 11)]
    )
    time_chart = run(d, "--ascii", "--x", "time").output
    assert "training time (minutes)" in time_chart and "step\n" not in time_chart
    both = run(d, "--ascii", "--x", "both").output
    assert "training time (minutes)" in both and "\n" + " " * 37 + "step\n" in both


def test_ascii_rejects_out_and_tiny_sizes(tmp_path, make_model_dir):
    d = make_model_dir(tmp_path / "m", [record(5, 4.2)])
    assert run(d, "--ascii", "--out", tmp_path / "x.png").exit_code == 2
    result = run(d, "--ascii", "--width", 10)
    assert result.exit_code == 2 and "--width" in result.output


# --- errors -------------------------------------------------------------------------------------


def test_missing_model_dir(tmp_path):
    result = run(tmp_path / "nope", "--ascii")
    assert result.exit_code == 1 and "no such model directory" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("metrics", [None, "", '{"step": 5, "val_'])
def test_no_evaluations_yet(tmp_path, metrics, make_model_dir):
    d = make_model_dir(tmp_path / "m", [])
    if metrics is not None:
        (d / checkpoint.METRICS_FILE).write_text(metrics)
    for args in ([], ["--ascii"]):
        result = run(d, *args)
        assert result.exit_code == 1 and "no evaluations yet" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_log_without_meta_still_plots_and_a_plain_dir_is_no_model(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run(plain, "--ascii")
    assert result.exit_code == 1 and "not a model directory" in result.output
    checkpoint.append_metrics(plain, record(5, 4.2))
    result = run(plain, "--ascii")
    assert result.exit_code == 0 and result.output.startswith("plain, best validation 4.200")
