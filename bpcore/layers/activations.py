"""Element-wise activations (and softmax), each an explicit forward and backward.

Every ``*_forward(x) -> (y, cache)`` has a ``*_backward(cache, dy) -> dx``
that applies the chain rule ``dx = dy * f'(x)`` (softmax: its Jacobian-vector
product). The factories (:func:`sigmoid`, :func:`relu`, ...) wrap a pair as a
parameter-free :class:`~bpcore.layers.core.Layer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..backend import Array, namespace
from .core import _ANATOMY, Layer, Params

__all__ = [
    "ACTIVATIONS",
    "activation",
    "gelu",
    "gelu_backward",
    "gelu_forward",
    "identity",
    "identity_backward",
    "identity_forward",
    "leaky_relu",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "relu",
    "relu_backward",
    "relu_forward",
    "sigmoid",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_backward",
    "softmax_forward",
    "tanh",
    "tanh_backward",
    "tanh_forward",
]


def sigmoid_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """Logistic function ``y = 1 / (1 + exp(-x))``; the cache is ``y``.

    Numerically stable: only ``exp(-|x|) <= 1`` is ever formed, so no input
    overflows, and both tails keep full relative precision.

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = sigmoid_forward(np.array([-1000.0, 0.0, 1000.0]))
    >>> y.tolist()
    [0.0, 0.5, 1.0]
    """
    xp = namespace(x, xp=xp)
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    y = xp.where(x >= 0, r, e * r)
    return y, y


def sigmoid_backward(y: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = dy * y * (1 - y)`` with ``y = sigmoid(x)`` from the forward pass."""
    return dy * (y * (1.0 - y))


def tanh_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """Hyperbolic tangent; the cache is ``y``."""
    xp = namespace(x, xp=xp)
    y = xp.tanh(x)
    return y, y


def tanh_backward(y: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = dy * (1 - y²)`` with ``y = tanh(x)``."""
    return dy * (1.0 - y * y)


def relu_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """``y = max(x, 0)``; the cache is ``x``."""
    xp = namespace(x, xp=xp)
    return xp.where(x > 0, x, 0.0), x


def relu_backward(x: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = dy`` where ``x > 0``, else 0 (the subgradient 0 at ``x = 0``)."""
    xp = namespace(dy, xp=xp)
    return xp.where(x > 0, dy, 0.0)


def leaky_relu_forward(
    x: Array, alpha: float = 0.01, *, xp: ModuleType | None = None
) -> tuple[Array, Array]:
    """``y = x`` where ``x > 0``, else ``alpha * x``; the cache is ``x``."""
    xp = namespace(x, xp=xp)
    return xp.where(x > 0, x, alpha * x), x


def leaky_relu_backward(
    x: Array, dy: Array, alpha: float = 0.01, *, xp: ModuleType | None = None
) -> Array:
    """``dx = dy`` where ``x > 0``, else ``alpha * dy``."""
    xp = namespace(dy, xp=xp)
    return xp.where(x > 0, dy, alpha * dy)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


def gelu_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, tuple[Array, Array]]:
    """GELU, tanh form: ``y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))``.

    The standard has no ``erf``, so bpcore uses the tanh approximation (as
    GPT-2 and ``torch.nn.functional.gelu(approximate="tanh")`` do). The cache is
    ``(x, t)`` with ``t`` the tanh term.
    """
    xp = namespace(x, xp=xp)
    t = xp.tanh(_GELU_C * (x + _GELU_K * (x * x * x)))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(
    cache: tuple[Array, Array], dy: Array, *, xp: ModuleType | None = None
) -> Array:
    """``dx = dy * (½(1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²))``."""
    x, t = cache
    du = _GELU_C * (1.0 + (3.0 * _GELU_K) * (x * x))
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


def softmax_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """Softmax over the last axis; the cache is ``y``.

    Subtracting the row maximum first keeps ``exp`` from overflowing.
    """
    xp = namespace(x, xp=xp)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    y = e / xp.sum(e, axis=-1, keepdims=True)
    return y, y


def softmax_backward(y: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """Jacobian-vector product ``dx = y * (dy - Σ_j dy_j y_j)`` along the last axis."""
    xp = namespace(dy, xp=xp)
    return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


def identity_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, None]:
    """``y = x``."""
    return x, None


def identity_backward(cache: None, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = dy``."""
    return dy


# --------------------------------------------------------------------------
# layer factories


def _no_params(rng: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Params:
    return {}


def _layer(
    name: str,
    fwd: Callable[..., tuple[Array, Any]],
    bwd: Callable[..., Array],
    config: dict[str, Any] | None = None,
) -> Layer:
    def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Any]:
        return fwd(x, xp=xp)

    def backward(
        params: Params, cache: Any, dy: Array, *,
        xp: ModuleType | None = None, need_dx: bool = True,
    ) -> tuple[Array, Params]:
        return bwd(cache, dy, xp=xp), {}

    _ANATOMY[forward] = ("activation", fwd, bwd, backward)
    return Layer(_no_params, forward, backward, name, None, None, config or {"name": name})


def sigmoid() -> Layer:
    """Logistic sigmoid layer (the classic backprop unit).

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> y, _ = bp.sigmoid().forward({}, np.zeros((1, 2)))
    >>> y.tolist()
    [[0.5, 0.5]]
    """
    return _layer("sigmoid", sigmoid_forward, sigmoid_backward)


def tanh() -> Layer:
    """Hyperbolic tangent layer."""
    return _layer("tanh", tanh_forward, tanh_backward)


def relu() -> Layer:
    """Rectified linear unit layer."""
    return _layer("relu", relu_forward, relu_backward)


def leaky_relu(alpha: float = 0.01) -> Layer:
    """Leaky ReLU layer with negative slope ``alpha``."""
    alpha = float(alpha)

    def fwd(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
        return leaky_relu_forward(x, alpha, xp=xp)

    def bwd(x: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
        return leaky_relu_backward(x, dy, alpha, xp=xp)

    return _layer("leaky_relu", fwd, bwd, {"name": "leaky_relu", "alpha": alpha})


def gelu() -> Layer:
    """GELU layer (tanh approximation; see :func:`gelu_forward`)."""
    return _layer("gelu", gelu_forward, gelu_backward)


def softmax() -> Layer:
    """Softmax over the features. For classification prefer a linear output
    with :func:`bpcore.softmax_cross_entropy`, which fuses the two stably."""
    return _layer("softmax", softmax_forward, softmax_backward)


def identity() -> Layer:
    """Identity layer (a linear output)."""
    return _layer("identity", identity_forward, identity_backward)


ACTIVATIONS: dict[str, Callable[..., Layer]] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "gelu": gelu,
    "softmax": softmax,
    "identity": identity,
    "linear": identity,
}


def activation(name: str, **kwargs: Any) -> Layer:
    """An activation layer by name (``"sigmoid"``, ``"relu"``, ...)."""
    try:
        return ACTIVATIONS[name](**kwargs)
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
