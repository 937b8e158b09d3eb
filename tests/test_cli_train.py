"""``bpcore train``: the default job, flags, outputs, resume, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import backend_info

from bpcore.checkpoint import load_checkpoint
from bpcore.cli import main
from bpcore.metrics import HISTORY_FIELDS, read_metrics

#: A small, fast run on digits (64 features, 10 classes).
SMALL = ["train", "--layers", "64,16,10", "--epochs", "2", "--batch-size", "64"]
RESULT = re.compile(
    r"^test accuracy (\d+\.\d)% \((\d+)/359\) on digits — numpy, \d+\.\d s$"
)


def _env() -> dict[str, str]:
    """A subprocess environment with one BLAS/OpenMP thread (tiny matmuls; busy machine)."""
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bpcore", *args], capture_output=True, text=True,
        timeout=300, env=_env(),
    )


def one_line_error(err: str) -> str:
    """The single ``bpcore: error: ...`` line of stderr (and that there is nothing else)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bpcore: error: "), err
    return lines[0]


# --------------------------------------------------------------------------
# the default main job and --help, as a user runs them


def test_default_job_reaches_97_percent_on_digits() -> None:
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    match = RESULT.match(proc.stdout.strip())
    assert match, proc.stdout
    assert float(match.group(1)) >= 97.0
    assert "Traceback" not in proc.stderr
    assert "epoch 30/30" in proc.stderr  # one log line per epoch, on stderr


def test_help_is_grouped_with_defaults_and_examples() -> None:
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    text = proc.stdout
    for heading in ("data:", "model:", "training:", "backend:", "output:", "examples:"):
        assert heading in text
    assert "(default: digits)" in text and "(default: adamw)" in text
    assert "--layers SIZES" in text and "bpcore train --resume" in text
    top = run_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "info" in top.stdout


# --------------------------------------------------------------------------
# in-process runs


def test_small_run_prints_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert RESULT.match(out.strip()), out
    assert err == ""  # --quiet: no progress, no epoch lines


def test_progress_lines_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL) == 0
    out, err = capsys.readouterr()
    assert RESULT.match(out.strip())
    assert "digits: 1258 train / 180 validation / 359 test samples" in err
    assert "model 64-16-10 relu" in err
    assert re.search(r"^epoch 1/2  loss \d\.\d{4}  acc \d+\.\d\d%  val_loss", err, re.M)
    assert re.search(r"^epoch 2/2 .* samples/s$", err, re.M)


def test_other_backend_and_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--backend", "array_api_strict", "--dtype", "float64", "-q"]) == 0
    assert "on digits — array_api_strict" in capsys.readouterr().out


def test_real_valued_targets_report_the_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    np.savez(tmp_path / "reg.npz", X=X, y=X[:, :1] * 2 + 0.5)
    assert main(["train", "--data", str(tmp_path / "reg.npz"), "--layers", "3,8,1",
                 "--epochs", "2", "-q"]) == 0
    assert re.match(r"^test loss \S+ \(mse\) on reg", capsys.readouterr().out)


def test_metrics_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path, json_path = tmp_path / "m.csv", tmp_path / "out" / "m.json"
    json_path.parent.mkdir()
    assert main([*SMALL, "--epochs", "3", "-q", "--metrics", str(csv_path)]) == 0
    assert main([*SMALL, "--epochs", "3", "-q", "--metrics", str(json_path)]) == 0
    capsys.readouterr()

    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_FIELDS) and len(lines) == 4
    rows = read_metrics(csv_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(0 < r["accuracy"] <= 1 and 0 < r["val_accuracy"] <= 1 for r in rows)
    assert rows[2]["loss"] < rows[0]["loss"]

    doc = json.loads(json_path.read_text())
    assert [r["epoch"] for r in doc["history"]] == [1, 2, 3]
    assert doc["history"][0]["loss"] == pytest.approx(rows[0]["loss"])  # same run, same seed
    assert set(doc["test"]) == {"loss", "accuracy"} and 0 < doc["test"]["accuracy"] <= 1
    assert doc["run"]["layers"] == [64, 16, 10] and doc["backend"] == "numpy"


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert main([*SMALL, "-q", "--plot", str(path)]) == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1000, 400)
    assert len(data) > 10_000


def test_resume_continues_bit_for_bit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    straight, half = tmp_path / "straight.npz", tmp_path / "half.npz"
    run = ["train", "--layers", "64,16,10", "--batch-size", "32", "-q"]
    assert main([*run, "--epochs", "4", "--save", str(straight)]) == 0
    assert main([*run, "--epochs", "2", "--save", str(half)]) == 0
    assert load_checkpoint(half).epoch == 2
    # the same file may be resumed from and saved to, with --overwrite
    assert main(["train", "--resume", str(half), "--save", str(half), "--overwrite",
                 "--epochs", "4", "-q",
                 "--metrics", str(tmp_path / "m.csv")]) == 0
    out = [line.split(" — ")[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(out) == 3 and out[2] == out[0]  # resumed 2 + 2 reports what 4 straight did
    a, b = load_checkpoint(straight), load_checkpoint(half)
    assert a.epoch == b.epoch == 4
    for pa, pb in zip(a.params, b.params):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    np.testing.assert_array_equal(a.opt_state.m[0]["W"], b.opt_state.m[0]["W"])
    assert a.meta["history"][-1]["loss"] == b.meta["history"][-1]["loss"]
    assert [r["epoch"] for r in read_metrics(tmp_path / "m.csv")] == [1, 2, 3, 4]

    # resuming a finished run trains nothing and reports the same result
    assert main(["train", "--resume", str(straight), "-q"]) == 0
    assert capsys.readouterr().out.split(" — ")[0] == out[0]


def test_resume_refuses_contradicting_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.npz"
    assert main([*SMALL, "--epochs", "1", "-q", "--save", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(path), "--lr", "0.5", "--epochs", "2"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--lr 0.5 contradicts the resumed run" in line and "drop --lr" in line


# --------------------------------------------------------------------------
# bad input: one line, exit status 2, no traceback


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("1,2,3,0\n4,five,6,1\n")
    labels = tmp_path / "labels.csv"
    rows = [f"{i % 3},{i % 5},{i % 7},{i % 5}" for i in range(40)]  # labels 0..4
    labels.write_text("\n".join(rows) + "\n")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"keep me")
    return {"malformed": malformed, "labels": labels, "corrupt": corrupt,
            "existing": existing, "dir": tmp_path}


BAD_CASES = {
    "layers-first": (["--layers", "10,32,10"],
                     "--layers starts with 10 but digits has 64 features; "
                     "use --layers 64,32,10"),
    "layers-last": (["--layers", "64,32,5"],
                    "--layers ends with 5 but digits has 10 classes (labels 0..9)"),
    "layers-text": (["--layers", "64,x,10"], "give at least two comma-separated"),
    "missing-data": (["--data", "{dir}/nowhere.csv"], "no such file"),
    "missing-mnist": (["--data", "mnist:{dir}/no-mnist"], "does not exist"),
    "unknown-data": (["--data", "imagenet"], "unknown data set 'imagenet'"),
    "malformed-data": (["--data", "{malformed}"], "line 2, column 2: 'five' is not a number"),
    "labels-out-of-range": (["--data", "{labels}", "--layers", "3,8,2"],
                            "labels has 5 classes (labels 0..4)"),
    "corrupt-checkpoint": (["--resume", "{corrupt}"], "corrupt.npz"),
    "missing-checkpoint": (["--resume", "{dir}/none.npz"], "no such checkpoint"),
    "existing-save": (["--save", "{existing}"], "pass --overwrite"),
    "metrics-extension": (["--metrics", "{dir}/m.txt"], "must end in .csv or .json"),
    "plot-extension": (["--plot", "{dir}/p.jpg"], "must end in .png"),
    "batch-size": (["--batch-size", "0"], "--batch-size must be >= 1"),
    "bad-split": (["--val", "0.6", "--test", "0.5"], "val + test must be below 1"),
    "backend-missing": (["--backend", "cupy"], "cupy"),
    "numpy-device": (["--device", "cuda:0"], "numpy arrays live on 'cpu' only"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_clear_line(
    case: str, bad_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    flags, expected = BAD_CASES[case]
    if case == "backend-missing" and backend_info("cupy").available:
        pytest.skip("cupy is usable here, so --backend cupy is not an error")
    argv = ["train", "--epochs", "1", *(f.format(**bad_files) for f in flags)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected.format(**bad_files) in one_line_error(err)
    assert bad_files["existing"].read_bytes() == b"keep me"


def test_overwrite_replaces_an_existing_save(
    bad_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target = bad_files["existing"]
    assert main([*SMALL, "-q", "--save", str(target), "--overwrite"]) == 0
    assert load_checkpoint(target).epoch == 2


def test_unknown_choice_is_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--optimizer", "rmsprop"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'rmsprop'" in err and "Traceback" not in err


def test_missing_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bpcore.plot

    real = bpcore.plot.importlib.util.find_spec
    monkeypatch.setattr(
        bpcore.plot.importlib.util, "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main([*SMALL, "--plot", str(tmp_path / "p.png")]) == 2
    assert 'pip install "bpcore[plot]"' in one_line_error(capsys.readouterr().err)


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    proc = run_cli("train", "--data", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such file" in one_line_error(proc.stderr)


# --------------------------------------------------------------------------
# nothing the user had is lost; every refusal is one line, before any training


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bpcore: error: "), err
    assert re.search(match, err), err


def test_outputs_never_overwrite_inputs_or_existing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "my.csv"
    rows = "\n".join(f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40))
    data.write_text(rows + "\n")
    before = data.read_bytes()
    _one_line_error(capsys, ["train", "--data", str(data), "--metrics", str(data)],
                    "--data file of this run")
    _one_line_error(capsys, ["train", "--data", str(data), "--metrics", str(data),
                             "--overwrite"], "--data file of this run")
    assert data.read_bytes() == before
    for flag, name in (("--metrics", "old.csv"), ("--plot", "old.png"), ("--save", "old.npz")):
        old = tmp_path / name
        old.write_bytes(b"precious")
        _one_line_error(capsys, [*SMALL, flag, str(old)], "exists; pass --overwrite")
        assert old.read_bytes() == b"precious"
    assert main([*SMALL, "-q", "--metrics", str(tmp_path / "old.csv"), "--overwrite"]) == 0
    assert (tmp_path / "old.csv").read_text().startswith("epoch,")
    _one_line_error(capsys, [*SMALL, "--metrics", str(tmp_path / "a.json"),
                             "--save", str(tmp_path / "a.json")], "the same file as")


@pytest.mark.parametrize("where", ["directory", "missing-dir", "is-a-dir"])
def test_bad_output_paths_fail_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = {"directory": tmp_path, "missing-dir": tmp_path / "nope" / "m.csv",
              "is-a-dir": tmp_path / "d.csv"}[where]
    if where == "is-a-dir":
        target.mkdir()
    start = time.perf_counter()
    _one_line_error(capsys, ["train", "--epochs", "500", "--metrics", str(target)],
                    "is a directory|does not exist|must end in")
    assert time.perf_counter() - start < 20  # refused before 500 epochs could run


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["train", "--epochs", "x"], ["train", "--bogus"], ["train", "--backend", "nope"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("bpcore: error: ")
        assert "--help" in err


def test_devices_and_sizes_are_checked_first(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--device", "bogus"], "numpy arrays live on 'cpu'")
    if backend_info("torch").available:
        _one_line_error(capsys, ["train", "--backend", "torch", "--device", "cuda:0", "-q"],
                        "torch cannot use 'cuda:0'|cuda")
        _one_line_error(capsys, ["train", "--backend", "torch", "--device", "bogus"],
                        "torch has no device 'bogus'")
    _one_line_error(capsys, ["train", "--layers", "64,99999999999,10"],
                    r"needs [\d,.]+ GiB .* use smaller layers")


def test_a_diverging_run_saves_nothing_non_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = tmp_path / "ck.npz"
    assert main([*SMALL, "--epochs", "1", "-q", "--save", str(ck)]) == 0
    kept = ck.read_bytes()
    _one_line_error(capsys, ["train", "--layers", "64,16,10", "--optimizer", "sgd",
                             "--lr", "1e9", "--epochs", "3", "-q", "--save", str(ck),
                             "--overwrite"], r"epoch 1, batch \d+ of \d+.*lower the learning")
    assert ck.read_bytes() == kept  # the earlier run's checkpoint is untouched


def test_labels_as_users_have_them_in_a_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    named = tmp_path / "named.csv"
    kinds = np.array(["cat", "dog", "emu"])[np.arange(60) % 3]
    named.write_text("a,b,c,kind\n" + "\n".join(
        f"{x[0] + 3 * (k == 'dog'):.3f},{x[1]:.3f},{x[2] + 3 * (k == 'emu'):.3f},{k}"
        for x, k in zip(X, kinds)) + "\n")
    assert main(["train", "--data", str(named), "--epochs", "20", "-q"]) == 0
    assert re.match(r"^test accuracy \d+\.\d% \(\d+/12\) on named", capsys.readouterr().out)
    big = tmp_path / "big.csv"  # labels 1e12 and 1e12 + 1: two classes, two outputs
    big.write_text("\n".join(f"{v:.3f},{int(1e12) + (v > 0)}" for v in X[:, 0]) + "\n")
    assert main(["train", "--data", str(big), "--epochs", "2", "-q"]) == 0
    one = tmp_path / "one.csv"
    one.write_text("\n".join(f"{v:.3f},4" for v in X[:, 0]) + "\n")
    _one_line_error(capsys, ["train", "--data", str(one), "--epochs", "2"], "same label|one class")


def test_tiny_data_trains_and_reports_on_every_sample(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", "xor", "--epochs", "300", "-q"]) == 0
    assert re.match(r"^training accuracy \d+\.\d% \(\d/4\) on xor", capsys.readouterr().out)
    _one_line_error(capsys, ["train", "--data", "xor", "--test", "0.5", "--val", "0.25"],
                    "too few|no training sample")
