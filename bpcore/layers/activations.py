"""Element-wise activations (and softmax), each an explicit forward and backward.

Every ``*_forward(x) -> (y, cache)`` has a ``*_backward(cache, dy) -> dx``
that applies the chain rule ``dx = dy * f'(x)`` (softmax: its Jacobian-vector
product). The factories (:func:`sigmoid`, :func:`relu`, ...) wrap a pair as a
parameter-free :class:`~bpcore.layers.core.Layer`.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .. import cuda
from ..backend import Array, namespace
from ..dispatch import Binding, Workspace, cupy_kernels_enabled, output, output_like, specializes
from ..errors import SettingError
from ..values import real
from .core import Layer, Params

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


# CuPy specializations fuse a kernel's several launches into one CUDA kernel
# (bpcore.cuda); they are off by default until run on a GPU
# (bpcore.dispatch.cupy_kernels_enabled).


def _cuda_unary(kernel: str, x: Array, ws: Workspace | None, name: str) -> Array:
    out = output(ws, name, x.shape, x.dtype, cuda.cupy().empty)
    cuda.launch(kernel, x, out)
    return out


def _cuda_backward(kernel: str, y: Array, dy: Array, ws: Workspace | None) -> Array:
    dx = output(ws, "dx", dy.shape, dy.dtype, cuda.cupy().empty)
    cuda.launch(kernel, y, dy, dx)
    return dx


def _torch_out(ws: Workspace | None, name: str, like: Array) -> Array:
    """A PyTorch output shaped as ``like``: the workspace's buffer, or a new one."""
    if ws is None:
        return sys.modules["torch"].empty_like(like)
    return ws.buffer(name, tuple(like.shape), like.dtype, device=like.device)


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


@specializes(sigmoid_forward, "numpy")
def _sigmoid_forward_numpy(
    x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """``1 / (1 + exp(-x))`` in four passes into one buffer (the portable form takes eight).

    ``exp(-x)`` overflows to ``inf`` only where the true value is below the
    smallest normal number (x < -88.7 in float32), and ``1 / inf = 0`` is then
    within that of it; the overflow warning is silenced for exactly that
    reason.
    Without it a step takes 9.4% longer (seed network, batch 1024;
    benchmarks/specializations.py, 2026-12-02).
    """
    y = output(ws, "y", x.shape, x.dtype, np.empty)
    np.negative(x, out=y)
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    np.add(y, 1.0, out=y)
    np.divide(1.0, y, out=y)
    return y, y


@specializes(sigmoid_forward, "torch")
def _sigmoid_forward_torch(
    x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """``torch.sigmoid``: one kernel where the portable form runs eight.
    Without it a step takes 29.3% longer (seed network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    y = sys.modules["torch"].sigmoid(x, out=_torch_out(ws, "y", x))
    return y, y


@specializes(sigmoid_backward, "torch")
def _sigmoid_backward_torch(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``dy * y * (1 - y)`` in one kernel (ATen's ``sigmoid_backward``).
    Without it a step takes 5.5% longer (seed network, batch 4096;
    benchmarks/specializations.py, 2026-12-02)."""
    aten = sys.modules["torch"].ops.aten
    return aten.sigmoid_backward.grad_input(dy, y, grad_input=_torch_out(ws, "dx", dy))


cuda.elementwise("sigmoid_forward", "T x", "T y", """
    T e = exp(-fabs(x));  // the stable form of the portable kernel
    T r = T(1) / (T(1) + e);
    y = x >= T(0) ? r : e * r;
""")
cuda.elementwise("sigmoid_backward", "T y, T dy", "T dx", "dx = dy * (y * (T(1) - y));")


@specializes(sigmoid_forward, "cupy", enabled=cupy_kernels_enabled)
def _sigmoid_forward_cupy(
    x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """The stable sigmoid in one CUDA kernel (the portable form launches eight)."""
    y = _cuda_unary("sigmoid_forward", x, ws, "y")
    return y, y


@specializes(sigmoid_backward, "cupy", enabled=cupy_kernels_enabled)
def _sigmoid_backward_cupy(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``dy * y * (1 - y)`` in one CUDA kernel."""
    return _cuda_backward("sigmoid_backward", y, dy, ws)


def tanh_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """Hyperbolic tangent; the cache is ``y``."""
    xp = namespace(x, xp=xp)
    y = xp.tanh(x)
    return y, y


def tanh_backward(y: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = dy * (1 - y²)`` with ``y = tanh(x)``."""
    return dy * (1.0 - y * y)


cuda.elementwise("tanh_backward", "T y, T dy", "T dx", "dx = dy * (T(1) - y * y);")


@specializes(tanh_backward, "cupy", enabled=cupy_kernels_enabled)
def _tanh_backward_cupy(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``dy * (1 - y²)`` in one CUDA kernel."""
    return _cuda_backward("tanh_backward", y, dy, ws)


def relu_forward(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Array]:
    """``y = max(x, 0)`` (NaN stays NaN); the cache is ``y``."""
    xp = namespace(x, xp=xp)
    y = xp.clip(x, min=0.0)
    return y, y


@specializes(relu_forward, "torch")
def _relu_forward_torch(
    x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """``torch.relu`` (NaN stays NaN, as the portable ``clip``).
    Without it a step takes 7.4% longer (wide network, batch 4096;
    benchmarks/specializations.py, 2026-12-02)."""
    y = sys.modules["torch"].clamp(x, min=0, out=_torch_out(ws, "y", x))
    return y, y


@specializes(relu_forward, "numpy")
def _relu_forward_numpy(
    x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """``maximum(x, 0)`` (NaN stays NaN, as ``clip``), laid out as ``x``: after a
    NumPy convolution, batch last, so the pooling and the backward pass that
    follow run along the batch (the wrapped ``clip`` returns C order).
    Without it a step takes 60.5% longer (lenet, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    y = output_like(ws, "y", x, tuple(x.shape), x.dtype, np.empty)
    np.maximum(x, x.dtype.type(0), out=y)
    return y, y


def relu_backward(y: Array, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = 0`` where ``y <= 0`` (that is, where ``x <= 0``: the subgradient
    0 at ``x = 0``), else ``dy`` (a NaN unit passes ``dy`` on, as in PyTorch)."""
    xp = namespace(dy, xp=xp)
    return xp.where(y <= 0, 0.0, dy)


_SAME_SIZE_UINT = {4: np.uint32, 8: np.uint64}


@specializes(relu_backward, "numpy")
def _relu_backward_numpy(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``where(y <= 0, 0, dy)`` without a branch per element.

    NumPy's ``where`` (and every masked store) branches on each element and
    mispredicts on half of them: 4.4 ns an element here, 15x this. Instead
    ``dy``'s bits are ANDed with an all-ones or all-zeros word per element,
    which gives exactly ``where(y <= 0, 0, dy)``, inf and NaN included.
    Without it a step takes 17.2% longer (deep network, batch 4096;
    benchmarks/specializations.py, 2026-12-02).
    """
    uint = _SAME_SIZE_UINT[dy.dtype.itemsize]
    # laid out as y (batch last after a NumPy convolution), so each pass runs along it
    mask = output_like(ws, "mask", y, tuple(dy.shape), uint, np.empty)
    np.less_equal(y, 0, out=mask, casting="unsafe")  # 1 or 0
    np.subtract(mask, 1, out=mask)  # 0 or all ones
    dx = output_like(ws, "dx", y, tuple(dy.shape), dy.dtype, np.empty)
    np.bitwise_and(dy.view(uint), mask, out=dx.view(uint))
    return dx






cuda.elementwise("relu_backward", "T y, T dy", "T dx", "dx = y <= T(0) ? T(0) : dy;")


@specializes(relu_backward, "torch")
def _relu_backward_torch(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``where(y <= 0, 0, dy)`` in one kernel (ATen's ``threshold_backward``,
    what autograd runs for ``relu``) instead of a comparison and a ``where``.
    Without it a step takes 21.3% longer (deep network, batch 4096;
    benchmarks/specializations.py, 2026-12-02)."""
    aten = sys.modules["torch"].ops.aten
    return aten.threshold_backward.grad_input(dy, y, 0, grad_input=_torch_out(ws, "dx", dy))


@specializes(relu_backward, "cupy", enabled=cupy_kernels_enabled)
def _relu_backward_cupy(
    y: Array, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> Array:
    """``where(y <= 0, 0, dy)`` in one CUDA kernel."""
    return _cuda_backward("relu_backward", y, dy, ws)


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
    **hyper: Any,
) -> Layer:
    """A parameter-free layer from the kernel pair ``fwd``/``bwd`` (called with ``hyper``)."""

    def build(f: Callable[..., Any], b: Callable[..., Any], bind: Any) -> Layer:
        if hyper:
            f, b = functools.partial(f, **hyper), functools.partial(b, **hyper)

        def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> Any:
            return f(x, xp=xp)

        def backward(
            params: Params, cache: Any, dy: Array, *,
            xp: ModuleType | None = None, need_dx: bool = True,
        ) -> tuple[Array, Params]:
            return b(cache, dy, xp=xp), {}

        return Layer(_no_params, forward, backward, name, None, None,
                     config or {"name": name}, bind, (f, b), dict)

    def bind(binding: Binding) -> Layer:
        return build(binding.kernel(fwd), binding.kernel(bwd), None)

    return build(fwd, bwd, bind)


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
    """Leaky ReLU layer with negative slope ``alpha`` (a finite real number)."""
    slope = real(alpha, "leaky_relu(): alpha")
    if not math.isfinite(slope):
        raise SettingError(f"leaky_relu(): alpha must be a finite real number, got {alpha!r}")
    alpha = slope
    return _layer("leaky_relu", leaky_relu_forward, leaky_relu_backward,
                  {"name": "leaky_relu", "alpha": alpha}, alpha=alpha)


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
        raise SettingError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
