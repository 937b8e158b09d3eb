"""Losses: each returns the value and its gradient with respect to the output.

A loss is called as ``value, dy = loss(y, t)``: ``y`` is the network's output
(logits for the ``*_cross_entropy`` losses), ``t`` the target, ``value`` a 0-D
array and ``dy`` the gradient ``∂value/∂y`` with ``y``'s shape, ready to feed
the network's backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from .backend import Array, device_of, namespace
from .errors import ShapeError

__all__ = [
    "LOSSES",
    "Loss",
    "binary_cross_entropy",
    "get_loss",
    "half_sse",
    "mse",
    "one_hot",
    "softmax_cross_entropy",
]


class Loss(NamedTuple):
    """A loss function with what it expects of its targets.

    ``targets`` is ``"classes"`` (integer labels or one-hot/probability rows),
    ``"binary"`` (values in [0, 1]) or ``"values"`` (real numbers, same shape
    as the output).
    """

    name: str
    fn: Callable[..., tuple[Array, Array]]
    targets: str

    def __call__(self, y: Array, t: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
        return self.fn(y, t, xp=xp)


def _same_shape(name: str, y: Array, t: Array) -> None:
    if tuple(t.shape) != tuple(y.shape):
        fix = " (reshape it to (batch, 1))" if t.ndim == 1 and y.shape[-1] == 1 else ""
        raise ShapeError(
            f"{name}: target shape {tuple(t.shape)} does not match output shape "
            f"{tuple(y.shape)}; give one target per output{fix}"
        )


def _array(xp: ModuleType, value: Any) -> Array:
    """A 0-D array: NumPy reductions return a scalar (``np.float64``), not an array."""
    return xp.asarray(value)


def _half_sse(y: Array, t: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    xp = namespace(y, xp=xp)
    _same_shape("half_sse", y, t)
    d = y - t
    return _array(xp, 0.5 * xp.sum(d * d)), d


def _mse(y: Array, t: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    xp = namespace(y, xp=xp)
    _same_shape("mse", y, t)
    d = y - t
    n = math.prod(y.shape)
    return _array(xp, xp.sum(d * d) / n), d * (2.0 / n)


def one_hot(labels: Array, n_classes: int, dtype: Any, *, xp: ModuleType | None = None) -> Array:
    """Rows of zeros with a one at each label: shape ``(batch, n_classes)``."""
    xp = namespace(labels, xp=xp)
    classes = xp.arange(n_classes, device=device_of(labels))
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def _softmax_ce(z: Array, t: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    xp = namespace(z, xp=xp)
    batch, k = z.shape
    if t.ndim == 1:
        if t.shape[0] != batch:
            raise ShapeError(
                f"softmax_cross_entropy: {t.shape[0]} labels for a batch of {batch}; "
                "give one label per row"
            )
        t = one_hot(t, k, z.dtype, xp=xp)
    else:
        _same_shape("softmax_cross_entropy", z, t)
    # log-sum-exp: shift by the row maximum so exp never overflows.
    s = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(s)
    total = xp.sum(e, axis=1, keepdims=True)
    log_p = s - xp.log(total)
    value = -xp.sum(t * log_p) / batch
    # d/dz of -Σ t log softmax(z) = softmax(z) Σt - t (= p - t for one-hot rows).
    p = e / total
    grad = (p * xp.sum(t, axis=1, keepdims=True) - t) / batch
    return _array(xp, value), grad


def _bce(z: Array, t: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    xp = namespace(z, xp=xp)
    _same_shape("binary_cross_entropy", z, t)
    n = math.prod(z.shape)
    # Stable form: max(z, 0) - z t + log(1 + exp(-|z|)); exp(-|z|) <= 1 never overflows.
    e = xp.exp(-xp.abs(z))
    value = xp.sum(xp.where(z > 0, z, 0.0) - z * t + xp.log1p(e)) / n
    r = 1.0 / (1.0 + e)
    sig = xp.where(z >= 0, r, e * r)
    return _array(xp, value), (sig - t) / n


#: ½ Σ (t − y)², the classic backprop error; ``dy = y − t``.
half_sse = Loss("half_sse", _half_sse, "values")
#: Mean squared error over all elements; ``dy = 2 (y − t) / N``.
mse = Loss("mse", _mse, "values")
#: Softmax cross-entropy from logits, averaged over the batch. Targets are integer
#: labels of shape (batch,) or one-hot/probability rows of shape (batch, k);
#: ``dz = (softmax(z) Σt − t) / batch``.
softmax_cross_entropy = Loss("softmax_cross_entropy", _softmax_ce, "classes")
#: Binary cross-entropy from logits, averaged over all elements; targets in [0, 1]
#: with the output's shape; ``dz = (sigmoid(z) − t) / N``.
binary_cross_entropy = Loss("binary_cross_entropy", _bce, "binary")

LOSSES: dict[str, Loss] = {
    loss.name: loss for loss in (half_sse, mse, softmax_cross_entropy, binary_cross_entropy)
}
LOSSES["cross_entropy"] = softmax_cross_entropy
LOSSES["bce"] = binary_cross_entropy
LOSSES["sse"] = half_sse


def get_loss(name_or_loss: str | Loss) -> Loss:
    """A loss by name (a :class:`Loss` passes through)."""
    if isinstance(name_or_loss, Loss):
        return name_or_loss
    try:
        return LOSSES[name_or_loss]
    except KeyError:
        raise ValueError(
            f"unknown loss {name_or_loss!r}; choose one of {', '.join(LOSSES)}"
        ) from None
