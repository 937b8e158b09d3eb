"""The dense layer's kernels (bpcore/layers/dense.py) on every backend."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from gradcheck import (
    assert_like,
    assert_same_tree,
    check_gradient,
    host,
    put,
    snapshot,
)

import bpcore as bp
from bpcore.layers.dense import DenseCache, dense_backward, dense_forward

BATCH, N_IN, N_OUT = 4, 3, 2


def _host_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((BATCH, N_IN)),
        "W": rng.standard_normal((N_IN, N_OUT)),
        "b": rng.standard_normal((N_OUT,)),
        "r": rng.standard_normal((BATCH, N_OUT)),  # the cotangent dL/dz
    }


def _objective(xp: ModuleType, h: dict[str, np.ndarray], wrt: str):
    """``a -> Σ z * r`` with ``z = dense(x, W, b)`` and input ``wrt`` replaced by ``a``."""

    def f(a: np.ndarray) -> float:
        v = {**h, wrt: a}
        z, _ = dense_forward({"W": put(xp, v["W"]), "b": put(xp, v["b"])}, put(xp, v["x"]))
        return float(np.sum(host(z) * h["r"]))

    return f


def _grads(xp: ModuleType, h: dict[str, np.ndarray]) -> dict[str, object]:
    layer = bp.dense(N_IN, N_OUT)
    params = {"W": put(xp, h["W"]), "b": put(xp, h["b"])}
    _, cache = layer.forward(params, put(xp, h["x"]))
    dx, grads = layer.backward(params, cache, put(xp, h["r"]))
    return {"x": dx, "W": grads["W"], "b": grads["b"]}


@pytest.mark.parametrize("wrt", ["x", "W", "b"])
def test_dense_gradients_match_central_differences(xp: ModuleType, wrt: str) -> None:
    h = _host_inputs()
    g = _grads(xp, h)
    check_gradient(_objective(xp, h, wrt), h[wrt], g[wrt], seed=1)


def test_gradient_check_rejects_wrong_dense_formulas(xp: ModuleType) -> None:
    """The checker is tight enough to fail the classic mistakes."""
    h = _host_inputs()
    x, W, r = (put(xp, h[k]) for k in ("x", "W", "r"))
    wrong = {
        "W": x.mT @ r / BATCH,  # spurious batch mean
        "x": 1.001 * (r @ W.mT),  # off by 0.1 %
        "b": r[0, :],  # forgot to sum over the batch
    }
    for wrt, g in wrong.items():
        with pytest.raises(AssertionError, match="gradient check failed"):
            check_gradient(_objective(xp, h, wrt), h[wrt], g, seed=1)


def test_need_dx_false_skips_dx_only(xp: ModuleType) -> None:
    h = _host_inputs()
    params = {"W": put(xp, h["W"]), "b": put(xp, h["b"])}
    cache = DenseCache(put(xp, h["x"]))
    dx, grads = dense_backward(params, cache, put(xp, h["r"]), need_dx=False)
    full = _grads(xp, h)
    assert dx is None
    np.testing.assert_array_equal(host(grads["W"]), host(full["W"]))
    np.testing.assert_array_equal(host(grads["b"]), host(full["b"]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_outputs_stay_on_the_input_backend(xp: ModuleType, dtype: str) -> None:
    h = _host_inputs()
    layer = bp.dense(N_IN, N_OUT)
    params = {"W": put(xp, h["W"], dtype), "b": put(xp, h["b"], dtype)}
    x = put(xp, h["x"], dtype)
    dz = put(xp, h["r"], dtype)
    before = snapshot((params, x, dz))
    z, cache = layer.forward(params, x)
    dx, grads = layer.backward(params, cache, dz)
    assert_like(z, x, xp, (BATCH, N_OUT))
    assert_like(dx, x, xp, (BATCH, N_IN))
    assert_like(grads["W"], x, xp, (N_IN, N_OUT))
    assert_like(grads["b"], x, xp, (N_OUT,))
    assert set(grads) == set(params)
    assert_same_tree((params, x, dz), before)  # nothing passed in was written to


def test_dense_init_uses_the_default_backend(xp: ModuleType) -> None:
    params = bp.dense(N_IN, N_OUT).init(0)
    assert_like(params["W"], params["b"], xp, (N_IN, N_OUT))
    assert str(params["W"].dtype).endswith("float32")
    np.testing.assert_array_equal(host(params["b"]), np.zeros(N_OUT))


def test_dense_matches_torch_autograd(xp: ModuleType, torch: ModuleType) -> None:
    h = _host_inputs(seed=3)
    g = _grads(xp, h)
    layer = bp.dense(N_IN, N_OUT)
    z, _ = layer.forward({"W": put(xp, h["W"]), "b": put(xp, h["b"])}, put(xp, h["x"]))

    tx, tW, tb = (torch.tensor(h[k], dtype=torch.float64, requires_grad=True) for k in "xWb")
    tz = torch.nn.functional.linear(tx, tW.T, tb)
    tz.backward(torch.tensor(h["r"], dtype=torch.float64))

    np.testing.assert_allclose(host(z), tz.detach().numpy(), rtol=1e-12, atol=1e-12)
    for k, t in (("x", tx), ("W", tW), ("b", tb)):
        assert t.grad is not None
        np.testing.assert_allclose(host(g[k]), t.grad.numpy(), rtol=1e-12, atol=1e-12)
