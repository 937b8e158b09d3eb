"""bpcore.metrics, bpcore.plot and bpcore.progress: the helpers around training."""

from __future__ import annotations

import io
import json
import logging
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import bpcore as bp
from bpcore.metrics import (
    HISTORY_FIELDS,
    count_correct,
    predicted_labels,
    read_metrics,
    write_metrics,
)
from bpcore.plot import MissingDependencyError, plot_history, require_matplotlib
from bpcore.progress import epoch_bar, log_to_stderr, progress_wanted

HISTORY = [
    {"epoch": 1, "loss": 0.9, "accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.5,
     "seconds": 0.5, "samples_per_s": 1000.0},
    {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": None, "val_accuracy": None,
     "seconds": 0.4, "samples_per_s": 1200.0},
]


# --------------------------------------------------------------------------
# labels and counts, on every backend


def test_predicted_labels_and_count_correct(xp: ModuleType) -> None:
    y = xp.asarray([[0.1, 2.0, -1.0], [3.0, -1.0, 0.0], [0.0, 0.0, 5.0]])
    labels = predicted_labels(y)
    assert bp.namespace(labels) is xp
    assert bp.to_numpy(labels).tolist() == [1, 0, 2]
    assert int(count_correct(y, xp.asarray([1, 1, 2]))) == 2
    one = xp.asarray([[-0.5], [0.5], [0.0]])  # one output: a threshold
    assert bp.to_numpy(predicted_labels(one)).tolist() == [0, 1, 0]
    assert bp.to_numpy(predicted_labels(one, threshold=-1.0)).tolist() == [1, 1, 1]


# --------------------------------------------------------------------------
# metrics files


def test_csv_round_trip(tmp_path: Path) -> None:
    path = write_metrics(HISTORY, tmp_path / "m.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_FIELDS)
    assert lines[2] == "2,0.5,0.8,,,0.4,1200.0"  # None: an empty cell
    assert read_metrics(path) == HISTORY


def test_json_round_trip_with_extra(tmp_path: Path) -> None:
    path = write_metrics(HISTORY, tmp_path / "sub" / "m.json",
                         extra={"test": {"loss": np.float32(0.25), "accuracy": 0.9}})
    doc = json.loads(path.read_text())
    assert doc["history"] == HISTORY and doc["test"] == {"loss": 0.25, "accuracy": 0.9}
    assert read_metrics(path) == HISTORY


def test_non_finite_values_become_null(tmp_path: Path) -> None:
    path = write_metrics([{"epoch": 1, "loss": float("nan")}], tmp_path / "m.json")
    assert json.loads(path.read_text())["history"][0]["loss"] is None


def test_metrics_extension_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        write_metrics(HISTORY, tmp_path / "m.txt")


# --------------------------------------------------------------------------
# plots


def test_plot_history_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_history(HISTORY, tmp_path / "curves.png", title="a test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 400)
    assert len(data) > 10_000


def test_plot_history_svg_and_without_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    regression = [{"epoch": i, "loss": 1.0 / i} for i in range(1, 4)]
    text = plot_history(regression, tmp_path / "curves.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "no accuracy recorded" in text


def test_plot_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        plot_history(HISTORY, tmp_path / "curves.jpg")
    with pytest.raises(ValueError, match="no training history"):
        plot_history([], tmp_path / "curves.png")


def test_plot_does_not_change_the_matplotlib_backend(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    plot_history(HISTORY, tmp_path / "curves.png")
    assert matplotlib.get_backend() == before


def test_missing_matplotlib_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import bpcore.plot

    real = bpcore.plot.importlib.util.find_spec
    monkeypatch.setattr(
        bpcore.plot.importlib.util, "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r'pip install "bpcore\[plot\]"'):
        require_matplotlib()
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(MissingDependencyError, bp.BpcoreError)


# --------------------------------------------------------------------------
# progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_only_where_it_can_be_seen() -> None:
    pytest.importorskip("tqdm")
    assert progress_wanted(False, _Terminal()) is False
    assert progress_wanted(True, io.StringIO()) is True
    assert progress_wanted(None, _Terminal()) is True
    assert progress_wanted(None, io.StringIO()) is False


def test_disabled_bar_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = epoch_bar(100, "epoch 1/1", enabled=False)
    bar.update(50)
    bar.set_postfix_str("loss 1.0")
    bar.close()
    assert capsys.readouterr().err == ""


def test_log_to_stderr_adds_and_removes_its_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("bpcore")
    handlers = list(logger.handlers)
    with log_to_stderr():
        logging.getLogger("bpcore.model").info("epoch 1/1  loss 0.5")
    logging.getLogger("bpcore.model").info("not shown")
    assert logger.handlers == handlers
    assert capsys.readouterr().err == "epoch 1/1  loss 0.5\n"
    with log_to_stderr(enabled=False):
        logging.getLogger("bpcore.model").info("quiet")
    assert capsys.readouterr().err == ""


def test_docstring_examples_run() -> None:
    import doctest

    import bpcore.metrics

    failures, tried = doctest.testmod(bpcore.metrics)
    assert tried > 0 and failures == 0
