"""The layer protocol and its composition.

A layer is three plain functions bundled in a :class:`Layer`:

* ``init(rng, *, xp=None, dtype=None, device=None) -> params``
* ``forward(params, x, *, xp=None) -> (y, cache)``
* ``backward(params, cache, dy, *, xp=None, need_dx=True) -> (dx, grads)``

``params`` and ``grads`` are dicts with the same keys. ``need_dx=False`` lets
the first layer of a network skip the one product whose result nobody reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array
from ..dispatch import Binding
from ..errors import ArgumentError, SettingError
from ..init import as_generator
from ..values import integer

__all__ = ["Layer", "Params", "bind", "positive_int", "sequential"]

#: A layer's parameters (or gradients): ``{"W": ..., "b": ...}``; a sequential
#: network's are a tuple with one such dict per layer.
Params = Any


class Layer(NamedTuple):
    """One differentiable stage: ``init``, ``forward`` and ``backward``.

    ``n_in``/``n_out`` are feature counts (``None`` where the layer keeps the
    width of its input); ``config`` is a JSON-able description from which
    :func:`bpcore.layers.from_config` rebuilds the layer. ``bind`` is how the
    step driver gives the layer its backend's specializations and workspace
    (see :mod:`bpcore.dispatch`); a layer of your own can leave it ``None``.
    """

    init: Callable[..., Params]
    forward: Callable[..., tuple[Array, Any]]
    backward: Callable[..., tuple[Array | None, Params]]
    name: str
    n_in: int | None = None
    n_out: int | None = None
    config: Any = None
    #: ``bind(binding) -> Layer``: the same layer with each kernel replaced by
    #: its specialization for ``binding.xp`` (if it has one) writing into
    #: ``binding.ws``; ``None`` for a layer that runs as it is everywhere.
    bind: Callable[[Binding], Layer] | None = None
    #: ``(forward, backward)``: the kernels of a parameter-free layer, called
    #: as ``forward(x, *, xp) -> (y, cache)`` and ``backward(cache, dy, *, xp)
    #: -> dx`` (what its ``forward``/``backward`` wrap); ``None`` otherwise.
    kernels: tuple[Callable[..., Any], Callable[..., Any]] | None = None
    #: ``shapes() -> params``-shaped tree of shape tuples: what ``init`` makes,
    #: without making it (the checks compare parameters against it); ``None``
    #: when unknown.
    shapes: Callable[[], Any] | None = None


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is a positive integer of any integer type
    (``numpy.int64`` from a shape, a 0-D array; ``bool`` not); else a SettingError
    that says ``what`` it was meant to be."""
    return integer(value, what)


def bind(layer: Layer, binding: Binding) -> Layer:
    """``layer`` with its kernels chosen for ``binding`` (its namespace and
    workspace): the layer's own :attr:`Layer.bind`, or the layer itself."""
    return layer if layer.bind is None else layer.bind(binding)


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
        raise SettingError("sequential() needs at least one layer")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ArgumentError(
                f"sequential() takes Layer objects, got {type(layer).__name__}; "
                "did you forget to call it, e.g. bp.relu() rather than bp.relu?"
            )
    width: int | None = None
    for i, layer in enumerate(layers):
        if layer.n_in is not None and width is not None and layer.n_in != width:
            raise SettingError(
                f"layer {i} ({layer.name}) takes {layer.n_in} features but the layer "
                f"before it gives {width}; make the sizes agree"
            )
        if layer.n_out is not None:
            width = layer.n_out
    n_in = next((lay.n_in for lay in layers if lay.n_in is not None), None)
    inits = tuple(lay.init for lay in layers)

    def init(
        seed: int | np.random.Generator | None = None, *,
        xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
    ) -> tuple[Params, ...]:
        rng = as_generator(seed)
        return tuple(f(rng, xp=xp, dtype=dtype, device=device) for f in inits)

    config = {"name": "sequential", "layers": [lay.config for lay in layers]}

    def shapes() -> tuple[Any, ...]:
        return tuple(None if lay.shapes is None else lay.shapes() for lay in layers)

    def build(parts: Sequence[Layer], bind_: Callable[[Binding], Layer] | None) -> Layer:
        forward, backward = _chain(parts)
        return Layer(init, forward, backward, "sequential", n_in, width, config, bind_,
                     None, shapes)

    def bind_all(binding: Binding) -> Layer:
        return build([bind(lay, binding.scope(i)) for i, lay in enumerate(layers)], None)

    return build(layers, bind_all)


def _chain(layers: Sequence[Layer]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The forward and backward of ``layers`` applied in turn (the chain rule).

    A parameter-free layer's kernels are called directly (``Layer.kernels``):
    the same arithmetic as its ``forward``/``backward``, one call fewer.
    """
    steps = tuple(
        (False, lay.forward, lay.backward) if lay.kernels is None else (True, *lay.kernels)
        for lay in layers
    )
    last = len(layers) - 1

    def forward(
        params: tuple[Params, ...], x: Array, *, xp: ModuleType | None = None
    ) -> tuple[Array, list[Any]]:
        caches = []
        for (bare, f, _), p in zip(steps, params):
            x, c = f(x, xp=xp) if bare else f(p, x, xp=xp)
            caches.append(c)
        return x, caches

    def backward(
        params: tuple[Params, ...], cache: list[Any], dy: Array, *,
        xp: ModuleType | None = None, need_dx: bool = True,
    ) -> tuple[Array | None, tuple[Params, ...]]:
        grads: list[Params] = [None] * len(steps)
        for j in range(last, -1, -1):
            bare, _, b = steps[j]
            if bare:
                dy, grads[j] = b(cache[j], dy, xp=xp), {}
            else:
                dy, grads[j] = b(params[j], cache[j], dy, xp=xp, need_dx=need_dx or j > 0)
        return dy, tuple(grads)

    return forward, backward

