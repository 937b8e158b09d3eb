"""Backend specializations (bpcore.dispatch) against their portable kernels.

Every specialization registered beside a portable kernel must give what the
kernel gives on the same inputs, to rounding, with a cache of the same
meaning (so the two can be mixed); it may write only into the arrays its
docstring names. The table below has one case per specialization, and a
test fails if a specialization is registered without one. The step driver
must give the same results with and without them, on every backend.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import bpcore as bp
from bpcore import dispatch, losses, optim
from bpcore.dispatch import Binding, Workspace, specialization, specializations, specializes
from bpcore.layers import activations as act
from bpcore.layers.core import bind

dense_mod = importlib.import_module("bpcore.layers.dense")

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}
KERNEL_MODULES = [act, dense_mod, losses, optim]


def _rand(shape: tuple[int, ...], dtype: str, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _host(a: Any) -> np.ndarray:
    return np.asarray(bp.to_numpy(a) if bp.tree.is_array(a) else a)


def _same(a: Any, b: Any, dtype: str) -> None:
    for u, v in zip(bp.tree.leaves(a), bp.tree.leaves(b), strict=True):
        np.testing.assert_allclose(_host(u), _host(v), **TOL[dtype])


def _copy(tree: Any) -> Any:
    return bp.tree.map_arrays(lambda a: np.array(bp.to_numpy(a), copy=True), tree)


def _equal(a: Any, b: Any) -> None:
    for u, v in zip(bp.tree.leaves(a), bp.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(_host(u), _host(v))


def registered() -> list[tuple[str, Callable[..., Any], str]]:
    """(portable kernel name, portable kernel, backend) for every registration."""
    found = []
    for module in KERNEL_MODULES:
        for name, fn in vars(module).items():
            if callable(fn) and getattr(fn, "specializations", None):
                found.extend((name, fn, backend) for backend in specializations(fn))
    return found


# --------------------------------------------------------------------------
# inputs for each kernel: (args, kwargs); the arrays are NumPy


def _activation_cases(kernel: str, dtype: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    x = _rand((7, 5), dtype)
    x[0, :4] = [0.0, 30.0, -30.0, -100.0]
    dy = _rand((7, 5), dtype, seed=1)
    fwd = {"sigmoid": act.sigmoid_forward, "relu": act.relu_forward,
           "tanh": act.tanh_forward}[kernel.partition("_")[0]]
    if kernel.endswith("_forward"):
        return [((x,), {}), ((x[:, ::2],), {})]  # a strided view too
    y, _ = fwd(x)
    return [((y, dy), {}), ((y[:, ::2], dy[:, ::2]), {})]


def cases(name: str, dtype: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    if name.partition("_")[0] in ("sigmoid", "relu", "tanh"):
        return _activation_cases(name, dtype)
    if name == "dense_forward":
        params = {"W": _rand((6, 4), dtype), "b": _rand((4,), dtype, seed=2)}
        return [((params, _rand((5, 6), dtype, seed=3)), {})]
    if name == "dense_backward":
        params = {"W": _rand((6, 4), dtype), "b": _rand((4,), dtype, seed=2)}
        cache = dense_mod.DenseCache(_rand((5, 6), dtype, seed=3))
        dz = _rand((5, 4), dtype, seed=4)
        return [((params, cache, dz), {"need_dx": True}), ((params, cache, dz), {"need_dx": False})]
    if name == "softmax_cross_entropy":
        z = _rand((9, 4), dtype, scale=5.0)
        z[0] = [500.0, -500.0, 0.0, 1.0]  # the shift keeps exp finite
        labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1])
        onehot = np.eye(4, dtype=dtype)[labels]
        return [((z, labels), {}), ((z, labels.astype(np.int32)), {}), ((z, onehot), {})]
    if name == "sgd_update":
        p, g, v = _rand((4, 3), dtype), _rand((4, 3), dtype, seed=1), _rand((4, 3), dtype, seed=2)
        rules = [optim.SGDRule(0.1), optim.SGDRule(0.1, weight_decay=0.01),
                 optim.SGDRule(0.05, 0.9), optim.SGDRule(0.05, 0.9, True, 0.001)]
        return [((r, g, p, v if r.momentum else None), {}) for r in rules]
    if name == "adam_update":
        p, g = _rand((4, 3), dtype), _rand((4, 3), dtype, seed=1)
        m, v = _rand((4, 3), dtype, seed=2), np.abs(_rand((4, 3), dtype, seed=3))
        rules = [optim.AdamRule(0.01), optim.AdamRule(0.01, weight_decay=0.1),
                 optim.AdamRule(0.01, weight_decay=0.1, decoupled=True)]
        return [((r, optim.adam_scalars(r, t), g, p, m, v), {}) for r in rules for t in (1, 7)]
    raise KeyError(name)


#: kernels whose specializations update some arguments in place, by position
IN_PLACE = {"sgd_update": (2, 3), "adam_update": (3, 4, 5)}
#: the gradient argument an update may use as scratch space
SCRATCH = {"sgd_update": 1, "adam_update": 2}


def test_every_specialization_has_a_case() -> None:
    names = {name for name, _, _ in registered()}
    assert names  # NumPy has some
    for name in names:
        assert cases(name, "float64"), name


CPU = [(name, fn, backend) for name, fn, backend in registered() if backend != "cupy"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "portable", "backend"), CPU, ids=[f"{n}-{b}" for n, _, b in CPU])
def test_specialization_matches_portable(
    name: str, portable: Callable[..., Any], backend: str, dtype: str
) -> None:
    # (the CuPy specializations: tests/test_cuda.py, emulated on the CPU and on a GPU)
    from conftest import require_backend

    require_backend(backend)
    special = specializations(portable)[backend]
    with bp.use_backend(backend) as b:
        xp = b.xp
    in_place = IN_PLACE.get(name, ())
    for host_args, kwargs in cases(name, dtype):
        args = bp.to_backend(host_args, backend)
        kept = _copy(args)
        want = portable(*args, xp=xp, **kwargs)
        _equal(args, kept)  # the portable kernel wrote nothing
        if name in IN_PLACE:  # an update: in place, into new arrays, with or without scratch
            for scratch in (False, True):
                for into_new in (False, True):
                    mine = tuple(_copy_on(a, backend) if i in in_place or i == SCRATCH[name]
                                 else a for i, a in enumerate(args))
                    out = tuple(xp.empty_like(mine[i]) for i in in_place
                                if mine[i] is not None) if into_new else None
                    got = special(*mine, xp=xp, **kwargs, scratch=scratch, out=out)
                    _same(got, want, dtype)
                    targets = out if into_new else tuple(mine[i] for i in in_place)
                    for o, target in zip(got, targets):
                        assert o is None or o is target
                    if into_new:  # nothing passed in was written to but the scratch
                        _equal([a for i, a in enumerate(mine) if i != SCRATCH[name] or
                                not scratch], [a for i, a in enumerate(kept)
                                               if i != SCRATCH[name] or not scratch])
                    if not scratch:
                        _equal(mine[SCRATCH[name]], kept[SCRATCH[name]])
            continue
        for ws in (None, Workspace(xp)):
            got = special(*args, xp=xp, **kwargs, ws=ws)
            _same(got, want, dtype)
            _equal(args, kept)  # nothing passed in was written to


def _copy_on(a: Any, backend: str) -> Any:
    return bp.to_backend(_copy(a), backend)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_without_warnings(dtype: str) -> None:
    # exp(-z) overflows for z < -88.7 (float32): the result must still be ~0, silently.
    x = np.array([-1e4, -1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], dtype=dtype)
    y_ref, _ = act.sigmoid_forward(x)
    y, _ = specialization(act.sigmoid_forward, np_xp)(x)  # type: ignore[misc]
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-30)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_masks_inf_and_nan_exactly_as_portable(dtype: str) -> None:
    y = np.array([[0.0, 2.0, 0.0, 3.0], [0.0, np.nan, 1.0, 0.5]], dtype=dtype)
    dy = np.array([[np.inf, np.nan, np.nan, -3.0], [np.nan, -np.inf, np.inf, 1.0]], dtype=dtype)
    ref = act.relu_backward(y, dy)
    for backend in ("numpy", "torch"):
        if not bp.backends()[backend].available:
            continue
        with bp.use_backend(backend) as b:
            special = specialization(act.relu_backward, b.xp)
            got = special(bp.to_backend(y), bp.to_backend(dy))  # type: ignore[misc]
        np.testing.assert_array_equal(bp.to_numpy(got), ref)


def test_relu_keeps_nan() -> None:
    # NaN must not become 0: a diverged unit stays visible (as in torch.relu), and
    # its backward passes the gradient on (as torch's threshold_backward).
    y, _ = act.relu_forward(np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(y[0]) and y[1] == 0.0 and y[2] == 2.0
    dx = act.relu_backward(y, np.array([3.0, 4.0, 5.0]))
    assert dx.tolist() == [3.0, 0.0, 5.0]


# --------------------------------------------------------------------------
# the registry, the binding and the workspace


def test_specialization_is_chosen_by_namespace(xp: ModuleType) -> None:
    found = specialization(act.relu_backward, xp)
    name = bp.backend.backend_name(xp)
    if name in ("numpy", "torch"):
        assert found is specializations(act.relu_backward)[name]
    elif name == "cupy":
        assert found is (specializations(act.relu_backward)["cupy"]
                         if dispatch.cupy_kernels_enabled() else None)
    else:
        assert found is None  # portable kernels everywhere else
    assert Binding(xp, None, fast=False).kernel(act.relu_backward) is act.relu_backward


def test_disabled_specialization_is_not_used() -> None:
    def kernel(x: Any, *, xp: Any = None) -> Any:
        return x + 1

    switch = {"on": False}

    @specializes(kernel, "numpy", enabled=lambda: switch["on"])
    def kernel_numpy(x: Any, *, xp: Any = None, ws: Any = None) -> Any:
        return x + 1

    assert specialization(kernel, np_xp) is None
    switch["on"] = True
    assert specialization(kernel, np_xp) is kernel_numpy
    assert kernel_numpy.specializes is kernel  # type: ignore[attr-defined]


def test_cupy_kernels_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BPCORE_CUPY_FAST", raising=False)
    assert not dispatch.cupy_kernels_enabled()
    monkeypatch.setenv("BPCORE_CUPY_FAST", "1")
    assert dispatch.cupy_kernels_enabled()


def test_workspace_reuses_buffers_by_scope_shape_and_dtype() -> None:
    ws = Workspace(np_xp)
    a = ws.scope(0).buffer("z", (3, 2), np.float32)
    assert ws.scope(0).buffer("z", (3, 2), np.float32) is a
    assert ws.scope(1).buffer("z", (3, 2), np.float32) is not a
    assert ws.scope(0).buffer("z", (4, 2), np.float32).shape == (4, 2)
    assert ws.scope(0).buffer("z", (4, 2), np.float64).dtype == np.float64
    other: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: other.update(b=ws.scope(0).buffer("y", (1,), "f8")))
    thread.start()
    thread.join()
    assert other["b"] is not ws.scope(0).buffer("y", (1,), "f8")  # one set per thread


def test_bound_layers_use_their_specializations() -> None:
    net = bp.mlp([3, 4, 2], "relu")
    bound = bind(net, Binding(np_xp, Workspace(np_xp)))
    x = _rand((5, 3), "float64")
    params = net.init(0, xp=np_xp, dtype="float64")
    y_ref, cache_ref = net.forward(params, x)
    y, cache = bound.forward(params, x)
    _same(y, y_ref, "float64")
    dy = _rand((5, 2), "float64", seed=1)
    _same(bound.backward(params, cache, dy), net.backward(params, cache_ref, dy), "float64")
    # a portable backward on a specialized forward's cache, and the other way round
    _same(net.backward(params, cache, dy), bound.backward(params, cache_ref, dy), "float64")


# --------------------------------------------------------------------------
# the step driver with and without specializations


def _data(net: bp.Layer, loss: str, dtype: str, batch: int = 6, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, net.n_in)).astype(dtype)  # type: ignore[arg-type]
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
    ([5, 8, 3], "gelu", "softmax", "softmax_cross_entropy", bp.adam(0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[1]}-{c[3]}-{c[4].name}")
def test_step_with_specializations_matches_portable(case: tuple[Any, ...], dtype: str) -> None:
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
            before = (_copy(params), _copy(state))
            new_params, new_state, value = step(params, state, x, t)
            if mode != "inplace":  # functional: nothing passed in changed
                _equal(params, before[0])
                _equal(state, before[1])
            params, state = new_params, new_state
            values.append(np.asarray(value))
            assert np.asarray(value).shape == ()
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(t, t0)
        results[mode] = (params, state, values)
    ref = results["portable"]
    for mode in ("fast", "inplace"):
        params, state, values = results[mode]
        _same(params, ref[0], dtype)
        _same(state, ref[1], dtype)
        _same(np.array(values), np.array(ref[2]), dtype)


def test_inplace_step_writes_into_the_callers_arrays() -> None:
    net = bp.mlp([4, 6, 3], "relu")
    opt = bp.adam(0.01)
    params = net.init(0, xp=np_xp)
    state = opt.init(params)
    W = params[0]["W"]
    W0 = W.copy()
    step = bp.train_step(net, "softmax_cross_entropy", opt, inplace=True)
    new_params, new_state, _ = step(params, state, *_data(net, "softmax_cross_entropy", "float32"))
    assert new_params[0]["W"] is W
    assert new_state.m[0]["W"] is state.m[0]["W"]
    assert new_state.count == 1
    assert not np.array_equal(W, W0)


@pytest.mark.parametrize("make_opt", [lambda: bp.adam(0.01), lambda: bp.momentum(0.1)],
                         ids=["adam", "momentum"])
def test_workspace_follows_changing_batch_sizes(make_opt: Any) -> None:
    # the last, smaller batch of an epoch must not mix up the step's buffers
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
    _same(out["inplace"][0], out["portable"][0], "float64")
    _same(out["inplace"][1], out["portable"][1], "float64")
    np.testing.assert_allclose(out["inplace"][2], out["portable"][2], rtol=1e-12)


def test_step_is_safe_to_share_between_threads() -> None:
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
        _equal(threaded[i], alone[i])


def test_value_and_grad_and_predict_return_arrays_the_next_call_does_not_overwrite() -> None:
    net = bp.mlp([4, 6, 3], "relu")
    params = net.init(0, xp=np_xp, dtype="float64")
    x1, t1 = _data(net, "softmax_cross_entropy", "float64", seed=1)
    x2, t2 = _data(net, "softmax_cross_entropy", "float64", seed=2)
    _, g1 = bp.value_and_grad(net, "softmax_cross_entropy", params, x1, t1)
    y1 = bp.predict(net, params, x1)
    kept = (_copy(g1), y1.copy())
    bp.value_and_grad(net, "softmax_cross_entropy", params, x2, t2)
    bp.predict(net, params, x2)
    _equal(g1, kept[0])
    np.testing.assert_array_equal(y1, kept[1])


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
        lambda: bp.sequential(bp.dense(3, 4), bp.leaky_relu(0.1), bp.dense(4, 2)),
        lambda: bp.sequential(bp.dense(3, 4), _custom_layer(), bp.dense(4, 2)),
        lambda: bp.sequential(bp.sequential(bp.dense(3, 4), bp.relu()), bp.dense(4, 2)),
        lambda: bp.dense(3, 2),
    ],
    ids=["leaky_relu", "custom", "nested", "bare-dense"],
)
def test_any_network_runs_with_and_without_specializations(layers: Any) -> None:
    net = layers()
    opt = bp.sgd(0.1)
    x = _rand((5, 3), "float64")
    t = np.array([0, 1, 1, 0, 1])
    out = {}
    for use_fast in (False, True):
        params = net.init(0, xp=np_xp, dtype="float64")
        step = bp.train_step(net, "softmax_cross_entropy", opt, fast=use_fast)
        out[use_fast] = step(params, opt.init(params), x, t)
    _same(out[True][0], out[False][0], "float64")


def test_custom_loss_and_optimizer_are_called() -> None:
    net = bp.mlp([3, 4, 2], "tanh")

    def fn(y: Any, t: Any, *, xp: Any = None) -> tuple[Any, Any]:
        d = y - t
        return np.asarray(np.sum(d * d)), 2.0 * d

    calls = []
    base = bp.sgd(0.1)

    def update(grads: Any, state: Any, params: Any, *, xp: Any = None) -> Any:
        calls.append(1)
        return base.update(grads, state, params, xp=xp)

    mine = bp.Optimizer(base.init, update, "mine", {})
    assert mine.rule is None
    params = net.init(0, xp=np_xp, dtype="float64")
    x, t = _rand((5, 3), "float64"), _rand((5, 2), "float64", seed=9)
    new, _, _ = bp.train_step(net, bp.Loss("sse2", fn, "values"), mine)(
        params, mine.init(params), x, t)
    ref, _, _ = bp.train_step(net, "half_sse", bp.sgd(0.2), fast=False)(
        params, base.init(params), x, t)
    assert calls == [1]
    _same(new, ref, "float64")


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
    _same(new, ref, "float64")
    _same(new_state, ref_state, "float64")
    _equal(grads, host_g)  # gradients are read only
    if bp.backend.is_mutable(xp):
        assert new["W"] is params["W"]  # written into the caller's arrays
    else:
        assert new["W"] is not params["W"]  # JAX: functional, inputs untouched
        _equal(params, host)


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
    _same(out[True][0], out[False][0], "float32")
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-5)


# --------------------------------------------------------------------------
# lending: a functional step's results come back to the workspace once dropped


def test_workspace_lends_a_buffer_and_takes_it_back_only_when_dropped() -> None:
    ws = Workspace(np_xp)
    assert ws.lends
    g = ws.scope(0).buffer("dW", (3, 2), np.float32)
    out = ws.outputs([(g, g)], True)[0]  # rows (p, g, *slots)
    assert out[0] is g  # the result may go into the workspace's own buffer
    ws.lend(*out)
    assert ws.scope(0).buffer("dW", (3, 2), np.float32) is not g  # g left the workspace
    held = ws.scope(0).buffer("dW", (3, 2), np.float32)
    ws.lend(held)
    # the caller still holds g and `held`: new arrays, never theirs
    fresh = ws.outputs([(g, None, g)], False)[0]
    assert all(a is not g and a is not held for a in fresh)
    del out
    # a dropped array is taken back, oldest first, whatever asks for that shape
    g_id = id(g)
    del g
    assert id(ws.outputs([(held, None)], False)[0][0]) == g_id
    assert ws.outputs([(held, held)], True)[0][0] is not held  # lent: no longer the workspace's


@pytest.mark.parametrize("holder", ["name", "view", "memoryview", "weakref", "list", "frozen"])
def test_workspace_never_takes_back_an_array_something_refers_to(holder: str) -> None:
    import weakref

    ws = Workspace(np_xp)
    a = np.zeros((4, 3))
    ws.lend(a)
    keep = {"name": lambda: a, "view": lambda: a[1:], "memoryview": lambda: memoryview(a),
            "weakref": lambda: weakref.ref(a), "list": lambda: [a],
            "frozen": lambda: None}[holder]()
    if holder == "frozen":
        a.flags.writeable = False
    a_id = id(a)
    if holder != "name":
        del a
    e = np.empty((4, 3))
    assert all(id(b) != a_id for b in ws.outputs([(e, None, e, e)], False)[0])
    del keep


def test_only_numpy_workspaces_lend(xp: ModuleType) -> None:
    ws = Workspace(xp)
    assert ws.lends == (bp.backend.backend_name(xp) == "numpy")
    like = bp.to_backend(np.zeros((2, 3)))
    out = ws.outputs([(like, like)], True)[0]
    assert out[0] is not like and tuple(out[0].shape) == (2, 3)
    ws.lend(*out)  # a no-op where it does not lend


@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "nesterov", "adam", "adamw"])
def test_functional_step_lends_two_buffers_per_array_and_matches_inplace(make: Any) -> None:
    net = bp.mlp([6, 8, 3], "sigmoid")
    opt = make()
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5))
               for _ in range(3)]
    out = {}
    for inplace in (False, True):
        params = net.init(0, xp=np_xp, dtype="float32")
        state = opt.init(params)
        step = bp.train_step(net, "softmax_cross_entropy", opt, inplace=inplace)
        seen: set[int] = set()
        for i in range(12):
            params, state, _ = step(params, state, *batches[i % 3])
            if i >= 2:
                seen.update(id(a) for a in bp.tree.leaves(params))
        out[inplace] = (params, state)
        if not inplace:  # the arrays of two steps, taken back in turn: no fresh ones
            assert len(seen) == 2 * len(bp.tree.leaves(params))
    _equal(out[False][0], out[True][0])  # the same arithmetic, bit for bit
    _equal(out[False][1], out[True][1])


@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "nesterov", "adam", "adamw"])
def test_functional_step_never_changes_what_the_caller_keeps(make: Any) -> None:
    import weakref

    net = bp.mlp([6, 8, 3], "tanh")
    opt = make()
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    params = net.init(0, xp=np_xp, dtype="float64")
    state = opt.init(params)
    kept: list[tuple[Any, Any]] = []  # (what the caller holds, its values when returned)
    for i in range(16):
        params, state, _ = step(params, state, x, t)
        holder = i % 4
        if holder == 0:  # the whole result
            kept.append(((params, state), _copy((params, state))))
        elif holder == 1:  # a view of one parameter
            kept.append((params[0]["W"][1:], params[0]["W"][1:].copy()))
        elif holder == 2:  # a weak reference: must keep the array from reuse too
            ref = weakref.ref(params[0]["W"])
            kept.append((ref, params[0]["W"].copy()))
    for held, values in kept:
        if isinstance(held, weakref.ref):
            held = held()
            if held is None:
                continue
        _equal(held, values)
