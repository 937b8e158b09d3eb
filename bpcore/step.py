"""The training step: forward, loss, backward, update — the hot path.

:func:`train_step` binds a network, a loss and an optimizer once and returns
``step(params, state, x, t) -> (params, state, loss)``. Everything that
cannot change between calls (the layer functions, the loss, the optimizer's
hyper-parameters) is resolved when the step is built; a call does the
arithmetic, one namespace look-up (a dict access) and, unless turned off, the
checks of the batch it was given.

On a backend with a fast path (NumPy: :mod:`bpcore.fast.numpy`) the step runs
fused kernels that compute the same thing to rounding while writing into the
intermediates it owns; ``inplace=True`` also updates the parameters and
optimizer state in place, as a hand-written NumPy loop does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backend import Array, namespace
from .checks import check_features, check_params, check_targets
from .fast import fused_step
from .layers.core import Layer
from .losses import Loss, get_loss
from .optim import Optimizer

__all__ = ["predict", "train_step", "value_and_grad"]

Step = Callable[[Any, Any, Array, Array], tuple[Any, Any, Array]]


def train_step(
    model: Layer, loss: Loss | str, optimizer: Optimizer, *,
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
        reductions.
    inplace : bool
        Write the new parameters and optimizer state into the arrays passed
        in (``W -= lr * dW``) instead of returning new ones: faster, no
        allocation for the update, but the caller's ``params`` and ``state``
        arrays change. The returned ``params``/``state`` are then the same
        arrays (use them as usual). Needs mutable arrays (NumPy, CuPy,
        PyTorch, array-api-strict); on JAX the update stays functional. The
        parameters must not share arrays with one another.
    fast : bool
        Use the backend's fused fast path where there is one (NumPy, for
        networks of dense layers and sigmoid/tanh/relu/identity with bpcore's
        losses); ``False`` runs the portable kernels. The results agree to
        rounding.
    grad_transform : callable, optional
        ``grads -> grads`` (same structure), applied between backward and
        the optimizer update, e.g. the gradient all-reduce of data-parallel
        training (:meth:`bpcore.distributed.Communicator.grad_transform`).
        It may return new arrays or views of a buffer it owns; the fused
        NumPy step may then overwrite them. ``None`` (the default) leaves the
        step as it is.

    Returns
    -------
    step : callable
        ``step(params, state, x, t) -> (params, state, loss_value)`` with
        ``x`` of shape ``(batch, n_in)``; ``loss_value`` is a 0-D array of the
        parameters' backend. Unless ``inplace=True``, nothing passed in is
        modified. The step keeps no state between calls.

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
    loss = get_loss(loss)
    forward, backward = model.forward, model.backward
    loss_fn, update = loss.fn, optimizer.update
    n_in, n_out, kind = model.n_in, model.n_out, loss.targets
    update_kwargs = {"inplace": True} if inplace else {}
    # The fused step for each namespace met so far (None: no fast path there).
    fused: dict[Any, Step | None] = {}

    def step(params: Any, state: Any, x: Array, t: Array) -> tuple[Any, Any, Array]:
        if validate:
            _check_batch(params, x, t, n_in, n_out, kind)
        xp = namespace(x)
        if fast:
            try:
                run = fused[xp]
            except KeyError:
                run = fused[xp] = fused_step(
                    xp, model, loss, optimizer, inplace=inplace, grad_transform=grad_transform
                )
            if run is not None:
                return run(params, state, x, t)
        y, cache = forward(params, x, xp=xp)
        value, dy = loss_fn(y, t, xp=xp)
        _, grads = backward(params, cache, dy, xp=xp, need_dx=False)
        if grad_transform is not None:
            grads = grad_transform(grads)
        params, state = update(grads, state, params, xp=xp, **update_kwargs)
        return params, state, value

    return step


def _check_batch(
    params: Any, x: Array, t: Array, n_in: int | None, n_out: int | None, kind: str
) -> None:
    _, ref = check_params(params)
    check_features(x, ref, n_in)
    check_targets(t, ref, x.shape[0], n_out, kind)


def value_and_grad(
    model: Layer, loss: Loss | str, params: Any, x: Array, t: Array, *, validate: bool = True
) -> tuple[Array, Any]:
    """The loss on a batch and its gradient with respect to every parameter.

    ``grads`` has the structure of ``params``. Use it to drive an optimizer
    of your own, or to check bpcore's gradients against another library.
    """
    loss = get_loss(loss)
    if validate:
        _check_batch(params, x, t, model.n_in, model.n_out, loss.targets)
    xp = namespace(x)
    y, cache = model.forward(params, x, xp=xp)
    value, dy = loss.fn(y, t, xp=xp)
    _, grads = model.backward(params, cache, dy, xp=xp, need_dx=False)
    return value, grads


def predict(model: Layer, params: Any, x: Array, *, validate: bool = True) -> Array:
    """The network's output for ``x`` of shape ``(batch, n_in)`` (logits for a
    classifier with a linear last layer)."""
    if validate:
        _, ref = check_params(params)
        check_features(x, ref, model.n_in)
    y, _ = model.forward(params, x, xp=namespace(x))
    return y
