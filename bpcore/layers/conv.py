"""1-D and 2-D convolution kernels (cross-correlation, as every framework's "conv").

The Array API standard has no convolution, so both directions are built from
slicing, :func:`xp.stack`/:func:`xp.concat` and one matrix product:

* **forward** (im2col): the ``k`` input windows of every output position are
  gathered, one strided slice per kernel offset, into ``cols`` of shape
  ``(batch, C_in, k, *out)``; then ``y = W₂ @ cols + b`` with ``W₂`` the
  weights flattened to ``(C_out, C_in·k)``;
* **backward**: ``dW = Σ_{batch, positions} dy ⊗ cols`` (the correlation of
  input and delta, one ``tensordot``), ``db = Σ dy`` and ``dx =
  col2im(W₂ᵀ @ dy)``, the transposed convolution: each kernel offset's slice
  of ``W₂ᵀ dy`` is spread back over the input with the stride's zeros between
  its entries and zero padding before and after, and the offsets are summed.
  No array is written in place (JAX arrays are immutable); the loops run over
  kernel offsets only, everything else is vectorized over batch and channels.

Layout and arithmetic are PyTorch's (``torch.nn.Conv1d``/``Conv2d`` with
``groups=1``): ``x`` is channels-first, ``(batch, C_in, L)`` or
``(batch, C_in, H, W)``; ``params = {"W": (C_out, C_in, *kernel), "b":
(C_out,)}``, so a torch module's ``weight`` and ``bias`` load unchanged; the
output length along each axis is ``⌊(L + 2p - d(k-1) - 1) / s⌋ + 1``.

:func:`im2col` and :func:`col2im` are public: the pooling kernels
(:mod:`bpcore.layers.pool`) use the same two.

Memory: the cache keeps ``cols``, ``k`` times the (padded) input, so the
backward does not rebuild it.
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, device_of, namespace
from ..dispatch import Binding, Workspace, output, specializes
from ..errors import SettingError, ShapeError
from ..init import as_generator
from . import _weights
from .core import Layer, Params, Shape, positive_int, show_shape

__all__ = [
    "ConvCache",
    "col2im",
    "conv1d",
    "conv2d",
    "conv1d_backward",
    "conv1d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_shape",
    "im2col",
]

IntOrTuple = int | Sequence[int]


class ConvCache(NamedTuple):
    """What a convolution's backward pass needs: the input windows, or (the torch
    and JAX kernels, which need no windows) the input itself."""

    cols: Array | None  # (batch, C_in, k, *out): the input windows (im2col of the padded input)
    x_shape: tuple[int, ...]  # (batch, C_in, *spatial)
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    x: Array | None = None  # (batch, C_in, *spatial): kept in place of ``cols``


def _windows(cache: ConvCache, kernel: Sequence[int], xp: ModuleType | None) -> Array:
    """The cache's input windows, gathered now from its input when it kept that."""
    if cache.cols is not None:
        return cache.cols
    assert cache.x is not None
    return im2col(cache.x, kernel, stride=cache.stride, padding=cache.padding,
                  dilation=cache.dilation, xp=xp)


def _ints(value: IntOrTuple, ndim: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as a tuple of ``ndim`` ints ``>= minimum`` (an int is repeated;
    any integer type, ``numpy.int64`` included, ``bool`` not)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        out: tuple[Any, ...] = (value,) * ndim
    else:
        try:
            out = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise SettingError(f"{name} must be an int or {ndim} ints, got {value!r}") from None
    if len(out) != ndim or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in out
    ):
        raise SettingError(
            f"{name} must be an int or {ndim} ints, each >= {minimum}, got {value!r}"
        )
    return tuple(int(v) for v in out)


def conv_output_shape(
    spatial: Sequence[int | None], kernel: Sequence[int], stride: Sequence[int],
    padding: Sequence[int], dilation: Sequence[int],
) -> tuple[int | None, ...]:
    """Output size along each axis: ``⌊(n + 2p - d(k - 1) - 1) / s⌋ + 1``
    (``None`` where the input size ``n`` is not known).

    Raises
    ------
    ShapeError
        If the (padded) input is shorter than the dilated kernel on some axis.
    """
    out: list[int | None] = []
    for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1
        if n is None:
            out.append(None)
            continue
        if n + 2 * p < span:
            raise ShapeError(
                f"input size {n} (padded {n + 2 * p}) is smaller than the kernel's span {span}"
            )
        out.append((n + 2 * p - span) // s + 1)
    return tuple(out)


def _known(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """A shape computed from an array's (all sizes known)."""
    assert None not in shape
    return tuple(int(n) for n in shape if n is not None)


def _pad(
    x: Array, pads: Sequence[tuple[int, int]], value: float, xp: ModuleType
) -> Array:
    """``x`` with ``(before, after)`` entries of ``value`` on each trailing axis."""
    first = x.ndim - len(pads)
    for i, (before, after) in enumerate(pads):
        axis = first + i
        if before == 0 and after == 0:
            continue
        parts = []
        for n in (before, after):
            shape = (*x.shape[:axis], n, *x.shape[axis + 1:])
            parts.append(xp.full(shape, value, dtype=x.dtype, device=device_of(x)))
        x = xp.concat([parts[0], x, parts[1]], axis=axis)
    return x


def im2col(
    x: Array, kernel_size: Sequence[int], *, stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], pad_value: float = 0.0, xp: ModuleType | None = None,
) -> Array:
    """The input windows of a convolution or pooling, one kernel offset per slice.

    Parameters
    ----------
    x : array, shape (batch, C, *spatial)
    kernel_size, stride, padding, dilation : tuples of ints, one per spatial axis
    pad_value : float
        What the padding holds: 0 for convolutions and average pooling,
        ``-inf`` for max pooling.

    Returns
    -------
    cols : array, shape (batch, C, prod(kernel_size), *out)
        ``cols[n, c, k, o] = x_padded[n, c, o·s + k·d]`` with the kernel
        offsets ``k`` in row-major order (the order of ``W.reshape(C_out, -1)``).
    """
    xp = namespace(x, xp=xp)
    out = _known(conv_output_shape(x.shape[2:], kernel_size, stride, padding, dilation))
    x = _pad(x, [(p, p) for p in padding], pad_value, xp)
    windows = []
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        index = tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, o, s in zip(offset, dilation, out, stride, strict=True)
        )
        key = (slice(None), slice(None), *index)
        windows.append(x[key])
    return xp.stack(windows, axis=2)


def _dilate(a: Array, axis: int, s: int, xp: ModuleType) -> Array:
    """``a`` with ``s - 1`` zeros between consecutive entries along ``axis``."""
    if s == 1 or a.shape[axis] == 0:
        return a
    n = a.shape[axis]
    zero = xp.zeros_like(a)
    spread = xp.stack([a] + [zero] * (s - 1), axis=axis + 1)  # (..., n, s, ...)
    spread = xp.reshape(spread, (*a.shape[:axis], n * s, *a.shape[axis + 1:]))
    index = (slice(None),) * axis + (slice(0, (n - 1) * s + 1), ...)
    return spread[index]


def col2im(
    cols: Array, spatial: Sequence[int], kernel_size: Sequence[int], *, stride: Sequence[int],
    padding: Sequence[int], dilation: Sequence[int], xp: ModuleType | None = None,
) -> Array:
    """The adjoint of :func:`im2col`: sum every window entry back onto its input position.

    ``dx[n, c, i] = Σ_{k, o : o·s + k·d - p = i} cols[n, c, k, o]``. For each
    kernel offset the slice ``cols[:, :, k]`` is spread by the stride (zeros
    between entries), cut to the unpadded input and zero-padded to its size,
    and the offsets are summed: no in-place writes.

    Parameters
    ----------
    cols : array, shape (batch, C, prod(kernel_size), *out)
    spatial : ints
        The input's spatial shape (without padding).

    Returns
    -------
    dx : array, shape (batch, C, *spatial)
    """
    xp = namespace(cols, xp=xp)
    first = 3  # cols' first spatial axis; drops to 2 once the offset axis is indexed
    for i, s in enumerate(stride):
        cols = _dilate(cols, first + i, s, xp)
    span = cols.shape[first:]  # (out - 1)·s + 1 per axis
    total = None
    for k, offset in enumerate(itertools.product(*(range(n) for n in kernel_size))):
        index = []
        pads = []
        for o, d, p, n, length in zip(offset, dilation, padding, spatial, span, strict=True):
            start = o * d - p  # where this offset's first entry lands in the input
            lo, hi = max(0, -start), min(length, n - start)
            if hi <= lo:
                break  # the offset only ever sees padding
            index.append(slice(lo, hi))
            pads.append((start + lo, n - (start + hi)))
        else:
            key = (slice(None), slice(None), k, *index)
            part = cols[key]
            part = _pad(part, pads, 0.0, xp)
            total = part if total is None else total + part
    if total is None:
        shape = (*cols.shape[:2], *spatial)
        return xp.zeros(shape, dtype=cols.dtype, device=device_of(cols))
    return total


def _conv_forward(
    params: Params, x: Array, ndim: int, stride: IntOrTuple, padding: IntOrTuple,
    dilation: IntOrTuple, xp: ModuleType | None,
) -> tuple[Array, ConvCache]:
    """The convolution over the last ``ndim`` axes (both public kernels are this)."""
    xp = namespace(x, xp=xp)
    W, b = params["W"], params["b"]
    if x.ndim != ndim + 2 or W.ndim != ndim + 2 or W.shape[1] != x.shape[1]:
        raise ShapeError(
            f"conv{ndim}d: x must be (batch, C_in, {ndim} spatial axes) and W "
            f"(C_out, C_in, {ndim} kernel axes); got x {tuple(x.shape)}, W {tuple(W.shape)}"
        )
    s = _ints(stride, ndim, "stride")
    p = _ints(padding, ndim, "padding", minimum=0)
    d = _ints(dilation, ndim, "dilation")
    cols = im2col(x, W.shape[2:], stride=s, padding=p, dilation=d, xp=xp)
    batch, c_out, out = x.shape[0], W.shape[0], cols.shape[3:]
    flat = xp.reshape(cols, (batch, cols.shape[1] * cols.shape[2], math.prod(out)))
    y = xp.reshape(W, (c_out, flat.shape[1])) @ flat + xp.reshape(b, (c_out, 1))
    return xp.reshape(y, (batch, c_out, *out)), ConvCache(cols, tuple(x.shape), s, p, d)


def _conv_backward(
    params: Params, cache: ConvCache, dy: Array, need_dx: bool, xp: ModuleType | None
) -> tuple[Array | None, Params]:
    """The delta rule of :func:`_conv_forward`."""
    xp = namespace(dy, xp=xp)
    W = params["W"]
    cols = _windows(cache, W.shape[2:], xp)
    batch, c_out = dy.shape[0], dy.shape[1]
    rows = cols.shape[1] * cols.shape[2]  # C_in·k
    delta = xp.reshape(dy, (batch, c_out, math.prod(dy.shape[2:])))
    flat = xp.reshape(cols, (batch, rows, delta.shape[2]))
    grads = {
        "W": xp.reshape(xp.tensordot(delta, flat, axes=((0, 2), (0, 2))), W.shape),
        "b": xp.sum(delta, axis=(0, 2)),
    }
    if not need_dx:
        return None, grads
    dcols = xp.reshape(xp.reshape(W, (c_out, rows)).mT @ delta, cols.shape)
    dx = col2im(dcols, cache.x_shape[2:], W.shape[2:], stride=cache.stride,
                padding=cache.padding, dilation=cache.dilation, xp=xp)
    return dx, grads


def conv1d_forward(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None,
) -> tuple[Array, ConvCache]:
    """1-D convolution ``y[n, o, t] = b[o] + Σ_{c, j} W[o, c, j] x_pad[n, c, t·s + j·d]``.

    Parameters
    ----------
    params : dict
        ``W`` of shape ``(C_out, C_in, k)``, ``b`` of shape ``(C_out,)``
        (``torch.nn.Conv1d``'s ``weight`` and ``bias``).
    x : array, shape (batch, C_in, L)
    stride, padding, dilation : int (or a 1-tuple)
        As ``torch.nn.functional.conv1d``; ``padding`` adds zeros at both ends.

    Returns
    -------
    y : array, shape (batch, C_out, L_out), ``L_out = ⌊(L + 2p - d(k-1) - 1)/s⌋ + 1``
    cache : ConvCache

    Examples
    --------
    >>> import numpy as np
    >>> params = {"W": np.ones((1, 1, 2)), "b": np.zeros(1)}
    >>> y, _ = conv1d_forward(params, np.arange(4.0).reshape(1, 1, 4))
    >>> y.tolist()
    [[[1.0, 3.0, 5.0]]]
    """
    return _conv_forward(params, x, 1, stride, padding, dilation, xp)


def conv1d_backward(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None,
) -> tuple[Array | None, Params]:
    """Gradients of :func:`conv1d_forward`.

    ``dW[o, c, j] = Σ_{n, t} dy[n, o, t] x_pad[n, c, t·s + j·d]``, ``db = Σ_{n, t} dy``,
    ``dx = col2im(W₂ᵀ dy)`` (the transposed convolution; ``None`` when ``need_dx``
    is false).

    Parameters
    ----------
    dy : array, shape (batch, C_out, L_out)

    Returns
    -------
    dx : array of shape (batch, C_in, L), or None
    grads : dict with ``W`` (C_out, C_in, k) and ``b`` (C_out,)
    """
    return _conv_backward(params, cache, dy, need_dx, xp)


def conv2d_forward(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None,
) -> tuple[Array, ConvCache]:
    """2-D convolution ``y[n, o, h, w] = b[o] + Σ_{c, i, j} W[o, c, i, j] x_pad[n, c, h·s₀ + i·d₀, w·s₁ + j·d₁]``.

    Parameters
    ----------
    params : dict
        ``W`` of shape ``(C_out, C_in, kh, kw)``, ``b`` of shape ``(C_out,)``
        (``torch.nn.Conv2d``'s ``weight`` and ``bias``).
    x : array, shape (batch, C_in, H, W)
    stride, padding, dilation : int or (int, int)
        As ``torch.nn.functional.conv2d``; an int applies to both axes.

    Returns
    -------
    y : array, shape (batch, C_out, H_out, W_out)
    cache : ConvCache

    Examples
    --------
    >>> import numpy as np
    >>> params = {"W": np.ones((1, 1, 2, 2)), "b": np.zeros(1)}
    >>> y, _ = conv2d_forward(params, np.ones((1, 1, 3, 3)), padding=1, stride=2)
    >>> y.tolist()
    [[[[1.0, 2.0], [2.0, 4.0]]]]
    """  # noqa: E501
    return _conv_forward(params, x, 2, stride, padding, dilation, xp)


def conv2d_backward(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None,
) -> tuple[Array | None, Params]:
    """Gradients of :func:`conv2d_forward`.

    ``dW[o, c, i, j] = Σ_{n, h, w} dy[n, o, h, w] x_pad[n, c, h·s₀ + i·d₀, w·s₁ + j·d₁]``,
    ``db = Σ_{n, h, w} dy``, ``dx = col2im(W₂ᵀ dy)`` (``None`` when ``need_dx`` is false).

    Parameters
    ----------
    dy : array, shape (batch, C_out, H_out, W_out)

    Returns
    -------
    dx : array of shape (batch, C_in, H, W), or None
    grads : dict with ``W`` (C_out, C_in, kh, kw) and ``b`` (C_out,)
    """
    return _conv_backward(params, cache, dy, need_dx, xp)



# --------------------------------------------------------------------------
# NumPy: the same arithmetic as one GEMM per pass, windows gathered by a strided view


def _geometry(
    ndim: int, stride: IntOrTuple, padding: IntOrTuple, dilation: IntOrTuple
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    return (_ints(stride, ndim, "stride"), _ints(padding, ndim, "padding", minimum=0),
            _ints(dilation, ndim, "dilation"))


#: Column blocks of the GEMMs when the weights are small (see :func:`_blocks`)
_BLOCK, _SMALL = 4096, 256


def _blocks(c_out: int, rows: int, cells: int) -> list[slice]:
    """The column blocks over which the NumPy kernels run each GEMM with a long
    ``cells`` axis: blocks of 4096 when ``C_out·C_in·k <= 256`` (LeNet's first
    layer), else one. OpenBLAS multiplies such a thin product (6 x 25 by 25 x
    78,400) 1.7-2.2x faster in blocks of 4096 columns than in one call (its
    small-matrix path; blocks of 8192 are as slow as one call), and gains
    nothing on wider weights (16 x 150), measured here on one thread."""
    if c_out * rows > _SMALL or cells <= _BLOCK:
        return [slice(0, cells)]
    return [slice(i, min(cells, i + _BLOCK)) for i in range(0, cells, _BLOCK)]


def _conv_forward_numpy(
    params: Params, x: Array, ndim: int, stride: IntOrTuple, padding: IntOrTuple,
    dilation: IntOrTuple, ws: Workspace | None,
) -> tuple[Array, ConvCache]:
    """``y = W₂ @ cols + b`` as one matrix product over the whole batch, batch last.

    The padded input is written channels first and *batch last*, ``(C_in,
    *spatial, batch)``, into a buffer; its windows are read through a strided
    view (no copy) and gathered once into ``(C_in·k, *out·batch)``, so every
    copy and every in-place sum of the backward pass runs over the long batch
    axis, and each pass is one GEMM. The output is a ``(batch, C_out, *out)``
    view of the ``(C_out, *out, batch)`` product, the cache keeps the gathered
    windows viewed with the portable kernel's axes ``(batch, C_in, k, *out)``:
    the same values as the portable kernel's, in another memory order.
    """
    W, b = params["W"], params["b"]
    if x.ndim != ndim + 2 or W.ndim != ndim + 2 or W.shape[1] != x.shape[1]:
        return _conv_forward(params, x, ndim, stride, padding, dilation, np)  # its error
    s, p, d = _geometry(ndim, stride, padding, dilation)
    kernel, spatial = W.shape[2:], x.shape[2:]
    out = _known(conv_output_shape(spatial, kernel, s, p, d))
    batch, c_in, c_out = x.shape[0], x.shape[1], W.shape[0]
    dtype = np.result_type(x, W)
    last = np.moveaxis(x, 0, -1)  # (C_in, *spatial, batch)
    if any(p) or not last.flags.c_contiguous or last.dtype != dtype:
        padded = output(ws, "x_pad", (c_in, *(n + 2 * q for n, q in zip(spatial, p)), batch),
                        dtype, np.empty)
        if any(p):
            padded.fill(0)
        inner = (slice(None), *(slice(q, q + n) for q, n in zip(p, spatial)))
        np.copyto(padded[inner], last)
    else:
        padded = last
    st = padded.strides
    view = np.lib.stride_tricks.as_strided(
        padded, (c_in, *kernel, *out, batch),
        (st[0], *(t * di for t, di in zip(st[1:-1], d)),
         *(t * si for t, si in zip(st[1:-1], s)), st[-1]), writeable=False)
    k = math.prod(kernel)
    rows, cells = c_in * k, batch * math.prod(out)
    gathered = output(ws, "cols", view.shape, dtype, np.empty)
    np.copyto(gathered, view)
    y = output(ws, "y", (c_out, *out, batch), dtype, np.empty)
    W2, cols2, y2 = W.reshape(c_out, rows), gathered.reshape(rows, cells), y.reshape(c_out, cells)
    for part in _blocks(c_out, rows, cells):
        np.matmul(W2, cols2[:, part], out=y2[:, part])
    y += b.reshape(c_out, *(1,) * (ndim + 1))
    cols = np.moveaxis(gathered.reshape(c_in, k, *out, batch), -1, 0)  # (batch, C_in, k, *out)
    return np.moveaxis(y, -1, 0), ConvCache(cols, tuple(x.shape), s, p, d)


def _conv_backward_numpy(
    params: Params, cache: ConvCache, dy: Array, need_dx: bool, ws: Workspace | None
) -> tuple[Array | None, Params]:
    """``dW = dy₂ colsᵀ`` and ``dcols = W₂ᵀ dy₂`` as one GEMM each and ``col2im``
    as one in-place sum per kernel offset, all batch last (see
    :func:`_conv_forward_numpy`); ``dx`` is a ``(batch, C_in, *spatial)`` view
    of a batch-last buffer."""
    W, cols = params["W"], _windows(cache, params["W"].shape[2:], np)
    batch, c_in, k = cols.shape[:3]
    out = cols.shape[3:]
    c_out = W.shape[0]
    rows, cells = c_in * k, batch * math.prod(out)
    gathered = np.moveaxis(cols, 0, -1)  # (C_in, k, *out, batch): contiguous if ours
    if not gathered.flags.c_contiguous:
        gathered = np.ascontiguousarray(gathered)
    dtype = dy.dtype
    delta = np.moveaxis(dy, 0, -1)  # (C_out, *out, batch)
    if not delta.flags.c_contiguous:
        delta = output(ws, "dy", delta.shape, dtype, np.empty)
        np.copyto(delta, np.moveaxis(dy, 0, -1))
    delta2, cols2 = delta.reshape(c_out, cells), gathered.reshape(rows, cells)
    parts = _blocks(c_out, rows, cells)
    # dWᵀ = cols₂ dy₂ᵀ, (C_in·k, C_out): faster than dy₂ cols₂ᵀ here (the long axis
    # is the inner one of both operands either way), summed over the blocks
    dWt = output(ws, "dWt", (rows, c_out), dtype, np.empty)
    np.matmul(cols2[:, parts[0]], delta2[:, parts[0]].T, out=dWt)
    if len(parts) > 1:
        block = output(ws, "dWt_block", (rows, c_out), dtype, np.empty)
        for part in parts[1:]:
            np.matmul(cols2[:, part], delta2[:, part].T, out=block)
            dWt += block
    dW = output(ws, "dW", W.shape, dtype, np.empty)
    np.copyto(dW.reshape(c_out, rows), dWt.T)
    grads = {"W": dW, "b": np.add.reduce(delta2, axis=1)}
    if not need_dx:
        return None, grads
    kernel = W.shape[2:]
    dcols = output(ws, "dcols", (c_in, *kernel, *out, batch), dtype, np.empty)
    W2t, dcols2 = W.reshape(c_out, rows).T, dcols.reshape(rows, cells)
    for part in parts:
        np.matmul(W2t, delta2[:, part], out=dcols2[:, part])
    spatial, s, p, d = cache.x_shape[2:], cache.stride, cache.padding, cache.dilation
    padded = output(ws, "dx_pad", (c_in, *(n + 2 * q for n, q in zip(spatial, p)), batch),
                    dtype, np.empty)
    padded.fill(0)
    for offset in itertools.product(*(range(n) for n in kernel)):
        index = tuple(slice(o * di, o * di + (m - 1) * si + 1, si)
                      for o, di, m, si in zip(offset, d, out, s))
        into: tuple[slice, ...] = (slice(None), *index)
        target = padded[into]
        at: tuple[Any, ...] = (slice(None), *offset)
        target += dcols[at]
    crop = (slice(None), *(slice(q, q + n) for q, n in zip(p, spatial)))
    return np.moveaxis(padded[crop], -1, 0), grads


@specializes(conv1d_forward, "numpy")
def _conv1d_forward_numpy(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv1d_forward` as one GEMM (:func:`_conv_forward_numpy`).
    Without it a step takes 35.8% longer (mnist1d-cnn, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_forward_numpy(params, x, 1, stride, padding, dilation, ws)


@specializes(conv2d_forward, "numpy")
def _conv2d_forward_numpy(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv2d_forward` as one GEMM (:func:`_conv_forward_numpy`).
    Without it a step takes 112.2% longer (lenet, batch 100; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_forward_numpy(params, x, 2, stride, padding, dilation, ws)


@specializes(conv1d_backward, "numpy")
def _conv1d_backward_numpy(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv1d_backward` as two GEMMs and a strided sum.
    Without it a step takes 98.6% longer (mnist1d-cnn, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_backward_numpy(params, cache, dy, need_dx, ws)


@specializes(conv2d_backward, "numpy")
def _conv2d_backward_numpy(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv2d_backward` as two GEMMs and a strided sum.
    Without it a step takes 272.9% longer (lenet, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_backward_numpy(params, cache, dy, need_dx, ws)


# --------------------------------------------------------------------------
# PyTorch and JAX: the library's own convolution kernels, called explicitly
# (no autograd): forward, input gradient (the transposed convolution) and
# weight gradient (the correlation of input and delta), the formulas above


def _native_geometry(
    params: Params, x: Array, ndim: int, stride: IntOrTuple, padding: IntOrTuple,
    dilation: IntOrTuple,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """The geometry of a well-formed call (``None``: let the portable kernel raise)."""
    W = params["W"]
    if x.ndim != ndim + 2 or W.ndim != ndim + 2 or W.shape[1] != x.shape[1]:
        return None
    s, p, d = _geometry(ndim, stride, padding, dilation)
    conv_output_shape(x.shape[2:], W.shape[2:], s, p, d)  # a kernel longer than the input
    return s, p, d


def _conv_forward_torch(
    params: Params, x: Array, ndim: int, stride: IntOrTuple, padding: IntOrTuple,
    dilation: IntOrTuple,
) -> tuple[Array, ConvCache]:
    """``torch.nn.functional.conv1d``/``conv2d``; the cache keeps ``x``, not its windows."""
    geometry = _native_geometry(params, x, ndim, stride, padding, dilation)
    if geometry is None:
        return _conv_forward(params, x, ndim, stride, padding, dilation, None)
    s, p, d = geometry
    F = sys.modules["torch"].nn.functional
    conv = F.conv1d if ndim == 1 else F.conv2d
    y = conv(x, params["W"], params["b"], stride=s, padding=p, dilation=d)
    return y, ConvCache(None, tuple(x.shape), s, p, d, x)


def _conv_backward_torch(
    params: Params, cache: ConvCache, dy: Array, need_dx: bool
) -> tuple[Array | None, Params]:
    """``dx``, ``dW`` and ``db`` in one call of PyTorch's convolution backward kernel
    (``aten.convolution_backward``, what ``torch.nn.grad.conv2d_input`` and
    ``conv2d_weight`` call, here both at once)."""
    if cache.x is None:  # a portable forward's cache: its windows, no input
        return _conv_backward(params, cache, dy, need_dx, None)
    torch = sys.modules["torch"]
    W = params["W"]
    dx, dW, db = torch.ops.aten.convolution_backward(
        dy, cache.x, W, [W.shape[0]], list(cache.stride), list(cache.padding),
        list(cache.dilation), False, [0] * len(cache.stride), 1, [need_dx, True, True])
    return (dx if need_dx else None), {"W": dW, "b": db}


#: lax.conv_general_dilated's layouts: PyTorch's (batch, C, *spatial) and (C_out, C_in, *k)
_LAX_SPECS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW")}
#: the weight gradient as a convolution: C_in as its batch, the batch contracted
_LAX_DW_SPECS = {1: ("CNH", "IOH", "CNH"), 2: ("CNHW", "IOHW", "CNHW")}


def _conv_forward_jax(
    params: Params, x: Array, ndim: int, stride: IntOrTuple, padding: IntOrTuple,
    dilation: IntOrTuple,
) -> tuple[Array, ConvCache]:
    """``jax.lax.conv_general_dilated``; the cache keeps ``x``, not its windows."""
    geometry = _native_geometry(params, x, ndim, stride, padding, dilation)
    if geometry is None:
        return _conv_forward(params, x, ndim, stride, padding, dilation, None)
    s, p, d = geometry
    lax = sys.modules["jax"].lax
    W, b = params["W"], params["b"]
    if ndim == 1 and x.shape[1] == 1:  # one input channel, 1-D: XLA:CPU's convolution is slow
        y = _one_channel_conv_jax(x, W, s, p, d)
    else:
        y = lax.conv_general_dilated(x, W, s, [(q, q) for q in p], rhs_dilation=d,
                                     dimension_numbers=_LAX_SPECS[ndim])
    return y + lax.expand_dims(b, (0, *range(2, ndim + 2))), ConvCache(
        None, tuple(x.shape), s, p, d, x)


def _one_channel_conv_jax(
    x: Array, W: Array, s: tuple[int, ...], p: tuple[int, ...], d: tuple[int, ...]
) -> Array:
    """The convolution of a one-channel input as ``k`` shifted products,
    ``y[:, o] = Σ_offsets W[o, 0, offset] · x_pad[:, 0, offset + s·out]``, in one
    pass over the output. Used for 1-D inputs: the MNIST-1D CNN's compiled step
    takes 12-14% less time at batch 256 (2.05-2.08 → 1.75-1.78 ms; at batch 100
    0.86-0.91 ms either way; two interleaved runs, 2026-12-03). Not for 2-D:
    LeNet's first layer alone runs 7x faster so (0.53 against 3.7 ms at batch
    100), but its compiled step became 29% slower (9.1 → 11.7 ms), so 2-D
    keeps XLA's convolution."""
    jnp = sys.modules["jax"].numpy
    ndim = x.ndim - 2
    kernel = tuple(W.shape[2:])
    out = [int(m) for m in conv_output_shape(x.shape[2:], kernel, s, p, d)]  # type: ignore[arg-type]
    padded = jnp.pad(x[:, 0], [(0, 0), *((q, q) for q in p)])
    y = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = [slice(o * di, o * di + (m - 1) * si + 1, si)
                 for o, di, m, si in zip(offset, d, out, s)]
        at: tuple[Any, ...] = (slice(None), *index)
        weight: tuple[Any, ...] = (slice(None), 0, *offset)
        spread: tuple[Any, ...] = (None, slice(None), *(None,) * ndim)
        window, w = padded[at], W[weight][spread]
        term = window[:, None] * w
        y = term if y is None else y + term
    return y


def _conv_backward_jax(
    params: Params, cache: ConvCache, dy: Array, need_dx: bool
) -> tuple[Array | None, Params]:
    """``dW`` as ``lax.conv_general_dilated``, ``dx`` as a GEMM and a col2im:

    * ``dW``: the padded input correlated with ``dy`` — the input's channels as
      the batch, the batch contracted, ``dy`` as the kernel dilated by the
      stride, the dilation as the stride; padded (or cut) after so that
      exactly ``k`` offsets come out;
    * ``dx``: ``col2im(W₂ᵀ dy)`` batch last, as the NumPy kernel, each offset's
      slice added in place (``.at[].add``): XLA:CPU runs it 3.7x faster than
      the transposed convolution (``lhs_dilation``) at LeNet's second layer.
    """
    if cache.x is None:
        return _conv_backward(params, cache, dy, need_dx, None)
    jax = sys.modules["jax"]
    lax = jax.lax
    W, x = params["W"], cache.x
    ndim = x.ndim - 2
    s, p, d = cache.stride, cache.padding, cache.dilation
    kernel, spatial, out = W.shape[2:], x.shape[2:], dy.shape[2:]
    tail = [(n + 2 * q - di * (k - 1) - 1) % si
            for n, q, di, k, si in zip(spatial, p, d, kernel, s)]
    dW = lax.conv_general_dilated(
        x, dy, d, [(q, q - r) for q, r in zip(p, tail)], rhs_dilation=s,
        dimension_numbers=_LAX_DW_SPECS[ndim])
    grads = {"W": dW, "b": jax.numpy.sum(dy, axis=(0, *range(2, ndim + 2)))}
    if not need_dx:
        return None, grads
    jnp = jax.numpy
    batch, c_in, c_out = x.shape[0], x.shape[1], W.shape[0]
    rows = c_in * math.prod(kernel)
    delta = jnp.reshape(jnp.moveaxis(dy, 0, -1), (c_out, -1))  # (C_out, *out·batch)
    dcols = jnp.reshape(jnp.reshape(W, (c_out, rows)).T @ delta, (c_in, *kernel, *out, batch))
    total = jnp.zeros((c_in, *(n + 2 * q for n, q in zip(spatial, p)), batch), dy.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(o * di, o * di + (m - 1) * si + 1, si)
                      for o, di, m, si in zip(offset, d, out, s))
        at: tuple[Any, ...] = (slice(None), *offset)
        into: tuple[Any, ...] = (slice(None), *index)
        total = total.at[into].add(dcols[at])
    crop: tuple[Any, ...] = (slice(None), *(slice(q, q + n) for q, n in zip(p, spatial)))
    return jnp.moveaxis(total[crop], -1, 0), grads


@specializes(conv1d_forward, "torch")
def _conv1d_forward_torch(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv1d_forward` as ``torch.nn.functional.conv1d``.
    Without it a step takes 67.8% longer (the backward then falls back too, having no input to
    use; mnist1d-cnn, batch 256; benchmarks/specializations.py, 2026-12-03)."""
    return _conv_forward_torch(params, x, 1, stride, padding, dilation)


@specializes(conv2d_forward, "torch")
def _conv2d_forward_torch(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv2d_forward` as ``torch.nn.functional.conv2d``.
    Without it a step takes 78.8% longer (the backward then falls back too; lenet, batch 100;
    benchmarks/specializations.py, 2026-12-03)."""
    return _conv_forward_torch(params, x, 2, stride, padding, dilation)


@specializes(conv1d_backward, "torch")
def _conv1d_backward_torch(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv1d_backward` as PyTorch's convolution backward kernel.
    Without it a step takes 77.2% longer (mnist1d-cnn, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_backward_torch(params, cache, dy, need_dx)


@specializes(conv2d_backward, "torch")
def _conv2d_backward_torch(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv2d_backward` as PyTorch's convolution backward kernel.
    Without it a step takes 77.6% longer (lenet, batch 256; benchmarks/specializations.py,
    2026-12-03)."""
    return _conv_backward_torch(params, cache, dy, need_dx)


@specializes(conv1d_forward, "jax")
def _conv1d_forward_jax(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv1d_forward` as ``jax.lax.conv_general_dilated``.
    Without the JAX convolution kernels (forward and backward together) a
    ``bp.compile`` step takes 55% longer (mnist1d-cnn, batch 100; one interleaved run,
    2026-12-03, benchmarks/results/2026-12-03-conv.md)."""
    return _conv_forward_jax(params, x, 1, stride, padding, dilation)


@specializes(conv2d_forward, "jax")
def _conv2d_forward_jax(
    params: Params, x: Array, *, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array, ConvCache]:
    """:func:`conv2d_forward` as ``jax.lax.conv_general_dilated``.
    Without the JAX convolution kernels (forward and backward together) a
    ``bp.compile`` step takes 116% longer (lenet, batch 256; one interleaved run,
    2026-12-03, benchmarks/results/2026-12-03-conv.md)."""
    return _conv_forward_jax(params, x, 2, stride, padding, dilation)


@specializes(conv1d_backward, "jax")
def _conv1d_backward_jax(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv1d_backward` as a convolution and a col2im (:func:`_conv_backward_jax`).
    Without the JAX convolution kernels (forward and backward together) a
    ``bp.compile`` step takes 55% longer (mnist1d-cnn, batch 100; one interleaved run,
    2026-12-03, benchmarks/results/2026-12-03-conv.md)."""
    return _conv_backward_jax(params, cache, dy, need_dx)


@specializes(conv2d_backward, "jax")
def _conv2d_backward_jax(
    params: Params, cache: ConvCache, dy: Array, *, need_dx: bool = True,
    xp: ModuleType | None = None, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """:func:`conv2d_backward` as a convolution and a col2im (:func:`_conv_backward_jax`).
    Without the JAX convolution kernels (forward and backward together) a
    ``bp.compile`` step takes 116% longer (lenet, batch 256; one interleaved run,
    2026-12-03, benchmarks/results/2026-12-03-conv.md)."""
    return _conv_backward_jax(params, cache, dy, need_dx)


_KERNELS = {1: (conv1d_forward, conv1d_backward), 2: (conv2d_forward, conv2d_backward)}


def _conv(
    ndim: int, c_in: int, c_out: int, kernel_size: IntOrTuple, stride: IntOrTuple,
    padding: IntOrTuple, dilation: IntOrTuple, init: str,
) -> Layer:
    """The layer of :func:`conv1d` (``ndim=1``) or :func:`conv2d` (``ndim=2``)."""
    name = f"conv{ndim}d"
    c_in = positive_int(c_in, f"{name}(): in_channels")
    c_out = positive_int(c_out, f"{name}(): out_channels")
    k = _ints(kernel_size, ndim, f"{name}(): kernel_size")
    s = _ints(stride, ndim, f"{name}(): stride")
    p = _ints(padding, ndim, f"{name}(): padding", minimum=0)
    d = _ints(dilation, ndim, f"{name}(): dilation")
    init = _weights.check_scheme(init, f"{name}()")
    w_shape = (c_out, c_in, *k)
    fan = math.prod(k)
    geometry = {"stride": s, "padding": p, "dilation": d}

    def init_params(
        rng: int | np.random.Generator | None = None, *,
        xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
    ) -> Params:
        W, b = _weights.draw(init, as_generator(rng), w_shape, c_out, c_in * fan, c_out * fan,
                             xp=xp, dtype=dtype, device=device)
        return {"W": W, "b": b}

    one = ndim == 1  # the config and the layer's repr say 5, not [5], for one axis
    config = {
        "name": name, "in_channels": c_in, "out_channels": c_out,
        "kernel_size": k[0] if one else list(k), "stride": s[0] if one else list(s),
        "padding": p[0] if one else list(p), "dilation": d[0] if one else list(d),
        "init": init,
    }

    def shapes() -> Params:
        return {"W": w_shape, "b": (c_out,)}

    def out_shape(shape: Shape | None) -> Shape:
        if shape is None:
            shape = (c_in, *(None,) * ndim)
        if len(shape) != ndim + 1 or shape[0] not in (None, c_in):
            axes = "length" if one else "height, width"
            raise ShapeError(
                f"{name} takes inputs of shape ({c_in}, {axes}) per sample (channels first), "
                f"got {show_shape(shape)}"
            )
        return (c_out, *conv_output_shape(shape[1:], k, s, p, d))

    fwd, bwd = _KERNELS[ndim]

    def build(f: Any, b: Any, bind_: Any) -> Layer:
        def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> Any:
            return f(params, x, **geometry, xp=xp)

        def backward(
            params: Params, cache: ConvCache, dy: Array, *,
            xp: ModuleType | None = None, need_dx: bool = True,
        ) -> tuple[Array | None, Params]:
            return b(params, cache, dy, need_dx=need_dx, xp=xp)

        return Layer(init_params, forward, backward, name, None, None, config, bind_, None,
                     shapes, (c_in, *(None,) * ndim), out_shape)

    def bind(binding: Binding) -> Layer:
        return build(binding.kernel(fwd), binding.kernel(bwd), None)

    return build(fwd, bwd, bind)


def conv1d(
    in_channels: int, out_channels: int, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
    padding: IntOrTuple = 0, dilation: IntOrTuple = 1, init: str = "he_uniform",
) -> Layer:
    """A 1-D convolution layer, as ``torch.nn.Conv1d`` (``groups=1``, zero padding).

    ``y[n, o, t] = b[o] + Σ_{c, j} W[o, c, j] · x_pad[n, c, t·s + j·d]`` on
    inputs ``(batch, C_in, L)``, giving ``(batch, C_out, L_out)`` with
    ``L_out = ⌊(L + 2p - d(k - 1) - 1) / s⌋ + 1``. Gradients: ``dW`` is the
    correlation of the input with the delta, ``dx`` the transposed
    convolution of the delta (see :func:`conv1d_backward`).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
    stride, padding, dilation : int
        As ``torch.nn.Conv1d``; ``padding`` adds that many zeros at both ends.
    init : str
        ``he_uniform`` (default; bias zero), ``he_normal``, ``glorot_uniform``,
        ``glorot_normal`` with PyTorch's fans (``fan_in = C_in·k``,
        ``fan_out = C_out·k``), or ``torch``: PyTorch's own default, ``W`` and
        ``b`` uniform in ``±1/√fan_in``.

    Notes
    -----
    ``params = {"W": (C_out, C_in, k), "b": (C_out,)}``: a torch module's
    ``weight`` and ``bias`` load unchanged.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> layer = bp.conv1d(1, 25, 5, stride=2, padding=1)
    >>> params = layer.init(0)
    >>> y, _ = layer.forward(params, np.zeros((3, 1, 40), dtype=np.float32))
    >>> y.shape
    (3, 25, 19)
    """
    return _conv(1, in_channels, out_channels, kernel_size, stride, padding, dilation, init)


def conv2d(
    in_channels: int, out_channels: int, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
    padding: IntOrTuple = 0, dilation: IntOrTuple = 1, init: str = "he_uniform",
) -> Layer:
    """A 2-D convolution layer, as ``torch.nn.Conv2d`` (``groups=1``, zero padding).

    ``y[n, o, h, w] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_pad[n, c, h·s₀ + i·d₀,
    w·s₁ + j·d₁]`` on inputs ``(batch, C_in, H, W)``; each of ``kernel_size``,
    ``stride``, ``padding``, ``dilation`` is an int (both axes) or a pair.
    ``params = {"W": (C_out, C_in, kh, kw), "b": (C_out,)}``; ``init`` as for
    :func:`conv1d`. Gradients: :func:`conv2d_backward`.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> layer = bp.conv2d(1, 6, 5, padding=2)
    >>> y, _ = layer.forward(layer.init(0), np.zeros((2, 1, 28, 28), dtype=np.float32))
    >>> y.shape
    (2, 6, 28, 28)
    """
    return _conv(2, in_channels, out_channels, kernel_size, stride, padding, dilation, init)
