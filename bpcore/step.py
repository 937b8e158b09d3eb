"""The step driver: forward, loss, backward, update — written once.

Every way bpcore trains or evaluates a network goes through one
:class:`Driver`: :func:`train_step`, :func:`value_and_grad`, :func:`predict`,
mixed precision (casts at the driver's edges), :func:`bpcore.compile` (the
same step handed to a compiler) and data-parallel training (a gradient
transform between backward and update). One batch through it::

    y, cache = forward(params, x)                 # each layer's forward kernel, in turn
    value, dy = loss(y, t)                        # the loss and dloss/dy
    _, grads = backward(params, cache, dy)        # the delta rule, layer by layer, in reverse
    grads = grad_transform(grads)                 # optional (the all-reduce)
    params, state = update(grads, state, params)  # the optimizer, leaf by leaf

When a step first meets a namespace it *binds* the network, loss and
optimizer to it (:mod:`bpcore.dispatch`): each kernel with a specialization
for that backend is replaced by it, and on backends with mutable arrays the
driver owns a :class:`~bpcore.dispatch.Workspace` whose buffers those
specializations write into from one call to the next. ``fast=False`` keeps
the portable kernels everywhere; the results agree to rounding.

Layer state and modes are threaded here, once, for every layer: a network
with stateful layers (batch norm's running statistics, dropout's random
masks; :mod:`bpcore.layers.core`, "State and modes") trains on a
:class:`TrainState` (:func:`train_state`) in place of the optimizer's state::

    ctx = Context(train=True, state=s.layers, seed=s.seed, step=s.step)
    y, cache, layers = forward(params, x, ctx=ctx)    # each layer reads its part of the state
    ...                                               # loss, backward, update as above
    s = TrainState(opt, layers, s.step + 1, s.seed)   # the optimizer never sees s.layers

so the step counter and the statistics are arrays passed in and returned,
never Python values: under ``jax.jit`` (and ``lax.scan``) they are inputs of
the traced step, and a compiled step draws each step's own dropout mask.
:func:`predict` (and ``Model.evaluate``/``predict``) run the forward pass in
evaluation mode with the layer state given (``state=``); training runs in
training mode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import ModuleType
from typing import Any, NamedTuple

from . import tree
from .backend import Array, backend_name, device_of, is_mutable, namespace
from .checks import (
    Guard,
    check_features,
    check_finite,
    check_params,
    check_targets,
    check_weights,
)
from .dispatch import Binding, Workspace
from .errors import ArgumentError, NonFiniteError, ShapeError
from .layers.core import Context, Layer, bind, stateful
from .losses import LossFunction, get_loss
from .optim import Optimizer

__all__ = [
    "Driver",
    "Edges",
    "TrainState",
    "predict",
    "train_loop",
    "train_state",
    "train_step",
    "value_and_grad",
]

Step = Callable[[Any, Any, Array, Array], tuple[Any, Any, Array]]


def _same(a: Any) -> Any:
    return a


class Edges(NamedTuple):
    """Casts at the driver's edges (mixed precision: :mod:`bpcore.mixed`).

    ``params`` and ``x`` on the way into the forward pass, ``y`` between the
    network's output and the loss, ``dy`` between the loss and the backward
    pass, ``grads`` after it. Each is the identity by default.
    """

    params: Callable[[Any], Any] = _same
    x: Callable[[Array], Array] = _same
    y: Callable[[Array], Array] = _same
    dy: Callable[[Array], Array] = _same
    grads: Callable[[Any], Any] = _same


_NO_EDGES = Edges()


class TrainState(NamedTuple):
    """What a training step threads besides the parameters, for a network with
    layer state (batch norm's running statistics) or modes (dropout).

    ``opt`` is the optimizer's state; ``layers`` the network's layer state (a
    tree shaped as the network, ``{}`` for a layer without state), which no
    optimizer ever sees; ``step`` the number of training steps taken and
    ``seed`` the run's seed, 0-D integer arrays, so that under ``jax.jit`` they
    are inputs of the traced step (dropout's masks are drawn from them).
    Made by :func:`train_state`; a checkpoint stores it whole.
    """

    opt: Any
    layers: Any
    step: Any
    seed: Any


class _Bound(NamedTuple):
    """A network, loss and optimizer bound to one namespace."""

    xp: ModuleType
    forward: Callable[..., tuple[Any, ...]]
    backward: Callable[..., tuple[Array | None, Any]]
    loss: Callable[..., tuple[Array, Array]]
    update: Callable[[Any, Any, Any], tuple[Any, Any]] | None


class Driver:
    """Forward, loss, backward and update of one network, on every backend.

    Parameters
    ----------
    model : Layer
    loss : Loss or str
    optimizer : Optimizer, optional
        Needed for :meth:`step` and :meth:`update`.
    fast : bool
        Use each kernel's specialization for the backend where it has one.
    inplace : bool
        Update the parameters and optimizer state in place (mutable backends).
    workspace : bool
        Let the specializations write into buffers the driver keeps between
        calls. Only for a driver whose intermediates never reach the caller
        (a training step: the gradients are consumed by the update).
    grad_transform : callable, optional
        ``grads -> grads`` between backward and the update.
    """

    def __init__(
        self, model: Layer, loss: LossFunction | str, optimizer: Optimizer | None = None, *,
        fast: bool = True, inplace: bool = False, workspace: bool = False,
        grad_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if not isinstance(model, Layer):
            raise ArgumentError(
                f"the model must be a Layer such as bp.mlp([64, 32, 10]), got "
                f"{type(model).__name__}"
            )
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            hint = f"bp.{optimizer}()" if isinstance(optimizer, str) else "bp.adam()"
            raise ArgumentError(
                f"the optimizer must be an Optimizer such as {hint}, got "
                f"{type(optimizer).__name__} {optimizer!r}"[:200]
            )
        if grad_transform is not None and not callable(grad_transform):
            raise ArgumentError(f"grad_transform must be a function grads -> grads, got "
                                f"{type(grad_transform).__name__}")
        self.model, self.loss, self.optimizer = model, get_loss(loss), optimizer
        self.fast, self.inplace, self.workspace = fast, inplace, workspace
        self.grad_transform = grad_transform
        #: whether the network keeps layer state or depends on the mode
        self.stateful = stateful(model)
        self._bound: dict[ModuleType, _Bound] = {}

    def init_state(self, params: Any, *, seed: int = 0) -> Any:
        """The state a step starts from: the optimizer's (``optimizer.init(params)``)
        for a network without layer state, else a :class:`TrainState` with the
        layers' starting state on the parameters' backend, device and dtype."""
        opt = None if self.optimizer is None else self.optimizer.init(params)
        if not self.stateful:
            return opt
        assert self.model.init_state is not None
        ref = tree.first_array(params)
        xp = namespace(ref)
        device = device_of(ref)
        index = xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
        layers = self.model.init_state(xp=xp, dtype=ref.dtype, device=device)
        return TrainState(opt, layers, xp.asarray(0, dtype=index, device=device),
                          xp.asarray(int(seed), dtype=index, device=device))

    def _context(self, state: Any, train: bool, what: str) -> Context | None:
        """The forward pass's :class:`Context` from a :class:`TrainState` (or, for
        evaluation, a layer-state tree), ``None`` for a stateless network."""
        if not self.stateful:
            return None
        if isinstance(state, TrainState):
            return Context(train, state.layers, state.seed, state.step)
        if state is None or not train:
            if state is None:
                assert self.model.init_state is not None
                state = self.model.init_state()
                if tree.arrays(state):
                    raise ArgumentError(
                        f"this network keeps layer state (running statistics): pass it to "
                        f"{what}, e.g. state=... as the training step returned it"
                    )
            return Context(train, state)
        raise ArgumentError(
            "this network keeps layer state or depends on the mode (batch_norm, dropout): "
            "its training step takes a TrainState, made with bp.train_state(net, opt, params), "
            f"not a {type(state).__name__}"
        )

    def bound(self, xp: ModuleType) -> _Bound:
        """The network, loss and optimizer bound to namespace ``xp`` (built once)."""
        b = self._bound.get(xp)
        if b is None:
            ws = Workspace(xp) if self.workspace and self.fast and is_mutable(xp) else None
            binding = Binding(xp, ws, self.fast)
            net = bind(self.model, binding.scope("net"))
            update = None if self.optimizer is None else self.optimizer.bind(
                xp, inplace=self.inplace, own_grads=True, fast=self.fast,
                ws=None if ws is None else ws.scope("optim"),
            )
            loss = binding.scope("loss").kernel(self.loss.fn)
            b = self._bound[xp] = _Bound(xp, net.forward, net.backward, loss, update)
        return b

    def gradients(
        self, params: Any, x: Array, t: Array, edges: Edges = _NO_EDGES, *,
        weights: Array | None = None, bound: _Bound | None = None, state: Any = None,
    ) -> tuple[Array, Any]:
        """The loss on a batch and its gradient with respect to every parameter
        (``weights``: per-sample weights of the loss, shape ``(batch,)``), in
        training mode; ``state`` is the :class:`TrainState` of a network with
        layer state (the new layer state is dropped: :meth:`step` keeps it)."""
        ctx = self._context(state, True, "value_and_grad")
        value, grads, _ = self._gradients(params, x, t, edges, weights, bound, ctx)
        return value, grads

    def _gradients(
        self, params: Any, x: Array, t: Array, edges: Edges, weights: Array | None,
        bound: _Bound | None, ctx: Context | None,
    ) -> tuple[Array, Any, Any]:
        """Forward, loss, backward: ``(value, grads, new layer state)``."""
        b = self.bound(namespace(x)) if bound is None else bound
        xp = b.xp
        params = edges.params(params)
        if ctx is None:
            y, cache = b.forward(params, edges.x(x), xp=xp)
            layers = None
        else:
            y, cache, layers = b.forward(params, edges.x(x), xp=xp, ctx=ctx)
        if weights is None:
            value, dy = b.loss(edges.y(y), t, xp=xp)
        else:
            value, dy = b.loss(edges.y(y), t, xp=xp, weights=weights)
        _, grads = b.backward(params, cache, edges.dy(dy), xp=xp, need_dx=False)
        return value, edges.grads(grads), layers

    def update(
        self, grads: Any, state: Any, params: Any, *, bound: _Bound | None = None
    ) -> tuple[Any, Any]:
        """The optimizer's update, after the gradient transform."""
        if self.grad_transform is not None:
            grads = self.grad_transform(grads)
        b = self.bound(namespace(tree.first_array(params))) if bound is None else bound
        assert b.update is not None, "a Driver without an optimizer cannot update"
        return b.update(grads, state, params)

    def step(
        self, params: Any, state: Any, x: Array, t: Array, weights: Array | None = None, *,
        bound: _Bound | None = None,
    ) -> tuple[Any, Any, Array]:
        """One training step: ``(params, state, loss_value)``; ``state`` is a
        :class:`TrainState` for a network with layer state (then its layer
        state and step counter move on too)."""
        b = self.bound(namespace(x)) if bound is None else bound
        if not isinstance(state, TrainState):
            ctx = self._context(state, True, "the step")  # an error for a stateful network
            value, grads, _ = self._gradients(params, x, t, _NO_EDGES, weights, b, ctx)
            params, state = self.update(grads, state, params, bound=b)
            return params, state, value
        ctx = self._context(state, True, "the step")
        value, grads, layers = self._gradients(params, x, t, _NO_EDGES, weights, b, ctx)
        params, opt = self.update(grads, state.opt, params, bound=b)
        return params, TrainState(opt, state.layers if ctx is None else layers,
                                  state.step + 1, state.seed), value

    def steps(
        self, params: Any, state: Any, xs: Array, ts: Array, ws: Array | None = None, *,
        bound: _Bound | None = None,
    ) -> tuple[Any, Any, Array]:
        """``k = xs.shape[0]`` training steps, on ``xs[i]``, ``ts[i]`` (and the
        weights ``ws[i]``) in turn: ``(params, state, values)`` with the ``k``
        losses stacked."""
        b = self.bound(namespace(xs)) if bound is None else bound
        values = []
        for i in range(xs.shape[0]):
            w = None if ws is None else ws[i, ...]
            params, state, value = self.step(params, state, xs[i, ...], ts[i, ...], w, bound=b)
            values.append(value)
        return params, state, b.xp.stack(values)

    def on(self, xp: ModuleType) -> Step:
        """:meth:`step` bound to namespace ``xp`` ahead of time: what a compiler
        traces (no look-up by namespace inside the traced function)."""
        return functools.partial(self.step, bound=self.bound(xp))

    def predict(self, params: Any, x: Array, state: Any = None) -> Array:
        """The network's output for ``x``, in evaluation mode (``state``: the
        :class:`TrainState`, or the layer state, of a network with layer state)."""
        b = self.bound(namespace(x))
        ctx = self._context(state, False, "predict")
        if ctx is None:
            y, _ = b.forward(params, x, xp=b.xp)
        else:
            y, _, _ = b.forward(params, x, xp=b.xp, ctx=ctx)
        return y


def train_state(model: Layer, optimizer: Optimizer | None, params: Any, *,
                seed: int = 0) -> Any:
    """The state a training step of ``model`` starts from.

    ``optimizer.init(params)`` for a network without layer state; for one with
    (batch norm, dropout) a :class:`TrainState`: the optimizer's state, the
    layers' starting state (running mean 0, variance 1), the step counter 0
    and ``seed``, which keys dropout's masks (the same seed, the same masks on
    every backend). Pass it to the step as its ``state``.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> net, opt = bp.sequential(bp.dense(2, 4), bp.dropout(0.5), bp.dense(4, 2)), bp.sgd(0.1)
    >>> params = net.init(0)
    >>> state = bp.train_state(net, opt, params, seed=1)
    >>> step = bp.train_step(net, "softmax_cross_entropy", opt)
    >>> params, state, loss = step(params, state, np.ones((3, 2), np.float32), np.arange(3) % 2)
    >>> int(state.step)
    1
    """
    return Driver(model, "mse", optimizer).init_state(params, seed=seed)


def train_step(
    model: Layer, loss: LossFunction | str, optimizer: Optimizer, *,
    validate: bool = True, inplace: bool = False, fast: bool = True,
    grad_transform: Callable[[Any], Any] | None = None,
) -> Step:
    """Build the function that trains ``model`` on one batch.

    Parameters
    ----------
    model : Layer
        A network, e.g. ``bp.mlp([784, 128, 64, 10])``.
    loss : Loss or str
        ``softmax_cross_entropy``, ``binary_cross_entropy``, ``mse`` or ``half_sse``.
    optimizer : Optimizer
        ``bp.sgd(...)``, ``bp.adam(...)``, ...
    validate : bool
        Check every batch (backend, device, shapes, dtypes, labels, NaN/Inf)
        and raise a clear error. A loop that has validated its whole data set
        once (as ``Model.fit`` does) passes ``False`` to skip the per-batch
        reductions. Wrapping the step in your own ``jax.jit`` or
        ``torch.compile`` also needs ``False`` (a check reads values on the host).
    inplace : bool
        Write the new parameters and optimizer state into the arrays passed
        in (``W -= lr * dW``) instead of returning new ones: faster, no
        allocation for the update, but the caller's ``params`` and ``state``
        arrays change. The returned ``params``/``state`` are then the same
        arrays (use them as usual). Needs mutable arrays (NumPy, CuPy,
        PyTorch, array-api-strict); on JAX the update stays functional. The
        parameters must not share arrays with one another.
    fast : bool
        Use each kernel's specialization for the backend where it has one
        (:mod:`bpcore.dispatch`; NumPy: ``out=`` kernels writing into the
        step's workspace), and keep intermediates in buffers reused from one
        call to the next; ``False`` runs the portable kernels. The results
        agree to rounding.
    grad_transform : callable, optional
        ``grads -> grads`` (same structure), applied between backward and
        the optimizer update, e.g. the gradient all-reduce of data-parallel
        training (:meth:`bpcore.distributed.Communicator.grad_transform`).
        It may return new arrays or views of a buffer it owns; the update
        may then use them as scratch space. ``None`` (the default) leaves
        the step as it is.

    Returns
    -------
    step : callable
        ``step(params, state, x, t) -> (params, state, loss_value)`` with
        ``x`` of shape ``(batch, n_in)``; ``loss_value`` is a 0-D array of the
        parameters' backend. Unless ``inplace=True``, nothing passed in is
        modified. Buffers aside, the step keeps no state between calls.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> net = bp.mlp([2, 3, 2], "tanh")
    >>> opt = bp.sgd(lr=0.1)
    >>> step = bp.train_step(net, "softmax_cross_entropy", opt)
    >>> params = net.init(0); state = opt.init(params)
    >>> x = np.array([[0.0, 1.0]], dtype=np.float32); t = np.array([1])
    >>> params, state, value = step(params, state, x, t)
    >>> float(value) > 0
    True
    """
    if optimizer is None:
        raise ArgumentError("train_step needs an optimizer such as bp.adam(); for the "
                            "gradients alone use bp.value_and_grad")
    driver = Driver(model, loss, optimizer, fast=fast, inplace=inplace, workspace=True,
                    grad_transform=grad_transform)
    if not validate:
        return driver.step
    guard = Guard(model, driver.loss.targets, optimizer)

    def step(
        params: Any, state: Any, x: Array, t: Array, weights: Array | None = None
    ) -> tuple[Any, Any, Array]:
        # shapes, dtypes, backends, labels, NaN/Inf in x and t (a saturating
        # activation can hide an infinite input from the loss, not from dW)
        _, leaves = guard.batch(params, x, t, weights)
        guard.state(state, params, leaves)
        b = driver.bound(namespace(x))
        ctx = driver._context(state, True, "the step")
        with _checked_by_the_loss(b.xp):
            value, grads, layers = driver._gradients(params, x, t, _NO_EDGES, weights, b, ctx)
        if not math.isfinite(float(value)):  # a NaN parameter or an overflow:
            explain_non_finite(value, params, x, t)  # say which, before any update
        if isinstance(state, TrainState):
            params, opt = driver.update(grads, state.opt, params, bound=b)
            return params, TrainState(opt, state.layers if ctx is None else layers,
                                      state.step + 1, state.seed), value
        params, state = driver.update(grads, state, params, bound=b)
        return params, state, value

    return step


def train_loop(
    model: Layer, loss: LossFunction | str, optimizer: Optimizer, *,
    validate: bool = True, inplace: bool = False, fast: bool = True,
    grad_transform: Callable[[Any], Any] | None = None,
) -> Step:
    """Build the function that trains ``model`` on ``k`` batches in one call.

    ``loop(params, state, xs, ts) -> (params, state, values)`` with ``xs`` of
    shape ``(k, batch, n_in)`` and ``ts`` ``(k, batch, ...)``: ``k`` steps of
    :func:`train_step` (same keywords), one after another, on ``xs[i]`` and
    ``ts[i]``; ``values`` are the ``k`` losses, shape ``(k,)``. Eagerly this
    is a loop over the step driver (its workspace reused from step to step);
    :func:`bpcore.compile` with ``loop=True`` makes it one program (on JAX one
    ``lax.scan``), which removes the per-step dispatch at small batches. The
    parameters are those of ``k`` single steps, to rounding.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> net, opt = bp.mlp([2, 3, 2], "tanh"), bp.sgd(lr=0.1)
    >>> loop = bp.train_loop(net, "softmax_cross_entropy", opt)
    >>> params = net.init(0); state = opt.init(params)
    >>> xs = np.zeros((5, 4, 2), dtype=np.float32); ts = np.zeros((5, 4), dtype=int)
    >>> params, state, values = loop(params, state, xs, ts)
    >>> values.shape
    (5,)
    """
    driver = Driver(model, loss, optimizer, fast=fast, inplace=inplace, workspace=True,
                    grad_transform=grad_transform)
    if not validate:
        return driver.steps
    kind = driver.loss.targets

    def loop(
        params: Any, state: Any, xs: Array, ts: Array, ws: Array | None = None
    ) -> tuple[Any, Any, Array]:
        check_stacked(params, xs, ts, model.n_in, model.n_out, kind, ws, model=model)
        return driver.steps(params, state, xs, ts, ws)

    return loop


def check_stacked(
    params: Any, xs: Array, ts: Array, n_in: int | None, n_out: int | None, kind: str,
    ws: Array | None = None, *, model: Layer | None = None,
) -> None:
    """The checks of ``k`` stacked batches (``xs`` of shape ``(k, batch, *sample)``)."""
    xp = namespace(xs)
    if xs.ndim < 3 or ts.ndim not in (2, 3) or ts.shape[0] != xs.shape[0]:
        raise ShapeError(
            f"a loop takes k batches stacked: xs of shape (k, batch, features) and targets "
            f"(k, batch) or (k, batch, outputs), got {tuple(xs.shape)} and {tuple(ts.shape)}"
        )
    k, batch = int(xs.shape[0]), int(xs.shape[1])
    if ws is not None and tuple(ws.shape) != (k, batch):
        raise ShapeError(f"the weights of k={k} batches of {batch} have shape (k, batch), "
                         f"not {tuple(ws.shape)}")
    check_batch(params, xp.reshape(xs, (k * batch, *xs.shape[2:])),
                xp.reshape(ts, (k * batch, *ts.shape[2:])), n_in, n_out, kind,
                None if ws is None else xp.reshape(ws, (k * batch,)), model=model)


def check_batch(
    params: Any, x: Array, t: Array, n_in: int | None, n_out: int | None, kind: str,
    weights: Array | None = None, *, model: Layer | None = None,
) -> None:
    """The checks of one batch against the parameters (and network) it will meet."""
    _, ref = check_params(params, model)
    check_features(x, ref, n_in, model=model)
    check_targets(t, ref, x.shape[0], n_out, kind)
    if weights is not None:
        check_weights(weights, ref, x.shape[0])


def _checked_by_the_loss(xp: ModuleType) -> AbstractContextManager[Any]:
    """NumPy's overflow/invalid warnings silenced where the result is checked for
    NaN/Inf right after (and a clear error raised instead); a no-op elsewhere."""
    if backend_name(xp) == "numpy":
        import numpy as np  # the host edge: NumPy's error state, not a kernel

        return np.errstate(over="ignore", invalid="ignore", divide="ignore")
    return nullcontext()


def explain_non_finite(value: Array, params: Any, x: Array, t: Array | None = None) -> None:
    """Raise the :class:`~bpcore.errors.NonFiniteError` that says why the loss
    is ``value`` (NaN or infinite): the inputs, the targets, a parameter, or a
    step that diverged."""
    xp = namespace(x)
    check_finite("x", x)  # NaN/Inf in the inputs
    if t is not None and xp.isdtype(t.dtype, "real floating"):
        check_targets(t, t, t.shape[0], None, "values")
    for path, a in tree.paths(params):
        if tree.is_array(a) and not bool(xp.all(xp.isfinite(a))):
            raise NonFiniteError(
                f"parameter {path} holds NaN or infinite values (the training diverged, or "
                "they were loaded so); start again from finite parameters with a lower "
                "learning rate"
            )
    raise NonFiniteError(
        f"the loss is {float(value)} although the inputs, targets and parameters are finite: "
        "the values overflow in the forward pass; scale the inputs or use float64"
    )


def value_and_grad(
    model: Layer, loss: LossFunction | str, params: Any, x: Array, t: Array, *,
    weights: Array | None = None, validate: bool = True, state: Any = None,
) -> tuple[Array, Any]:
    """The loss on a batch and its gradient with respect to every parameter.

    ``grads`` has the structure of ``params``. Use it to drive an optimizer
    of your own, or to check bpcore's gradients against another library.
    Inside your own ``jax.jit`` or ``torch.compile``, pass ``validate=False``.
    For a network with layer state, ``state`` is its :class:`TrainState`
    (training mode: dropout draws the masks of ``state.step``).
    """
    driver = Driver(model, loss)
    if validate:
        check_batch(params, x, t, model.n_in, model.n_out, driver.loss.targets, weights,
                    model=model)
    with _checked_by_the_loss(namespace(x)) if validate else nullcontext():
        value, grads = driver.gradients(params, x, t, weights=weights, state=state)
    if validate and not bool(namespace(x).isfinite(value)):
        explain_non_finite(value, params, x, t)
    return value, grads


def predict(
    model: Layer, params: Any, x: Array, *, validate: bool = True, state: Any = None
) -> Array:
    """The network's output for ``x`` of shape ``(batch, n_in)`` (logits for a
    classifier with a linear last layer), in evaluation mode; ``state``: the
    :class:`TrainState` (or the layer state) of a network with layer state."""
    if not isinstance(model, Layer):
        raise ArgumentError(f"the model must be a Layer such as bp.mlp([64, 32, 10]), got "
                            f"{type(model).__name__}")
    if validate:
        _, ref = check_params(params, model)
        check_features(x, ref, model.n_in, model=model)
    with _checked_by_the_loss(namespace(x)) if validate else nullcontext():
        y = Driver(model, "mse").predict(params, x, state)
    if validate and not bool(namespace(x).all(namespace(x).isfinite(y))):
        explain_non_finite(y, params, x)
    return y
