"""Bad input fails at the public boundary with the documented error and a message
that names the problem — through ``train_step(...)(...)``, ``value_and_grad``
and ``predict`` — and leaves what the caller passed untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import flat_snapshot

import bpcore as bp
from bpcore.backend import backend_name

N_IN, N_CLASSES, BATCH = 3, 3, 4

#: Every entry point that takes a batch, and the ones that also take targets.
ENTRIES = ["train_step", "value_and_grad", "predict"]
TARGET_ENTRIES = ["train_step", "value_and_grad"]


def _call(entry: str, net: bp.Layer, loss: str, params: Any, x: Any, t: Any) -> Any:
    if entry == "train_step":
        opt = bp.sgd(lr=0.1, momentum=0.9)
        return bp.train_step(net, loss, opt)(params, opt.init(params), x, t)
    if entry == "value_and_grad":
        return bp.value_and_grad(net, loss, params, x, t)
    return bp.predict(net, params, x)


def _here(host: Any, dtype: str | None = "float32") -> Any:
    """A host array (or nested list) on the current default backend."""
    b = bp.get_backend()
    host = np.asarray(host)
    if dtype is None or host.dtype.kind in "iub":
        return b.asarray(host)
    return b.asarray(host, dtype=getattr(b.xp, dtype))


def _other_backend() -> str:
    """An installed backend other than the current default."""
    here = bp.get_backend().name
    for name in ("numpy", "torch", "array_api_strict", "jax"):
        if name != here and bp.backends()[name].available:
            return name
    pytest.skip("needs a second backend")  # pragma: no cover


@pytest.fixture
def classifier(xp: ModuleType) -> tuple[bp.Layer, Any, Any, Any]:
    """A 3-5-3 classifier in float32 with a good batch: ``(net, params, x, labels)``."""
    net = bp.mlp([N_IN, 5, N_CLASSES], "tanh")
    params = net.init(0)
    x = _here(np.random.default_rng(0).normal(size=(BATCH, N_IN)))
    labels = _here(np.array([0, 2, 1, 2]))
    return net, params, x, labels


def _raises_and_keeps(
    error: type[Exception], match: str, fn: Callable[[], Any], *inputs: Any
) -> None:
    """``fn()`` raises ``error`` matching ``match``; ``inputs`` are unchanged after."""
    before = flat_snapshot(inputs)
    with pytest.raises(error, match=match):
        fn()
    after = flat_snapshot(inputs)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# the batch x


@pytest.mark.parametrize("entry", ENTRIES)
def test_good_batch_passes(classifier: Any, entry: str) -> None:
    net, params, x, labels = classifier
    out = _call(entry, net, "softmax_cross_entropy", params, x, labels)
    assert out is not None


@pytest.mark.parametrize("entry", ENTRIES)
def test_feature_count_must_match_n_in(classifier: Any, entry: str) -> None:
    net, params, _, labels = classifier
    x = _here(np.ones((BATCH, N_IN + 2)))
    _raises_and_keeps(
        bp.ShapeError, r"x has 5 features but the network's first layer takes 3",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    ("shape", "hint"), [((N_IN,), r"x\[None, :\]"), ((BATCH, N_IN, 2), "flatten")]
)
def test_batch_must_be_2d(classifier: Any, entry: str, shape: tuple[int, ...], hint: str) -> None:
    net, params, _, labels = classifier
    x = _here(np.ones(shape))
    _raises_and_keeps(
        bp.ShapeError,
        re.escape(f"x must be 2-D (batch, features), got shape {shape}") + f".*{hint}",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x(classifier: Any, entry: str, bad: float) -> None:
    net, params, _, labels = classifier
    host = np.ones((BATCH, N_IN))
    host[1, 2] = bad
    host[3, 0] = bad
    x = _here(host)
    _raises_and_keeps(
        bp.NonFiniteError, r"x holds 2 NaN or infinite values",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_x_dtype_must_match_the_params(classifier: Any, entry: str) -> None:
    net, params, _, labels = classifier  # float32 parameters
    x = _here(np.ones((BATCH, N_IN)), "float64")
    _raises_and_keeps(
        bp.DTypeError, r"x is float64 but the parameters are float32; cast",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )
    params64 = net.init(0, dtype="float64")
    x32 = _here(np.ones((BATCH, N_IN)), "float32")
    _raises_and_keeps(
        bp.DTypeError, r"x is float32 but the parameters are float64",
        lambda: _call(entry, net, "softmax_cross_entropy", params64, x32, labels),
        params64, x32, labels,
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_integer_x_is_refused(classifier: Any, entry: str) -> None:
    net, params, _, labels = classifier
    x = _here(np.ones((BATCH, N_IN), dtype=np.int64))
    _raises_and_keeps(
        bp.DTypeError, r"x is int64; features must be float32: cast",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_x_from_another_backend(classifier: Any, entry: str) -> None:
    net, params, x, labels = classifier
    here, other = bp.get_backend().name, _other_backend()
    x_other = bp.to_backend(x, other)
    _raises_and_keeps(
        bp.BackendMismatchError,
        rf"x is a {other} array but the parameters are on {here}; move it with "
        rf"bpcore.to_backend\(x, '{here}'\)",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x_other, labels),
        params, x_other, labels,
    )


def test_params_from_another_backend_than_x(classifier: Any) -> None:
    net, params, x, labels = classifier
    here, other = bp.get_backend().name, _other_backend()
    params_other = bp.to_backend(params, other)
    for entry in ENTRIES:
        _raises_and_keeps(
            bp.BackendMismatchError, rf"x is a {here} array but the parameters are on {other}",
            partial(_call, entry, net, "softmax_cross_entropy", params_other, x, labels),
            params_other, x, labels,
        )


@pytest.mark.parametrize("entry", ENTRIES)
def test_python_list_as_x(classifier: Any, entry: str) -> None:
    net, params, _, labels = classifier
    x = [[0.0, 1.0, 2.0]] * BATCH
    here = bp.get_backend().name
    with pytest.raises(
        bp.BackendMismatchError,
        match=rf"x is a list, not an array of the parameters' backend \({here}\); convert it",
    ):
        _call(entry, net, "softmax_cross_entropy", params, x, labels)
    assert x == [[0.0, 1.0, 2.0]] * BATCH


# --------------------------------------------------------------------------
# the targets


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize(("label", "shown"), [(-1, "-1"), (N_CLASSES, "3"), (7, "7")])
def test_labels_out_of_range(classifier: Any, entry: str, label: int, shown: str) -> None:
    net, params, x, _ = classifier
    labels = _here(np.array([0, label, 1, 2]))
    _raises_and_keeps(
        bp.LabelError, rf"label {shown} is out of range: the network has 3 outputs.*\[0, 2\]",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize(("dtype", "label"), [
    (dtype, label)
    for dtype in ("int8", "int16", "int32", "int64", "uint8", "uint64", ">i8", ">u4")
    for label in (-1, -128, 3, 100) if label >= 0 or "u" not in dtype])
def test_guard_reads_labels_of_every_integer_width(dtype: str, label: int) -> None:
    """The step's guard reads signed labels as unsigned (one reduction): a
    negative label of any width is out of range, as a too large one is."""
    from bpcore.checks import Guard

    guard = Guard(bp.mlp([2, 3]), "classes")
    good = np.array([0, 2, 1], dtype=dtype)
    bad = np.array([0, label, 1], dtype=dtype)[::-1]  # a strided view too
    assert guard._labels_in_range(good)
    assert not guard._labels_in_range(bad)
    if dtype == ">i8":  # big-endian 2**56 reads as 1 if the byte order is lost
        assert not guard._labels_in_range(np.array([2**56], dtype=dtype))


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
def test_float_labels_for_classes(classifier: Any, entry: str) -> None:
    net, params, x, _ = classifier
    labels = _here(np.array([0.0, 2.0, 1.0, 2.0]))
    _raises_and_keeps(
        bp.LabelError, r"class labels must be integers, got float32; cast them",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels), params, x, labels,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("loss", ["mse", "half_sse", "softmax_cross_entropy"])
def test_non_finite_float_targets(classifier: Any, entry: str, bad: float, loss: str) -> None:
    net, params, x, _ = classifier
    host = np.full((BATCH, N_CLASSES), 1.0 / N_CLASSES)
    host[2, 1] = bad
    t = _here(host)
    _raises_and_keeps(
        bp.NonFiniteError, r"targets holds 1 NaN or infinite value; remove",
        lambda: _call(entry, net, loss, params, x, t), params, x, t,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize(
    ("loss", "shape", "match"),
    [
        ("mse", (BATCH, N_CLASSES + 1), r"targets of shape \(4, 4\) do not match.*\(batch, 3\)"),
        ("mse", (BATCH,), r"targets of shape \(4,\) do not match"),
        ("half_sse", (BATCH, N_CLASSES, 1), r"targets of shape \(4, 3, 1\) do not match"),
        ("mse", (BATCH + 1, N_CLASSES), r"4 inputs but targets of shape \(5, 3\); give one"),
        ("softmax_cross_entropy", (BATCH - 1,), r"4 inputs but targets of shape \(3,\)"),
        ("softmax_cross_entropy", (BATCH, 2), r"targets of shape \(4, 2\) do not match"),
        ("binary_cross_entropy", (BATCH, 1), r"targets of shape \(4, 1\) do not match"),
    ],
)
def test_targets_of_the_wrong_shape(
    classifier: Any, entry: str, loss: str, shape: tuple[int, ...], match: str
) -> None:
    net, params, x, _ = classifier
    host = np.zeros(shape)
    t = _here(host.astype(np.int64) if loss == "softmax_cross_entropy" and len(shape) == 1
              else host)
    _raises_and_keeps(
        bp.ShapeError, match, lambda: _call(entry, net, loss, params, x, t), params, x, t,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
def test_scalar_target_is_a_shape_error(classifier: Any, entry: str) -> None:
    net, params, x, _ = classifier
    t = _here(np.float64(1.0))
    with pytest.raises(bp.ShapeError, match=r"4 inputs but targets of shape \(\)"):
        _call(entry, net, "mse", params, x, t)


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize("bad", [-0.5, 1.5])
def test_bce_targets_outside_unit_interval(classifier: Any, entry: str, bad: float) -> None:
    net, params, x, _ = classifier
    host = np.full((BATCH, N_CLASSES), 0.5)
    host[0, 0] = bad
    t = _here(host)
    _raises_and_keeps(
        bp.LabelError, r"binary cross-entropy targets must lie in \[0, 1\]",
        lambda: _call(entry, net, "binary_cross_entropy", params, x, t), params, x, t,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
def test_integer_targets_for_a_regression_loss(classifier: Any, entry: str) -> None:
    net, params, x, _ = classifier
    t = _here(np.ones((BATCH, N_CLASSES), dtype=np.int64))
    _raises_and_keeps(
        bp.DTypeError, r"targets are int64 but this loss needs real-valued targets",
        lambda: _call(entry, net, "mse", params, x, t), params, x, t,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
def test_float_targets_dtype_must_match(classifier: Any, entry: str) -> None:
    net, params, x, _ = classifier  # float32 parameters
    t = _here(np.zeros((BATCH, N_CLASSES)), "float64")
    _raises_and_keeps(
        bp.DTypeError, r"targets are float64 but the parameters are float32",
        lambda: _call(entry, net, "mse", params, x, t), params, x, t,
    )


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
def test_targets_from_another_backend(classifier: Any, entry: str) -> None:
    net, params, x, labels = classifier
    here, other = bp.get_backend().name, _other_backend()
    labels_other = bp.to_backend(labels, other)
    _raises_and_keeps(
        bp.BackendMismatchError, rf"targets is a {other} array but the parameters are on {here}",
        lambda: _call(entry, net, "softmax_cross_entropy", params, x, labels_other),
        params, x, labels_other,
    )
    with pytest.raises(bp.BackendMismatchError, match="targets is a list"):
        _call(entry, net, "softmax_cross_entropy", params, x, [0, 1, 2, 0])


def test_errors_derive_from_the_builtin_a_caller_expects() -> None:
    assert issubclass(bp.ShapeError, ValueError)
    assert issubclass(bp.LabelError, ValueError)
    assert issubclass(bp.NonFiniteError, ValueError)
    assert issubclass(bp.DTypeError, TypeError)
    assert issubclass(bp.BackendMismatchError, TypeError)
    for cls in (bp.ShapeError, bp.LabelError, bp.NonFiniteError, bp.DTypeError,
                bp.BackendMismatchError, bp.BackendError):
        assert issubclass(cls, bp.BpcoreError)


def test_checks_can_be_turned_off_for_a_validated_loop(classifier: Any) -> None:
    net, params, x, labels = classifier
    opt = bp.sgd(0.1)
    step = bp.train_step(net, "softmax_cross_entropy", opt, validate=False)
    new, _, value = step(params, opt.init(params), x, labels)
    assert backend_name(bp.namespace(value)) == bp.get_backend().name
    assert len(new) == len(params)


# --------------------------------------------------------------------------
# names and sizes, checked when the network or step is built


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: bp.get_loss("hinge"), r"unknown loss 'hinge'; choose one of .*mse"),
        (lambda: bp.train_step(bp.mlp([2, 1]), "l1", bp.sgd()), r"unknown loss 'l1'"),
        (lambda: bp.get_optimizer("rmsprop"), r"unknown optimizer 'rmsprop'; choose one of .*adam"),
        (lambda: bp.activation("swish"), r"unknown activation 'swish'; choose one of .*relu"),
        (lambda: bp.mlp([2, 3, 1], "softplus"), r"unknown activation 'softplus'"),
        (lambda: bp.mlp([2, 3, 1], "relu", "elu"), r"unknown activation 'elu'"),
        (lambda: bp.dense(2, 3, init="orthogonal"), r"unknown initializer 'orthogonal'; choose"),
        (lambda: bp.mlp([2, 3, 1], init="lecun"), r"unknown initializer 'lecun'"),
        (lambda: bp.mlp([3]), r"mlp\(\) needs at least two sizes"),
        (lambda: bp.mlp([]), r"mlp\(\) needs at least two sizes"),
        (lambda: bp.mlp([3, 0, 1]), r"mlp\(\) layer sizes must be positive ints, got \[3, 0, 1\]"),
        (lambda: bp.mlp([3, -4, 1]), r"positive ints"),
        (lambda: bp.mlp([3, 2.5, 1]), r"positive ints"),  # type: ignore[list-item]
        (lambda: bp.mlp([3, True, 1]), r"positive ints"),
        (lambda: bp.dense(0, 2), r"dense\(\): n_in must be a positive int, got 0"),
        (lambda: bp.dense(2, -1), r"dense\(\): n_out must be a positive int, got -1"),
        (lambda: bp.dense(2.0, 1), r"n_in must be a positive int"),  # type: ignore[arg-type]
        (
            lambda: bp.sequential(bp.dense(3, 4), bp.relu(), bp.dense(5, 1)),
            r"layer 2 \(dense\) takes 5 features but the layer before it gives 4",
        ),
        (lambda: bp.sequential(), r"sequential\(\) needs at least one layer"),
    ],
)
def test_bad_names_and_sizes_raise_value_error(build: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_value_and_grad_refuses_an_unknown_loss(classifier: Any) -> None:
    net, params, x, labels = classifier
    with pytest.raises(ValueError, match="unknown loss 'nll'"):
        bp.value_and_grad(net, "nll", params, x, labels)


def test_sequential_refuses_an_uncalled_factory() -> None:
    with pytest.raises(TypeError, match=r"did you forget to call it, e\.g\. bp\.relu\(\)"):
        bp.sequential(bp.dense(2, 2), bp.relu)  # type: ignore[arg-type]


def test_bad_init_dtype(xp: ModuleType) -> None:
    with pytest.raises(bp.DTypeError, match=r"dtype float16 is not supported.*dtype='float32'"):
        bp.mlp([2, 1]).init(0, dtype="float16")


# -- the guard of a step: the cheap checks after good batches refuse what the
#    explaining checks refuse


def _warm_step(classifier: Any, opt: Any) -> tuple[Any, Any, Any]:
    """A validated step that has already accepted two good batches."""
    net, params, x, t = classifier
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    state = opt.init(params)
    for _ in range(2):
        params, state, _ = step(params, state, x, t)
    return step, params, state


def _with(a: Any, index: tuple[int, ...], value: float) -> Any:
    host = np.array(bp.to_backend(a, "numpy"))
    host[index] = value
    return _here(host, str(host.dtype) if host.dtype.kind == "f" else None)


@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("nan x", bp.NonFiniteError, "x holds 1 NaN"),
        ("inf x", bp.NonFiniteError, "x holds 1 NaN or infinite"),
        ("features", bp.ShapeError, "x has 4 features"),
        ("empty", bp.ShapeError, "empty batch"),
        ("float64 x", bp.DTypeError, "x is float64"),
        ("label high", bp.LabelError, "label 3 is out of range"),
        ("label low", bp.LabelError, "label -1 is out of range"),
        ("W shape", bp.ShapeError, "W has shape"),
        ("missing b", bp.ShapeError, "needs \\['W', 'b'\\]"),
        ("float64 b", bp.DTypeError, "is float64 but"),
        ("state", bp.ArgumentError, "optimizer state"),
    ],
)
def test_a_warm_step_still_refuses_bad_input(
    classifier: Any, opt_name: str, bad: str, error: type, match: str
) -> None:
    """The guard of a validated step checks by comparison with what it has
    accepted (the network's shapes, the sample shapes seen): every bad input
    after good batches still gets the explaining check's error."""
    opt = {"sgd": bp.sgd(0.1), "momentum": bp.sgd(0.1, momentum=0.9),
           "adam": bp.adam(0.01)}[opt_name]
    _, _, x, t = classifier
    step, params, state = _warm_step(classifier, opt)
    xp = bp.get_backend().xp
    if bad == "nan x":
        x = _with(x, (1, 2), float("nan"))
    elif bad == "inf x":
        x = _with(x, (0, 0), float("inf"))
    elif bad == "features":
        x = _here(np.ones((BATCH, N_IN + 1)))
    elif bad == "empty":
        x = x[:0, :]
        t = t[:0]
    elif bad == "float64 x":
        x = _here(np.ones((BATCH, N_IN)), "float64")
    elif bad == "label high":
        t = _with(t, (0,), N_CLASSES)
    elif bad == "label low":
        t = _with(t, (3,), -1)
    elif bad == "W shape":
        params = (dict(params[0], W=xp.ones((N_IN, 6), dtype=xp.float32)), *params[1:])
    elif bad == "missing b":
        params = ({"W": params[0]["W"]}, *params[1:])
    elif bad == "float64 b":
        params = (dict(params[0], b=xp.zeros(5, dtype=xp.float64)), *params[1:])
    elif bad == "state":
        state = (bp.adam() if opt_name != "adam" else bp.sgd(0.1)).init(params)
    with pytest.raises(error, match=match):
        step(params, state, x, t)


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([1.0, -2.0, 3.0], True),
        ([3e38, -3e38, 1.0], True),  # Σ a² overflows float32: decided element by element
        ([1.0, float("nan"), 2.0], False),
        ([1.0, float("inf"), -float("inf")], False),  # ±∞ do not cancel in Σ a²
        ([-float("inf"), 0.0, 0.0], False),
    ],
)
def test_all_finite_is_exact(xp: ModuleType, values: list[float], finite: bool) -> None:
    from bpcore.checks import _all_finite

    a = xp.reshape(xp.asarray(values * 2, dtype=xp.float32), (2, 3))
    assert _all_finite(a, xp) is finite
