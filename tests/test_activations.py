"""Activation kernels (bpcore/layers/activations.py) on every backend."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

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
from bpcore.layers import activations as act

SHAPE = (4, 5)
ALPHA = 0.2  # a non-default leaky-ReLU slope, so a dropped ``alpha`` shows

#: name -> (layer factory, the same function in torch)
ACTIVATIONS: dict[str, tuple[Callable[[], bp.Layer], Callable[[Any, Any], Any]]] = {
    "sigmoid": (bp.sigmoid, lambda torch, x: torch.sigmoid(x)),
    "tanh": (bp.tanh, lambda torch, x: torch.tanh(x)),
    "relu": (bp.relu, lambda torch, x: torch.relu(x)),
    "leaky_relu": (
        lambda: bp.leaky_relu(ALPHA),
        lambda torch, x: torch.nn.functional.leaky_relu(x, negative_slope=ALPHA),
    ),
    "gelu": (bp.gelu, lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh")),
    "softmax": (bp.softmax, lambda torch, x: torch.softmax(x, dim=-1)),
    "identity": (bp.identity, lambda torch, x: x.clone()),
}
NAMES = list(ACTIVATIONS)


def _host_x(seed: int = 0) -> np.ndarray:
    """Inputs in about [-3, 3], none within 0.1 of ReLU's kink at 0."""
    rng = np.random.default_rng(seed)
    mag = rng.uniform(0.1, 3.0, SHAPE)
    return np.where(rng.random(SHAPE) < 0.5, -mag, mag)


def _objective(xp: ModuleType, layer: bp.Layer, r: np.ndarray) -> Callable[[np.ndarray], float]:
    def f(a: np.ndarray) -> float:
        y, _ = layer.forward({}, put(xp, a))
        return float(np.sum(host(y) * r))

    return f


def _forward_backward(xp: ModuleType, layer: bp.Layer, x: Any, dy: Any) -> tuple[Any, Any]:
    y, cache = layer.forward({}, x)
    dx, grads = layer.backward({}, cache, dy)
    assert grads == {}
    return y, dx


@pytest.mark.parametrize("name", NAMES)
def test_activation_gradient_matches_central_differences(xp: ModuleType, name: str) -> None:
    layer = ACTIVATIONS[name][0]()
    x = _host_x()
    r = np.random.default_rng(1).standard_normal(SHAPE)
    _, dx = _forward_backward(xp, layer, put(xp, x), put(xp, r))
    check_gradient(_objective(xp, layer, r), x, dx, seed=2, n_directions=3)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("sigmoid", lambda y, r: r * (1.0 - y * y)),  # tanh's derivative
        ("tanh", lambda y, r: r * (y * (1.0 - y))),  # sigmoid's derivative
        ("softmax", lambda y, r: r * y * (1.0 - y)),  # the Jacobian's diagonal only
        ("sigmoid", lambda y, r: 1.0001 * r * y * (1.0 - y)),  # 0.01 % off
    ],
)
def test_gradient_check_rejects_wrong_activation_derivatives(
    xp: ModuleType, name: str, wrong: Callable[[Any, Any], Any]
) -> None:
    layer = ACTIVATIONS[name][0]()
    x = _host_x()
    r = np.random.default_rng(1).standard_normal(SHAPE)
    y, _ = layer.forward({}, put(xp, x))
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradient(_objective(xp, layer, r), x, wrong(y, put(xp, r)), seed=2)


def test_relu_backward_is_exact_away_from_its_kink(xp: ModuleType) -> None:
    """ReLU's derivative jumps at 0; test inputs stay 0.1 away, far beyond the 1e-6 step."""
    x = _host_x()
    assert np.min(np.abs(x)) >= 0.1
    r = np.random.default_rng(1).standard_normal(SHAPE)
    dx = act.relu_backward(put(xp, x), put(xp, r))
    np.testing.assert_array_equal(host(dx), np.where(x > 0, r, 0.0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_activation_outputs_stay_on_the_input_backend(
    xp: ModuleType, name: str, dtype: str
) -> None:
    layer = ACTIVATIONS[name][0]()
    x = put(xp, _host_x(), dtype)
    dy = put(xp, np.random.default_rng(1).standard_normal(SHAPE), dtype)
    before = snapshot((x, dy))
    y, dx = _forward_backward(xp, layer, x, dy)
    assert_like(y, x, xp, SHAPE)
    assert_like(dx, x, xp, SHAPE)
    assert_same_tree((x, dy), before)  # inputs are never written to


@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_torch_autograd(xp: ModuleType, torch: ModuleType, name: str) -> None:
    factory, torch_fn = ACTIVATIONS[name]
    x = _host_x(seed=5)
    r = np.random.default_rng(6).standard_normal(SHAPE)
    y, dx = _forward_backward(xp, factory(), put(xp, x), put(xp, r))

    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch_fn(torch, tx)
    ty.backward(torch.tensor(r, dtype=torch.float64))

    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert tx.grad is not None
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_leaky_relu_slope_reaches_the_kernels(xp: ModuleType) -> None:
    x = put(xp, np.array([[-2.0, 3.0]]))
    layer = bp.leaky_relu(0.3)
    y, dx = _forward_backward(xp, layer, x, put(xp, np.ones((1, 2))))
    np.testing.assert_allclose(host(y), [[-0.6, 3.0]], rtol=1e-15)
    np.testing.assert_allclose(host(dx), [[0.3, 1.0]], rtol=1e-15)
    assert layer.config == {"name": "leaky_relu", "alpha": 0.3}


def test_softmax_rows_sum_to_one(xp: ModuleType) -> None:
    y, _ = act.softmax_forward(put(xp, _host_x()))
    np.testing.assert_allclose(np.sum(host(y), axis=-1), np.ones(SHAPE[0]), rtol=1e-14)


# --------------------------------------------------------------------------
# numerical stability: warnings are errors in this suite


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_saturates_without_overflow(xp: ModuleType, dtype: str) -> None:
    x = put(xp, np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]]), dtype)
    y, cache = act.sigmoid_forward(x)
    dx = act.sigmoid_backward(cache, put(xp, np.ones((1, 5)), dtype))
    assert_like(y, x, xp)
    out = host(y)
    assert out[0, 0] == 0.0
    assert out[0, -1] == 1.0
    assert out[0, 2] == 0.5
    assert np.all(np.isfinite(host(dx)))
    assert host(dx)[0, 0] == 0.0
    assert host(dx)[0, -1] == 0.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_keeps_relative_precision_in_the_lower_tail(xp: ModuleType, dtype: str) -> None:
    """``exp(-|x|) / (1 + exp(-|x|))`` keeps sigmoid(-30) ≈ 9.36e-14 to full precision."""
    y, _ = act.sigmoid_forward(put(xp, np.array([-30.0, -80.0]), dtype))
    expected = 1.0 / (1.0 + np.exp([30.0, 80.0]))
    np.testing.assert_allclose(host(y), expected, rtol=1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("name", ["tanh", "gelu", "softmax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_are_finite_at_large_inputs(xp: ModuleType, name: str, dtype: str) -> None:
    x = put(xp, np.array([[-1000.0, -20.0, 0.5, 20.0, 1000.0]]), dtype)
    y, dx = _forward_backward(xp, ACTIVATIONS[name][0](), x, put(xp, np.ones((1, 5)), dtype))
    assert np.all(np.isfinite(host(y)))
    assert np.all(np.isfinite(host(dx)))
