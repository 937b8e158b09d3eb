"""Loss kernels (bpcore/losses.py): value and gradient on every backend."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

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

BATCH, K = 4, 3


class Case(NamedTuple):
    loss: bp.losses.LossFunction
    target: Callable[[np.random.Generator], np.ndarray]  # host target
    torch_loss: Callable[[Any, Any, Any], Any]  # (torch, output, target) -> value


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


CASES: dict[str, Case] = {
    "half_sse": Case(
        bp.half_sse,
        lambda rng: rng.standard_normal((BATCH, K)),
        lambda torch, y, t: 0.5 * torch.sum((y - t) ** 2),
    ),
    "mse": Case(
        bp.mse,
        lambda rng: rng.standard_normal((BATCH, K)),
        lambda torch, y, t: torch.nn.functional.mse_loss(y, t),
    ),
    "softmax_ce_labels": Case(
        bp.softmax_cross_entropy,
        lambda rng: rng.integers(0, K, BATCH),
        lambda torch, z, t: torch.nn.functional.cross_entropy(z, t),
    ),
    "softmax_ce_one_hot": Case(
        bp.softmax_cross_entropy,
        lambda rng: np.eye(K)[rng.integers(0, K, BATCH)],
        lambda torch, z, t: torch.nn.functional.cross_entropy(z, t),
    ),
    "softmax_ce_probabilities": Case(
        bp.softmax_cross_entropy,
        lambda rng: _softmax_rows(rng.standard_normal((BATCH, K))),
        lambda torch, z, t: torch.nn.functional.cross_entropy(z, t),
    ),
    "bce_binary": Case(
        bp.binary_cross_entropy,
        lambda rng: rng.integers(0, 2, (BATCH, K)).astype(np.float64),
        lambda torch, z, t: torch.nn.functional.binary_cross_entropy_with_logits(z, t),
    ),
    "bce_soft": Case(
        bp.binary_cross_entropy,
        lambda rng: rng.uniform(0.0, 1.0, (BATCH, K)),
        lambda torch, z, t: torch.nn.functional.binary_cross_entropy_with_logits(z, t),
    ),
}
NAMES = list(CASES)


def _inputs(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = 2.0 * rng.standard_normal((BATCH, K))
    return y, CASES[name].target(rng)


def _put_target(xp: ModuleType, t: np.ndarray, dtype: str = "float64") -> Any:
    """Integer labels keep their integer dtype; float targets take the output's."""
    return put(xp, t) if t.dtype.kind == "i" else put(xp, t, dtype)


def _objective(xp: ModuleType, loss: Any, t: Any) -> Callable[[np.ndarray], float]:
    def f(a: np.ndarray) -> float:
        value, _ = loss(put(xp, a), t)
        return float(host(value))

    return f


@pytest.mark.parametrize("name", NAMES)
def test_loss_gradient_matches_central_differences(xp: ModuleType, name: str) -> None:
    loss = CASES[name].loss
    y, t_host = _inputs(name)
    t = _put_target(xp, t_host)
    _, dy = loss(put(xp, y), t)
    check_gradient(_objective(xp, loss, t), y, dy, seed=1, n_directions=3)


def _wrong_ce(xp: ModuleType, z: Any, t: Any) -> Any:
    """Softmax CE gradient without the 1/batch of the batch mean."""
    _, dz = bp.softmax_cross_entropy(z, t)
    return dz * BATCH


def _wrong_mse(xp: ModuleType, y: Any, t: Any) -> Any:
    """MSE gradient missing the factor 2."""
    return (y - t) / (BATCH * K)


def _wrong_bce(xp: ModuleType, z: Any, t: Any) -> Any:
    """BCE gradient with ``sigmoid(z) (1 - sigmoid(z))`` multiplied in, as if
    the loss were taken of probabilities through a separate sigmoid layer."""
    _, dz = bp.binary_cross_entropy(z, t)
    s = 1.0 / (1.0 + xp.exp(-z))
    return dz * s * (1.0 - s)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("softmax_ce_labels", _wrong_ce),
        ("mse", _wrong_mse),
        ("bce_soft", _wrong_bce),
    ],
)
def test_gradient_check_rejects_wrong_loss_gradients(
    xp: ModuleType, name: str, wrong: Callable[[ModuleType, Any, Any], Any]
) -> None:
    loss = CASES[name].loss
    y, t_host = _inputs(name)
    t = _put_target(xp, t_host)
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradient(_objective(xp, loss, t), y, wrong(xp, put(xp, y), t), seed=1)


def test_integer_labels_and_one_hot_rows_give_the_same_loss(xp: ModuleType) -> None:
    y, labels = _inputs("softmax_ce_labels")
    z = put(xp, y)
    v1, g1 = bp.softmax_cross_entropy(z, put(xp, labels))
    v2, g2 = bp.softmax_cross_entropy(z, put(xp, np.eye(K)[labels]))
    np.testing.assert_allclose(host(v1), host(v2), rtol=1e-15)
    np.testing.assert_allclose(host(g1), host(g2), rtol=1e-15, atol=1e-17)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_loss_outputs_stay_on_the_input_backend(xp: ModuleType, name: str, dtype: str) -> None:
    y_host, t_host = _inputs(name)
    y = put(xp, y_host, dtype)
    t = _put_target(xp, t_host, dtype)
    before = snapshot((y, t))
    value, dy = CASES[name].loss(y, t)
    assert_like(value, y, xp, ())
    assert_like(dy, y, xp, (BATCH, K))
    assert_same_tree((y, t), before)  # inputs are never written to


@pytest.mark.parametrize("name", NAMES)
def test_loss_matches_torch_autograd(xp: ModuleType, torch: ModuleType, name: str) -> None:
    case = CASES[name]
    y, t_host = _inputs(name, seed=7)
    value, dy = case.loss(put(xp, y), _put_target(xp, t_host))

    ty = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t_host, dtype=torch.int64 if t_host.dtype.kind == "i" else torch.float64)
    tvalue = case.torch_loss(torch, ty, tt)
    tvalue.backward()

    np.testing.assert_allclose(host(value), tvalue.item(), rtol=1e-12)
    assert ty.grad is not None
    np.testing.assert_allclose(host(dy), ty.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_losses_by_name(xp: ModuleType) -> None:
    assert bp.get_loss("cross_entropy") is bp.softmax_cross_entropy
    assert bp.get_loss("bce") is bp.binary_cross_entropy
    assert bp.get_loss("sse") is bp.half_sse
    assert bp.get_loss(bp.mse) is bp.mse
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of"):
        bp.get_loss("hinge")


# --------------------------------------------------------------------------
# numerical stability: logits of ±1000 (warnings are errors in this suite)

BIG = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy_is_finite_at_huge_logits(
    xp: ModuleType, dtype: str, one_hot: bool
) -> None:
    labels = np.array([1, 0])  # the -1000 logit is the true class in both rows
    t = put(xp, np.eye(3)[labels], dtype) if one_hot else put(xp, labels)
    value, dz = bp.softmax_cross_entropy(put(xp, BIG, dtype), t)
    v, g = host(value), host(dz)
    assert np.isfinite(v)
    assert np.all(np.isfinite(g))
    # row 0: -log p = 2000; row 1: 2000 + log(1 + e^-1); mean over the batch
    np.testing.assert_allclose(v, (2000.0 + 2000.0 + np.log1p(np.exp(-1.0))) / 2, rtol=1e-6)
    p1 = 1.0 / (1.0 + np.exp(-1.0))
    expected = np.array([[1.0, -1.0, 0.0], [-1.0, p1, 1.0 - p1]]) / 2
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_is_finite_at_huge_logits(xp: ModuleType, dtype: str) -> None:
    z = np.array([[1000.0, -1000.0, 1000.0, -1000.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])  # two confidently wrong, two confidently right
    value, dz = bp.binary_cross_entropy(put(xp, z, dtype), put(xp, t, dtype))
    v, g = host(value), host(dz)
    assert np.isfinite(v)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(v, 2000.0 / 4, rtol=1e-6)
    np.testing.assert_allclose(g, np.array([[1.0, -1.0, 0.0, 0.0]]) / 4, atol=1e-7)


# --------------------------------------------------------------------------
# per-sample weights

WEIGHTS = np.array([0.5, 2.0, 0.0, 1.5])


def _per_sample_host(name: str, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each row's own loss, computed on the host in float64 (the reference)."""
    if name in ("half_sse", "mse"):
        return ((y - t) ** 2).sum(axis=1) * (0.5 if name == "half_sse" else 1.0 / K)
    if name.startswith("softmax"):
        log_p = np.log(_softmax_rows(y))
        onehot = np.eye(K)[t] if t.ndim == 1 else t
        return -(onehot * log_p).sum(axis=1)
    return (np.maximum(y, 0) - y * t + np.log1p(np.exp(-np.abs(y)))).mean(axis=1)


@pytest.mark.parametrize("name", NAMES)
def test_weighted_loss_is_the_weighted_mean_and_its_gradient(xp: ModuleType, name: str) -> None:
    loss = CASES[name].loss
    y, t_host = _inputs(name)
    t, w = _put_target(xp, t_host), put(xp, WEIGHTS, "float64")
    value, dy = loss(put(xp, y), t, weights=w)
    rows = _per_sample_host(name, y, t_host)
    want = (WEIGHTS * rows).sum() * (1.0 if name == "half_sse" else 1.0 / WEIGHTS.sum())
    np.testing.assert_allclose(host(value), want, rtol=1e-12)

    def f(a: np.ndarray) -> float:
        return float(host(loss(put(xp, a), t, weights=w)[0]))

    check_gradient(f, y, dy, seed=2, n_directions=3)
    ones = put(xp, np.ones(BATCH), "float64")  # unit weights: the unweighted loss
    for a, b in zip(loss(put(xp, y), t, weights=ones), loss(put(xp, y), t)):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-12, atol=1e-15)
    assert_like(dy, put(xp, y), xp)


def test_weights_through_train_step_match_a_duplicated_batch() -> None:
    # weights 2 and 1 train like the same batch with the weight-2 rows written twice
    net, opt = bp.mlp([3, 4, 2], "tanh"), bp.sgd(0.3)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 3)), np.array([0, 1, 1])
    w = np.array([2.0, 1.0, 1.0])
    params = net.init(0, dtype="float64")
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    got, _, value = step(params, opt.init(params), x, t, w)
    dup = np.array([0, 0, 1, 2])
    want, _, want_value = step(params, opt.init(params), x[dup], t[dup])
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
    for a, b in zip(bp.tree.leaves(got), bp.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    with pytest.raises(bp.ShapeError, match="sample weights"):
        step(params, opt.init(params), x, t, w[:2])
    with pytest.raises(ValueError, match=">= 0"):
        step(params, opt.init(params), x, t, -w)


def test_builtin_losses_document_their_reduction_in_help() -> None:
    import pydoc

    for loss in (bp.mse, bp.half_sse, bp.softmax_cross_entropy, bp.binary_cross_entropy):
        text = pydoc.render_doc(loss, renderer=pydoc.plaintext)
        assert "NamedTuple" not in text and "_fields" not in text
        assert ("sum" in text if loss is bp.half_sse else "batch" in text), loss.name
    assert bp.get_loss("mse") is bp.mse and bp.mse.targets == "values"
    with pytest.raises(bp.BpcoreError, match="unknown loss"):
        bp.get_loss("hinge")
