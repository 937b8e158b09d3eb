"""MNIST-1D (bpcore/data/mnist1d.py), architecture strings (bpcore/layers/arch.py)
and ``bpcore train --data mnist1d --arch ...`` (bpcore/commands/train.py)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

import bpcore as bp
from bpcore.cli import main
from bpcore.commands.train import (
    DATA_DEFAULTS,
    MNIST1D_CNN,
    MNIST1D_GRU,
    MNIST1D_MLP,
    RECURRENT_DEFAULTS,
)
from bpcore.data import load_dataset
from bpcore.data.mnist1d import load_mnist1d
from bpcore.layers import output_shape
from bpcore.layers.arch import build

pytest.importorskip("mnist1d", reason='MNIST-1D needs pip install "bpcore[mnist1d]"')


@pytest.fixture(scope="module")
def built() -> dict[str, np.ndarray]:
    """The data set built once for this module (about 3 s), in memory; the global
    generators that make_dataset seeds are put back as they were."""
    np.random.seed(5)  # noqa: NPY002 (the global generator a user may rely on)
    random.seed(5)
    want = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    arrays = load_mnist1d()
    assert (np.random.rand(), random.random()) == want  # noqa: NPY002
    return arrays


@pytest.fixture(scope="module")
def cache(built: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same arrays as a cache file (as load_mnist1d(path) writes it)."""
    from bpcore.data.mnist1d import _write

    path = tmp_path_factory.mktemp("mnist1d") / "mnist1d.npz"
    _write(path, built)
    return path


def test_built_locally_as_the_paper_has_it(built: dict[str, np.ndarray], cache: Path,
                                           tmp_path: Path) -> None:
    cached = load_mnist1d(cache)
    for k in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(cached[k], built[k])
    assert built["x"].shape == (4000, 40) and built["x_test"].shape == (1000, 40)
    assert np.bincount(built["y"]).min() > 350  # ten balanced classes
    ds = load_dataset(f"mnist1d:{cache}")
    assert (ds.name, ds.n_classes, ds.X_test.shape) == ("mnist1d", 10, (1000, 40))


def test_a_bad_cache_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "m.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(bp.DataError, match=r"m.npz: not an MNIST-1D cache written by bpcore"):
        load_mnist1d(bad)


def test_the_papers_networks_from_their_strings() -> None:
    cnn = build(MNIST1D_CNN, (40,))
    assert [c["name"] for c in cnn.config["layers"]][:2] == ["reshape", "conv1d"]
    assert output_shape(cnn, (40,)) == (10,)
    assert [tuple(p["W"].shape) for p in cnn.init(0) if p] == [
        (25, 1, 5), (25, 25, 3), (25, 25, 3), (125, 10)]
    mlp = build(MNIST1D_MLP, (40,))
    assert [c["name"] for c in mlp.config["layers"]] == ["dense", "relu", "residual", "dense"]
    other = build("conv2d(4, 3, padding=1), batch_norm, relu, max_pool2d(2), flatten, "
                  "dropout(0.1), layer_norm, parallel(dense(3), dense(3), combine='sum')",
                  (1, 8, 8))
    assert output_shape(other, (1, 8, 8)) == (3,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dens(10)", r"unknown layer 'dens' \(did you mean dense\?\)"),
        ("dense(10", r"cannot read the architecture at character 9: dense\(10>>>"),
        ("dense(n)", r"dense\(n\): arguments must be numbers, strings or tuples, got 'n'"),
        ("dense(10, bias=False)", r"dense\(10, bias=False\): dense\(\) got an unexpected"),
        ("conv1d(3)", r"conv1d\(\) missing 1 required positional argument: 'kernel_size'"),
        ("conv2d(3, 3)", r"conv2d takes samples of shape \(channels, height, width\) but "
         r"gets \(40,\); put reshape\(...\) before it"),
        ("conv1d(3, 5), dense(2)", r"dense takes flat samples but gets \(3, 36\): put flatten"),
        ("residual(dense(5))", r"residual\(\): the block maps inputs of shape \(40,\) to \(5,\)"),
        ("__import__('os').system('x')", r"is not a layer"),
        ("conv1d(3, 50)", r"input size 40 \(padded 40\) is smaller than the kernel's span 50"),
        ("", "an architecture is a comma-separated list of layers"),
    ],
)
def test_bad_architecture_strings_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(bp.SettingError, match=message):
        build(spec, (40,))


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["train", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_command_on_mnist1d(cache: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = f"mnist1d:{cache}"
    code, out, _ = _run(capsys, "--data", data, "--epochs", "2", "--quiet", "--save",
                        str(tmp_path / "cnn.npz"))
    assert code == 0 and re.search(r"test accuracy [0-9.]+% \(\d+/1000\) on mnist1d", out)
    ck = bp.Model.load(tmp_path / "cnn.npz")
    assert ck.extra["run"]["arch"] == MNIST1D_CNN and ck.extra["run"]["scaling"] == "none"
    assert ck.epoch == 2 and ck.batch_size == 100
    # resumed: the arch kept; a different one refused
    code, out, _ = _run(capsys, "--resume", str(tmp_path / "cnn.npz"), "--epochs", "3",
                        "--quiet", "--data", data)
    assert code == 0 and "test accuracy" in out
    code, _, err = _run(capsys, "--resume", str(tmp_path / "cnn.npz"), "--arch", MNIST1D_MLP,
                        "--quiet")
    assert code == 2 and "--arch" in err and "contradicts the resumed run" in err
    # the MLP by its string, and a JSON config
    code, out, _ = _run(capsys, "--data", data, "--epochs", "1", "--quiet", "--arch",
                        MNIST1D_MLP)
    assert code == 0 and "test accuracy" in out
    config = tmp_path / "net.json"
    config.write_text(json.dumps(build("flatten,dense(10)", (40,)).config))
    code, out, _ = _run(capsys, "--data", data, "--epochs", "1", "--quiet", "--arch",
                        str(config))
    assert code == 0 and "test accuracy" in out


def test_train_command_with_the_papers_gru(cache: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``--arch`` with a recurrent layer trains by the recurrent recipe, saves, resumes;
    a JSON config of the same network gets the same recipe; flags still win."""
    data = f"mnist1d:{cache}"
    code, out, _ = _run(capsys, "--data", data, "--arch", MNIST1D_GRU, "--epochs", "1",
                        "--quiet", "--save", str(tmp_path / "gru.npz"))
    assert code == 0 and re.search(r"test accuracy [0-9.]+% \(\d+/1000\) on mnist1d", out)
    ck = bp.Model.load(tmp_path / "gru.npz")
    recipe = {**DATA_DEFAULTS["mnist1d"], **RECURRENT_DEFAULTS["mnist1d"]}
    run = ck.extra["run"]
    for key in ("optimizer", "lr", "weight_decay", "batch_size", "scaling", "val"):
        assert run[key] == recipe[key], key
    assert run["arch"] == MNIST1D_GRU and ck.batch_size == recipe["batch_size"]
    assert [c["name"] for c in ck.net.config["layers"]] == [
        "reshape", "bidirectional", "flatten", "dense"]
    code, out, _ = _run(capsys, "--resume", str(tmp_path / "gru.npz"), "--epochs", "2",
                        "--quiet", "--data", data, "--save", str(tmp_path / "gru.npz"),
                        "--overwrite")
    assert code == 0 and bp.Model.load(tmp_path / "gru.npz").epoch == 2
    config = tmp_path / "gru.json"
    config.write_text(json.dumps(ck.net.config))
    code, _, _ = _run(capsys, "--data", data, "--epochs", "1", "--quiet", "--arch", str(config),
                      "--lr", "0.003", "--save", str(tmp_path / "json.npz"))
    run = bp.Model.load(tmp_path / "json.npz").extra["run"]
    assert code == 0 and run["lr"] == 0.003 and run["batch_size"] == recipe["batch_size"]
    assert run["weight_decay"] == recipe["weight_decay"]


def test_another_optimizer_does_not_take_the_recipes_weight_decay(
        cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The recipe's weight decay is AdamW's; with --optimizer adam (or sgd) it would be
    an L2 term of the gradient, which ruined the paper's GRU (30-37%): such a run gets
    the library's default decay for that optimizer, unless --weight-decay says otherwise."""
    data = f"mnist1d:{cache}"
    for extra, want in ((["--optimizer", "adam"], 0.0),
                        (["--optimizer", "adam", "--weight-decay", "0.01"], 0.01),
                        ([], DATA_DEFAULTS["mnist1d"]["weight_decay"])):
        path = tmp_path / f"run{len(extra)}.npz"
        code, _, _ = _run(capsys, "--data", data, "--arch", "flatten,dense(10)", "--epochs",
                          "1", "--quiet", "--save", str(path), *extra)
        run = bp.Model.load(path).extra["run"]
        assert code == 0 and run["weight_decay"] == want, extra
        assert run["lr"] == DATA_DEFAULTS["mnist1d"]["lr"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "dense(100),relu,dense(9)"], r"--arch gives 9 outputs per sample but "
         r"mnist1d has 10 classes: end it with dense\(10\)"),
        (["--arch", "dense(10)", "--layers", "40,10"], r"--arch describes the whole network: "
         r"drop --layers"),
        (["--activation", "tanh"], r"--activation shapes a --layers network; on mnist1d"),
        (["--arch", "dense(10),relux"], r"--arch: unknown layer 'relux' \(did you mean relu\?\)"),
        (["--arch", "missing.json"], r"--arch missing.json: cannot read the file"),
        (["--arch", "gru(6),dense(10)"], r"--arch: dense\(10\): dense takes flat samples but "
         r"gets \(40, 6\): put flatten before it"),
        (["--arch", "bidirectional(dense(6)),flatten,dense(10)"],
         r"--arch: bidirectional\(dense\(6\)\): bidirectional wraps one rnn, gru or lstm"),
        (["--arch", "reshape(2,4,5),gru(6),flatten,dense(10)"], r"gru takes samples of shape "
         r"\(time, features\) but gets \(2, 4, 5\); put reshape\(time, features\)"),
    ],
)
def test_train_command_refuses_bad_architectures(
    cache: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = _run(capsys, "--data", f"mnist1d:{cache}", "--epochs", "1", *args)
    assert code == 2
    assert re.search(message, err), err
