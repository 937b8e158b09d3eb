"""Convolution and pooling kernels (bpcore/layers/conv.py, pool.py) on every backend:
agreement with PyTorch's autograd in float64, central differences, the NumPy
specializations against the portable kernels, and the layers' settings."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import assert_like, assert_same_tree, check_gradient, host, put, snapshot

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.dispatch import Workspace, specializations
from bpcore.layers import pool as pool_mod
from bpcore.layers.conv import (
    col2im,
    conv1d_backward,
    conv1d_forward,
    conv2d_backward,
    conv2d_forward,
    im2col,
)

KERNELS = {1: (conv1d_forward, conv1d_backward), 2: (conv2d_forward, conv2d_backward)}

#: (x shape, W shape, stride, padding, dilation)
CASES_1D = [
    ((2, 3, 9), (4, 3, 3), 1, 0, 1),
    ((2, 2, 10), (3, 2, 2), 2, 1, 1),
    ((1, 3, 11), (2, 3, 3), 3, 2, 2),  # the last padded entries feed no window
    ((3, 1, 5), (2, 1, 5), 1, 0, 1),  # kernel as long as the input
    ((2, 1, 40), (25, 1, 5), 2, 1, 1),  # MNIST-1D's first layer
]
CASES_2D = [
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 0, 1),
    ((2, 2, 7, 6), (3, 2, 3, 2), (2, 1), (1, 2), (1, 2)),
    ((1, 3, 8, 7), (2, 3, 2, 3), 2, 1, 2),
    ((2, 1, 5, 5), (2, 1, 1, 1), 3, 3, 1),  # a 1x1 kernel, some windows only padding
]


def _random_conv_cases(ndim: int, n: int, seed: int) -> list[tuple[Any, ...]]:
    """Random geometries (seeded): every size, stride, padding and dilation drawn."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = tuple(int(v) for v in rng.integers(1, 5, ndim))
        s = tuple(int(v) for v in rng.integers(1, 4, ndim))
        p = tuple(int(v) for v in rng.integers(0, 3, ndim))
        d = tuple(int(v) for v in rng.integers(1, 3, ndim))
        span = [di * (ki - 1) + 1 for di, ki in zip(d, k)]
        spatial = tuple(max(1, sp - 2 * pi + int(rng.integers(0, 6))) for sp, pi in zip(span, p))
        c_in, c_out, batch = (int(v) for v in rng.integers(1, 4, 3))
        out.append(((batch, c_in, *spatial), (c_out, c_in, *k), s, p, d))
    return out


ALL_1D = CASES_1D + _random_conv_cases(1, 4, seed=11)
ALL_2D = CASES_2D + _random_conv_cases(2, 4, seed=12)
#: JAX compiles every operation for every new shape when it runs eagerly: fewer cases there
JAX_CASES = {1: [CASES_1D[2]], 2: [CASES_2D[1]]}


def _cases(xp: ModuleType, ndim: int) -> list[tuple[Any, ...]]:
    if backend_name(xp) == "jax":
        return JAX_CASES[ndim]
    return ALL_1D if ndim == 1 else ALL_2D


def _host_inputs(case: tuple[Any, ...], seed: int = 0) -> dict[str, Any]:
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal(x_shape),
        "W": rng.standard_normal(w_shape),
        "b": rng.standard_normal(w_shape[0]),
        "geometry": {"stride": stride, "padding": padding, "dilation": dilation},
    }


def _run(xp: ModuleType, ndim: int, h: dict[str, Any], dtype: str | None = None) -> Any:
    """Forward on ``xp``; returns ``(params, x, y, cache)``."""
    fwd, _ = KERNELS[ndim]
    params = {"W": put(xp, h["W"], dtype), "b": put(xp, h["b"], dtype)}
    x = put(xp, h["x"], dtype)
    y, cache = fwd(params, x, **h["geometry"])
    return params, x, y, cache


def _close(got: Any, want: Any) -> None:
    np.testing.assert_allclose(host(got), want.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ndim", [1, 2])
def test_conv_matches_torch_autograd(xp: ModuleType, torch: ModuleType, ndim: int) -> None:
    conv = torch.nn.functional.conv1d if ndim == 1 else torch.nn.functional.conv2d
    for i, case in enumerate(_cases(xp, ndim)):
        h = _host_inputs(case, seed=3 + i)
        params, _x, y, cache = _run(xp, ndim, h)
        r = np.random.default_rng(4).standard_normal(tuple(y.shape))
        dx, grads = KERNELS[ndim][1](params, cache, put(xp, r))
        tx, tW, tb = (torch.tensor(h[k], dtype=torch.float64, requires_grad=True) for k in "xWb")
        ty = conv(tx, tW, tb, **h["geometry"])
        ty.backward(torch.tensor(r))
        _close(y, ty)
        for got, t in ((dx, tx), (grads["W"], tW), (grads["b"], tb)):
            assert t.grad is not None
            _close(got, t.grad)


def _pool_cases(ndim: int, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    # first, windows that tile the input (the reshape path), with a tail none covers
    out = [{"shape": (2, 3, 9, 7)[:2 + ndim], "kernel_size": (2, 3)[:ndim],
            "stride": (2, 3)[:ndim], "padding": (0,) * ndim, "dilation": (1,) * ndim}]
    for i in range(n):
        k = tuple(int(v) for v in rng.integers(1, 4, ndim))
        s = tuple(int(v) for v in rng.integers(1, 4, ndim))
        p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        d = tuple(int(v) for v in rng.integers(1, 3, ndim)) if i % 2 else (1,) * ndim
        spatial = tuple(di * (ki - 1) + 1 + int(rng.integers(0, 6)) for di, ki in zip(d, k))
        out.append({"shape": (2, int(rng.integers(1, 4)), *spatial), "kernel_size": k,
                    "stride": s, "padding": p, "dilation": d})
    return out


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg", "avg_exclude_pad"])
def test_pool_matches_torch_autograd(
    xp: ModuleType, torch: ModuleType, ndim: int, kind: str
) -> None:
    F = torch.nn.functional
    cases = _pool_cases(ndim, 1 if backend_name(xp) == "jax" else 5, seed=20 + ndim)
    for i, c in enumerate(cases):
        x_host = np.random.default_rng(i).standard_normal(c["shape"])
        geometry = {"kernel_size": c["kernel_size"], "stride": c["stride"],
                    "padding": c["padding"]}
        tx = torch.tensor(x_host, requires_grad=True)
        if kind == "max":
            y, cache = pool_mod.max_pool_forward(put(xp, x_host), dilation=c["dilation"],
                                                 **geometry)
            ty = (F.max_pool1d if ndim == 1 else F.max_pool2d)(tx, dilation=c["dilation"],
                                                               **geometry)
            backward = pool_mod.max_pool_backward
        else:
            include = kind == "avg"
            y, cache = pool_mod.avg_pool_forward(put(xp, x_host), count_include_pad=include,
                                                 **geometry)
            ty = (F.avg_pool1d if ndim == 1 else F.avg_pool2d)(tx, count_include_pad=include,
                                                               **geometry)
            backward = pool_mod.avg_pool_backward
        r = np.random.default_rng(100 + i).standard_normal(tuple(y.shape))
        dx = backward(cache, put(xp, r))
        ty.backward(torch.tensor(r))
        _close(y, ty)
        assert tx.grad is not None
        _close(dx, tx.grad)


@pytest.mark.parametrize(("ndim", "case"), [(1, CASES_1D[2]), (2, CASES_2D[1])], ids=["1d", "2d"])
@pytest.mark.parametrize("wrt", ["x", "W", "b"])
def test_conv_gradients_match_central_differences(
    xp: ModuleType, ndim: int, case: tuple[Any, ...], wrt: str
) -> None:
    h = _host_inputs(case)
    params, _x, y, cache = _run(xp, ndim, h)
    r = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx, grads = KERNELS[ndim][1](params, cache, put(xp, r))
    g = {"x": dx, **grads}

    def f(a: np.ndarray) -> float:
        _, _, y, _ = _run(xp, ndim, {**h, wrt: a})
        return float(np.sum(host(y) * r))

    check_gradient(f, h[wrt], g[wrt], seed=2)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradients_match_central_differences(xp: ModuleType, kind: str) -> None:
    # 2-D, strided, padded, dilated (max); distinct values keep each maximum unique
    x_host = np.random.default_rng(7).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0
    geometry = {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1)}
    if kind == "max":
        fwd, bwd = pool_mod.max_pool_forward, pool_mod.max_pool_backward
        geometry["dilation"] = (1, 2)
    else:
        fwd, bwd = pool_mod.avg_pool_forward, pool_mod.avg_pool_backward
    y, cache = fwd(put(xp, x_host), **geometry)
    r = np.random.default_rng(8).standard_normal(tuple(y.shape))
    dx = bwd(cache, put(xp, r))

    def f(a: np.ndarray) -> float:
        return float(np.sum(host(fwd(put(xp, a), **geometry)[0]) * r))

    check_gradient(f, x_host, dx, seed=3, eps=1e-7)  # a step far below the gaps between values


def test_gradient_check_rejects_a_flipped_kernel(xp: ModuleType) -> None:
    """The classic mistake, convolution for correlation (a flipped kernel), fails."""
    h = _host_inputs(CASES_2D[1])
    params, _x, y, cache = _run(xp, 2, h)
    r = np.random.default_rng(1).standard_normal(tuple(y.shape))
    flipped = {**params, "W": xp.flip(params["W"], axis=(2, 3))}
    dx, _grads = conv2d_backward(flipped, cache, put(xp, r))
    wrong = {"x": dx, "W": xp.flip(conv2d_backward(params, cache, put(xp, r))[1]["W"], axis=3)}
    for wrt, g in wrong.items():

        def f(a: np.ndarray, wrt: str = wrt) -> float:
            return float(np.sum(host(_run(xp, 2, {**h, wrt: a})[2]) * r))

        with pytest.raises(AssertionError, match="gradient check failed"):
            check_gradient(f, h[wrt], g, seed=2)


@pytest.mark.parametrize("ndim", [1, 2])
def test_outputs_stay_on_the_input_backend(xp: ModuleType, ndim: int) -> None:
    """In float32 (float64 everywhere else), on the input's device; nothing written to;
    ``need_dx=False`` skips ``dx`` only."""
    if ndim == 2 and backend_name(xp) == "jax":
        pytest.skip("JAX: the 1-D case (eager JAX compiles every operation of the 2-D "
                    "kernels anew in float32: seconds; the 2-D kernels are checked on JAX in "
                    "float64 by the other tests)")
    case = CASES_1D[1] if ndim == 1 else CASES_2D[1]
    h = _host_inputs(case)
    params, x, y, cache = _run(xp, ndim, h, "float32")
    dy = put(xp, np.ones(tuple(y.shape)), "float32")
    before = snapshot((params, x, dy))
    dx, grads = KERNELS[ndim][1](params, cache, dy)
    assert_like(y, x, xp)
    assert_like(dx, x, xp, tuple(x.shape))
    assert_like(grads["W"], x, xp, tuple(params["W"].shape))
    assert_like(grads["b"], x, xp, tuple(params["b"].shape))
    assert set(grads) == set(params)
    none, only = KERNELS[ndim][1](params, cache, dy, need_dx=False)
    assert none is None
    for k in ("W", "b"):
        np.testing.assert_array_equal(host(only[k]), host(grads[k]))
    for fwd, bwd in ((pool_mod.max_pool_forward, pool_mod.max_pool_backward),
                     (pool_mod.avg_pool_forward, pool_mod.avg_pool_backward)):
        py, pcache = fwd(x, kernel_size=2, padding=1)
        assert_like(py, x, xp)
        assert_like(bwd(pcache, xp.ones_like(py)), x, xp, tuple(x.shape))
    assert_same_tree((params, x, dy), before)  # nothing passed in was written to


def test_col2im_is_the_adjoint_of_im2col(xp: ModuleType) -> None:
    """``<im2col(x), c> = <x, col2im(c)>`` for random ``x`` and ``c``."""
    rng = np.random.default_rng(5)
    geometry = {"stride": (2, 3), "padding": (1, 2), "dilation": (2, 1)}
    x = rng.standard_normal((2, 3, 7, 8))
    cols = im2col(put(xp, x), (2, 3), **geometry)
    c = rng.standard_normal(tuple(cols.shape))
    back = col2im(put(xp, c), (7, 8), (2, 3), **geometry)
    assert_like(back, cols, xp, x.shape)
    np.testing.assert_allclose(np.sum(host(cols) * c), np.sum(x * host(back)), rtol=1e-12)


# --------------------------------------------------------------------------
# the NumPy specializations


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_numpy_specializations_match_the_portable_kernels(ndim: int, dtype: str) -> None:
    fwd, bwd = KERNELS[ndim]
    fast_fwd, fast_bwd = specializations(fwd)["numpy"], specializations(bwd)["numpy"]
    tol = {"float32": {"rtol": 2e-5, "atol": 1e-5}, "float64": {"rtol": 1e-12, "atol": 1e-12}}
    for case in (ALL_1D if ndim == 1 else ALL_2D)[:6]:
        h = _host_inputs(case)
        params = {"W": h["W"].astype(dtype), "b": h["b"].astype(dtype)}
        x = h["x"].astype(dtype)
        for x_in in (x, np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)):
            kept = snapshot((params, x_in))
            y, cache = fwd(params, x_in, **h["geometry"])
            dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
            want = bwd(params, cache, dy)
            for ws in (None, Workspace(np)):
                for _ in range(2):  # the second call reuses the workspace's buffers
                    fy, fcache = fast_fwd(params, x_in, **h["geometry"], ws=ws)
                    np.testing.assert_allclose(fy, y, **tol[dtype])
                    np.testing.assert_allclose(fcache.cols, cache.cols, **tol[dtype])
                    # each specialization with the other's cache, and with its own
                    for got in (fast_bwd(params, fcache, dy, ws=ws), fast_bwd(params, cache, dy),
                                bwd(params, fcache, dy)):
                        np.testing.assert_allclose(got[0], want[0], **tol[dtype])
                        for k in ("W", "b"):
                            np.testing.assert_allclose(got[1][k], want[1][k], **tol[dtype])
                    assert fast_bwd(params, fcache, dy, need_dx=False, ws=ws)[0] is None
            assert_same_tree((params, x_in), kept)


def test_the_step_driver_binds_the_numpy_specializations() -> None:
    net = bp.sequential(bp.conv1d(1, 2, 3))
    bound = bp.layers.core.bind(net, bp.dispatch.Binding(bp.namespace(np.zeros(1))))
    x = np.ones((2, 1, 5))
    y, _cache = bound.forward(net.init(0, dtype="float64"), x)
    assert not y.flags.c_contiguous  # the batch-last layout of the NumPy kernel
    portable, _ = net.forward(net.init(0, dtype="float64"), x)
    np.testing.assert_allclose(y, portable, rtol=1e-12)


# --------------------------------------------------------------------------
# settings


def test_kernels_reject_bad_settings_and_shapes() -> None:
    params = {"W": np.ones((2, 3, 3)), "b": np.zeros(2)}
    with pytest.raises(bp.SettingError, match="stride"):
        conv1d_forward(params, np.ones((1, 3, 5)), stride=0)
    with pytest.raises(bp.SettingError, match="padding"):
        conv2d_forward({"W": np.ones((2, 3, 3, 3)), "b": np.zeros(2)}, np.ones((1, 3, 5, 5)),
                       padding=(1, 2, 3))
    with pytest.raises(bp.ShapeError, match="C_in"):
        conv1d_forward(params, np.ones((1, 2, 5)))
    with pytest.raises(bp.ShapeError, match="span"):
        conv1d_forward(params, np.ones((1, 3, 4)), dilation=2)
    with pytest.raises(bp.SettingError, match="more than half the kernel"):
        pool_mod.max_pool_forward(np.ones((1, 1, 6)), kernel_size=2, padding=2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: bp.conv1d(0, 2, 3), r"conv1d\(\): in_channels must be a positive int, got 0"),
        (lambda: bp.conv2d(1, 2, (3, 0)), r"conv2d\(\): kernel_size must be an int or 2 ints"),
        (lambda: bp.conv1d(1, 2, 3, stride=1.5), r"conv1d\(\): stride must be an int"),
        (lambda: bp.conv1d(1, 2, 3, padding=-1), r"padding must be an int or 1 ints, each >= 0"),
        (lambda: bp.conv1d(1, 2, 3, init="lecun"), r"conv1d\(\): unknown initializer 'lecun'"),
        (lambda: bp.max_pool2d(2, padding=(1, 2)), r"max_pool2d\(\): padding \(1, 2\) is more"),
        (lambda: bp.avg_pool1d(2, count_include_pad=1), r"count_include_pad must be True or"),
        (lambda: bp.reshape(40), r"reshape\(\) takes a per-sample shape"),
        (lambda: bp.reshape((1, 0)), r"reshape\(\): each size must be a positive int"),
    ],
)
def test_layer_factories_reject_bad_settings(make: Any, message: str) -> None:
    with pytest.raises(bp.SettingError, match=message):
        make()


def test_numpy_integers_are_sizes_too() -> None:
    layer = bp.conv2d(np.int64(3), np.int64(4), (np.int64(3), 3), stride=np.int32(2))
    assert layer.config["kernel_size"] == [3, 3] and layer.config["stride"] == [2, 2]


@pytest.mark.parametrize("init", ["he_uniform", "glorot_normal", "torch"])
def test_conv_init_uses_pytorch_fans(init: str) -> None:
    W = bp.conv1d(25, 50, 3, init=init).init(0, xp=bp.namespace(np.zeros(1)),
                                             dtype="float64")["W"]
    fan_in, fan_out = 25 * 3, 50 * 3
    bound = {"he_uniform": np.sqrt(6 / fan_in), "torch": 1 / np.sqrt(fan_in)}.get(init)
    if bound is None:  # glorot normal: the standard deviation
        assert np.std(W) == pytest.approx(np.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    else:
        assert np.max(np.abs(W)) <= bound and np.max(np.abs(W)) > 0.95 * bound


def test_numpy_max_pool_specialization_matches_the_portable_kernel() -> None:
    fast_fwd = specializations(pool_mod.max_pool_forward)["numpy"]
    fast_bwd = specializations(pool_mod.max_pool_backward)["numpy"]
    rng = np.random.default_rng(9)
    for shape, geometry in (((2, 3, 9, 7), {"kernel_size": (2, 3)}),  # tiled, a tail left
                            ((2, 2, 11), {"kernel_size": 3}),
                            ((2, 2, 8, 8), {"kernel_size": 3, "stride": 2, "padding": 1})):
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # no ties
        y, cache = pool_mod.max_pool_forward(x, **geometry)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        want = pool_mod.max_pool_backward(cache, dy)
        for ws in (None, Workspace(np)):
            fy, fcache = fast_fwd(x, **geometry, ws=ws)
            np.testing.assert_array_equal(fy, y)
            np.testing.assert_array_equal(fcache.argmax, cache.argmax)
            for got in (fast_bwd(fcache, dy, ws=ws), fast_bwd(cache, dy),
                        pool_mod.max_pool_backward(fcache, dy)):
                np.testing.assert_array_equal(got, want)


def test_numpy_conv_blocks_its_thin_gemms() -> None:
    """Thin weights (C_out·C_in·k <= 256) and more than 4096 columns: the GEMMs run
    in column blocks, with the same results as the portable kernel."""
    from bpcore.layers import conv as conv_mod

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 41, 40))
    params = {"W": rng.standard_normal((2, 1, 3, 3)), "b": rng.standard_normal(2)}
    assert len(conv_mod._blocks(2, 9, 3 * 39 * 38)) == 2
    y, cache = conv2d_forward(params, x)
    dy = rng.standard_normal(y.shape)
    want = conv2d_backward(params, cache, dy)
    fy, fcache = specializations(conv2d_forward)["numpy"](params, x, ws=Workspace(np))
    got = specializations(conv2d_backward)["numpy"](params, fcache, dy, ws=Workspace(np))
    np.testing.assert_allclose(fy, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    for k in ("W", "b"):
        np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_conv_relu_pool_chain_in_the_batch_last_layout(dtype: str) -> None:
    """conv2d -> relu -> max_pool2d(2) and back, bound to NumPy (each kernel's output
    laid out as its input, batch last) against the portable kernels; ties in the
    pooling windows (relu's zeros) go to the first maximum in both."""
    net = bp.sequential(bp.conv2d(2, 3, 3, padding=1), bp.relu(), bp.max_pool2d(2),
                        bp.conv2d(3, 2, 2), bp.relu(), bp.max_pool2d((2, 2)))
    params = net.init(0, xp=bp.namespace(np.zeros(1)), dtype=dtype)
    x = np.random.default_rng(2).standard_normal((4, 2, 11, 13)).astype(dtype)
    for ws in (None, Workspace(np)):
        bound = bp.layers.core.bind(net, bp.dispatch.Binding(bp.namespace(x), ws))
        for _ in range(2):
            y, cache = bound.forward(params, x)
            want_y, want_cache = net.forward(params, x)
            assert not y.flags.c_contiguous and np.moveaxis(y, 0, -1).flags.c_contiguous
            np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
            dy = np.random.default_rng(3).standard_normal(y.shape).astype(dtype)
            dx, grads = bound.backward(params, cache, dy)
            want_dx, want_grads = net.backward(params, want_cache, dy)
            np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
            for got_g, want_g in zip(grads, want_grads):
                for k in got_g:
                    np.testing.assert_allclose(got_g[k], want_g[k], rtol=1e-5, atol=1e-5)


def test_numpy_max_pool_specialization_on_batch_last_inputs_with_ties() -> None:
    fast_fwd = specializations(pool_mod.max_pool_forward)["numpy"]
    fast_bwd = specializations(pool_mod.max_pool_backward)["numpy"]
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, (3, 2, 8, 9)).astype(np.float32)  # many ties
    x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)  # batch last
    y, cache = pool_mod.max_pool_forward(x, kernel_size=2)
    fy, fcache = fast_fwd(x, kernel_size=2, ws=Workspace(np))
    assert np.moveaxis(fy, 0, -1).flags.c_contiguous
    np.testing.assert_array_equal(fy, y)
    np.testing.assert_array_equal(fcache.argmax, cache.argmax)
    dy = np.moveaxis(rng.standard_normal((2, 4, 4, 3)).astype(np.float32), -1, 0)
    np.testing.assert_array_equal(fast_bwd(fcache, dy), pool_mod.max_pool_backward(cache, dy))


# --------------------------------------------------------------------------
# the PyTorch and JAX specializations: the libraries' own convolution kernels

#: JAX compiles every operation for every new shape when it runs eagerly: fewer there
NATIVE_CASES = {
    "torch": {1: ALL_1D + _random_conv_cases(1, 8, seed=21),
              2: ALL_2D + _random_conv_cases(2, 8, seed=22)},
    # one input channel in 1-D (shifted products): MNIST-1D's first layer, and
    # with stride, padding and dilation together
    "jax": {1: [CASES_1D[1], CASES_1D[2], CASES_1D[4], ((2, 1, 11), (2, 1, 3), 2, 2, 2)],
            2: [CASES_2D[1], CASES_2D[2], CASES_2D[3]]},  # strides, dilation, 1x1 + padding
}


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_native_specializations_match_the_portable_kernels(backend: str, ndim: int) -> None:
    """float64, to 1e-10 relative, over strides, paddings and dilations; each
    specialization with the other's cache too (the portable backward gathers
    the windows from the input the specialized forward kept)."""
    from conftest import require_backend

    require_backend(backend)
    fwd, bwd = KERNELS[ndim]
    fast_fwd, fast_bwd = specializations(fwd)[backend], specializations(bwd)[backend]
    for i, case in enumerate(NATIVE_CASES[backend][ndim]):
        h = _host_inputs(case, seed=i)
        params = {k: bp.to_backend(h[k], backend) for k in ("W", "b")}
        x = bp.to_backend(h["x"], backend)
        y, cache = fwd(params, x, **h["geometry"])
        dy = bp.to_backend(np.random.default_rng(i).standard_normal(tuple(y.shape)), backend)
        want = bwd(params, cache, dy)
        fy, fcache = fast_fwd(params, x, **h["geometry"])
        assert fcache.cols is None and fcache.x is x
        np.testing.assert_allclose(host(fy), host(y), rtol=1e-10, atol=1e-12)
        for got in (fast_bwd(params, fcache, dy), fast_bwd(params, cache, dy),
                    bwd(params, fcache, dy)):
            for a, b in ((got[0], want[0]), (got[1]["W"], want[1]["W"]),
                         (got[1]["b"], want[1]["b"])):
                assert_like(a, b, bp.namespace(x), tuple(b.shape))
                np.testing.assert_allclose(host(a), host(b), rtol=1e-10, atol=1e-12)
        assert fast_bwd(params, fcache, dy, need_dx=False)[0] is None


def test_native_specializations_leave_errors_to_the_portable_kernels() -> None:
    from conftest import require_backend

    require_backend("torch")
    torch_fwd = specializations(conv1d_forward)["torch"]
    params = {"W": bp.to_backend(np.ones((2, 3, 3)), "torch"),
              "b": bp.to_backend(np.zeros(2), "torch")}
    with pytest.raises(bp.ShapeError, match="C_in"):
        torch_fwd(params, bp.to_backend(np.ones((1, 2, 5)), "torch"))
    with pytest.raises(bp.ShapeError, match="span"):
        torch_fwd(params, bp.to_backend(np.ones((1, 3, 4)), "torch"), dilation=2)


def test_a_chain_asks_no_input_gradient_of_its_first_trained_layer() -> None:
    """LeNet's conv after its reshape: nothing before it is trained, so its
    backward runs with need_dx=False."""
    seen = []
    conv = bp.conv2d(1, 2, 3)

    def backward(params: Any, cache: Any, dy: Any, *, xp: Any = None,
                 need_dx: bool = True) -> Any:
        seen.append(need_dx)
        return conv.backward(params, cache, dy, xp=xp, need_dx=need_dx)

    net = bp.sequential(bp.reshape((1, 5, 5)), conv._replace(backward=backward), bp.flatten(),
                        bp.dense(18, 2))
    params = net.init(0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 25))
    y, cache = net.forward(params, x)
    dx, grads = net.backward(params, cache, np.ones(y.shape), need_dx=False)
    assert dx is None and seen == [False] and grads[0] == {} and grads[1]["W"].shape == (2, 1, 3, 3)
    seen.clear()
    dx, _ = net.backward(params, cache, np.ones(y.shape))
    assert seen == [True] and dx.shape == (3, 25)
