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
from bpcore.layers.arch import MNIST1D_CNN, MNIST1D_GRU
from bpcore.layers.arch import build as build_arch
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


# --------------------------------------------------------------------------
# every layer kind beyond dense networks: convolutions, pooling, reshapes,
# normalization, dropout, embeddings, branches and the recurrent layers

#: ONNX ops onnxruntime's CPU provider runs in float32 only (1.32: "Could not find an
#: implementation", or "does not support double"): a float64 file with one of them
#: runs in onnx's own reference evaluator instead, unless onnxruntime has learnt to.
NO_FLOAT64 = {"Conv", "AveragePool", "RNN", "GRU", "LSTM"}


def _randomized(tree_: Any, seed: int) -> Any:
    """Every array of a parameter (or state) tree moved off its starting value (layer
    norm's ones and zeros, learned initial states of zeros), so each one counts."""
    rng = np.random.default_rng(seed)
    return bp.tree.map_arrays(
        lambda a: (np.asarray(a) + 0.5 * rng.standard_normal(np.shape(a))).astype(a.dtype),
        tree_)


def _compare(net: Any, params: Any, xs: list[np.ndarray], case: str, *, state: Any = None,
             **options: Any) -> float:
    """Export, check, run in onnxruntime on each input and compare with bp.predict;
    the largest absolute difference. A float64 file onnxruntime cannot run (ops in
    :data:`NO_FLOAT64`) runs in ``onnx.reference.ReferenceEvaluator``."""
    weights = [a for a in bp.tree.leaves(params) if bp.tree.is_array(a)]
    dtype = np.dtype(xs[0].dtype if xs[0].dtype.kind == "f" else weights[0].dtype)
    if not weights:  # a network without parameters: the dtype is the export's choice
        options["dtype"] = str(dtype)
    model = to_onnx(net, params, state=state, **options)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    try:
        quiet = ort.SessionOptions()
        quiet.log_severity_level = 4  # the float64 refusals below are expected, not news
        session = ort.InferenceSession(model.SerializeToString(), quiet,
                                       providers=["CPUExecutionProvider"])
        outs = [_run(session, x)["y"] for x in xs]
    except Exception as exc:  # onnxruntime's own error types
        if not (dtype == np.float64 and ops & NO_FLOAT64 and (
                "implementation" in str(exc) or "double" in str(exc))):
            raise
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        outs = [evaluator.run(None, {"x": x})[0] for x in xs]
    worst = 0.0
    for x, y in zip(xs, outs):
        ref = bp.predict(net, params, x, state=state, validate=bool(weights))
        assert y.dtype == dtype and y.shape == ref.shape, (y.dtype, y.shape, ref.shape)
        worst = max(worst, float(np.max(np.abs(y - ref))))
    assert worst <= TOL[str(dtype)], (case, worst)
    return worst


def _batch(shape: tuple[int, ...], dtype: str, n: int = 6, seed: int = 2) -> np.ndarray:
    return (2.0 * np.random.default_rng(seed).standard_normal((n, *shape))).astype(dtype)


#: case -> (network, per-sample input shape): one or more per layer kind and setting.
LAYER_CASES: dict[str, tuple[Any, tuple[int, ...]]] = {
    "conv1d": (lambda: bp.sequential(bp.conv1d(2, 4, 3), bp.flatten()), (2, 11)),
    "conv1d stride padding dilation": (
        lambda: bp.sequential(bp.conv1d(3, 5, 4, stride=2, padding=3, dilation=2)), (3, 17)),
    "conv1d as MNIST-1D's": (
        lambda: bp.sequential(bp.conv1d(1, 25, 5, stride=2, padding=1), bp.relu()), (1, 40)),
    "conv2d": (lambda: bp.sequential(bp.conv2d(2, 3, 3)), (2, 7, 6)),
    "conv2d pairs": (lambda: bp.sequential(
        bp.conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))), (2, 9, 8)),
    "max_pool1d": (lambda: bp.sequential(bp.max_pool1d(2)), (3, 10)),
    "max_pool1d stride padding dilation": (
        lambda: bp.sequential(bp.max_pool1d(3, stride=2, padding=1, dilation=2)), (3, 13)),
    "max_pool2d": (lambda: bp.sequential(bp.max_pool2d(2)), (2, 8, 6)),
    "max_pool2d pairs": (
        lambda: bp.sequential(bp.max_pool2d((3, 2), stride=(2, 1), padding=(1, 1))), (2, 9, 7)),
    "avg_pool1d": (lambda: bp.sequential(bp.avg_pool1d(3, stride=2)), (3, 12)),
    "avg_pool1d padding": (lambda: bp.sequential(bp.avg_pool1d(3, stride=2, padding=1)), (3, 12)),
    "avg_pool1d padding not counted": (
        lambda: bp.sequential(bp.avg_pool1d(4, stride=3, padding=2, count_include_pad=False)),
        (2, 11)),
    "avg_pool2d": (lambda: bp.sequential(bp.avg_pool2d(2)), (2, 6, 8)),
    "avg_pool2d padding not counted": (
        lambda: bp.sequential(bp.avg_pool2d((3, 2), padding=(1, 1), count_include_pad=False)),
        (2, 7, 6)),
    "flatten": (lambda: bp.sequential(bp.conv2d(1, 2, 3), bp.flatten(), bp.dense(50, 3)),
                (1, 7, 7)),
    "reshape": (lambda: bp.sequential(bp.reshape((2, 12)), bp.conv1d(2, 3, 3),
                                      bp.reshape((5, 6)), bp.max_pool1d(2)), (24,)),
    "dropout": (lambda: bp.sequential(bp.dense(5, 8), bp.dropout(0.5), bp.relu(),
                                      bp.dense(8, 3)), (5,)),
    "layer_norm": (lambda: bp.sequential(bp.dense(5, 8), bp.layer_norm(8), bp.dense(8, 3)), (5,)),
    "layer_norm over two axes": (
        lambda: bp.sequential(bp.conv1d(2, 3, 3), bp.layer_norm((3, 8))), (2, 10)),
    "layer_norm per step": (
        lambda: bp.sequential(bp.gru(3, 4), bp.layer_norm(4), bp.flatten()), (6, 3)),
    "residual": (lambda: bp.sequential(bp.dense(4, 6), bp.residual(bp.dense(6, 6), bp.tanh()),
                                       bp.dense(6, 2)), (4,)),
    "residual conv": (lambda: bp.sequential(
        bp.residual(bp.conv1d(3, 3, 3, padding=1), bp.relu(), bp.conv1d(3, 3, 3, padding=1))),
        (3, 9)),
    "parallel concat": (lambda: bp.sequential(bp.parallel(
        bp.dense(4, 3), bp.sequential(bp.dense(4, 5), bp.relu()), bp.dense(4, 1))), (4,)),
    "parallel concat channels": (lambda: bp.sequential(bp.parallel(
        bp.conv1d(2, 3, 3, padding=1), bp.conv1d(2, 4, 5, padding=2))), (2, 8)),
    "parallel sum": (lambda: bp.sequential(bp.parallel(
        bp.dense(4, 3), bp.sequential(bp.dense(4, 3), bp.gelu()), bp.dense(4, 3),
        combine="sum")), (4,)),
}
for _kind in ("rnn", "gru", "lstm"):
    _make = getattr(bp, _kind)
    for _seq in (True, False):
        _end = (bp.flatten(),) if _seq else ()
        LAYER_CASES[f"{_kind} seq={_seq}"] = (
            lambda m=_make, s=_seq, e=_end: bp.sequential(m(3, 5, return_sequences=s), *e),
            (7, 3))
        LAYER_CASES[f"{_kind} reverse seq={_seq}"] = (
            lambda m=_make, s=_seq, e=_end: bp.sequential(
                m(3, 4, return_sequences=s, reverse=True, truncate=2), *e), (6, 3))
        LAYER_CASES[f"{_kind} learned state seq={_seq}"] = (
            lambda m=_make, s=_seq, e=_end: bp.sequential(
                m(2, 4, return_sequences=s, initial_state="learned"), *e), (5, 2))
        LAYER_CASES[f"bidirectional {_kind} seq={_seq}"] = (
            lambda m=_make, s=_seq, e=_end: bp.sequential(
                bp.bidirectional(m(3, 5, return_sequences=s)), *e), (7, 3))
        LAYER_CASES[f"bidirectional {_kind} learned state seq={_seq}"] = (
            lambda m=_make, s=_seq, e=_end: bp.sequential(
                bp.bidirectional(m(2, 3, return_sequences=s, initial_state="learned")), *e),
            (4, 2))
    LAYER_CASES[f"stacked {_kind}"] = (
        lambda m=_make: bp.sequential(bp.bidirectional(m(3, 4)), m(8, 5, return_sequences=False),
                                      bp.dense(5, 2)), (6, 3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_each_layer_kind_matches_bpcore(case: str, dtype: str) -> None:
    make, shape = LAYER_CASES[case]
    net = make()
    params = _randomized(net.init(0, dtype=dtype), seed=1)
    xs = [_batch(shape, dtype), _batch(shape, dtype, n=1, seed=3)]
    _compare(net, params, xs, case, n_in=shape)


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_layer_norm_in_every_opset(opset: int) -> None:
    net = bp.sequential(bp.dense(5, 8), bp.layer_norm(8, eps=1e-3), bp.dense(8, 3))
    for dtype in ("float32", "float64"):
        params = _randomized(net.init(0, dtype=dtype), seed=4)
        _compare(net, params, [_batch((5,), dtype)], f"layer_norm opset {opset}", opset=opset)
    ops = {n.op_type for n in to_onnx(net, net.init(0), opset=opset).graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17)


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_a_network_of_every_family_in_old_and_new_opsets(opset: int) -> None:
    net = bp.sequential(
        bp.conv1d(2, 4, 3, padding=1), bp.batch_norm(4), bp.relu(), bp.max_pool1d(2),
        bp.residual(bp.conv1d(4, 4, 3, padding=1), bp.gelu()), bp.avg_pool1d(2, padding=1),
        bp.reshape((3, 4)), bp.layer_norm(4), bp.bidirectional(bp.gru(4, 3)),
        bp.lstm(6, 3, return_sequences=False), bp.dropout(0.1),
        bp.parallel(bp.dense(3, 2), bp.dense(3, 2), combine="sum"), bp.softmax(),
    )
    params, state = _trained_state(net, (2, 8))
    _compare(net, params, [_batch((2, 8), "float32") + 1.5], f"every family, opset {opset}",
             state=state, opset=opset)


def test_the_recurrent_nodes_and_their_gate_order() -> None:
    """One ONNX node per layer, its gate blocks in ONNX's order (GRU z, r, h with
    linear_before_reset; LSTM i, o, f, c) from PyTorch's (r, z, n; i, f, g, o)."""
    H = 2
    for kind, order in (("gru", (1, 0, 2)), ("lstm", (0, 3, 1, 2))):
        net = bp.bidirectional(getattr(bp, kind)(3, H))
        params = net.init(0)
        model = to_onnx(net, params, n_in=(5, 3))
        node = next(n for n in model.graph.node if n.op_type == kind.upper())
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["direction"] == b"bidirectional" and attrs["hidden_size"] == H
        assert attrs.get("linear_before_reset", 0) == (kind == "gru")
        W = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer
                                            if i.name == node.input[1]))
        want = np.stack([np.concatenate([p[g * H:(g + 1) * H] for g in order])
                         for p in (params["W_ih"], params["W_ih_reverse"])])
        np.testing.assert_array_equal(W, want)


def test_a_recurrent_network_takes_any_number_of_steps() -> None:
    net = bp.sequential(bp.bidirectional(bp.lstm(2, 4, return_sequences=False)), bp.dense(8, 3))
    params = _randomized(net.init(0), seed=5)
    model = to_onnx(net, params)  # (time, 2) per sample, time left dynamic
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "dim1", 2]
    _compare(net, params, [_batch((t, 2), "float32") for t in (1, 5, 40)], "lstm any length")


def _trained_state(net: Any, shape: tuple[int, ...], dtype: str = "float32") -> Any:
    """Parameters and a TrainState after a few training steps (running statistics moved)."""
    opt = bp.sgd(0.05)
    params = net.init(0, dtype=dtype)
    state = bp.train_state(net, opt, params, seed=3)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    for i in range(4):
        x = (_batch(shape, dtype, n=16, seed=10 + i) + 1.5).astype(dtype)
        params, state, _ = step(params, state, x, np.arange(16) % 2)
    return params, state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("where", "net", "shape"), [
    ("after dense", lambda: bp.sequential(bp.dense(4, 6), bp.batch_norm(6), bp.relu(),
                                          bp.dropout(0.3), bp.dense(6, 2)), (4,)),
    ("after conv1d", lambda: bp.sequential(bp.conv1d(2, 3, 3), bp.batch_norm(3), bp.relu(),
                                           bp.flatten(), bp.dense(24, 2)), (2, 10)),
    ("after conv2d, in a residual", lambda: bp.sequential(
        bp.conv2d(1, 3, 3, padding=1),
        bp.residual(bp.conv2d(3, 3, 3, padding=1), bp.batch_norm(3)), bp.flatten(),
        bp.dense(3 * 5 * 4, 2)), (1, 5, 4)),
    ("in a parallel branch", lambda: bp.sequential(bp.parallel(
        bp.sequential(bp.dense(4, 3), bp.batch_norm(3)), bp.dense(4, 2)), bp.dense(5, 2)),
        (4,)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_batch_norm_uses_the_running_statistics(where: str, net: Any, shape: Any,
                                                dtype: str) -> None:
    net = net()
    params, state = _trained_state(net, shape, dtype)
    moved = [a for a in bp.tree.leaves(state.layers) if bp.tree.is_array(a)]
    assert moved and not np.allclose(moved[0], 0.0)  # the statistics have moved
    xs = [_batch(shape, dtype) + 1.5]
    _compare(net, params, [x.astype(dtype) for x in xs], f"batch_norm {where}", state=state)
    _compare(net, params, [x.astype(dtype) for x in xs], f"batch_norm {where}",
             state=state.layers)
    with pytest.raises(SettingError, match=r"batch_norm.*state="):
        to_onnx(net, params)


@pytest.mark.parametrize("time", [None, 5])
def test_an_embedding_takes_int64_indices(time: int | None) -> None:
    if time is None:  # one index per sample
        net = bp.sequential(bp.embedding(11, 4), bp.dense(4, 3))
        index = np.random.default_rng(0).integers(0, 11, size=(9,))
    else:  # a sequence of them, into a GRU
        net = bp.sequential(bp.embedding(11, 4), bp.gru(4, 3, return_sequences=False),
                            bp.dense(3, 2))
        index = np.random.default_rng(0).integers(0, 11, size=(9, time))
    params = net.init(0)
    model = to_onnx(net, params)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    _compare(net, params, [index, index[:1]], f"embedding time={time}")


MNIST1D = {
    "cnn": lambda: build_arch(MNIST1D_CNN, (40,)),
    "gru": lambda: build_arch(MNIST1D_GRU, (40,)),
}


@pytest.mark.parametrize("name", list(MNIST1D))
def test_the_mnist1d_networks_as_models(name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's MNIST-1D CNN and bidirectional GRU, trained a little as Models on
    sequences of 40 values (the scaling in the graph), through ``bpcore export``."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 40)).cumsum(axis=1) * 0.3 + 1.0
    y = (X[:, :20].mean(axis=1) > X[:, 20:].mean(axis=1)).astype(int) + 2 * (X[:, 0] > 1)
    model = bp.Model(MNIST1D[name](), seed=0, batch_size=40)
    model.fit(X[:80], y[:80], epochs=2, verbose=0)
    checkpoint = model.save(tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), str(out)]) == 0
    assert "input x (batch x 40, float32, raw features)" in capsys.readouterr().out
    session = _session(out)
    assert session.get_inputs()[0].shape == ["batch", 40]
    result = _run(session, X[80:].astype(np.float32))
    diff = float(np.max(np.abs(result["probabilities"] - model.predict_proba(X[80:]))))
    assert diff <= TOL["float32"]
    np.testing.assert_array_equal(model.classes_[result["label"]], model.predict(X[80:]))
    assert model.predict_proba(X[80:]).shape == result["probabilities"].shape


def test_a_model_with_batch_norm_and_dropout(tmp_path: Path) -> None:
    X, y = _digits()
    net = bp.sequential(bp.dense(64, 32), bp.batch_norm(32), bp.relu(), bp.dropout(0.2),
                        bp.dense(32, 10))
    model = bp.Model(net, seed=0)
    model.fit(X[:300], y[:300], epochs=2, verbose=0)
    out = _run(_session(model.export_onnx(tmp_path / "bn.onnx")), X[300:].astype(np.float32))
    assert np.max(np.abs(out["probabilities"] - model.predict_proba(X[300:]))) <= TOL["float32"]


def test_a_recurrent_model_on_steps_of_features(tmp_path: Path) -> None:
    """(samples, time, features) inputs: the scaler, one value per entry, fixes the length."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8, 3)) * 4 + 2
    y = (X[:, :, 0].sum(axis=1) > 16).astype(int)
    model = bp.Model(bp.sequential(bp.lstm(3, 5, return_sequences=False), bp.dense(5, 2)),
                     seed=0)
    model.fit(X, y, epochs=2, verbose=0)
    session = _session(model.export_onnx(tmp_path / "lstm.onnx"))
    assert session.get_inputs()[0].shape == ["batch", 8, 3]
    out = _run(session, X.astype(np.float32))
    assert np.max(np.abs(out["probabilities"] - model.predict_proba(X))) <= TOL["float32"]


def test_a_model_on_integer_indices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 20, size=(50, 6))
    y = (X.sum(axis=1) > 57).astype(int)
    model = bp.Model(bp.sequential(bp.embedding(20, 4), bp.gru(4, 3, return_sequences=False),
                                   bp.dense(3, 2)), seed=0)
    model.fit(X, y, epochs=2, verbose=0)
    checkpoint = model.save(tmp_path / "e.npz")
    assert main(["export", str(checkpoint), str(tmp_path / "e.onnx")]) == 0
    assert "input x (batch x dim1, int64 indices)" in capsys.readouterr().out
    out = _run(_session(tmp_path / "e.onnx"), X.astype(np.int64))
    assert np.max(np.abs(out["probabilities"] - model.predict_proba(X))) <= TOL["float32"]
    np.testing.assert_array_equal(model.classes_[out["label"]], model.predict(X))


def test_every_layer_kind_bpcore_has_an_exporter() -> None:
    kinds = {*bp.layers.LAYERS, *bp.layers.ACTIVATIONS, "sequential", "residual", "parallel"}
    assert kinds <= set(EXPORTERS), sorted(kinds - set(EXPORTERS))


def test_a_bad_layer_inside_a_network_is_named_and_nothing_written(tmp_path: Path) -> None:
    net = bp.sequential(bp.conv1d(1, 2, 3), bp.residual(_Opaque.layer({"name": "double"})),
                        bp.flatten())
    with pytest.raises(SettingError, match=r"layer 1\.f \(double\).*register_exporter"):
        export_onnx(net, net.init(0), tmp_path / "x.onnx", n_in=(1, 8))
    params = list(net.init(0))
    params[0] = {"W": np.zeros((2, 1, 5), np.float32), "b": np.zeros(2, np.float32)}
    with pytest.raises(bp.ShapeError, match=r"layer 0"):
        export_onnx(net, tuple(params), tmp_path / "x.onnx", n_in=(1, 8))
    net = bp.sequential(bp.dense(2, 3), bp.batch_norm(3))
    with pytest.raises(SettingError, match="state="):
        export_onnx(net, net.init(0), tmp_path / "x.onnx")
    with pytest.raises(SettingError, match=r"n_in=4 .*takes samples of shape \(\?, 4\)"):
        export_onnx(bp.sequential(bp.gru(4, 2)), bp.sequential(bp.gru(4, 2)).init(0),
                    tmp_path / "x.onnx", n_in=4)
    with pytest.raises(bp.ShapeError, match=r"cannot take samples of shape \(2, 3\).*kernel"):
        export_onnx(bp.conv1d(2, 3, 5), bp.conv1d(2, 3, 5).init(0), tmp_path / "x.onnx",
                    n_in=(2, 3))
    assert not any(tmp_path.iterdir())

