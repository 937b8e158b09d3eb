"""Losses: each returns the value and its gradient with respect to the output.

A loss is called as ``value, dy = loss(y, t)``: ``y`` is the network's output
(logits for the ``*_cross_entropy`` losses), ``t`` the target, ``value`` a 0-D
array and ``dy`` the gradient ``∂value/∂y`` with ``y``'s shape, ready to feed
the network's backward pass. The means (``mse``, the cross-entropies) are
over the batch, so their gradient is already divided by it; ``half_sse`` is a
sum. Optional per-sample ``weights`` (shape ``(batch,)``) make each a weighted
mean ``Σ wᵢ ℓᵢ / Σ wᵢ`` (``half_sse``: the weighted sum ``Σ wᵢ ℓᵢ``).

The built-in losses are plain functions (``help(bp.mse)`` shows the formula)
that also carry ``name`` and ``targets``; a loss of your own is a
:class:`Loss`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from . import cuda
from .backend import Array, device_of, namespace
from .dispatch import Workspace, cupy_kernels_enabled, output, specializes
from .errors import BpcoreError, ShapeError

__all__ = [
    "LOSSES",
    "Loss",
    "LossFunction",
    "binary_cross_entropy",
    "get_loss",
    "half_sse",
    "mse",
    "one_hot",
    "softmax_cross_entropy",
]


@runtime_checkable
class LossFunction(Protocol):
    """What the step driver needs of a loss: ``value, dy = loss(y, t, *, xp)``,
    its ``name``, the kernel ``fn`` and the kind of ``targets`` it takes
    (``"classes"``, ``"binary"`` or ``"values"``)."""

    name: str
    targets: str
    fn: Callable[..., tuple[Array, Array]]

    def __call__(self, y: Array, t: Array, *, xp: ModuleType | None = None,
                 weights: Array | None = None) -> tuple[Array, Array]: ...


class Loss(NamedTuple):
    """A loss of your own: ``fn(y, t, *, xp=None) -> (value, dy)`` with what it
    expects of its targets.

    ``targets`` is ``"classes"`` (integer labels or one-hot/probability rows),
    ``"binary"`` (values in [0, 1]) or ``"values"`` (real numbers, same shape
    as the output). ``fn`` may take ``weights=`` (per-sample weights); one
    that does not cannot train with ``sample_weight``.
    """

    name: str
    fn: Callable[..., tuple[Array, Array]]
    targets: str

    def __call__(self, y: Array, t: Array, *, xp: ModuleType | None = None,
                 weights: Array | None = None) -> tuple[Array, Array]:
        if weights is None:
            return self.fn(y, t, xp=xp)
        return self.fn(y, t, xp=xp, weights=weights)


def _builtin(name: str, targets: str) -> Callable[[Callable[..., Any]], Any]:
    """Give a loss kernel the attributes of a :class:`LossFunction`."""

    def mark(fn: Callable[..., Any]) -> Any:
        fn.__dict__.update(name=name, targets=targets, fn=fn)
        return fn

    return mark


def _row_weights(xp: ModuleType, weights: Array | None, batch: int) -> Array | None:
    """``wᵢ · batch / Σ w`` as a column: per-row factors that turn a batch mean
    into the weighted mean (``None``: no weights)."""
    if weights is None:
        return None
    return (weights * (batch / xp.sum(weights)))[:, None]


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


@_builtin("half_sse", "values")
def half_sse(
    y: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None
) -> tuple[Array, Array]:
    """The classic backprop error ``E = ½ Σ (y − t)²``, summed over the batch
    and the outputs; ``∂E/∂y = y − t``.

    With ``weights`` (batch,): ``E = ½ Σᵢ wᵢ Σⱼ (yᵢⱼ − tᵢⱼ)²``, ``∂E/∂yᵢ = wᵢ (yᵢ − tᵢ)``.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> value, dy = bp.half_sse(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    >>> float(value), dy.tolist()
    (2.5, [[1.0, 2.0]])
    """
    xp = namespace(y, xp=xp)
    _same_shape("half_sse", y, t)
    d = y - t
    if weights is not None:
        d = weights[:, None] * d
        return _array(xp, 0.5 * xp.sum(d * (y - t))), d
    return _array(xp, 0.5 * xp.sum(d * d)), d


@_builtin("mse", "values")
def mse(
    y: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None
) -> tuple[Array, Array]:
    """Mean squared error over all ``N`` elements (batch × outputs), ``E = Σ (y − t)² / N``;
    ``∂E/∂y = 2 (y − t) / N`` (already divided by the batch).

    With ``weights``: the weighted mean over the rows, ``rᵢ = wᵢ · batch / Σ w``
    multiplying row ``i`` of both.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> value, dy = bp.mse(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]))
    >>> float(value), dy.tolist()
    (5.0, [[1.0, 3.0]])
    """
    xp = namespace(y, xp=xp)
    _same_shape("mse", y, t)
    d = y - t
    n = math.prod(y.shape)
    r = _row_weights(xp, weights, y.shape[0])
    if r is not None:
        return _array(xp, xp.sum(r * (d * d)) / n), (r * d) * (2.0 / n)
    return _array(xp, xp.sum(d * d) / n), d * (2.0 / n)


def one_hot(labels: Array, n_classes: int, dtype: Any, *, xp: ModuleType | None = None) -> Array:
    """Rows of zeros with a one at each label: shape ``(batch, n_classes)``."""
    xp = namespace(labels, xp=xp)
    classes = xp.arange(n_classes, device=device_of(labels))
    return xp.astype(labels[:, None] == classes[None, :], dtype)


@_builtin("softmax_cross_entropy", "classes")
def softmax_cross_entropy(
    z: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None
) -> tuple[Array, Array]:
    """Softmax cross-entropy from logits ``z`` (batch, k), averaged over the batch.

    ``E = −(1/batch) Σᵢ Σⱼ tᵢⱼ log softmax(zᵢ)ⱼ``;
    ``∂E/∂z = (softmax(z) Σⱼ tⱼ − t) / batch`` (``(p − onehot) / batch`` for
    labels), already divided by the batch. Targets are integer labels of shape
    ``(batch,)`` or one-hot/probability rows ``(batch, k)``. With ``weights``:
    the weighted mean, row ``i`` of both multiplied by ``wᵢ · batch / Σ w``.
    Computed through log-sum-exp, so no logit overflows.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> value, dz = bp.softmax_cross_entropy(np.zeros((1, 2)), np.array([1]))
    >>> round(float(value), 4), dz.tolist()
    (0.6931, [[0.5, -0.5]])
    """
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
    r = _row_weights(xp, weights, batch)
    if r is not None:
        t = r * t  # a row's weight scales its target mass: the weighted mean, exactly
    value = -xp.sum(t * log_p) / batch
    # d/dz of -Σ t log softmax(z) = softmax(z) Σt - t (= p - t for one-hot rows).
    p = e / total
    grad = (p * xp.sum(t, axis=1, keepdims=True) - t) / batch
    return _array(xp, value), grad


@specializes(softmax_cross_entropy, "numpy")
def _softmax_ce_numpy(
    z: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None,
    ws: Workspace | None = None,
) -> tuple[Array, Array]:
    """Against integer labels, no one-hot matrix: the label entries are read
    and written by index, and the gradient goes into the workspace.
    Without it a step takes 9.2% longer (seed network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    if weights is not None or t.ndim != 1 or t.dtype.kind not in "iu" \
            or t.shape[0] != z.shape[0]:
        return softmax_cross_entropy(z, t, xp=xp, weights=weights)
    batch = z.shape[0]
    rows = np.arange(batch)
    dz = output(ws, "dz", z.shape, z.dtype, np.empty)
    # log-sum-exp: shift by the row maximum so exp never overflows.
    np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True), out=dz)
    picked = dz[rows, t]
    np.exp(dz, out=dz)
    total = np.add.reduce(dz, axis=1, keepdims=True)
    value = -np.add.reduce(picked - np.log(total[:, 0])) / batch
    np.divide(dz, total, out=dz)
    dz[rows, t] -= 1.0
    np.divide(dz, batch, out=dz)
    return np.asarray(value), dz


@specializes(softmax_cross_entropy, "torch")
def _softmax_ce_torch(
    z: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None,
    ws: Workspace | None = None,
) -> tuple[Array, Array]:
    """Against integer labels, with PyTorch's ``log_softmax`` and indexing
    (five kernels where the portable form, building a one-hot matrix, runs
    fourteen).
    Without it a step takes 13.0% longer (deep network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    torch = sys.modules["torch"]
    if weights is not None or t.ndim != 1 or t.dtype.is_floating_point \
            or t.shape[0] != z.shape[0]:
        return softmax_cross_entropy(z, t, xp=xp, weights=weights)
    batch = z.shape[0]
    rows = torch.arange(batch, device=z.device)
    log_p = torch.log_softmax(z, dim=1)
    value = -log_p[rows, t].sum() / batch
    dz = torch.exp(log_p, out=log_p)  # softmax(z), in log_p's buffer
    dz[rows, t] -= 1.0
    return value, dz.div_(batch)


# One block per row; blockDim.x is a power of two; shared memory: blockDim.x REALs.
# dz may be z itself: every element is read before it is written by the same
# thread, and the label's logit is read before any thread writes.
cuda.raw("softmax_ce_labels", "softmax_ce_labels_REAL", r"""
extern "C" __global__ void softmax_ce_labels_REAL(
    const REAL* z, const long long* labels, REAL* dz, REAL* row_loss,
    const int batch, const int k)
{
    extern __shared__ unsigned char smem_raw[];
    REAL* sh = reinterpret_cast<REAL*>(smem_raw);
    const int row = blockIdx.x;
    if (row >= batch) { return; }
    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    const REAL* zr = z + (long long)row * k;
    REAL* dr = dz + (long long)row * k;

    // log-sum-exp: shift by the row maximum so exp never overflows.
    // Start from the row's first logit (k >= 1): no INFINITY macro under NVRTC.
    REAL m = zr[0];
    for (int j = tid; j < k; j += nt) { m = fmax(m, zr[j]); }
    sh[tid] = m;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) { sh[tid] = fmax(sh[tid], sh[tid + s]); }
        __syncthreads();
    }
    m = sh[0];
    __syncthreads();

    const long long lab = labels[row];
    const bool ok = lab >= 0 && lab < k;
    const REAL zero = 0;
    REAL picked = ok ? zr[lab] - m : zero / zero;  // a bad label gives NaN, not a stray read

    REAL total = 0;
    for (int j = tid; j < k; j += nt) { total += exp(zr[j] - m); }
    sh[tid] = total;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) { sh[tid] = sh[tid] + sh[tid + s]; }
        __syncthreads();
    }
    total = sh[0];

    if (tid == 0) { row_loss[row] = log(total) - picked; }
    for (int j = tid; j < k; j += nt) {
        REAL p = exp(zr[j] - m) / total;
        REAL t = (j == lab) ? (REAL)1 : (REAL)0;
        dr[j] = (p - t) / (REAL)batch;
    }
}
""")


@specializes(softmax_cross_entropy, "cupy", enabled=cupy_kernels_enabled)
def _softmax_ce_cupy(
    z: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None,
    ws: Workspace | None = None,
) -> tuple[Array, Array]:
    """Against integer labels, value and gradient in one CUDA kernel (one
    thread block per row: max, sum of exp, gradient); no one-hot matrix. A
    label outside ``[0, k)`` gives a NaN value (validation rejects it first)."""
    if weights is not None or t.ndim != 1 or t.dtype.kind not in "iu" \
            or t.shape[0] != z.shape[0]:
        return softmax_cross_entropy(z, t, xp=xp, weights=weights)
    cp = cuda.cupy()
    batch, k = z.shape
    z = cp.ascontiguousarray(z)
    labels = cp.ascontiguousarray(t.astype(cp.int64, copy=False))
    dz = output(ws, "dz", z.shape, z.dtype, cp.empty)
    rows = output(ws, "rows", (batch,), z.dtype, cp.empty)
    threads = 32
    while threads < k and threads < 256:
        threads *= 2
    cuda.launch("softmax_ce_labels", (batch,), (threads,),
                (z, labels, dz, rows, cp.int32(batch), cp.int32(k)),
                c_type=cuda.real(z.dtype), shared_mem=threads * z.dtype.itemsize)
    return cp.sum(rows) / batch, dz


@_builtin("binary_cross_entropy", "binary")
def binary_cross_entropy(
    z: Array, t: Array, *, xp: ModuleType | None = None, weights: Array | None = None
) -> tuple[Array, Array]:
    """Binary cross-entropy from logits, averaged over all ``N`` elements (batch × outputs).

    ``E = (1/N) Σ [max(z, 0) − z t + log(1 + e^−|z|)]`` (the stable form of
    ``−t log σ(z) − (1 − t) log(1 − σ(z))``); ``∂E/∂z = (σ(z) − t) / N``.
    Targets in [0, 1] with the output's shape. With ``weights``: the weighted
    mean over the rows, as :func:`mse`.
    """
    xp = namespace(z, xp=xp)
    _same_shape("binary_cross_entropy", z, t)
    n = math.prod(z.shape)
    # Stable form: max(z, 0) - z t + log(1 + exp(-|z|)); exp(-|z|) <= 1 never overflows.
    e = xp.exp(-xp.abs(z))
    terms = xp.where(z > 0, z, 0.0) - z * t + xp.log1p(e)
    r = 1.0 / (1.0 + e)
    grad = (xp.where(z >= 0, r, e * r) - t) / n
    w = _row_weights(xp, weights, z.shape[0])
    if w is not None:
        terms, grad = w * terms, w * grad
    return _array(xp, xp.sum(terms) / n), grad


LOSSES: dict[str, LossFunction] = {
    loss.name: loss for loss in (half_sse, mse, softmax_cross_entropy, binary_cross_entropy)
}
LOSSES["cross_entropy"] = softmax_cross_entropy
LOSSES["bce"] = binary_cross_entropy
LOSSES["sse"] = half_sse


class UnknownLossError(BpcoreError, ValueError):
    """A loss named that bpcore does not have."""


def get_loss(name_or_loss: str | LossFunction) -> LossFunction:
    """A loss by name (a :class:`Loss` or a built-in loss passes through)."""
    if isinstance(name_or_loss, LossFunction):
        return name_or_loss
    try:
        return LOSSES[name_or_loss]
    except (KeyError, TypeError):
        raise UnknownLossError(
            f"unknown loss {name_or_loss!r}; choose one of {', '.join(LOSSES)} or pass a "
            "bp.Loss(name, fn, targets)"
        ) from None
