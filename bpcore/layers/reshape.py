"""Layers that only change how each sample is laid out: ``flatten`` and ``reshape``.

Both keep the batch axis and every value: ``y = reshape(x, (batch, *shape))``
and the backward pass is the reshape back, ``dx = reshape(dy, x.shape)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ..backend import Array, namespace
from ..errors import SettingError, ShapeError
from .core import Layer, Params, Shape, positive_int, show_shape

__all__ = ["flatten", "reshape", "reshape_backward", "reshape_forward"]


def reshape_forward(
    x: Array, *, shape: Sequence[int] | None = None, xp: ModuleType | None = None
) -> tuple[Array, tuple[int, ...]]:
    """``y = reshape(x, (batch, *shape))`` (``shape=None``: flatten each sample,
    ``(batch, prod(x.shape[1:]))``); the cache is ``x``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = reshape_forward(np.zeros((2, 40)), shape=(1, 40))
    >>> y.shape
    (2, 1, 40)
    """
    xp = namespace(x, xp=xp)
    sample = (math.prod(x.shape[1:]),) if shape is None else tuple(shape)
    return xp.reshape(x, (x.shape[0], *sample)), tuple(x.shape)


def reshape_backward(
    cache: tuple[int, ...], dy: Array, *, shape: Sequence[int] | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """``dx = reshape(dy, x.shape)``."""
    return namespace(dy, xp=xp).reshape(dy, cache)


def _no_params(rng: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Params:
    return {}


def _layer(name: str, shape: tuple[int, ...] | None, config: dict[str, Any]) -> Layer:
    def f(x: Array, *, xp: ModuleType | None = None) -> tuple[Array, tuple[int, ...]]:
        return reshape_forward(x, shape=shape, xp=xp)

    def b(cache: tuple[int, ...], dy: Array, *, xp: ModuleType | None = None) -> Array:
        return reshape_backward(cache, dy, xp=xp)

    def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> Any:
        return f(x, xp=xp)

    def backward(params: Params, cache: tuple[int, ...], dy: Array, *,
                 xp: ModuleType | None = None, need_dx: bool = True) -> tuple[Array, Params]:
        return b(cache, dy, xp=xp), {}

    def out_shape(sample: Shape | None) -> Shape:
        if sample is None or None in sample:
            return (None,) if shape is None else shape
        size = math.prod(n for n in sample if n is not None)
        if shape is None:
            return (size,)
        if size != math.prod(shape):
            raise ShapeError(f"{name} to {show_shape(shape)} needs {math.prod(shape)} values "
                             f"per sample, got {size} in shape {show_shape(sample)}")
        return shape

    return Layer(_no_params, forward, backward, name, None, None, config, None, (f, b), dict,
                 None, out_shape)


def flatten() -> Layer:
    """Flatten each sample: ``(batch, d1, d2, ...) -> (batch, d1·d2·...)``
    (as ``torch.nn.Flatten()``), e.g. between convolutions and a dense layer.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> y, _ = bp.flatten().forward({}, np.zeros((4, 25, 5)))
    >>> y.shape
    (4, 125)
    """
    return _layer("flatten", None, {"name": "flatten"})


def reshape(shape: Sequence[int]) -> Layer:
    """View each sample as ``shape``: ``(batch, ...) -> (batch, *shape)``, the
    number of values per sample unchanged (``x.view(-1, *shape)`` in PyTorch).

    ``bp.reshape((1, 40))`` puts a length-40 signal into the ``(channels,
    length)`` layout a :func:`~bpcore.layers.conv.conv1d` takes.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> y, _ = bp.reshape((1, 40)).forward({}, np.zeros((4, 40)))
    >>> y.shape
    (4, 1, 40)
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape:
        raise SettingError(f"reshape() takes a per-sample shape such as (1, 40), got {shape!r}")
    sizes = tuple(positive_int(n, "reshape(): each size") for n in shape)
    return _layer("reshape", sizes, {"name": "reshape", "shape": list(sizes)})
