"""ONNX export (bpcore/onnx_export.py, Model.export_onnx, ``bpcore export``).

Every exported file is checked with ``onnx.checker`` and run in onnxruntime,
whose outputs must equal bpcore's on NumPy: to 1e-5 in float32, 1e-12 in
float64.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bpcore as bp
from bpcore.cli import main
from bpcore.errors import SettingError
from bpcore.model import NotFittedError

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install onnx)")
ort = pytest.importorskip(
    "onnxruntime", reason="running the exported files needs onnxruntime (pip install onnxruntime)"
)
from bpcore.onnx_export import (  # noqa: E402
    EXPORTERS,
    ExportExistsError,
    export_onnx,
    register_exporter,
    to_onnx,
)

TOL = {"float32": 1e-5, "float64": 1e-12}
ROOT = Path(__file__).resolve().parents[1]


def _session(model_or_path: Any) -> Any:
    if isinstance(model_or_path, (str, Path)):
        model = onnx.load(str(model_or_path))
    else:
        model = model_or_path
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x})))


def _inputs(n: int, k: int, dtype: str, seed: int = 1) -> np.ndarray:
    """Inputs with tails (|x| up to ~10) so the activations' saturated ends are tested."""
    return (3.0 * np.random.default_rng(seed).standard_normal((n, k))).astype(dtype)


ACTIVATIONS = [
    ("identity", bp.identity),
    ("relu", bp.relu),
    ("leaky_relu", lambda: bp.leaky_relu(0.2)),
    ("sigmoid", bp.sigmoid),
    ("tanh", bp.tanh),
    ("gelu", bp.gelu),
    ("softmax", bp.softmax),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize(("name", "make"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
def test_every_activation_matches_bpcore(name: str, make: Any, opset: int, dtype: str) -> None:
    net = bp.sequential(bp.dense(5, 7), make(), bp.dense(7, 3), make())
    params = net.init(0, dtype=dtype)
    x = _inputs(11, 5, dtype)
    out = _run(_session(to_onnx(net, params, opset=opset)), x)
    assert list(out) == ["y"]
    assert out["y"].dtype == np.dtype(dtype) and out["y"].shape == (11, 3)
    assert np.max(np.abs(out["y"] - bp.predict(net, params, x))) <= TOL[dtype]


def test_the_nodes_follow_the_opset_and_the_slope_is_kept() -> None:
    net = bp.sequential(bp.dense(2, 3), bp.gelu(), bp.leaky_relu(0.3), bp.dense(3, 1))
    params = net.init(0)
    ops17 = [n.op_type for n in to_onnx(net, params, opset=17).graph.node]
    ops20 = to_onnx(net, params, opset=20).graph.node
    assert "Gelu" not in ops17 and "Tanh" in ops17  # the formula, opset 17 has no Gelu
    gelu = next(n for n in ops20 if n.op_type == "Gelu")
    assert onnx.helper.get_attribute_value(gelu.attribute[0]) == b"tanh"
    leaky = next(n for n in ops20 if n.op_type == "LeakyRelu")
    assert onnx.helper.get_attribute_value(leaky.attribute[0]) == pytest.approx(0.3)


ARCHITECTURES = {
    "one dense": lambda: bp.mlp([4, 1]),
    "3-4-1 sigmoid": lambda: bp.mlp([3, 4, 1], "sigmoid", "sigmoid"),
    "deep tanh softmax": lambda: bp.mlp([8, 16, 16, 12, 4], "tanh", "softmax"),
    "gelu": lambda: bp.mlp([6, 32, 3], "gelu"),
    "nested": lambda: bp.sequential(
        bp.sequential(bp.dense(5, 6), bp.relu()), bp.sequential(bp.dense(6, 6), bp.tanh()),
        bp.dense(6, 2),
    ),
    "from_config": lambda: bp.layers.from_config(
        bp.mlp([5, 9, 3], "leaky_relu", "sigmoid").config
    ),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architectures_match_bpcore_with_a_dynamic_batch(arch: str) -> None:
    net = ARCHITECTURES[arch]()
    params = net.init(3)
    session = _session(to_onnx(net, params))
    assert session.get_inputs()[0].name == "x"
    assert session.get_inputs()[0].shape == ["batch", net.n_in]
    for n in (1, 33):
        x = _inputs(n, net.n_in, "float32", seed=n)
        y = _run(session, x)["y"]
        assert y.shape == (n, net.n_out)
        assert np.max(np.abs(y - bp.predict(net, params, x))) <= TOL["float32"]


def test_parameters_from_every_backend(xp: Any) -> None:
    net = bp.mlp([4, 8, 3], "tanh")
    params = net.init(0, dtype="float32")  # on the fixture's backend
    assert bp.backend.namespace(params[0]["W"]) is xp
    reference = net.init(0, xp=np, dtype="float32")  # the same seed: the same weights
    x = _inputs(6, 4, "float32")
    y = _run(_session(to_onnx(net, params)), x)["y"]
    assert np.max(np.abs(y - bp.predict(net, reference, x))) <= TOL["float32"]


def test_a_network_without_parameters_needs_its_input_size() -> None:
    net = bp.sequential(bp.tanh(), bp.softmax())
    with pytest.raises(SettingError, match="n_in="):
        to_onnx(net, ({}, {}))
    x = _inputs(3, 4, "float64")
    y = _run(_session(to_onnx(net, ({}, {}), n_in=4, dtype="float64")), x)["y"]
    assert np.max(np.abs(y - bp.predict(net, ({}, {}), x, validate=False))) <= TOL["float64"]


def _digits(n: int = 360) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


@pytest.mark.parametrize("scaling", ["standard", "minmax"])
def test_a_model_with_scaling_and_string_labels(scaling: str, tmp_path: Path) -> None:
    X, y = _digits()
    labels = np.array([f"digit {v}" for v in y])
    model = bp.Model([64, 24, 10], scaling=scaling, seed=1)
    model.fit(X[:300], labels[:300], epochs=2, verbose=0)
    path = model.export_onnx(tmp_path / "digits.onnx")
    session = _session(path)
    X_new = X[300:]  # raw features: the graph scales them as the model does
    out = _run(session, X_new.astype(np.float32))
    assert list(out) == ["y", "probabilities", "label"]
    assert np.max(np.abs(out["probabilities"] - model.predict_proba(X_new))) <= TOL["float32"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["scaler"] == scaling
    classes = np.array(json.loads(meta["classes"]))
    assert classes.tolist() == model.classes_.tolist()
    assert out["label"].dtype == np.int64 and out["label"].shape == (len(X_new),)
    np.testing.assert_array_equal(classes[out["label"]], model.predict(X_new))
    assert json.loads(meta["bpcore_config"]) == model.net.config
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops[:2] == ["Sub", "Div"]


def test_binary_regression_and_unscaled_float64_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)) * 5 + 2
    t = (X[:, :1] > 2).astype(np.float64)
    binary = bp.Model([3, 8, 1], loss="binary_cross_entropy", dtype="float64", seed=2)
    binary.fit(X, t, epochs=3, verbose=0)
    out = _run(_session(to_onnx(binary.net, binary.params, scaler=binary.scaler,
                                 probabilities="sigmoid", threshold=0.0)), X)
    assert np.max(np.abs(out["probabilities"] - binary.predict_proba(X))) <= TOL["float64"]
    np.testing.assert_array_equal(out["label"], binary.predict(X))

    regressor = bp.Model([3, 5, 2], loss="mse", scaling="none", seed=3)  # no fit needed
    session = _session(regressor.export_onnx(tmp_path / "sub" / "regressor.onnx"))
    out = _run(session, X.astype(np.float32))
    assert list(out) == ["y"]
    assert "classes" not in session.get_modelmeta().custom_metadata_map
    assert np.max(np.abs(out["y"] - regressor.predict(X))) <= TOL["float32"]


def test_an_unfitted_scaling_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        bp.Model([4, 2]).export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_nothing_is_overwritten_without_overwrite(tmp_path: Path) -> None:
    net = bp.mlp([3, 2])
    path = tmp_path / "net.onnx"
    path.write_bytes(b"precious")
    with pytest.raises(ExportExistsError, match="overwrite=True"):
        export_onnx(net, net.init(0), path)
    assert path.read_bytes() == b"precious"
    with pytest.raises(SettingError, match="directory"):
        export_onnx(net, net.init(0), tmp_path)
    assert export_onnx(net, net.init(0), path, overwrite=True) == path
    x = _inputs(2, 3, "float32")
    assert np.allclose(_run(_session(path), x)["y"], bp.predict(net, net.init(0), x), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]  # no temporary file left


class _Opaque:
    """A layer of someone's own: a kind without an exporter."""

    @staticmethod
    def layer(config: Any) -> bp.Layer:
        def forward(params: Any, x: Any, *, xp: Any = None) -> Any:
            return 2 * x, None

        def backward(params: Any, cache: Any, dy: Any, **kw: Any) -> Any:
            return 2 * dy, {}

        return bp.Layer(lambda *a, **k: {}, forward, backward, "double", config=config)


def test_an_unknown_layer_kind_is_named(tmp_path: Path) -> None:
    net = bp.sequential(bp.dense(2, 3), _Opaque.layer({"name": "double"}), bp.dense(3, 1))
    with pytest.raises(SettingError, match=r"layer 1 \(double\).*'double'.*register_exporter"):
        export_onnx(net, net.init(0), tmp_path / "x.onnx")
    net = bp.sequential(bp.dense(2, 3), _Opaque.layer(None))
    with pytest.raises(SettingError, match="layer 1 has no config"):
        to_onnx(net, net.init(0))
    assert not any(tmp_path.iterdir())


def test_a_new_kind_is_one_registered_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXPORTERS, "double", EXPORTERS["identity"])  # restored after the test

    @register_exporter("double", keys=("factor",))
    def _double(graph: Any, config: dict[str, Any], params: Any, x: str) -> str:
        return graph.op("Mul", x, graph.constant(config["factor"], "factor"))

    net = bp.sequential(bp.dense(2, 3), _Opaque.layer({"name": "double", "factor": 2.0}))
    params = net.init(0)
    x = _inputs(4, 2, "float32")
    y = _run(_session(to_onnx(net, params)), x)["y"]
    assert np.max(np.abs(y - bp.predict(net, params, x))) <= TOL["float32"]
    # a config key the exporter does not know is refused, not ignored
    net = bp.sequential(bp.dense(2, 3), _Opaque.layer({"name": "double", "offset": 1.0}))
    with pytest.raises(SettingError, match=r"'offset'.*does not know"):
        to_onnx(net, net.init(0))


def test_bad_arguments_are_clear_errors() -> None:
    net = bp.mlp([3, 2])
    params = net.init(0)
    with pytest.raises(SettingError, match="opset must be an int from 13"):
        to_onnx(net, params, opset=12)
    with pytest.raises(bp.DTypeError, match="float32"):
        to_onnx(net, params, dtype="float64")
    with pytest.raises(bp.ShapeError):
        to_onnx(net, bp.mlp([4, 2]).init(0))
    with pytest.raises(bp.errors.ArgumentError, match=r"model\.export_onnx"):
        to_onnx(bp.Model([3, 2], scaling="none"), params)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="probabilities"):
        to_onnx(net, params, probabilities="logits")


def test_bpcore_itself_does_not_import_onnx() -> None:
    code = ("import sys, bpcore, bpcore.model, bpcore.onnx_export, bpcore.cli; "
            "bpcore.cli.build_parser(); assert 'onnx' not in sys.modules, 'onnx imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    X, y = _digits(200)
    model = bp.Model([64, 16, 10], seed=0)
    model.fit(X, y, epochs=1, verbose=0)
    checkpoint = model.save(tmp_path / "run.npz")
    out = tmp_path / "run.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "bpcore", "export", str(checkpoint), str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and "y, probabilities, label" in done.stdout
    result = _run(_session(out), X.astype(np.float32))
    loaded = bp.Model.load(checkpoint)
    assert np.max(np.abs(result["probabilities"] - loaded.predict_proba(X))) <= TOL["float32"]
    np.testing.assert_array_equal(result["label"], loaded.predict(X))

    before = out.read_bytes()
    missing = tmp_path / "none.npz"
    cases = {  # argv -> what the one-line error says
        (str(checkpoint), str(out)): "exists; pass --overwrite",
        (str(checkpoint), str(checkpoint), "--overwrite"): "that is the CHECKPOINT",
        (str(checkpoint), str(tmp_path / "no" / "m.onnx")): "does not exist; create it",
        (str(checkpoint), str(tmp_path)): "is a directory",
        (str(missing), str(tmp_path / "m.onnx")): str(missing),
        (str(checkpoint), str(tmp_path / "m.onnx"), "--opset", "9"): "opset must be",
    }
    for argv, message in cases.items():
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bpcore: error: ") and message in err, err
        assert err.count("\n") == 1, err
    assert out.read_bytes() == before  # refused, untouched
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", str(checkpoint), str(out), "--overwrite", "--opset", "20"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert onnx.load(str(out)).opset_import[0].version == 20
