"""The layer protocol and its composition.

A layer is three plain functions bundled in a :class:`Layer`:

* ``init(rng, *, xp=None, dtype=None, device=None) -> params``
* ``forward(params, x, *, xp=None) -> (y, cache)``
* ``backward(params, cache, dy, *, xp=None, need_dx=True) -> (dx, grads)``

``params`` and ``grads`` are dicts with the same keys. ``need_dx=False`` lets
the first layer of a network skip the one product whose result nobody reads.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array
from ..init import as_generator

__all__ = ["Layer", "Params", "anatomy", "sequential"]

#: A layer's parameters (or gradients): ``{"W": ..., "b": ...}``; a sequential
#: network's are a tuple with one such dict per layer.
Params = Any


class Layer(NamedTuple):
    """One differentiable stage: ``init``, ``forward`` and ``backward``.

    ``n_in``/``n_out`` are feature counts (``None`` where the layer keeps the
    width of its input); ``config`` is a JSON-able description from which
    :func:`bpcore.layers.from_config` rebuilds the layer.
    """

    init: Callable[..., Params]
    forward: Callable[..., tuple[Array, Any]]
    backward: Callable[..., tuple[Array | None, Params]]
    name: str
    n_in: int | None = None
    n_out: int | None = None
    config: Any = None


#: What the layers bpcore builds are made of, keyed by their ``forward``
#: function: ``("sequential", layers)`` or ``("activation", fwd, bwd, backward)``.
#: Backend fast paths (:mod:`bpcore.fast`) read it through :func:`anatomy` to
#: recognise a network they can run fused; a hand-made Layer is not in it.
_ANATOMY: weakref.WeakKeyDictionary[Callable[..., Any], tuple[Any, ...]] = (
    weakref.WeakKeyDictionary()
)


def anatomy(layer: Layer) -> tuple[Any, ...] | None:
    """What a layer built by bpcore is made of (``None`` for any other layer).

    ``("sequential", layers)`` for :func:`sequential`, ``("activation", fwd,
    bwd)`` for an activation layer with kernels ``fwd``/``bwd``. Used by
    :mod:`bpcore.fast` to decide whether a network has a fused fast path.
    """
    entry = _ANATOMY.get(layer.forward)
    if entry is None:
        return None
    if entry[0] == "activation":
        _, fwd, bwd, backward = entry
        return ("activation", fwd, bwd) if layer.backward is backward else None
    _, parts, backward = entry
    return ("sequential", parts) if layer.backward is backward else None


def sequential(*layers: Layer) -> Layer:
    """Compose layers into one, applied left to right.

    The composite's ``params`` and ``grads`` are tuples with one dict per
    layer (``{}`` for layers without parameters). ``init`` draws the layers'
    weights in order from one host generator, so a seed fixes them all.

    Examples
    --------
    >>> import bpcore as bp
    >>> net = bp.sequential(bp.dense(3, 4), bp.sigmoid(), bp.dense(4, 1), bp.sigmoid())
    >>> params = net.init(0)
    >>> [tuple(p["W"].shape) for p in params if p]
    [(3, 4), (4, 1)]
    """
    if not layers:
        raise ValueError("sequential() needs at least one layer")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(
                f"sequential() takes Layer objects, got {type(layer).__name__}; "
                "did you forget to call it, e.g. bp.relu() rather than bp.relu?"
            )
    width: int | None = None
    for i, layer in enumerate(layers):
        if layer.n_in is not None and width is not None and layer.n_in != width:
            raise ValueError(
                f"layer {i} ({layer.name}) takes {layer.n_in} features but the layer "
                f"before it gives {width}; make the sizes agree"
            )
        if layer.n_out is not None:
            width = layer.n_out
    n_in = next((lay.n_in for lay in layers if lay.n_in is not None), None)
    inits = tuple(lay.init for lay in layers)
    forwards = tuple(lay.forward for lay in layers)
    backwards = tuple(lay.backward for lay in layers)[::-1]

    def init(
        seed: int | np.random.Generator | None = None, *,
        xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
    ) -> tuple[Params, ...]:
        rng = as_generator(seed)
        return tuple(f(rng, xp=xp, dtype=dtype, device=device) for f in inits)

    def forward(
        params: tuple[Params, ...], x: Array, *, xp: ModuleType | None = None
    ) -> tuple[Array, list[Any]]:
        caches = []
        for f, p in zip(forwards, params):
            x, c = f(p, x, xp=xp)
            caches.append(c)
        return x, caches

    def backward(
        params: tuple[Params, ...], cache: list[Any], dy: Array, *,
        xp: ModuleType | None = None, need_dx: bool = True,
    ) -> tuple[Array | None, tuple[Params, ...]]:
        n = len(backwards)
        grads: list[Params] = [None] * n
        for i, b in enumerate(backwards):
            j = n - 1 - i
            dy, grads[j] = b(params[j], cache[j], dy, xp=xp, need_dx=need_dx or j > 0)
        return dy, tuple(grads)

    _ANATOMY[forward] = ("sequential", layers, backward)
    return Layer(
        init, forward, backward, "sequential", n_in, width,
        {"name": "sequential", "layers": [lay.config for lay in layers]},
    )
