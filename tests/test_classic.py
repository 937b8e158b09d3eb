"""Classic backpropagation results, on every backend.

(a) One delta-rule step of a single sigmoid neuron, checked against numbers
    worked out by hand below with Python floats and ``math``.
(b) The 3-4-1 sigmoid network of the classic demonstration learns its four
    patterns.
(c) A 2-2-1 sigmoid network learns XOR.

The seeds and learning rates were chosen on NumPy; the initial weights come
from the same host generator on every backend, so every backend must converge
the same way.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import bpcore as bp

# --------------------------------------------------------------------------
# (a) a single sigmoid neuron, by hand

# Two inputs and a bias; two training patterns, summed error (half_sse).
W1, W2, BIAS = 0.4, -0.7, 0.2
PATTERNS = [((1.0, 0.5), 1.0), ((-0.3, 0.8), 0.0)]
LR = 0.5


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _by_hand(w1: float, w2: float, b: float) -> dict[str, Any]:
    """The forward pass, the error and the delta rule, written out."""
    outputs, error = [], 0.0
    g1 = g2 = gb = 0.0  # dE/dw1, dE/dw2, dE/db
    for (x1, x2), t in PATTERNS:
        net = w1 * x1 + w2 * x2 + b
        y = _sigmoid(net)
        outputs.append(y)
        error += 0.5 * (t - y) ** 2
        # delta rule: δ = (t − y) · y (1 − y) and dE/dw_i = −δ x_i
        delta = (t - y) * y * (1.0 - y)
        g1 -= delta * x1
        g2 -= delta * x2
        gb -= delta
    return {
        "outputs": outputs,
        "error": error,
        "grads": (g1, g2, gb),
        # gradient descent: w ← w − η dE/dw  (= w + η Σ δ x)
        "updated": (w1 - LR * g1, w2 - LR * g2, b - LR * gb),
    }


def _neuron_params(w1: float, w2: float, b: float) -> Any:
    backend = bp.get_backend()
    f64 = backend.xp.float64
    return (
        {"W": backend.asarray(np.array([[w1], [w2]]), dtype=f64),
         "b": backend.asarray(np.array([b]), dtype=f64)},
        {},
    )


def _neuron_batch() -> tuple[Any, Any]:
    backend = bp.get_backend()
    f64 = backend.xp.float64
    x = backend.asarray(np.array([p[0] for p in PATTERNS]), dtype=f64)
    t = backend.asarray(np.array([[p[1]] for p in PATTERNS]), dtype=f64)
    return x, t


def _flat(params: Any) -> tuple[float, float, float]:
    W, b = bp.to_numpy(params[0]["W"]), bp.to_numpy(params[0]["b"])
    return float(W[0, 0]), float(W[1, 0]), float(b[0])


def test_hand_computation_is_self_consistent() -> None:
    # the numbers the backend tests compare against, pinned so a slip in the
    # hand computation itself shows up here
    first = _by_hand(W1, W2, BIAS)
    assert first["outputs"][0] == pytest.approx(_sigmoid(0.25))
    assert first["outputs"][1] == pytest.approx(_sigmoid(-0.48))
    assert first["error"] == pytest.approx(
        0.5 * (1 - _sigmoid(0.25)) ** 2 + 0.5 * _sigmoid(-0.48) ** 2
    )
    # a small step along −grad lowers the error
    after = _by_hand(*first["updated"])
    assert after["error"] < first["error"]


def test_single_neuron_delta_rule_step(xp: ModuleType) -> None:
    want = _by_hand(W1, W2, BIAS)
    want_next = _by_hand(*want["updated"])
    net = bp.mlp([2, 1], "sigmoid", "sigmoid")
    params = _neuron_params(W1, W2, BIAS)
    x, t = _neuron_batch()

    y = bp.predict(net, params, x)
    np.testing.assert_allclose(bp.to_numpy(y)[:, 0], want["outputs"], rtol=1e-14)

    value, grads = bp.value_and_grad(net, "half_sse", params, x, t)
    assert float(value) == pytest.approx(want["error"], rel=1e-14)
    assert grads[1] == {}
    np.testing.assert_allclose(_flat(grads), want["grads"], rtol=1e-13, atol=1e-16)

    opt = bp.sgd(lr=LR)
    step = bp.train_step(net, "half_sse", opt)
    params, state, value = step(params, opt.init(params), x, t)
    assert float(value) == pytest.approx(want["error"], rel=1e-14)  # the error before the step
    np.testing.assert_allclose(_flat(params), want["updated"], rtol=1e-13, atol=1e-16)

    # the next step reports the error of the updated neuron: it went down
    params, _, value = step(params, state, x, t)
    assert float(value) == pytest.approx(want_next["error"], rel=1e-13)
    assert float(value) < want["error"]
    np.testing.assert_allclose(_flat(params), want_next["updated"], rtol=1e-13, atol=1e-16)


def test_single_neuron_built_by_hand_from_layers(xp: ModuleType) -> None:
    # the same neuron composed explicitly: dense(2, 1) then sigmoid
    net = bp.sequential(bp.dense(2, 1), bp.sigmoid())
    params = _neuron_params(W1, W2, BIAS)
    x, t = _neuron_batch()
    value, grads = bp.value_and_grad(net, "sse", params, x, t)
    want = _by_hand(W1, W2, BIAS)
    assert float(value) == pytest.approx(want["error"], rel=1e-14)
    np.testing.assert_allclose(_flat(grads), want["grads"], rtol=1e-13, atol=1e-16)


# --------------------------------------------------------------------------
# (b) and (c): small networks that must learn


def _train(
    sizes: list[int], x_host: np.ndarray, t_host: np.ndarray, *, loss: str, seed: int,
    lr: float, steps: int,
) -> tuple[np.ndarray, list[float]]:
    """Full-batch SGD with momentum 0.9 in float32 on the current backend."""
    net = bp.mlp(sizes, "sigmoid", "sigmoid")
    opt = bp.sgd(lr=lr, momentum=0.9)
    step = bp.train_step(net, loss, opt)
    params = net.init(seed)  # float32 on the default backend
    state = opt.init(params)
    backend = bp.get_backend()
    x = backend.asarray(x_host, dtype=backend.xp.float32)
    t = backend.asarray(t_host, dtype=backend.xp.float32)
    errors = []
    for _ in range(steps):
        params, state, value = step(params, state, x, t)
        errors.append(float(value))
    y = bp.to_numpy(bp.predict(net, params, x))
    assert y.dtype == np.float32
    return y[:, 0], errors


PATTERNS_341 = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float64)
TARGETS_341 = np.array([[0], [1], [1], [0]], dtype=np.float64)
XOR_IN = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_OUT = np.array([[0], [1], [1], [0]], dtype=np.float64)


def test_341_network_learns_its_four_patterns(xp: ModuleType) -> None:
    y, errors = _train(
        [3, 4, 1], PATTERNS_341, TARGETS_341, loss="mse", seed=0, lr=2.0, steps=100
    )
    want = TARGETS_341[:, 0]
    assert np.all((y > 0.5) == (want > 0.5)), y
    assert np.max(np.abs(y - want)) < 0.1, y
    assert errors[-1] < 1e-3
    assert errors[-1] < errors[0] / 10


def test_221_network_learns_xor(xp: ModuleType) -> None:
    y, errors = _train(
        [2, 2, 1], XOR_IN, XOR_OUT, loss="half_sse", seed=0, lr=1.0, steps=150
    )
    want = XOR_OUT[:, 0]
    assert np.all((y > 0.5) == (want > 0.5)), y
    assert np.max(np.abs(y - want)) < 0.2, y
    assert errors[-1] < 0.02
    assert errors[0] > 0.4  # it started from chance, not from a solution
