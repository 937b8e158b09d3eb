"""Whatever a caller passes, the public API either works or raises a BpcoreError,
and never changes what it was given.

Hypothesis draws inputs around the valid ones (shapes, dtypes, values, label
ranges, hyper-parameters of the wrong type or range, NaN/Inf, empty and
one-sample batches) for the builders (``bp.mlp``, ``bp.dense``, the
activations, the optimizers), the functional entry points (``train_step``,
``value_and_grad``, ``predict``) and ``Model.fit``/``predict``. A raw
``ValueError`` from deep inside, a warning, or a mutated input fails the test;
so does an accepted batch whose result is not finite. The reproducers of
issue 12 that these properties found are pinned as plain tests at the end.
"""

from __future__ import annotations

import math
import warnings
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from gradcheck import flat_snapshot

import bpcore as bp

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (in the test extra)")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

#: Values a hyper-parameter or a size might be given as, valid or not.
ODD_SCALARS = st.one_of(
    st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "a", "0.1", True, False, [1], np.int64(4), np.float32(0.5), 1j]),
)


def _works_or_refuses(fn: Any, *inputs: Any) -> Any:
    """``fn()``'s result, or ``None`` when it raised a BpcoreError; anything
    else (another exception, a warning, a changed input) fails."""
    before = flat_snapshot(inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = fn()
    except bp.BpcoreError as exc:
        assert str(exc), "a BpcoreError must say what is wrong"
        event(f"refused: {type(exc).__name__}")  # --hypothesis-show-statistics
        result = None
    else:
        event("accepted")
    after = flat_snapshot(inputs)
    assert len(before) == len(after)
    for i, (old, new) in enumerate(zip(before, after)):
        np.testing.assert_array_equal(new, old, err_msg=f"input array {i} was changed")
    return result


@SETTINGS
@given(st.lists(ODD_SCALARS, min_size=0, max_size=4), st.sampled_from(["relu", "tanh", "x", 3]))
def test_mlp_builds_or_refuses(sizes: list[Any], activation: Any) -> None:
    net = _works_or_refuses(lambda: bp.mlp(sizes, activation))
    if net is not None:
        assert net.n_in == int(sizes[0]) and net.n_out == int(sizes[-1])


@SETTINGS
@given(ODD_SCALARS, ODD_SCALARS)
def test_dense_and_leaky_relu_build_or_refuse(a: Any, b: Any) -> None:
    layer = _works_or_refuses(lambda: bp.dense(a, b))
    if layer is not None:
        assert layer.shapes() == {"W": (int(a), int(b)), "b": (int(b),)}
    act = _works_or_refuses(lambda: bp.leaky_relu(a))
    if act is not None:
        assert math.isfinite(act.config["alpha"])


@SETTINGS
@given(st.sampled_from(["sgd", "adam", "adamw"]), ODD_SCALARS, ODD_SCALARS)
def test_optimizers_build_or_refuse(name: str, lr: Any, other: Any) -> None:
    make = getattr(bp, name)
    keyword = {"sgd": "momentum", "adam": "eps", "adamw": "weight_decay"}[name]
    opt = _works_or_refuses(lambda: make(lr=lr, **{keyword: other}))
    if opt is not None:  # an accepted optimizer takes a finite step
        params = bp.dense(2, 2).init(0, dtype="float64")
        grads = {"W": np.ones((2, 2)), "b": np.ones(2)}
        new, _ = _works_or_refuses(lambda: opt.update(grads, opt.init(params), params), params)
        assert np.all(np.isfinite(new["W"])) and np.all(np.isfinite(new["b"]))


#: A batch drawn around the valid one for a 3-4-2 classifier in float32.
BATCHES = st.fixed_dictionaries({
    "rows": st.integers(0, 5),
    "cols": st.sampled_from([3, 3, 3, 2, 4]),
    "ndim": st.sampled_from([2, 2, 2, 1, 3]),
    "dtype": st.sampled_from(["float32", "float32", "float64", "int64", "bool"]),
    "fill": st.sampled_from([0.5, 0.5, float("nan"), float("inf"), 1e39, -1e6]),
    "labels": st.sampled_from(["ok", "ok", "negative", "too_big", "float", "short", "2d"]),
    "entry": st.sampled_from(["train_step", "value_and_grad", "predict"]),
    "loss": st.sampled_from(["softmax_cross_entropy", "softmax_cross_entropy", "mse",
                             "binary_cross_entropy"]),
})


def _batch(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rows, cols = spec["rows"], spec["cols"]
    shape = {1: (cols,), 2: (rows, cols), 3: (rows, cols, 2)}[spec["ndim"]]
    x = rng.normal(size=shape)
    if x.size and spec["dtype"].startswith("float"):
        x.flat[0] = spec["fill"]
    with np.errstate(over="ignore"):  # 1e39 as float32 is inf: one more bad value
        x = x.astype(spec["dtype"])
    labels = rng.integers(0, 2, size=rows)
    t = {
        "ok": labels, "negative": labels - 3, "too_big": labels + 2,
        "float": labels.astype(np.float32), "short": labels[:-1],
        "2d": labels[:, None],
    }[spec["labels"]]
    if spec["loss"] != "softmax_cross_entropy" and spec["labels"] in ("ok", "float"):
        t = np.eye(2, dtype=np.float32)[labels]  # one-hot values for mse / BCE
    return x, t


@SETTINGS
@given(BATCHES)
def test_functional_entry_points_work_or_refuse(spec: dict[str, Any]) -> None:
    net = bp.mlp([3, 4, 2], "tanh")
    params = net.init(0, dtype="float32")
    x, t = _batch(spec)
    loss = spec["loss"]
    if spec["entry"] == "train_step":
        opt = bp.adam(lr=0.01)
        state = opt.init(params)
        out = _works_or_refuses(
            lambda: bp.train_step(net, loss, opt)(params, state, x, t), params, state, x, t)
        values = None if out is None else [out[2], *bp.tree.arrays(out[0])]
    elif spec["entry"] == "value_and_grad":
        out = _works_or_refuses(lambda: bp.value_and_grad(net, loss, params, x, t), params, x, t)
        values = None if out is None else [out[0], *bp.tree.arrays(out[1])]
    else:
        out = _works_or_refuses(lambda: bp.predict(net, params, x), params, x)
        values = None if out is None else [out]
    if values is not None:  # accepted: then the batch was a valid one, and so is the result
        assert x.ndim == 2 and x.shape[0] > 0 and x.dtype == np.float32
        assert all(np.all(np.isfinite(np.asarray(v))) for v in values)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(BATCHES, st.sampled_from(["standard", "none"]))
def test_model_fit_works_or_refuses(spec: dict[str, Any], scaling: str) -> None:
    x, t = _batch({**spec, "rows": spec["rows"] * 4})
    model = bp.Model([3, 4, 2], batch_size=4, scaling=scaling, seed=0)
    history = _works_or_refuses(lambda: model.fit(x, t, epochs=1, verbose=0), x, t)
    if history is not None:
        assert math.isfinite(history["loss"][-1])
        probabilities = _works_or_refuses(lambda: model.predict_proba(x), x)
        assert probabilities is not None and np.all(np.isfinite(probabilities))


# --------------------------------------------------------------------------
# the reproducers of issue 12 these properties turned up


def test_leaky_relu_slope_must_be_a_finite_number() -> None:
    with pytest.raises(bp.SettingError, match=r"alpha must be a real number, got 'a'"):
        bp.leaky_relu("a")  # type: ignore[arg-type]
    with pytest.raises(bp.SettingError, match=r"got inf"):
        bp.leaky_relu(float("inf"))


@pytest.mark.parametrize("value", [0.01, np.float32(0.01), np.array(0.01), Fraction(1, 100),
                                   Decimal("0.01")], ids=lambda v: type(v).__name__)
def test_any_real_number_type_is_a_number(value: Any) -> None:
    assert bp.leaky_relu(value).config["alpha"] == pytest.approx(0.01)
    assert bp.adam(lr=value).config["lr"] == pytest.approx(0.01)
    assert bp.sgd(lr=value, momentum=value).config["momentum"] == pytest.approx(0.01)


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.array(3)],
                         ids=lambda v: type(v).__name__)
def test_any_integral_type_is_an_int(value: Any) -> None:
    assert bp.dense(value, 2).shapes() == {"W": (3, 2), "b": (2,)}
    assert bp.Model([3, 2], batch_size=value).batch_size == 3


def test_sizes_from_numpy_shapes_are_welcome() -> None:
    x = np.zeros((5, 3))
    net = bp.mlp([x.shape[1], np.int64(4), 2])
    assert (net.n_in, net.n_out) == (3, 2)
    assert isinstance(net.config["layers"][0]["n_in"], int)  # JSON-able config
    assert bp.dense(np.int32(3), 2).shapes() == {"W": (3, 2), "b": (2,)}


def test_train_step_refuses_an_optimizer_given_by_name() -> None:
    net = bp.mlp([3, 2])
    with pytest.raises(bp.ArgumentError, match=r"must be an Optimizer such as bp.adam\(\)"):
        bp.train_step(net, "mse", "adam")  # type: ignore[arg-type]
    with pytest.raises(bp.ArgumentError, match=r"must be a Layer"):
        bp.train_step("mlp", "mse", bp.adam())  # type: ignore[arg-type]


def test_an_empty_batch_is_refused_as_such() -> None:
    net = bp.mlp([3, 2])
    params = net.init(0)
    with pytest.raises(bp.ShapeError, match=r"x is an empty batch \(0 samples\)"):
        bp.value_and_grad(net, "softmax_cross_entropy", params,
                          np.zeros((0, 3), np.float32), np.zeros(0, np.int64))


def test_inputs_beyond_float32_are_refused_without_a_warning() -> None:
    X = np.full((40, 3), 1e39)
    model = bp.Model([3, 4, 2], scaling="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(bp.NonFiniteError, match=r"too large for float32"):
            model.fit(X, np.arange(40) % 2, epochs=1, verbose=0)
