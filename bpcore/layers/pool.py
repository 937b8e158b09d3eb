"""Max and average pooling, 1-D and 2-D, over channels-first inputs (as PyTorch).

Both are built on the convolution's window gather (:func:`~bpcore.layers.conv.im2col`)
and its adjoint (:func:`~bpcore.layers.conv.col2im`):

* **max pooling** ``y[n, c, o] = max_j x_pad[n, c, o·s + j·d]`` with ``-inf``
  padding; the backward pass routes each ``dy`` to the first position of its
  window that holds the maximum (PyTorch's choice on ties):
  ``dx = col2im(onehot(argmax) · dy)``;
* windows that tile the input (stride = kernel, no padding or dilation, the
  common ``max_pool2d(2)``) are a reshape of it: no window gather then, the
  same numbers;
* **average pooling** ``y[n, c, o] = Σ_j x_pad[n, c, o·s + j] / m`` with zero
  padding and ``m`` the window size (``count_include_pad=True``, PyTorch's
  default) or the number of its entries inside the input (``False``);
  ``dx = col2im(dy / m)`` spread evenly over every window.

Shapes: ``(batch, C, L)`` → ``(batch, C, L_out)`` and ``(batch, C, H, W)`` →
``(batch, C, H_out, W_out)``, ``L_out = ⌊(L + 2p - d(k - 1) - 1) / s⌋ + 1``;
the stride defaults to the kernel size, as in PyTorch; padding is at most
half the kernel (PyTorch's rule, so that no window is all padding).
"""

from __future__ import annotations

import functools
import itertools
import math
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, device_of, namespace
from ..dispatch import Binding, Workspace, output_like, specializes
from ..errors import SettingError, ShapeError
from .conv import IntOrTuple, _ints, _pad, col2im, conv_output_shape, im2col
from .core import Layer, Params, Shape, show_shape

__all__ = [
    "PoolCache",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool_backward",
    "avg_pool_forward",
    "max_pool1d",
    "max_pool2d",
    "max_pool_backward",
    "max_pool_forward",
]


class PoolCache(NamedTuple):
    """What a pooling's backward pass needs: the window position of each maximum
    (max pooling; ``None`` for average pooling), the divisor of each window
    (average pooling), the input's shape and the geometry."""

    argmax: Array | None  # (batch, C, *out) int: the window offset of each maximum
    divisor: Array | float | None  # (1, 1, *out) or a number: the size of each window
    x_shape: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]


def _geometry(
    ndim: int, kernel_size: IntOrTuple, stride: IntOrTuple | None, padding: IntOrTuple,
    dilation: IntOrTuple, where: str,
) -> tuple[tuple[int, ...], ...]:
    k = _ints(kernel_size, ndim, f"{where}: kernel_size")
    s = k if stride is None else _ints(stride, ndim, f"{where}: stride")
    p = _ints(padding, ndim, f"{where}: padding", minimum=0)
    d = _ints(dilation, ndim, f"{where}: dilation")
    if any(2 * pi > ki for pi, ki in zip(p, k)):
        raise SettingError(f"{where}: padding {padding!r} is more than half the kernel size "
                           f"{kernel_size!r}; a window would hold only padding")
    return k, s, p, d


def _check_input(x: Array, ndim: int, where: str) -> None:
    if x.ndim != ndim + 2:
        raise ShapeError(f"{where}: x must be (batch, C, {ndim} spatial axes), got shape "
                         f"{tuple(x.shape)}")


def _tiled(k: tuple[int, ...], s: tuple[int, ...], p: tuple[int, ...],
           d: tuple[int, ...]) -> bool:
    """Windows that tile the input (stride = kernel, no padding or dilation): then
    they are a reshape of the input, and no window gather is needed."""
    return s == k and not any(p) and all(v == 1 for v in d)


def _tiles(x: Array, k: tuple[int, ...], xp: ModuleType) -> Array:
    """``(batch, C, *out, prod(k))``: each tile's entries in row-major order (the
    order of :func:`~bpcore.layers.conv.im2col`'s offsets), the tail that no
    window covers dropped."""
    batch, c = x.shape[:2]
    out = [n // kk for n, kk in zip(x.shape[2:], k)]
    kept = (slice(None), slice(None), *(slice(0, o * kk) for o, kk in zip(out, k)))
    x = x[kept]
    split = [v for o, kk in zip(out, k) for v in (o, kk)]  # (o0, k0, o1, k1, ...)
    x = xp.reshape(x, (batch, c, *split))
    n = len(k)
    x = xp.permute_dims(x, (0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2)))
    return xp.reshape(x, (batch, c, *out, math.prod(k)))


def _untile(t: Array, spatial: tuple[int, ...], k: tuple[int, ...], xp: ModuleType) -> Array:
    """The adjoint of :func:`_tiles`: ``(batch, C, *out, prod(k))`` back to ``(batch,
    C, *spatial)``, zeros where no window reaches."""
    batch, c = t.shape[:2]
    out = t.shape[2:-1]
    n = len(k)
    t = xp.reshape(t, (batch, c, *out, *k))
    order = [0, 1]
    for i in range(n):
        order += [2 + i, 2 + n + i]
    t = xp.reshape(xp.permute_dims(t, tuple(order)),
                   (batch, c, *(o * kk for o, kk in zip(out, k))))
    pads = [(0, n_ - o * kk) for n_, o, kk in zip(spatial, out, k)]
    return _pad(t, pads, 0.0, xp) if any(b for _, b in pads) else t


def max_pool_forward(
    x: Array, *, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0, dilation: IntOrTuple = 1, xp: ModuleType | None = None,
) -> tuple[Array, PoolCache]:
    """Max pooling ``y[n, c, o] = max_j x_pad[n, c, o·s + j·d]`` (``-inf`` padding)
    over the last 1 or 2 axes of ``x`` (``(batch, C, L)`` or ``(batch, C, H, W)``).

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = max_pool_forward(np.array([[[1.0, 3.0, 2.0, 0.0]]]), kernel_size=2)
    >>> y.tolist()
    [[[3.0, 2.0]]]
    """
    xp = namespace(x, xp=xp)
    ndim = x.ndim - 2
    _check_input(x, ndim, "max_pool")
    k, s, p, d = _geometry(ndim, kernel_size, stride, padding, dilation, "max_pool")
    if _tiled(k, s, p, d):
        tiles = _tiles(x, k, xp)
        return xp.max(tiles, axis=-1), PoolCache(
            xp.argmax(tiles, axis=-1), None, tuple(x.shape), k, s, p, d)
    cols = im2col(x, k, stride=s, padding=p, dilation=d, pad_value=-math.inf, xp=xp)
    return xp.max(cols, axis=2), PoolCache(
        xp.argmax(cols, axis=2), None, tuple(x.shape), k, s, p, d)


def max_pool_backward(cache: PoolCache, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = col2im(onehot(argmax) · dy)``: each ``dy`` goes to its window's
    (first) maximum; positions that are no window's maximum get zero."""
    xp = namespace(dy, xp=xp)
    assert cache.argmax is not None
    K = math.prod(cache.kernel_size)
    zero = xp.zeros((), dtype=dy.dtype, device=device_of(dy))
    offsets = xp.arange(K, dtype=cache.argmax.dtype, device=device_of(dy))
    if _tiled(cache.kernel_size, cache.stride, cache.padding, cache.dilation):
        hit = xp.expand_dims(cache.argmax, axis=-1) == offsets
        tiles = xp.where(hit, xp.expand_dims(dy, axis=-1), zero)
        return _untile(tiles, cache.x_shape[2:], cache.kernel_size, xp)
    offsets = xp.reshape(offsets, (1, 1, K) + (1,) * (dy.ndim - 2))
    hit = offsets == xp.expand_dims(cache.argmax, axis=2)
    dcols = xp.where(hit, xp.expand_dims(dy, axis=2), zero)
    return col2im(dcols, cache.x_shape[2:], cache.kernel_size, stride=cache.stride,
                  padding=cache.padding, dilation=cache.dilation, xp=xp)


def avg_pool_forward(
    x: Array, *, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0, count_include_pad: bool = True, xp: ModuleType | None = None,
) -> tuple[Array, PoolCache]:
    """Average pooling ``y[n, c, o] = Σ_j x_pad[n, c, o·s + j] / m`` (zero padding;
    ``m`` = the window size, or with ``count_include_pad=False`` the number of
    the window's entries inside the input).

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = avg_pool_forward(np.array([[[1.0, 3.0, 2.0, 0.0]]]), kernel_size=2)
    >>> y.tolist()
    [[[2.0, 1.0]]]
    """
    xp = namespace(x, xp=xp)
    ndim = x.ndim - 2
    _check_input(x, ndim, "avg_pool")
    k, s, p, d = _geometry(ndim, kernel_size, stride, padding, 1, "avg_pool")
    if _tiled(k, s, p, d):
        return xp.mean(_tiles(x, k, xp), axis=-1), PoolCache(
            None, float(math.prod(k)), tuple(x.shape), k, s, p, d)
    cols = im2col(x, k, stride=s, padding=p, dilation=d, xp=xp)
    total = xp.sum(cols, axis=2)
    divisor: Array | float = float(math.prod(k))
    if not count_include_pad and any(p):
        ones = xp.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=device_of(x))
        divisor = xp.sum(im2col(ones, k, stride=s, padding=p, dilation=d, xp=xp), axis=2)
    return total / divisor, PoolCache(None, divisor, tuple(x.shape), k, s, p, d)


def avg_pool_backward(cache: PoolCache, dy: Array, *, xp: ModuleType | None = None) -> Array:
    """``dx = col2im(dy / m)``: each ``dy`` spread evenly over its window."""
    xp = namespace(dy, xp=xp)
    assert cache.divisor is not None
    K = math.prod(cache.kernel_size)
    if _tiled(cache.kernel_size, cache.stride, cache.padding, cache.dilation):
        tiles = xp.broadcast_to(xp.expand_dims(dy / cache.divisor, axis=-1), (*dy.shape, K))
        return _untile(tiles, cache.x_shape[2:], cache.kernel_size, xp)
    share = xp.expand_dims(dy / cache.divisor, axis=2)
    dcols = xp.broadcast_to(share, (*dy.shape[:2], K, *dy.shape[2:]))
    return col2im(dcols, cache.x_shape[2:], cache.kernel_size, stride=cache.stride,
                  padding=cache.padding, dilation=cache.dilation, xp=xp)


def _no_params(rng: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Params:
    return {}


def _pool(name: str, ndim: int, fwd: Any, bwd: Any, config: dict[str, Any],
          **hyper: Any) -> Layer:
    """A pooling layer of ``ndim`` spatial axes from the kernel pair ``fwd``/``bwd``."""
    k, s, p, d = (hyper["kernel_size"], hyper["stride"], hyper["padding"],
                  hyper.get("dilation", (1,) * ndim))

    def out_shape(shape: Shape | None) -> Shape | None:
        if shape is None:
            return None
        if len(shape) != ndim + 1:
            axes = "length" if ndim == 1 else "height, width"
            raise ShapeError(f"{name} takes inputs of shape (channels, {axes}) per sample, "
                             f"got {show_shape(shape)}")
        return (shape[0], *conv_output_shape(shape[1:], k, s, p, d))

    def build(f: Any, b: Any, bind_: Any) -> Layer:
        f = functools.partial(f, **hyper)

        def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> Any:
            return f(x, xp=xp)

        def backward(
            params: Params, cache: PoolCache, dy: Array, *,
            xp: ModuleType | None = None, need_dx: bool = True,
        ) -> tuple[Array, Params]:
            return b(cache, dy, xp=xp), {}

        return Layer(_no_params, forward, backward, name, None, None, config, bind_, (f, b),
                     dict, None, out_shape)

    def bind(binding: Binding) -> Layer:
        return build(binding.kernel(fwd), binding.kernel(bwd), None)

    return build(fwd, bwd, bind)


def _one(v: tuple[int, ...]) -> int | list[int]:
    return v[0] if len(v) == 1 else list(v)


def _max_pool(ndim: int, kernel_size: IntOrTuple, stride: IntOrTuple | None,
              padding: IntOrTuple, dilation: IntOrTuple) -> Layer:
    name = f"max_pool{ndim}d"
    k, s, p, d = _geometry(ndim, kernel_size, stride, padding, dilation, f"{name}()")
    config = {"name": name, "kernel_size": _one(k), "stride": _one(s), "padding": _one(p),
              "dilation": _one(d)}
    return _pool(name, ndim, max_pool_forward, max_pool_backward, config,
                 kernel_size=k, stride=s, padding=p, dilation=d)


def _avg_pool(ndim: int, kernel_size: IntOrTuple, stride: IntOrTuple | None,
              padding: IntOrTuple, count_include_pad: bool) -> Layer:
    name = f"avg_pool{ndim}d"
    k, s, p, _ = _geometry(ndim, kernel_size, stride, padding, 1, f"{name}()")
    if not isinstance(count_include_pad, bool):
        raise SettingError(f"{name}(): count_include_pad must be True or False, got "
                           f"{count_include_pad!r}")
    config = {"name": name, "kernel_size": _one(k), "stride": _one(s), "padding": _one(p),
              "count_include_pad": count_include_pad}
    return _pool(name, ndim, avg_pool_forward, avg_pool_backward, config,
                 kernel_size=k, stride=s, padding=p, count_include_pad=count_include_pad)


def max_pool1d(kernel_size: int, stride: int | None = None, padding: int = 0,
               dilation: int = 1) -> Layer:
    """Max pooling over the length of ``(batch, C, L)``, as ``torch.nn.MaxPool1d``
    (formula: :func:`max_pool_forward`; ``stride`` defaults to ``kernel_size``).

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> y, _ = bp.max_pool1d(2).forward({}, np.zeros((4, 3, 10)))
    >>> y.shape
    (4, 3, 5)
    """
    return _max_pool(1, kernel_size, stride, padding, dilation)


def max_pool2d(kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1) -> Layer:
    """Max pooling over ``(H, W)`` of ``(batch, C, H, W)``, as ``torch.nn.MaxPool2d``
    (each setting an int or a pair; ``stride`` defaults to ``kernel_size``)."""
    return _max_pool(2, kernel_size, stride, padding, dilation)


def avg_pool1d(kernel_size: int, stride: int | None = None, padding: int = 0,
               count_include_pad: bool = True) -> Layer:
    """Average pooling over the length of ``(batch, C, L)``, as ``torch.nn.AvgPool1d``
    (formula: :func:`avg_pool_forward`; ``stride`` defaults to ``kernel_size``)."""
    return _avg_pool(1, kernel_size, stride, padding, count_include_pad)


def avg_pool2d(kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, count_include_pad: bool = True) -> Layer:
    """Average pooling over ``(H, W)`` of ``(batch, C, H, W)``, as ``torch.nn.AvgPool2d``."""
    return _avg_pool(2, kernel_size, stride, padding, count_include_pad)


# --------------------------------------------------------------------------
# NumPy: tiled max pooling as K strided views, no copies of the windows, no branches


def _tile_views(a: Array, k: tuple[int, ...], out: tuple[int, ...]) -> list[Array]:
    """The ``prod(k)`` strided views of ``a`` holding each tile's entry at one offset
    (row-major offsets, as :func:`_tiles`)."""
    views = []
    for offset in itertools.product(*(range(kk) for kk in k)):
        index = (slice(None), slice(None),
                 *(slice(o, o + m * kk, kk) for o, m, kk in zip(offset, out, k)))
        views.append(a[index])
    return views


_UINT = {4: np.uint32, 8: np.uint64}


@specializes(max_pool_forward, "numpy")
def _max_pool_forward_numpy(
    x: Array, *, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0, dilation: IntOrTuple = 1, xp: ModuleType | None = None,
    ws: Workspace | None = None,
) -> tuple[Array, PoolCache]:
    """Tiled windows: the running maximum over the ``K`` strided views, one pass
    each, nothing gathered; other geometries: the portable kernel.

    No masked store (NumPy's ``where=`` branches on every element and
    mispredicts on random data): ``y = maximum(y, v)``, and since the offsets
    come in increasing order, the first maximum's offset is ``argmax =
    max(argmax, j · (v > y))`` (strict, so the first of equal maxima is kept,
    as ``argmax``). The outputs are laid out as ``x`` (batch last after a NumPy
    convolution). Without it a step takes 96.2% longer (lenet, batch 100;
    benchmarks/specializations.py, 2026-12-03)."""
    ndim = x.ndim - 2
    k, s, p, d = _geometry(ndim, kernel_size, stride, padding, dilation, "max_pool")
    if x.ndim < 3 or not _tiled(k, s, p, d) or x.dtype.kind != "f":
        return max_pool_forward(x, kernel_size=kernel_size, stride=stride, padding=padding,
                                dilation=dilation)
    out = tuple(n // kk for n, kk in zip(x.shape[2:], k))
    shape = (*x.shape[:2], *out)
    K = math.prod(k)
    views = _tile_views(x, k, out)
    y = output_like(ws, "y", x, shape, x.dtype, np.empty)
    np.copyto(y, views[0])
    arg_dtype = np.int8 if K <= 127 else np.intp
    arg = output_like(ws, "argmax", x, shape, arg_dtype, np.empty)
    arg.fill(0)
    # a bool buffer, viewed as ints (0 or 1) without a cast, when their sizes agree
    greater = output_like(ws, "greater", x, shape,
                          np.bool_ if arg_dtype == np.int8 else arg_dtype, np.empty)
    step = output_like(ws, "step", x, shape, arg_dtype, np.empty)
    for j, v in enumerate(views[1:], 1):
        np.greater(v, y, out=greater, casting="unsafe")
        np.multiply(greater.view(arg_dtype), arg_dtype(j), out=step)  # 0 or j
        np.maximum(arg, step, out=arg)
        np.maximum(y, v, out=y)
    return y, PoolCache(arg, None, tuple(x.shape), k, s, p, d)


@specializes(max_pool_backward, "numpy")
def _max_pool_backward_numpy(
    cache: PoolCache, dy: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None,
) -> Array:
    """Tiled windows: for each offset ``j``, ``dy``'s bits ANDed with an all-ones
    word where ``argmax == j`` (else zeros) and stored into that offset's view
    of ``dx``: the views cover every tile, so only a tail no window reaches is
    zeroed; no branch per element. ``dx`` is laid out as ``dy``. Other
    geometries: the portable kernel. Without it a step takes 67.0% longer (lenet, batch 256;
    benchmarks/specializations.py, 2026-12-03)."""
    if (not _tiled(cache.kernel_size, cache.stride, cache.padding, cache.dilation)
            or dy.dtype.itemsize not in _UINT or dy.dtype.kind != "f"):
        return max_pool_backward(cache, dy)
    assert cache.argmax is not None
    k, out = cache.kernel_size, tuple(dy.shape[2:])
    dx = output_like(ws, "dx", dy, cache.x_shape, dy.dtype, np.empty)
    if any(n != o * kk for n, o, kk in zip(cache.x_shape[2:], out, k)):
        dx.fill(0)  # a tail that no window covers
    uint = _UINT[dy.dtype.itemsize]
    mask = output_like(ws, "mask", dy, tuple(dy.shape), uint, np.empty)
    bits = dy.view(uint)
    for j, target in enumerate(_tile_views(dx, k, out)):
        np.equal(cache.argmax, j, out=mask, casting="unsafe")  # 1 or 0
        np.negative(mask, out=mask)  # all ones or 0
        np.bitwise_and(bits, mask, out=target.view(uint))
    return dx
