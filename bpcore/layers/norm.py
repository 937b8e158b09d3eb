"""Normalization layers: ``layer_norm`` and ``batch_norm``, one formula for both.

Both standardize ``x`` over some axes and apply a learned per-feature affine map::

    x̂ = (x - μ) / √(σ² + ε),    y = γ x̂ + β

with ``μ``, ``σ²`` the mean and (biased) variance over the *normalized axes*:
the trailing ``normalized_shape`` axes of each sample for
:func:`layer_norm` (as ``torch.nn.LayerNorm``), the batch and every spatial
axis for each channel for :func:`batch_norm` (as ``torch.nn.BatchNorm1d/2d``,
channels on axis 1). The backward pass through the statistics is the same
formula for both (:func:`normalize_backward`)::

    dx̂ = γ dy,    dx = (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) / √(σ² + ε)

with the means over the normalized axes; ``dγ = Σ dy · x̂`` and
``dβ = Σ dy`` over every axis but the features'.

Batch norm keeps *running statistics* as layer state, outside the trained
parameters (the optimizer never sees them): in training mode it normalizes
with the batch's statistics and returns the new running ones,
``r ← (1 - m) r + m s`` with momentum ``m`` (PyTorch's convention: 0.1) and
the unbiased batch variance; in evaluation mode it normalizes with the
running statistics, deterministically, and ``dx = γ dy / √(r_var + ε)``.

Data-parallel training (:mod:`bpcore.distributed`) synchronises batch norm:
given a :class:`BatchSync` (``batch_norm(C, sync=...)``, or
:func:`bpcore.distributed.sync_batch_norm` on a whole network), the batch
statistics are those of the *global* batch, every rank's shard together: one
all-reduce of ``Σ(x - r)``, ``Σ(x - r)²`` and the count per channel in the
forward pass (shifted by the running mean ``r``, the same on every rank, so
that the variance does not cancel digits), one of ``Σ dx̂`` and ``Σ dx̂ x̂`` in
the backward pass. The ranks then compute what one process computes on the
whole batch, and their running statistics stay identical (PyTorch's
``SyncBatchNorm``, not plain DDP's per-rank statistics).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..backend import Array, device_of, namespace
from ..errors import SettingError, ShapeError
from ..values import real
from . import _weights
from .core import Context, Layer, Params, Shape, positive_int, show_shape

__all__ = [
    "BatchSync",
    "NormCache",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "normalize",
    "normalize_backward",
]


class BatchSync(Protocol):
    """Sums over the ranks of a data-parallel job, for synchronised batch norm
    (:class:`bpcore.distributed.BatchStatSync` is the one bpcore provides)."""

    def sum(self, parts: list[Array]) -> list[Array]:
        """Each array summed element-wise over the ranks (the forward's statistics)."""
        ...

    def grad_sum(self, parts: list[Array]) -> list[Array]:
        """Sums of gradient terms over the ranks, in this rank's gradient units:
        ``Σ_r w_r a_r / w_self`` with ``w_r`` the factor of rank ``r``'s gradients
        in the all-reduce (the plain sum when every rank's factor is the same)."""
        ...


class NormCache(NamedTuple):
    """What a normalization's backward pass needs."""

    xhat: Array  # the standardized input, shape of x
    rstd: Array  # 1 / √(σ² + ε), kept dims (broadcasts against x)
    axes: tuple[int, ...]  # the normalized axes (those μ and σ² were taken over)
    batch_stats: bool  # whether μ and σ² came from this batch (else: fixed statistics)
    sync: BatchSync | None = None  # the statistics were the global batch's (data-parallel)
    count: Any = None  # with sync: the values per channel in the global batch (an array)


def normalize(
    x: Array, axes: tuple[int, ...], eps: float, *, xp: ModuleType | None = None
) -> tuple[Array, Array, Array, Array]:
    """``(x̂, 1/√(σ²+ε), μ, σ²)`` over ``axes`` (kept as size-1 axes; biased σ²)."""
    xp = namespace(x, xp=xp)
    mu = xp.mean(x, axis=axes, keepdims=True)
    centered = x - mu
    var = xp.mean(centered * centered, axis=axes, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    return centered * rstd, rstd, mu, var


def normalize_backward(
    dxhat: Array, cache: NormCache, *, xp: ModuleType | None = None
) -> Array:
    """``dx`` from ``dx̂``: ``rstd (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂))`` when the
    statistics came from the batch; ``rstd dx̂`` for fixed statistics."""
    xp = namespace(dxhat, xp=xp)
    if not cache.batch_stats:
        return dxhat * cache.rstd
    if cache.sync is not None:  # the means over the global batch, every rank's shard
        acc = _accumulator(dxhat.dtype, xp)
        wide = xp.astype(dxhat, acc, copy=False)
        a, b = cache.sync.grad_sum([
            xp.sum(wide, axis=cache.axes, keepdims=True),
            xp.sum(wide * xp.astype(cache.xhat, acc, copy=False), axis=cache.axes,
                   keepdims=True)])
        a = xp.astype(a / cache.count, dxhat.dtype, copy=False)
        b = xp.astype(b / cache.count, dxhat.dtype, copy=False)
    else:
        a = xp.mean(dxhat, axis=cache.axes, keepdims=True)
        b = xp.mean(dxhat * cache.xhat, axis=cache.axes, keepdims=True)
    return (dxhat - a - cache.xhat * b) * cache.rstd


def _affine_grads(dy: Array, xhat: Array, keep: tuple[int, ...], xp: ModuleType) -> Params:
    """``dγ = Σ dy x̂``, ``dβ = Σ dy`` over every axis not in ``keep``."""
    others = tuple(i for i in range(dy.ndim) if i not in keep)
    return {"gamma": xp.sum(dy * xhat, axis=others), "beta": xp.sum(dy, axis=others)}


def layer_norm_forward(
    params: Params, x: Array, *, eps: float = 1e-5, xp: ModuleType | None = None
) -> tuple[Array, NormCache]:
    """``y = γ x̂ + β`` with ``x̂`` standardized over the trailing ``gamma.ndim`` axes.

    Parameters
    ----------
    params : dict
        ``gamma`` and ``beta`` of the normalized shape (``torch.nn.LayerNorm``'s
        ``weight`` and ``bias``).
    x : array, shape (batch, ..., *normalized_shape)

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = layer_norm_forward({"gamma": np.ones(2), "beta": np.zeros(2)},
    ...                           np.array([[1.0, 3.0]]))
    >>> np.round(y, 4).tolist()
    [[-1.0, 1.0]]
    """
    xp = namespace(x, xp=xp)
    k = params["gamma"].ndim
    axes = tuple(range(x.ndim - k, x.ndim))
    xhat, rstd, _, _ = normalize(x, axes, eps, xp=xp)
    return params["gamma"] * xhat + params["beta"], NormCache(xhat, rstd, axes, True)


def layer_norm_backward(
    params: Params, cache: NormCache, dy: Array, *, xp: ModuleType | None = None,
    need_dx: bool = True,
) -> tuple[Array | None, Params]:
    """``dγ = Σ dy x̂``, ``dβ = Σ dy`` (over the batch and leading axes) and
    ``dx = normalize_backward(γ dy)``."""
    xp = namespace(dy, xp=xp)
    grads = _affine_grads(dy, cache.xhat, cache.axes, xp)
    if not need_dx:
        return None, grads
    return normalize_backward(params["gamma"] * dy, cache, xp=xp), grads


def _channels(a: Array, ndim: int, xp: ModuleType) -> Array:
    """A per-channel vector ``(C,)`` shaped to broadcast over ``(batch, C, *spatial)``."""
    return xp.reshape(a, (1, a.shape[0], *(1,) * (ndim - 2)))


def batch_norm_forward(
    params: Params, x: Array, *, state: Params, train: bool, momentum: float = 0.1,
    eps: float = 1e-5, xp: ModuleType | None = None, sync: BatchSync | None = None,
) -> tuple[Array, NormCache, Params]:
    """Batch normalization of ``x`` ``(batch, C)`` or ``(batch, C, *spatial)`` per channel.

    Training (``train=True``): ``μ``, ``σ²`` over the batch and spatial axes;
    returns the running statistics updated, ``mean ← (1-m) mean + m μ``,
    ``var ← (1-m) var + m σ² n/(n-1)``. Evaluation: the running ``mean`` and
    ``var`` of ``state``, which is returned unchanged. With ``sync`` (training
    data-parallel) ``μ``, ``σ²`` and ``n`` are those of the global batch, from
    one all-reduce of the shifted sums (see the module docstring).

    Returns
    -------
    y : array, shape of x
    cache : NormCache
    state : dict with ``mean`` and ``var``, shape (C,)
    """
    xp = namespace(x, xp=xp)
    axes = (0, *range(2, x.ndim))
    gamma, beta = _channels(params["gamma"], x.ndim, xp), _channels(params["beta"], x.ndim, xp)
    if not train:
        mean, var = _channels(state["mean"], x.ndim, xp), _channels(state["var"], x.ndim, xp)
        rstd = 1.0 / xp.sqrt(var + eps)
        xhat = (x - mean) * rstd
        return gamma * xhat + beta, NormCache(xhat, rstd, axes, False), state
    n = math.prod([int(x.shape[i]) for i in axes])  # a list: torch.compile traces no generators
    if sync is not None:
        return _synced_forward(params, x, state, momentum, eps, sync, axes, n, xp)
    xhat, rstd, mu, var = normalize(x, axes, eps, xp=xp)
    unbiased = xp.reshape(var, (-1,)) * (n / max(n - 1, 1))
    new = {"mean": (1.0 - momentum) * state["mean"] + momentum * xp.reshape(mu, (-1,)),
           "var": (1.0 - momentum) * state["var"] + momentum * unbiased}
    return gamma * xhat + beta, NormCache(xhat, rstd, axes, True), new


def _synced_forward(
    params: Params, x: Array, state: Params, momentum: float, eps: float, sync: BatchSync,
    axes: tuple[int, ...], n: int, xp: ModuleType,
) -> tuple[Array, NormCache, Params]:
    """:func:`batch_norm_forward` in training with the global batch's statistics."""
    # Sums in float32 at least (float16 sums of squares overflow at 65504), shifted
    # by the running mean (the same on every rank) so that the variance
    # S2/N - (S1/N)² does not cancel digits once the running mean is near μ.
    acc = _accumulator(x.dtype, xp)
    shift = xp.astype(_channels(state["mean"], x.ndim, xp), acc, copy=False)
    d = xp.astype(x, acc, copy=False) - shift
    count = xp.asarray([float(n)], dtype=acc, device=device_of(x))
    s1, s2, total = sync.sum([xp.sum(d, axis=axes, keepdims=True),
                              xp.sum(d * d, axis=axes, keepdims=True), count])
    total = xp.reshape(total, ())
    mean_d = s1 / total
    var = xp.clip(s2 / total - mean_d * mean_d, min=0.0)
    mu = shift + mean_d
    rstd = 1.0 / xp.sqrt(var + eps)
    low = x.dtype  # the normalized values in x's dtype (a mixed-precision step's)
    rstd_x = xp.astype(rstd, low, copy=False)
    xhat = (x - xp.astype(mu, low, copy=False)) * rstd_x
    unbiased = xp.reshape(var, (-1,)) * (total / xp.clip(total - 1.0, min=1.0))
    kept = state["mean"].dtype
    new = {"mean": (1.0 - momentum) * state["mean"]
           + momentum * xp.astype(xp.reshape(mu, (-1,)), kept, copy=False),
           "var": (1.0 - momentum) * state["var"]
           + momentum * xp.astype(unbiased, kept, copy=False)}
    gamma, beta = _channels(params["gamma"], x.ndim, xp), _channels(params["beta"], x.ndim, xp)
    return gamma * xhat + beta, NormCache(xhat, rstd_x, axes, True, sync, total), new


def _accumulator(dtype: Any, xp: ModuleType) -> Any:
    """float64 for float64 values, else float32: the dtype synchronised sums are taken in."""
    return xp.float64 if dtype == xp.float64 else xp.float32


def batch_norm_backward(
    params: Params, cache: NormCache, dy: Array, *, xp: ModuleType | None = None,
    need_dx: bool = True,
) -> tuple[Array | None, Params]:
    """``dγ = Σ dy x̂``, ``dβ = Σ dy`` per channel and ``dx = normalize_backward(γ dy)``
    (through the batch statistics in training mode; ``γ dy / √(var + ε)`` in evaluation)."""
    xp = namespace(dy, xp=xp)
    grads = _affine_grads(dy, cache.xhat, (1,), xp)
    if not need_dx:
        return None, grads
    gamma = _channels(params["gamma"], dy.ndim, xp)
    return normalize_backward(gamma * dy, cache, xp=xp), grads


def _eps(eps: Any, where: str) -> float:
    value = real(eps, f"{where}: eps")
    if not (math.isfinite(value) and value > 0):
        raise SettingError(f"{where}: eps must be a finite number > 0, got {eps!r}")
    return value


def _affine_params(shape: tuple[int, ...]) -> Any:
    def init(rng: Any = None, *, xp: ModuleType | None = None, dtype: Any = None,
             device: Any = None) -> Params:
        return {"gamma": _weights.place(np.ones(shape), xp, dtype, device),
                "beta": _weights.place(np.zeros(shape), xp, dtype, device)}

    return init


def layer_norm(normalized_shape: int | Sequence[int], *, eps: float = 1e-5) -> Layer:
    """Layer normalization over the trailing axes of each sample, as ``torch.nn.LayerNorm``.

    ``y = γ (x - μ) / √(σ² + ε) + β`` with ``μ``, ``σ²`` over the trailing
    ``normalized_shape`` axes; ``γ`` (``gamma``, ones) and ``β`` (``beta``,
    zeros) have that shape. Gradients: :func:`layer_norm_backward`.

    Examples
    --------
    >>> import bpcore as bp
    >>> net = bp.sequential(bp.dense(4, 8), bp.layer_norm(8), bp.relu())
    >>> net.n_out
    8
    """
    one = isinstance(normalized_shape, numbers.Integral)
    shape = (positive_int(normalized_shape, "layer_norm(): normalized_shape"),) if one else \
        tuple(positive_int(n, "layer_norm(): each size of normalized_shape")
              for n in normalized_shape)  # type: ignore[union-attr]
    if not shape:
        raise SettingError("layer_norm() needs the shape of the normalized axes, e.g. 64")
    e = _eps(eps, "layer_norm()")
    config = {"name": "layer_norm", "normalized_shape": shape[0] if one else list(shape),
              "eps": e}
    k = len(shape)

    def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> Any:
        return layer_norm_forward(params, x, eps=e, xp=xp)

    def out_shape(sample: Shape | None) -> Shape | None:
        if sample is None:
            return None
        if len(sample) < k or not all(a is None or a == b for a, b in
                                      zip(sample[len(sample) - k:], shape)):
            raise ShapeError(f"layer_norm over {show_shape(shape)} takes samples ending in "
                             f"that shape, got {show_shape(sample)}")
        return sample

    def shapes() -> Params:
        return {"gamma": shape, "beta": shape}

    n = shape[0] if k == 1 else None
    return Layer(_affine_params(shape), forward, layer_norm_backward, "layer_norm", None,
                 n, config, None, None, shapes, None, out_shape)


def batch_norm(num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
               sync: BatchSync | None = None) -> Layer:
    """Batch normalization per channel, as ``torch.nn.BatchNorm1d`` / ``BatchNorm2d``.

    Takes ``(batch, C)`` or ``(batch, C, *spatial)`` with ``C = num_features``.
    Parameters ``gamma`` (ones) and ``beta`` (zeros), shape ``(C,)``; layer
    state ``{"mean": zeros, "var": ones}``, the running statistics (see the
    module docstring for both modes). Training needs at least two values per
    channel in a batch.

    ``sync``: in data-parallel training, the :class:`BatchSync` that makes the
    training statistics those of the global batch (as ``torch.nn.SyncBatchNorm``;
    :func:`bpcore.distributed.sync_batch_norm` sets it on every batch norm of a
    network). It is not part of the layer's config: a checkpoint of a
    synchronised network loads as the plain one.

    Examples
    --------
    >>> import bpcore as bp
    >>> net = bp.sequential(bp.conv1d(1, 8, 3), bp.batch_norm(8), bp.relu())
    >>> sorted(net.init_state()[1])
    ['mean', 'var']
    """
    c = positive_int(num_features, "batch_norm(): num_features")
    m = real(momentum, "batch_norm(): momentum")
    if not 0.0 <= m <= 1.0:
        raise SettingError(f"batch_norm(): momentum must lie in [0, 1], got {momentum!r}")
    e = _eps(eps, "batch_norm()")
    config = {"name": "batch_norm", "num_features": c, "momentum": m, "eps": e}

    def init_state(*, xp: ModuleType | None = None, dtype: Any = None,
                   device: Any = None) -> Params:
        return {"mean": _weights.place(np.zeros(c), xp, dtype, device),
                "var": _weights.place(np.ones(c), xp, dtype, device)}

    def forward(params: Params, x: Array, *, xp: ModuleType | None = None,
                ctx: Context | None = None) -> tuple[Array, NormCache, Params]:
        if ctx is None:
            raise SettingError("batch_norm needs the step's context (training or evaluation, "
                               "and its running statistics): run it through the step driver")
        state = ctx.state
        if not state:  # a state made without arrays' backend: the starting statistics
            state = init_state(xp=namespace(x, xp=xp), dtype=x.dtype, device=device_of(x))
        return batch_norm_forward(params, x, state=state, train=ctx.train, momentum=m, eps=e,
                                  xp=xp, sync=sync)

    def out_shape(sample: Shape | None) -> Shape | None:
        if sample is not None and (len(sample) < 1 or sample[0] not in (None, c)):
            raise ShapeError(f"batch_norm({c}) takes ({c},) or ({c}, ...) per sample "
                             f"(channels first), got {show_shape(sample)}")
        return sample

    def shapes() -> Params:
        return {"gamma": (c,), "beta": (c,)}

    return Layer(_affine_params((c,)), forward, batch_norm_backward, "batch_norm", None,
                 None, config, None, None, shapes, None, out_shape, init_state)
