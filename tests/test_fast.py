"""The backend fast paths (bpcore.fast) against the portable kernels, on the same inputs.

Every fast kernel must give what its portable twin gives, to rounding; the
in-place ones may write only into the arrays they document. The dispatch
must fall back to the portable kernels where there is no fast path (other
backends, unknown layers, losses and optimizers), and ``inplace=True``
must match the functional update on every backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import bpcore as bp
from bpcore import fast
from bpcore.fast import numpy as fnp
from bpcore.layers import activations as act
from bpcore.layers.core import anatomy
from bpcore.layers.dense import DenseCache, dense_backward, dense_forward
from bpcore.optim import spec

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}


def _rand(shape: tuple[int, ...], dtype: str, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _same(a: Any, b: Any, dtype: str) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL[dtype])


# --------------------------------------------------------------------------
# kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("fast_fwd", "fast_bwd", "fwd", "bwd"),
    [
        (fnp.sigmoid_, fnp.sigmoid_backward_, act.sigmoid_forward, act.sigmoid_backward),
        (fnp.tanh_, fnp.tanh_backward_, act.tanh_forward, act.tanh_backward),
        (fnp.relu_, fnp.relu_backward_, act.relu_forward, act.relu_backward),
    ],
    ids=["sigmoid", "tanh", "relu"],
)
def test_activation_kernels_match_portable(
    fast_fwd: Any, fast_bwd: Any, fwd: Any, bwd: Any, dtype: str
) -> None:
    x = _rand((7, 5), dtype)
    x[0, :3] = [0.0, 30.0, -30.0]
    dy = _rand((7, 5), dtype, seed=1)
    y_ref, cache = fwd(x)
    dx_ref = bwd(cache, dy)
    z = x.copy()
    y = fast_fwd(z)
    assert y is z  # written in place
    _same(y, y_ref, dtype)
    g = dy.copy()
    dx = fast_bwd(y, g)
    assert dx is g
    _same(dx, dx_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_without_warnings(dtype: str) -> None:
    # exp(-z) overflows for z < -88.7 (float32): the result must still be ~0, silently.
    x = np.array([-1e4, -1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], dtype=dtype)
    y_ref, _ = act.sigmoid_forward(x)
    y = fnp.sigmoid_(x.copy())
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-30)
    assert np.all(np.isfinite(y))


def test_relu_nan_is_zero_as_portable() -> None:
    x = np.array([np.nan, -1.0, 2.0])
    y_ref, _ = act.relu_forward(x)
    np.testing.assert_array_equal(fnp.relu_(x.copy()), y_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_masks_inf_and_nan_as_portable(dtype: str) -> None:
    x = np.array([[-1.0, 2.0, 0.0, 3.0], [-2.0, -3.0, 1.0, 0.5]], dtype=dtype)
    dy = np.array([[np.inf, np.nan, np.nan, -3.0], [np.nan, -np.inf, np.inf, 1.0]], dtype=dtype)
    ref = act.relu_backward(x, dy)
    y = fnp.relu_(x.copy())
    np.testing.assert_array_equal(fnp.relu_backward_(y, dy.copy()), ref)
    # a strided view works too
    np.testing.assert_array_equal(fnp.relu_backward_(y[:, ::2], dy.copy()[:, ::2]), ref[:, ::2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_kernels_match_portable(dtype: str) -> None:
    params = {"W": _rand((6, 4), dtype), "b": _rand((4,), dtype, seed=2)}
    x, dz = _rand((5, 6), dtype, seed=3), _rand((5, 4), dtype, seed=4)
    z_ref, _ = dense_forward(params, x)
    _same(fnp.dense_forward(params["W"], params["b"], x), z_ref, dtype)
    dx_ref, grads = dense_backward(params, DenseCache(x), dz)
    dx, dW, db = fnp.dense_backward(params["W"], x, dz)
    _same(dx, dx_ref, dtype)
    _same(dW, grads["W"], dtype)
    _same(db, grads["b"], dtype)
    assert fnp.dense_backward(params["W"], x, dz, need_dx=False)[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_labels_matches_portable(dtype: str) -> None:
    z = _rand((9, 4), dtype, scale=5.0)
    z[0] = [500.0, -500.0, 0.0, 1.0]  # the shift keeps exp finite
    t = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1])
    value_ref, dz_ref = bp.softmax_cross_entropy(z, t)
    buf = z.copy()
    value, dz = fnp.softmax_cross_entropy_labels_(buf, t)
    assert dz is buf
    assert value.shape == () and value.dtype == z.dtype
    _same(value, value_ref, dtype)
    _same(dz, dz_ref, dtype)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("own_grad", [False, True])
def test_sgd_leaves_match_portable(config: dict[str, Any], own_grad: bool, dtype: str) -> None:
    opt = bp.sgd(**config)
    _, lr, mu, nesterov, wd = spec(opt)  # type: ignore[misc]
    p, g = _rand((4, 3), dtype), _rand((4, 3), dtype, seed=1)
    v = _rand((4, 3), dtype, seed=2) if mu else None
    state = bp.optim.SGDState({"W": v} if mu else None)
    ref, ref_state = opt.update({"W": g}, state, {"W": p})
    g0 = g.copy()
    # in place
    p1, g1 = p.copy(), g.copy()
    v1 = None if v is None else v.copy()
    leaf = fnp.sgd_leaf(lr, mu, nesterov, wd, own_grad=own_grad)
    leaf(g1, p1) if v1 is None else leaf(g1, p1, v1)
    _same(p1, ref["W"], dtype)
    if mu:
        _same(v1, ref_state.velocity["W"], dtype)
    if not own_grad:
        np.testing.assert_array_equal(g1, g0)  # a caller's gradient is read only
    # functional, in the gradient's buffer
    p2, g2 = p.copy(), g.copy()
    out = fnp.sgd_leaf_new(lr, mu, nesterov, wd)(g2, p2) if v is None else \
        fnp.sgd_leaf_new(lr, mu, nesterov, wd)(g2, p2, v.copy())
    new_p = out if v is None else out[0]
    _same(new_p, ref["W"], dtype)
    np.testing.assert_array_equal(p2, p)  # the old parameters are untouched


ADAM_CONFIGS = [
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, weight_decay=0.1)),
    ("adamw", dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "config"), ADAM_CONFIGS, ids=["adam", "adam-l2", "adamw"])
@pytest.mark.parametrize("own_grad", [False, True])
def test_adam_leaves_match_portable(
    name: str, config: dict[str, Any], own_grad: bool, dtype: str
) -> None:
    opt = bp.get_optimizer(name, **config)
    _, lr, b1, b2, eps, wd, decoupled = spec(opt)  # type: ignore[misc]
    p, g = _rand((4, 3), dtype), _rand((4, 3), dtype, seed=1)
    m, v = _rand((4, 3), dtype, seed=2), np.abs(_rand((4, 3), dtype, seed=3))
    state = bp.optim.AdamState(2, {"W": m}, {"W": v})
    ref, ref_state = opt.update({"W": g}, state, {"W": p})
    g0 = g.copy()
    p1, g1, m1, v1 = p.copy(), g.copy(), m.copy(), v.copy()
    fnp.adam_leaf(lr, b1, b2, eps, wd, decoupled, 3, own_grad=own_grad)(g1, p1, m1, v1)
    _same(p1, ref["W"], dtype)
    _same(m1, ref_state.m["W"], dtype)
    _same(v1, ref_state.v["W"], dtype)
    if not own_grad:
        np.testing.assert_array_equal(g1, g0)
    p2, m2, v2 = p.copy(), m.copy(), v.copy()
    new_p, new_m, new_v = fnp.adam_leaf_new(lr, b1, b2, eps, wd, decoupled, 3)(g.copy(), p2, m2, v2)
    _same(new_p, ref["W"], dtype)
    _same(new_m, ref_state.m["W"], dtype)
    _same(new_v, ref_state.v["W"], dtype)
    for old, kept in ((p, p2), (m, m2), (v, v2)):
        np.testing.assert_array_equal(kept, old)


# --------------------------------------------------------------------------
# the fused step against the portable step


def _copy_tree(tree: Any) -> Any:
    return bp.backend.tree_map(lambda a: np.array(a, copy=True), tree)


def _assert_tree_equal(a: Any, b: Any) -> None:
    la, lb = [], []
    bp.backend.tree_map(la.append, a)
    bp.backend.tree_map(lb.append, b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_tree_close(a: Any, b: Any, dtype: str) -> None:
    la, lb = [], []
    bp.backend.tree_map(la.append, a)
    bp.backend.tree_map(lb.append, b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        _same(x, y, dtype)


def _data(net: bp.Layer, loss: str, dtype: str, batch: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((batch, net.n_in)).astype(dtype)
    if loss == "softmax_cross_entropy":
        return x, rng.integers(0, net.n_out, batch)
    if loss == "binary_cross_entropy":
        return x, rng.random((batch, net.n_out)).astype(dtype)
    return x, rng.standard_normal((batch, net.n_out)).astype(dtype)


STEP_CASES = [
    ([5, 8, 6, 3], "sigmoid", "identity", "softmax_cross_entropy", bp.sgd(0.5)),
    ([5, 8, 3], "relu", "identity", "softmax_cross_entropy", bp.adam(0.01)),
    ([5, 8, 8, 3], "tanh", "identity", "mse", bp.sgd(0.1, 0.9, nesterov=True)),
    ([5, 8, 2], "relu", "sigmoid", "half_sse", bp.momentum(0.1, weight_decay=0.01)),
    ([5, 8, 2], "sigmoid", "identity", "binary_cross_entropy", bp.adamw(0.01)),
    ([5, 3], "sigmoid", "softmax", "softmax_cross_entropy", bp.sgd(0.1)),  # not fusable
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[1]}-{c[3]}-{c[4].name}")
def test_fused_step_matches_portable(case: tuple[Any, ...], dtype: str) -> None:
    sizes, hidden, output, loss, opt = case
    net = bp.mlp(sizes, hidden, output)
    x, t = _data(net, loss, dtype)
    x0, t0 = x.copy(), t.copy()
    results = {}
    for mode in ("portable", "fast", "inplace"):
        params = net.init(0, xp=np_xp, dtype=dtype)
        state = opt.init(params)
        step = bp.train_step(net, loss, opt, fast=mode != "portable", inplace=mode == "inplace")
        values = []
        for _ in range(3):
            before = (_copy_tree(params), _copy_tree(state))
            new_params, new_state, value = step(params, state, x, t)
            if mode == "fast":  # functional: nothing passed in changed
                _assert_tree_equal(params, before[0])
                _assert_tree_equal(state, before[1])
            params, state = new_params, new_state
            values.append(np.asarray(value))
            assert np.asarray(value).shape == ()
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(t, t0)
        results[mode] = (params, state, values)
    ref = results["portable"]
    for mode in ("fast", "inplace"):
        params, state, values = results[mode]
        _assert_tree_close(params, ref[0], dtype)
        _assert_tree_close(state, ref[1], dtype)
        _same(np.array(values), np.array(ref[2]), dtype)


def test_inplace_step_writes_into_the_callers_arrays() -> None:
    net = bp.mlp([4, 6, 3], "relu")
    opt = bp.adam(0.01)
    params = net.init(0, xp=np_xp)
    state = opt.init(params)
    W = params[0]["W"]
    W0 = W.copy()
    step = bp.train_step(net, "softmax_cross_entropy", opt, inplace=True)
    x, t = _data(net, "softmax_cross_entropy", "float32")
    new_params, new_state, _ = step(params, state, x, t)
    assert new_params[0]["W"] is W
    assert new_state.m[0]["W"] is state.m[0]["W"]
    assert new_state.count == 1
    assert not np.array_equal(W, W0)


@pytest.mark.parametrize("make_opt", [lambda: bp.adam(0.01), lambda: bp.momentum(0.1)],
                         ids=["adam", "momentum"])
def test_inplace_step_reuses_buffers_across_batch_sizes(make_opt: Any) -> None:
    # the fused step keeps its activations and gradients in buffers between calls;
    # changing the batch size (a last, smaller batch) must not mix them up.
    net = bp.mlp([5, 8, 8, 3], "relu")
    opt = make_opt()
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((b, 5)), rng.integers(0, 3, b)) for b in (6, 6, 2, 6, 1)]
    out = {}
    for mode in ("portable", "inplace"):
        params = net.init(0, xp=np_xp, dtype="float64")
        state = opt.init(params)
        step = bp.train_step(net, "softmax_cross_entropy", opt,
                             fast=mode != "portable", inplace=mode == "inplace")
        values = []
        for x, t in batches:
            params, state, value = step(params, state, x, t)
            values.append(float(value))
        out[mode] = (params, state, values)
    _assert_tree_close(out["inplace"][0], out["portable"][0], "float64")
    _assert_tree_close(out["inplace"][1], out["portable"][1], "float64")
    np.testing.assert_allclose(out["inplace"][2], out["portable"][2], rtol=1e-12)


def test_fused_step_is_safe_to_share_between_threads() -> None:
    import threading

    net = bp.mlp([5, 16, 3], "sigmoid")
    opt = bp.adam(0.01)
    step = bp.train_step(net, "softmax_cross_entropy", opt, inplace=True)
    rng = np.random.default_rng(4)
    data = [(rng.standard_normal((8, 5)), rng.integers(0, 3, 8)) for _ in range(2)]

    def train(i: int, results: dict[int, Any]) -> None:
        params = net.init(i, xp=np_xp, dtype="float64")
        state = opt.init(params)
        for _ in range(30):
            params, state, _ = step(params, state, *data[i])
        results[i] = params

    threaded: dict[int, Any] = {}
    threads = [threading.Thread(target=train, args=(i, threaded)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    alone: dict[int, Any] = {}
    for i in range(2):
        train(i, alone)
    for i in range(2):
        _assert_tree_equal(threaded[i], alone[i])


def test_default_step_on_a_fusable_net_is_functional() -> None:
    net = bp.mlp([4, 6, 3], "sigmoid")
    opt = bp.momentum(0.1)
    params = net.init(0, xp=np_xp)
    state = opt.init(params)
    kept = (_copy_tree(params), _copy_tree(state))
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    new_params, new_state, _ = step(params, state, *_data(net, "softmax_cross_entropy", "float32"))
    _assert_tree_equal(params, kept[0])
    _assert_tree_equal(state, kept[1])
    assert new_params[0]["W"] is not params[0]["W"]
    assert new_state.velocity[0]["W"] is not state.velocity[0]["W"]


# --------------------------------------------------------------------------
# dispatch and fallbacks


def test_fast_module_dispatch(xp: ModuleType) -> None:
    module = fast.fast_module(xp)
    if bp.backend.backend_name(xp) == "numpy":
        assert module is fnp
    elif bp.backend.backend_name(xp) == "cupy":
        assert module is not None and module.__name__ == "bpcore.fast.cupy"
    else:
        assert module is None  # portable kernels everywhere else
    net = bp.mlp([3, 4, 2], "relu")
    fused = fast.fused_step(xp, net, bp.softmax_cross_entropy, bp.sgd(0.1), inplace=False)
    assert (fused is not None) == (module is not None)


def _custom_layer() -> bp.Layer:
    def forward(params: Any, x: Any, *, xp: Any = None) -> tuple[Any, Any]:
        return 2.0 * x, None

    def backward(params: Any, cache: Any, dy: Any, *, xp: Any = None,
                 need_dx: bool = True) -> tuple[Any, Any]:
        return 2.0 * dy, {}

    return bp.Layer(lambda *a, **k: {}, forward, backward, "double")


@pytest.mark.parametrize(
    "layers",
    [
        lambda: bp.sequential(bp.dense(3, 4), bp.gelu(), bp.dense(4, 2)),
        lambda: bp.sequential(bp.dense(3, 4), bp.leaky_relu(0.1), bp.dense(4, 2)),
        lambda: bp.sequential(bp.dense(3, 4), _custom_layer(), bp.dense(4, 2)),
        lambda: bp.sequential(bp.sequential(bp.dense(3, 4), bp.relu()), bp.dense(4, 2)),
        lambda: bp.dense(3, 2),
    ],
    ids=["gelu", "leaky_relu", "custom", "nested", "bare-dense"],
)
def test_unknown_networks_fall_back_to_portable(layers: Any) -> None:
    net = layers()
    opt = bp.sgd(0.1)
    assert fast.fused_step(np_xp, net, bp.softmax_cross_entropy, opt, inplace=False) is None
    x = _rand((5, 3), "float64")
    t = np.array([0, 1, 1, 0, 1])
    out = {}
    for use_fast in (False, True):
        params = net.init(0, xp=np_xp, dtype="float64")
        step = bp.train_step(net, "softmax_cross_entropy", opt, fast=use_fast)
        out[use_fast] = step(params, opt.init(params), x, t)
    _assert_tree_equal(out[True][0], out[False][0])


def test_unknown_loss_falls_back_and_unknown_optimizer_is_called() -> None:
    net = bp.mlp([3, 4, 2], "tanh")

    def fn(y: Any, t: Any, *, xp: Any = None) -> tuple[Any, Any]:
        d = y - t
        return np.asarray(np.sum(d * d)), 2.0 * d

    custom_loss = bp.Loss("sse2", fn, "values")
    assert fast.fused_step(np_xp, net, custom_loss, bp.sgd(0.1), inplace=False) is None

    calls = []
    base = bp.sgd(0.1)

    def update(grads: Any, state: Any, params: Any, *, xp: Any = None) -> Any:
        calls.append(1)
        return base.update(grads, state, params, xp=xp)

    mine = bp.Optimizer(base.init, update, "mine", {})
    assert spec(mine) is None
    fused = fast.fused_step(np_xp, net, bp.mse, mine, inplace=False)
    assert fused is not None
    params = net.init(0, xp=np_xp, dtype="float64")
    x, t = _rand((5, 3), "float64"), _rand((5, 2), "float64", seed=9)
    new, _, _ = fused(params, mine.init(params), x, t)
    ref, _, _ = bp.train_step(net, "mse", base, fast=False)(params, base.init(params), x, t)
    assert calls == [1]
    _assert_tree_close(new, ref, "float64")


def test_anatomy_knows_only_bpcore_layers() -> None:
    net = bp.mlp([3, 4, 2], "relu")
    kind, parts = anatomy(net)  # type: ignore[misc]
    assert kind == "sequential" and [p.name for p in parts] == ["dense", "relu", "dense"]
    assert anatomy(bp.sigmoid()) == ("activation", act.sigmoid_forward, act.sigmoid_backward)
    assert anatomy(_custom_layer()) is None
    relu = bp.relu()
    assert anatomy(relu._replace(backward=_custom_layer().backward)) is None


# --------------------------------------------------------------------------
# optimizer updates with inplace=True on every backend


OPTIMIZERS = [
    lambda: bp.sgd(0.1),
    lambda: bp.sgd(0.1, 0.9, nesterov=True, weight_decay=0.01),
    lambda: bp.adam(0.01, weight_decay=0.01),
    lambda: bp.adamw(0.01),
]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "nesterov", "adam", "adamw"])
def test_inplace_update_matches_functional(xp: ModuleType, make: Any) -> None:
    opt = make()
    host = {"W": _rand((3, 2), "float64"), "b": _rand((2,), "float64", seed=1)}
    host_g = {"W": _rand((3, 2), "float64", seed=2), "b": _rand((2,), "float64", seed=3)}
    params = bp.to_backend({k: v.copy() for k, v in host.items()})
    grads = bp.to_backend(host_g)
    ref, ref_state = opt.update(grads, opt.init(params), params)
    state = opt.init(params)
    new, new_state = opt.update(grads, state, params, inplace=True)
    _assert_tree_close(new, ref, "float64")
    _assert_tree_close(new_state, ref_state, "float64")
    _assert_tree_equal(grads, host_g)  # gradients are read only
    if fast.is_mutable(xp):
        assert new["W"] is params["W"]  # written into the caller's arrays
    else:
        assert new["W"] is not params["W"]  # JAX: functional, inputs untouched
        _assert_tree_equal(params, host)


def test_inplace_train_step_on_every_backend(xp: ModuleType) -> None:
    net = bp.mlp([3, 4, 2], "sigmoid")
    opt = bp.momentum(0.1)
    x = bp.to_backend(_rand((4, 3), "float32"))
    t = bp.to_backend(np.array([0, 1, 1, 0]))
    out = {}
    for inplace in (False, True):
        params = net.init(0)
        state = opt.init(params)
        step = bp.train_step(net, "softmax_cross_entropy", opt, inplace=inplace)
        for _ in range(2):
            params, state, value = step(params, state, x, t)
        out[inplace] = (params, float(value))
    _assert_tree_close(out[True][0], out[False][0], "float32")
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-5)
