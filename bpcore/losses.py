"""Losses: each returns the value and its gradient with respect to the output.

A loss is called as ``value, dy = loss(y, t)``: ``y`` is the network's output
(logits for the ``*_cross_entropy`` losses), ``t`` the target, ``value`` a 0-D
array and ``dy`` the gradient ``∂value/∂y`` with ``y``'s shape, ready to feed
the network's backward pass.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from . import cuda
from .backend import Array, device_of, namespace
from .dispatch import Workspace, cupy_kernels_enabled, output, specializes
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


@specializes(_softmax_ce, "numpy")
def _softmax_ce_numpy(
    z: Array, t: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """Against integer labels, no one-hot matrix: the label entries are read
    and written by index, and the gradient goes into the workspace. MEASURE"""
    if t.ndim != 1 or t.dtype.kind not in "iu" or t.shape[0] != z.shape[0]:
        return _softmax_ce(z, t, xp=xp)
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


@specializes(_softmax_ce, "torch")
def _softmax_ce_torch(
    z: Array, t: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """Against integer labels, with PyTorch's ``log_softmax`` and indexing
    (five kernels where the portable form, building a one-hot matrix, runs
    fourteen). MEASURE"""
    torch = sys.modules["torch"]
    if t.ndim != 1 or t.dtype.is_floating_point or t.shape[0] != z.shape[0]:
        return _softmax_ce(z, t, xp=xp)
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


@specializes(_softmax_ce, "cupy", enabled=cupy_kernels_enabled)
def _softmax_ce_cupy(
    z: Array, t: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, Array]:
    """Against integer labels, value and gradient in one CUDA kernel (one
    thread block per row: max, sum of exp, gradient); no one-hot matrix. A
    label outside ``[0, k)`` gives a NaN value (validation rejects it first)."""
    if t.ndim != 1 or t.dtype.kind not in "iu" or t.shape[0] != z.shape[0]:
        return _softmax_ce(z, t, xp=xp)
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
