"""The layer protocol and its composition.

A layer is three plain functions bundled in a :class:`Layer`:

* ``init(rng, *, xp=None, dtype=None, device=None) -> params``
* ``forward(params, x, *, xp=None) -> (y, cache)``
* ``backward(params, cache, dy, *, xp=None, need_dx=True) -> (dx, grads)``

``params`` and ``grads`` are dicts with the same keys. ``need_dx=False`` lets
the first layer of a network skip the one product whose result nobody reads.

Shapes
------
``x`` is ``(batch, *sample)``: ``(batch, n_in)`` for dense layers,
``(batch, C, L)`` or ``(batch, C, H, W)`` (channels first) for convolutions
and pooling. A layer says what it takes in :attr:`Layer.in_shape` (the
per-sample shape, ``None`` for a size it does not fix) and what it gives in
:attr:`Layer.out_shape` (a function of the per-sample input shape). A layer
that only knows ``n_in``/``n_out`` (a layer of your own) takes ``(n_in,)`` and
gives ``(n_out,)``; one that knows neither keeps the shape of its input.
:func:`sequential` checks its layers against each other with these as far as
they are known without data, and :func:`output_shape` runs the same inference
on a real batch's shape, so a batch that does not fit is refused before any
kernel runs, with the layer that cannot take it named.

State and modes
---------------
Most layers compute the same thing in training and in evaluation and keep
nothing between calls. The others (:func:`~bpcore.layers.dropout.dropout`,
:func:`~bpcore.layers.norm.batch_norm`) are *stateful*: they have
:attr:`Layer.init_state`, and their forward takes the step's
:class:`Context` and returns the layer's new state beside its output::

    forward(params, x, *, xp=None, ctx) -> (y, cache, state)

``ctx.train`` is the mode, ``ctx.state`` the layer's own part of the state
tree, and ``ctx.seed``, ``ctx.step`` and ``ctx.stream`` name the random bits
of this layer in this step (a counter-based generator: the same bits on every
backend). The backward pass is the usual one: whatever the mode changed is in
the cache. A network is stateful when one of its layers is; its state is the
tree of its layers' states, beside (never inside) the parameters, so an
optimizer never sees it. The step driver (:mod:`bpcore.step`) keeps it in a
:class:`~bpcore.step.TrainState` with the optimizer's state and the step
counter, threads it through every training step in train mode, and runs
predictions in eval mode; under ``jax.jit`` the counter is an input of the
traced step, not a constant (as flax's ``batch_stats`` and Haiku's ``state``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from .. import tree
from ..backend import Array, namespace
from ..dispatch import Binding
from ..errors import ArgumentError, SettingError, ShapeError
from ..init import as_generator
from ..values import integer

__all__ = [
    "COMBINE",
    "Context",
    "Layer",
    "Params",
    "Shape",
    "bind",
    "input_shape",
    "output_shape",
    "parallel",
    "positive_int",
    "residual",
    "run",
    "sequential",
    "show_shape",
    "stateful",
]

#: A layer's parameters (or gradients): ``{"W": ..., "b": ...}``; a sequential
#: network's are a tuple with one such dict per layer.
Params = Any

#: A per-sample shape (the batch axis left out); ``None`` for a size that is
#: not known before the data (the length of a convolution's input).
Shape = tuple[int | None, ...]


class Layer(NamedTuple):
    """One differentiable stage: ``init``, ``forward`` and ``backward``.

    ``n_in``/``n_out`` are feature counts (``None`` where the layer keeps the
    width of its input); ``config`` is a JSON-able description from which
    :func:`bpcore.layers.from_config` rebuilds the layer. ``bind`` is how the
    step driver gives the layer its backend's specializations and workspace
    (see :mod:`bpcore.dispatch`); a layer of your own can leave it ``None``.
    """

    init: Callable[..., Params]
    forward: Callable[..., tuple[Any, ...]]  # (y, cache), or (y, cache, state) if stateful
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
    #: The per-sample input shape the layer takes: ``(n_in,)`` for dense,
    #: ``(C_in, None)`` for conv1d (``None``: any size); ``None`` for a layer
    #: that takes any shape (an activation, flatten) or where it is unknown.
    in_shape: Shape | None = None
    #: ``out_shape(shape) -> shape``: the per-sample output shape for a
    #: per-sample input shape (whose entries may be ``None``; the shape itself
    #: ``None`` when nothing is known of it, and the result then what is known
    #: regardless, or ``None``), raising :class:`~bpcore.errors.ShapeError` if
    #: the layer cannot take it; ``None`` for a layer that gives ``(n_out,)``
    #: (if ``n_out`` is set) or keeps the shape of its input.
    out_shape: Callable[[Shape | None], Shape | None] | None = None
    #: ``init_state(*, xp, dtype, device) -> state``: the layer's state (a tree
    #: of arrays that is not trained: batch norm's running statistics; ``{}``
    #: for a layer that only needs the mode or random bits, as dropout). Set,
    #: it marks a *stateful* layer, whose forward is called with a
    #: :class:`Context` and returns its new state too (see "State" above);
    #: ``None`` for every other layer.
    init_state: Callable[..., Any] | None = None
    #: For a layer that takes integer indices (an embedding): their count, the
    #: inputs must lie in ``[0, n_index)``; ``None`` for real-valued inputs.
    n_index: int | None = None


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is a positive integer of any integer type
    (``numpy.int64`` from a shape, a 0-D array; ``bool`` not); else a SettingError
    that says ``what`` it was meant to be."""
    return integer(value, what)


class Context(NamedTuple):
    """What a stateful layer's forward pass reads besides its parameters and input.

    ``train``: training (``True``) or evaluation mode; ``state``: this layer's
    part of the network's state; ``seed`` and ``step``: ints or 0-D integer
    arrays (traced under a compiler), the run's seed and the training step
    counter; ``stream``: a Python int telling this layer's random bits apart
    from every other layer's (the composites fold the layer's position in).
    """

    train: bool
    state: Any = None
    seed: Any = 0
    step: Any = 0
    stream: int = 0

    def part(self, index: int, state: Any) -> Context:
        """The context of a composite's ``index``-th layer, whose state is ``state``."""
        return self._replace(state=state, stream=_mix(self.stream, index))


def _mix(stream: int, index: int) -> int:
    """A 32-bit stream id for part ``index`` of ``stream`` (murmur3's finalizer, in Python)."""
    h = (stream * 0x9E3779B1 + index + 1) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def stateful(layer: Layer) -> bool:
    """Whether ``layer`` (or a layer inside it) keeps state or depends on the mode."""
    return layer.init_state is not None


def run(layer: Layer, params: Params, x: Array, xp: ModuleType | None,
        ctx: Context | None) -> tuple[Array, Any, Any]:
    """``(y, cache, new_state)`` of ``layer`` on ``x``: a stateless layer's state is
    ``{}`` and it ignores ``ctx``; a stateful one needs ``ctx``."""
    if layer.init_state is None:
        y, cache = layer.forward(params, x, xp=xp)
        return y, cache, {}
    if ctx is None:
        raise ArgumentError(
            f"{layer.name} keeps state or depends on the mode (training or evaluation): "
            "call its forward with ctx=Context(train=..., state=...), or run it through "
            "bp.train_step / bp.predict, which do"
        )
    return layer.forward(params, x, xp=xp, ctx=ctx)


def _init_states(layers: Sequence[Layer]) -> Callable[..., tuple[Any, ...]] | None:
    """The ``init_state`` of a composite of ``layers``: one state per layer (``{}``
    for a stateless one), or ``None`` when no layer keeps state."""
    if not any(stateful(lay) for lay in layers):
        return None
    makers = tuple(lay.init_state for lay in layers)

    def init_state(*, xp: ModuleType | None = None, dtype: Any = None,
                   device: Any = None) -> tuple[Any, ...]:
        return tuple({} if f is None else f(xp=xp, dtype=dtype, device=device) for f in makers)

    return init_state


def show_shape(shape: Shape) -> str:
    """A per-sample shape as people write it: ``(1, 40)``; ``(25, ?)`` where a size is unknown."""
    return "(" + ", ".join("?" if n is None else str(n) for n in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def input_shape(layer: Layer) -> Shape | None:
    """The per-sample shape ``layer`` takes: :attr:`Layer.in_shape`, else
    ``(n_in,)`` where ``n_in`` is set, else ``None`` (any shape)."""
    if layer.in_shape is not None:
        return tuple(layer.in_shape)
    return None if layer.n_in is None else (layer.n_in,)


def fits(want: Shape | None, got: Shape) -> bool:
    """Whether a per-sample shape ``got`` is one that ``want`` allows
    (``None`` on either side matches any size)."""
    if want is None:
        return True
    return len(want) == len(got) and all(
        a is None or b is None or a == b for a, b in zip(want, got))


def output_shape(layer: Layer, shape: Shape) -> Shape:
    """The per-sample output shape of ``layer`` for inputs of per-sample ``shape``.

    Raises
    ------
    ShapeError
        If the layer cannot take that shape (the message says why and, inside
        a network, which layer).

    Examples
    --------
    >>> import bpcore as bp
    >>> net = bp.sequential(bp.conv1d(1, 4, 5, stride=2), bp.relu(), bp.flatten())
    >>> output_shape(net, (1, 40))
    (72,)
    """
    shape = tuple(shape)
    if layer.out_shape is not None:
        out = layer.out_shape(shape)
        assert out is not None, f"{layer.name}.out_shape gave None for a known shape"
        return tuple(out)
    want = input_shape(layer)
    if not fits(want, shape):
        assert want is not None
        if len(want) == 1 and len(shape) == 1:
            raise ShapeError(f"{layer.name} takes {want[0]} features, got {shape[0]}")
        raise ShapeError(f"{layer.name} takes inputs of shape {show_shape(want)} per sample, "
                         f"got {show_shape(shape)}")
    return shape if layer.n_out is None else (layer.n_out,)


def _keeps_shape(layer: Layer) -> bool:
    """A layer that takes any shape and gives it back (an activation)."""
    return layer.out_shape is None and input_shape(layer) is None and layer.n_out is None


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
    in_shape, known_out = _infer(layers)
    n_in = in_shape[0] if in_shape is not None and len(in_shape) == 1 else None
    width = known_out[0] if known_out is not None and len(known_out) == 1 else None
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

    init_state = _init_states(layers)

    def build(parts: Sequence[Layer], bind_: Callable[[Binding], Layer] | None) -> Layer:
        forward, backward = _chain(parts)
        return Layer(init, forward, backward, "sequential", n_in, width, config, bind_,
                     None, shapes, in_shape, out_shape, init_state, layers[0].n_index)

    def out_shape(shape: Shape | None) -> Shape | None:
        if shape is None:
            return known_out
        for i, layer in enumerate(layers):
            try:
                shape = output_shape(layer, shape)
            except ShapeError as exc:
                raise ShapeError(f"layer {i} ({layer.name}): {exc}") from None
        return shape

    def bind_all(binding: Binding) -> Layer:
        return build([bind(lay, binding.scope(i)) for i, lay in enumerate(layers)], None)

    return build(layers, bind_all)


def _one_layer(layers: Sequence[Layer], where: str) -> Layer:
    """One layer from ``layers``: itself, or several in a :func:`sequential`."""
    if not layers:
        raise SettingError(f"{where}() needs at least one layer")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ArgumentError(f"{where}() takes Layer objects, got {type(layer).__name__}")
    return layers[0] if len(layers) == 1 else sequential(*layers)


def residual(*layers: Layer) -> Layer:
    """A residual block: ``y = x + f(x)``, with ``f`` the layers given, in turn.

    Backward: ``dx = dy + ∂f/∂xᵀ dy`` (the identity path adds ``dy`` itself),
    the gradients of ``f``'s parameters as ``f`` gives them. ``f`` must keep
    the shape of its input. The block's parameters (and state) are ``f``'s.

    Examples
    --------
    The MNIST-1D paper's MLP, ``h = relu(W1 x); h = h + relu(W2 h); W3 h``:

    >>> import bpcore as bp
    >>> net = bp.sequential(bp.dense(40, 100), bp.relu(),
    ...                     bp.residual(bp.dense(100, 100), bp.relu()), bp.dense(100, 10))
    >>> net.n_in, net.n_out
    (40, 10)
    """
    f = _one_layer(layers, "residual")
    want = input_shape(f)
    if want is not None:
        try:
            got = output_shape(f, want)
        except ShapeError as exc:
            raise SettingError(f"residual(): {exc}") from None
        if not fits(want, got):
            raise SettingError(
                f"residual(): the block maps inputs of shape {show_shape(want)} to "
                f"{show_shape(got)}; y = x + f(x) needs f to keep the shape of its input"
            )
    n = want[0] if want is not None and len(want) == 1 else None
    config = {"name": "residual", "layer": f.config}

    def out_shape(shape: Shape | None) -> Shape | None:
        if shape is None:
            return want
        got = output_shape(f, shape)
        if not fits(shape, got):
            raise ShapeError(f"residual: the block maps {show_shape(shape)} to "
                             f"{show_shape(got)}; it must keep the shape")
        return shape

    def build(g: Layer, bind_: Callable[[Binding], Layer] | None) -> Layer:
        def forward(params: Params, x: Array, *, xp: ModuleType | None = None,
                    ctx: Context | None = None) -> Any:
            if g.init_state is None:
                y, cache = g.forward(params, x, xp=xp)
                return x + y, cache
            y, cache, state = run(g, params, x, xp, None if ctx is None else
                                  ctx.part(0, ctx.state))
            return x + y, cache, state

        def backward(params: Params, cache: Any, dy: Array, *, xp: ModuleType | None = None,
                     need_dx: bool = True) -> tuple[Array | None, Params]:
            dfx, grads = g.backward(params, cache, dy, xp=xp, need_dx=need_dx)
            return (None if dfx is None else dy + dfx), grads

        return Layer(f.init, forward, backward, "residual", n, n, config, bind_, None,
                     f.shapes, want, out_shape, f.init_state)

    return build(f, lambda binding: build(bind(f, binding.scope(0)), None))


COMBINE = ("concat", "sum")


def parallel(*branches: Layer, combine: str = "concat") -> Layer:
    """Branches applied to the same input, their outputs concatenated or summed.

    ``combine="concat"``: ``y = [f₁(x), f₂(x), ...]`` joined along the
    features (or channels: axis 1); ``combine="sum"``: ``y = Σ fᵢ(x)``.
    Backward: each branch gets its slice of ``dy`` (concat) or all of it
    (sum), and ``dx = Σ ∂fᵢ/∂xᵀ dyᵢ``. The parameters (and state) are a tuple,
    one entry per branch; a branch of several layers is a :func:`sequential`.

    Examples
    --------
    >>> import bpcore as bp
    >>> block = bp.parallel(bp.dense(8, 3), bp.sequential(bp.dense(8, 5), bp.tanh()))
    >>> block.n_in, block.n_out
    (8, 8)
    """
    if combine not in COMBINE:
        raise SettingError(f"parallel(): combine must be 'concat' or 'sum', got {combine!r}")
    if len(branches) < 2:
        raise SettingError("parallel() needs at least two branches")
    for b in branches:
        if not isinstance(b, Layer):
            raise ArgumentError(f"parallel() takes Layer objects, got {type(b).__name__}")
    want: Shape | None = None
    for i, b in enumerate(branches):
        w = input_shape(b)
        if w is None:
            continue
        if want is not None and not fits(want, w):
            raise SettingError(f"parallel(): branch {i} ({b.name}) takes inputs of shape "
                               f"{show_shape(w)} but branch 0 takes {show_shape(want)}")
        want = w if want is None else tuple(a if a is not None else c for a, c in zip(want, w))

    def join(outs: list[Shape | None]) -> Shape | None:
        if any(o is None for o in outs):
            return None
        known = [o for o in outs if o is not None]
        first = known[0]
        for i, o in enumerate(known[1:], 1):
            same = fits(first, o) if combine == "sum" else (
                len(o) == len(first) and len(o) >= 1 and fits(first[1:], o[1:]))
            if not same:
                how = "the same shape" if combine == "sum" else \
                    "the same shape but for their first axis"
                raise ShapeError(f"parallel({combine}): branch {i} gives {show_shape(o)} but "
                                 f"branch 0 gives {show_shape(first)}; the branches need {how}")
        if combine == "sum":
            return first
        size = None if any(o[0] is None for o in known) else sum(int(o[0]) for o in known
                                                                 if o[0] is not None)
        return (size, *first[1:])

    def out_shape(shape: Shape | None) -> Shape | None:
        outs: list[Shape | None] = []
        for i, b in enumerate(branches):
            try:
                outs.append(output_shape(b, shape) if shape is not None else
                            b.out_shape(None) if b.out_shape is not None else
                            None if b.n_out is None else (b.n_out,))
            except ShapeError as exc:
                raise ShapeError(f"branch {i} ({b.name}): {exc}") from None
        return join(outs)

    try:
        known_out = out_shape(want)
    except ShapeError as exc:
        raise SettingError(f"parallel(): {exc}") from None
    n_in = want[0] if want is not None and len(want) == 1 else None
    n_out = known_out[0] if known_out is not None and len(known_out) == 1 else None
    inits = tuple(b.init for b in branches)

    def init(seed: int | np.random.Generator | None = None, *, xp: ModuleType | None = None,
             dtype: Any = None, device: Any = None) -> tuple[Params, ...]:
        rng = as_generator(seed)
        return tuple(f(rng, xp=xp, dtype=dtype, device=device) for f in inits)

    def shapes() -> tuple[Any, ...]:
        return tuple(None if b.shapes is None else b.shapes() for b in branches)

    config = {"name": "parallel", "combine": combine, "layers": [b.config for b in branches]}
    init_state = _init_states(branches)

    def build(parts: Sequence[Layer], bind_: Callable[[Binding], Layer] | None) -> Layer:
        def forward(params: tuple[Params, ...], x: Array, *, xp: ModuleType | None = None,
                    ctx: Context | None = None) -> Any:
            ys, caches, states = [], [], []
            for i, (b, p) in enumerate(zip(parts, params)):
                y, c, st = run(b, p, x, xp, None if ctx is None else ctx.part(i, ctx.state[i]))
                ys.append(y)
                caches.append(c)
                states.append(st)
            ns = namespace(x, xp=xp)
            if combine == "sum":
                y = ys[0]
                for other in ys[1:]:
                    y = y + other
            else:
                y = ns.concat(ys, axis=1)
            cache = (caches, [int(a.shape[1]) for a in ys])
            return (y, cache) if init_state is None else (y, cache, tuple(states))

        def backward(params: tuple[Params, ...], cache: Any, dy: Array, *,
                     xp: ModuleType | None = None, need_dx: bool = True) -> Any:
            caches, sizes = cache
            dx, grads, start = None, [], 0
            for b, p, c, n in zip(parts, params, caches, sizes):
                part = dy if combine == "sum" else dy[:, start:start + n, ...]
                start += n
                d, g = b.backward(p, c, part, xp=xp, need_dx=need_dx)
                grads.append(g)
                if d is not None:
                    dx = d if dx is None else dx + d
            return dx, tuple(grads)

        return Layer(init, forward, backward, "parallel", n_in, n_out, config, bind_, None,
                     shapes, want, out_shape, init_state)

    return build(branches, lambda binding: build(
        [bind(b, binding.scope(i)) for i, b in enumerate(branches)], None))


def _infer(layers: Sequence[Layer]) -> tuple[Shape | None, Shape | None]:
    """The per-sample input and output shapes of ``layers`` in a chain, as far as
    they are known without data; a :class:`SettingError` where two layers
    cannot meet (the ``n_in``/``n_out`` message of dense networks kept)."""
    in_shape: Shape | None = None
    shape: Shape | None = None  # what flows out of the layers so far (None: not known)
    leading = True  # only shape-keeping layers so far: the network takes what comes next
    for i, layer in enumerate(layers):
        want = input_shape(layer)
        if shape is not None and not fits(want, shape):
            assert want is not None
            if len(want) == 1 and len(shape) == 1:
                raise SettingError(
                    f"layer {i} ({layer.name}) takes {want[0]} features but the layer "
                    f"before it gives {shape[0]}; make the sizes agree"
                )
            raise SettingError(
                f"layer {i} ({layer.name}) takes inputs of shape {show_shape(want)} per "
                f"sample but the layer before it gives {show_shape(shape)}; make the "
                "shapes agree"
            )
        if leading and not _keeps_shape(layer):
            in_shape, leading = want, False
        if shape is None:
            shape = want
        elif want is not None:  # sizes the layer fixes fill those not known yet
            shape = tuple(b if b is not None else a for a, b in zip(want, shape))
        if shape is None:
            shape = layer.out_shape(None) if layer.out_shape is not None else \
                None if layer.n_out is None else (layer.n_out,)
        else:
            try:
                shape = output_shape(layer, shape)
            except ShapeError as exc:
                raise SettingError(f"layer {i} ({layer.name}): {exc}") from None
    return in_shape, shape


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
    # the first layer with parameters, fixed by the layers where each says its
    # parameters' shapes as one dict (none: {}); else found in the parameters
    own = [lay.shapes() if lay.shapes is not None else None for lay in layers]
    first_with_params = next((i for i, w in enumerate(own) if w), len(layers)) \
        if all(type(w) is dict for w in own) else None

    def forward(
        params: tuple[Params, ...], x: Array, *, xp: ModuleType | None = None
    ) -> tuple[Array, list[Any]]:
        caches = []
        for (bare, f, _), p in zip(steps, params):
            x, c = f(x, xp=xp) if bare else f(p, x, xp=xp)
            caches.append(c)
        return x, caches

    if any(stateful(lay) for lay in layers):  # the same chain, threading the state

        def forward_state(
            params: tuple[Params, ...], x: Array, *, xp: ModuleType | None = None,
            ctx: Context | None = None,
        ) -> tuple[Array, list[Any], tuple[Any, ...]]:
            if ctx is None:
                raise ArgumentError("this network keeps state or depends on the mode: "
                                    "call its forward with ctx=Context(...)")
            caches, states = [], []
            for i, (lay, p) in enumerate(zip(layers, params)):
                x, c, s = run(lay, p, x, xp, ctx.part(i, ctx.state[i]))
                caches.append(c)
                states.append(s)
            return x, caches, tuple(states)

        forward = forward_state  # type: ignore[assignment]

    def backward(
        params: tuple[Params, ...], cache: list[Any], dy: Array, *,
        xp: ModuleType | None = None, need_dx: bool = True,
    ) -> tuple[Array | None, tuple[Params, ...]]:
        grads: list[Params] = [None] * len(steps)
        # the input gradient of layer j feeds only the layers before it: not needed
        # when none of them has parameters (LeNet's conv after its reshape)
        first = 0 if need_dx else first_with_params if first_with_params is not None else next(
            (i for i, p in enumerate(params) if tree.leaves(p)), len(steps))
        for j in range(last, -1, -1):
            bare, _, b = steps[j]
            if bare:
                dy, grads[j] = b(cache[j], dy, xp=xp), {}
            else:
                dy, grads[j] = b(params[j], cache[j], dy, xp=xp, need_dx=need_dx or j > first)
            if dy is None:  # nothing before this layer needs its gradient
                for i in range(j):
                    grads[i] = params[i]  # a tree without arrays: its (empty) gradients
                return None, tuple(grads)
        return dy, tuple(grads)

    return forward, backward

