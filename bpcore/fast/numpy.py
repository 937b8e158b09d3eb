"""NumPy fast paths: in-place activations, a fused softmax cross-entropy,
``out=`` optimizer updates, and a fused training step built from them.

Every kernel here computes what its portable twin computes, to rounding, but
writes into buffers instead of allocating: the functions whose names end in
``_`` overwrite the arrays they are given, so they are only called on arrays
the caller owns (an intermediate the training step created itself, never the
caller's batch or, unless asked for with ``inplace=True``, its parameters).
This is the one place in bpcore that mutates arrays; NumPy is allowed here
because the module is only chosen for NumPy namespaces (:mod:`bpcore.fast`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

__all__ = [
    "adam_leaf",
    "adam_leaf_new",
    "build_step",
    "dense_backward",
    "dense_forward",
    "relu_",
    "relu_backward_",
    "sgd_leaf",
    "sgd_leaf_new",
    "sigmoid_",
    "sigmoid_backward_",
    "softmax_cross_entropy_labels_",
    "tanh_",
    "tanh_backward_",
]

Array = np.ndarray

# --------------------------------------------------------------------------
# activations, in place


def sigmoid_(z: Array) -> Array:
    """Overwrite ``z`` with ``sigmoid(z) = 1 / (1 + exp(-z))`` and return it.

    Four passes, no allocation. ``exp(-z)`` overflows to ``inf`` only where
    the true value is below the smallest normal number (z < -88.7 in float32),
    and ``1 / inf = 0`` is then within that of it; the overflow warning is
    silenced for exactly that reason. Elsewhere the relative precision is the
    stable portable kernel's.
    """
    np.negative(z, out=z)
    with np.errstate(over="ignore"):
        np.exp(z, out=z)
    np.add(z, 1.0, out=z)
    np.divide(1.0, z, out=z)
    return z


def sigmoid_backward_(y: Array, dy: Array) -> Array:
    """``dx = dy * y * (1 - y)`` written into ``dy`` (returned); ``y`` is overwritten."""
    np.multiply(dy, y, out=dy)
    np.subtract(1.0, y, out=y)
    np.multiply(dy, y, out=dy)
    return dy


def tanh_(z: Array) -> Array:
    """Overwrite ``z`` with ``tanh(z)`` and return it."""
    return np.tanh(z, out=z)


def tanh_backward_(y: Array, dy: Array) -> Array:
    """``dx = dy * (1 - y²)`` written into ``dy`` (returned); ``y`` is overwritten."""
    np.multiply(y, y, out=y)
    np.subtract(1.0, y, out=y)
    np.multiply(dy, y, out=dy)
    return dy


def relu_(z: Array) -> Array:
    """Overwrite ``z`` with ``max(z, 0)`` (NaN becomes 0, as in the portable
    ``where(x > 0, x, 0)``) and return it."""
    return np.fmax(z, 0.0, out=z)


_SAME_SIZE_UINT = {4: np.uint32, 8: np.uint64}


def relu_backward_(y: Array, dy: Array, mask: Array | None = None) -> Array:
    """``dx = dy`` where ``y > 0``, else 0, written into ``dy`` (returned).

    ``y`` is the ReLU's output: ``y > 0`` exactly where its input was. A masked
    store (``where``, ``copyto(where=)``, ``dy[y <= 0] = 0``) branches on every
    element and mispredicts on half of them (~5 ms per million here); instead
    ``dy``'s bits are ANDed with an all-ones or all-zeros word per element,
    which gives exactly ``where(y > 0, dy, 0)`` (also for inf/NaN in ``dy``)
    about 15x faster. ``mask``, if given, is scratch space: an unsigned array
    of ``dy``'s shape and item size.
    """
    uint = _SAME_SIZE_UINT.get(dy.dtype.itemsize)
    if uint is None or dy.dtype.kind != "f":
        np.copyto(dy, 0.0, where=y <= 0)
        return dy
    if mask is None:
        mask = np.empty(dy.shape, uint)
    np.greater(y, 0, out=mask, casting="unsafe")  # 0 or 1
    np.negative(mask, out=mask)  # 0 or all ones
    bits = dy.view(uint)
    np.bitwise_and(bits, mask, out=bits)
    return dy


# --------------------------------------------------------------------------
# dense layer and loss


def dense_forward(W: Array, b: Array, x: Array) -> Array:
    """``z = x @ W + b`` with the bias added in place into the fresh product."""
    z = np.matmul(x, W)
    np.add(z, b, out=z)
    return z


def dense_backward(
    W: Array, x: Array, dz: Array, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """``(dx, dW, db) = (dz Wᵀ, xᵀ dz, Σ_batch dz)`` (``dx`` is ``None`` unless needed)."""
    dW = np.matmul(x.T, dz)
    db = np.sum(dz, axis=0)
    return (np.matmul(dz, W.T) if need_dx else None), dW, db


def softmax_cross_entropy_labels_(z: Array, labels: Array) -> tuple[Array, Array]:
    """Softmax cross-entropy of logits ``z`` (batch, k) against integer labels.

    Returns ``(value, dz)`` as the portable loss does; ``z`` is overwritten
    and returned as ``dz = (softmax(z) - onehot) / batch``. No one-hot matrix
    is built: the label entries are read and written by index.
    """
    batch = z.shape[0]
    rows = np.arange(batch)
    # log-sum-exp: shift by the row maximum so exp never overflows.
    np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True), out=z)
    picked = z[rows, labels]
    np.exp(z, out=z)
    total = np.add.reduce(z, axis=1, keepdims=True)
    value = -np.add.reduce(picked - np.log(total[:, 0])) / batch
    np.divide(z, total, out=z)
    z[rows, labels] -= 1.0
    np.divide(z, batch, out=z)
    return np.asarray(value), z


# --------------------------------------------------------------------------
# optimizer updates, leaf by leaf (same operation order as bpcore.optim)


def sgd_leaf(
    lr: float, mu: float, nesterov: bool, wd: float, *, own_grad: bool
) -> Callable[..., None]:
    """An in-place SGD update ``leaf(g, p[, v])`` that overwrites ``p`` (and ``v``).

    ``own_grad`` says the gradient ``g`` may be used as scratch space (the
    training step owns the gradients it computes; a caller's are read only).
    """

    def leaf(g: Array, p: Array, v: Array | None = None) -> None:
        owned = own_grad
        if wd:
            if owned:
                np.add(g, np.multiply(p, wd), out=g)
            else:
                g, owned = g + wd * p, True
        if v is None:
            step = g
        else:
            np.multiply(v, mu, out=v)
            np.add(v, g, out=v)
            if nesterov:
                if owned:
                    np.add(g, np.multiply(v, mu), out=g)
                    step = g
                else:
                    step, owned = g + mu * v, True
            else:
                step = v
                if owned:  # scale v into g's buffer, not into v
                    np.multiply(v, lr, out=g)
                    np.subtract(p, g, out=p)
                    return
                owned = False
        if owned:
            np.multiply(step, lr, out=step)
            np.subtract(p, step, out=p)
        else:
            np.subtract(p, lr * step, out=p)

    return leaf


def sgd_leaf_new(lr: float, mu: float, nesterov: bool, wd: float) -> Callable[..., Any]:
    """A functional SGD update ``leaf(g, p[, v]) -> p_new`` or ``(p_new, v_new)``
    that builds the result in the (owned) gradient's buffer; ``p`` and ``v`` are
    not written to."""

    def leaf(g: Array, p: Array, v: Array | None = None) -> Any:
        if wd:
            np.add(g, np.multiply(p, wd), out=g)
        if v is None:
            np.multiply(g, lr, out=g)
            return np.subtract(p, g, out=g)
        v_new = np.multiply(v, mu)
        np.add(v_new, g, out=v_new)
        if nesterov:
            np.add(g, np.multiply(v_new, mu), out=g)
            np.multiply(g, lr, out=g)
        else:
            np.multiply(v_new, lr, out=g)
        return np.subtract(p, g, out=g), v_new

    return leaf


def _adam_scalars(lr: float, b1: float, b2: float, t: int) -> tuple[float, float]:
    return lr / (1.0 - b1**t), (1.0 - b2**t) ** 0.5


def adam_leaf(
    lr: float, b1: float, b2: float, eps: float, wd: float, decoupled: bool, t: int,
    *, own_grad: bool,
) -> Callable[..., None]:
    """An in-place Adam(W) update ``leaf(g, p, m, v)`` for step count ``t`` that
    overwrites ``p``, ``m`` and ``v``.

    With ``own_grad`` the gradient's buffer is the only scratch space (no
    allocation: ``(1-β₂)g²`` is formed as ``((1-β₁)g)² · (1-β₂)/(1-β₁)²``,
    equal to rounding); otherwise one scratch array per leaf.
    """
    step_size, root_bc2 = _adam_scalars(lr, b1, b2, t)
    a1 = 1.0 - b1
    v_scale = (1.0 - b2) / (a1 * a1)

    def owned(g: Array, p: Array, m: Array, v: Array) -> None:
        if wd and decoupled:
            np.multiply(p, 1.0 - lr * wd, out=p)  # AdamW: decay the weights
        elif wd:
            np.add(g, np.multiply(p, wd), out=g)
        np.multiply(g, a1, out=g)  # g <- (1-b1) g
        np.multiply(m, b1, out=m)
        np.add(m, g, out=m)
        np.multiply(g, g, out=g)  # g <- (1-b1)^2 g^2
        np.multiply(g, v_scale, out=g)  # g <- (1-b2) g^2
        np.multiply(v, b2, out=v)
        np.add(v, g, out=v)
        np.sqrt(v, out=g)
        np.divide(g, root_bc2, out=g)
        np.add(g, eps, out=g)
        np.divide(m, g, out=g)
        np.multiply(g, step_size, out=g)
        np.subtract(p, g, out=p)

    if own_grad:
        return owned

    def leaf(g: Array, p: Array, m: Array, v: Array) -> None:
        if wd and decoupled:
            np.multiply(p, 1.0 - lr * wd, out=p)  # AdamW: decay the weights
        elif wd:
            g = g + wd * p
        s = np.multiply(g, 1.0 - b1)
        np.multiply(m, b1, out=m)
        np.add(m, s, out=m)
        np.multiply(g, g, out=s)
        np.multiply(s, 1.0 - b2, out=s)
        np.multiply(v, b2, out=v)
        np.add(v, s, out=v)
        np.sqrt(v, out=s)
        np.divide(s, root_bc2, out=s)
        np.add(s, eps, out=s)
        np.divide(m, s, out=s)
        np.multiply(s, step_size, out=s)
        np.subtract(p, s, out=p)

    return leaf


def adam_leaf_new(
    lr: float, b1: float, b2: float, eps: float, wd: float, decoupled: bool, t: int
) -> Callable[..., tuple[Array, Array, Array]]:
    """A functional Adam(W) update ``leaf(g, p, m, v) -> (p_new, m_new, v_new)``;
    the (owned) gradient is used as scratch, ``p``, ``m``, ``v`` are not written to."""
    step_size, root_bc2 = _adam_scalars(lr, b1, b2, t)

    def leaf(g: Array, p: Array, m: Array, v: Array) -> tuple[Array, Array, Array]:
        if wd and decoupled:
            p = np.multiply(p, 1.0 - lr * wd)
        elif wd:
            np.add(g, np.multiply(p, wd), out=g)
        m_new = np.multiply(m, b1)
        s = np.multiply(g, 1.0 - b1)
        np.add(m_new, s, out=m_new)
        np.multiply(g, g, out=g)
        np.multiply(g, 1.0 - b2, out=g)
        v_new = np.multiply(v, b2)
        np.add(v_new, g, out=v_new)
        np.sqrt(v_new, out=s)
        np.divide(s, root_bc2, out=s)
        np.add(s, eps, out=s)
        np.divide(m_new, s, out=s)
        np.multiply(s, step_size, out=s)
        return np.subtract(p, s, out=s), m_new, v_new

    return leaf


# --------------------------------------------------------------------------
# the fused training step

_DENSE, _SIGMOID, _TANH, _RELU, _IDENTITY = range(5)


def _plan(model: Any) -> list[int] | None:
    """The op codes of a flat sequential network of dense layers and the
    activations this module knows, or ``None``."""
    from ..layers import activations as act
    from ..layers.core import anatomy
    from ..layers.dense import dense_backward, dense_forward

    entry = anatomy(model)
    if entry is None or entry[0] != "sequential":
        return None
    kinds = {
        (act.sigmoid_forward, act.sigmoid_backward): _SIGMOID,
        (act.tanh_forward, act.tanh_backward): _TANH,
        (act.relu_forward, act.relu_backward): _RELU,
        (act.identity_forward, act.identity_backward): _IDENTITY,
    }
    ops = []
    for layer in entry[1]:
        if layer.forward is dense_forward and layer.backward is dense_backward:
            ops.append(_DENSE)
            continue
        part = anatomy(layer)
        kind = None if part is None or part[0] != "activation" else kinds.get(part[1:])
        if kind is None:
            return None
        ops.append(kind)
    return ops


_ACT_FORWARD = {_SIGMOID: sigmoid_, _TANH: tanh_, _RELU: relu_}
_ACT_BACKWARD = {_SIGMOID: sigmoid_backward_, _TANH: tanh_backward_}


class _Workspace(threading.local):
    """Buffers a fused step reuses from one call to the next, one set per thread.

    Allocating the activations and gradients afresh every step costs page
    faults whenever the allocator hands large blocks back to the OS (glibc
    does, depending on its history), so the step writes them into buffers it
    keeps. Nothing in a workspace is ever returned to the caller.
    """

    def __init__(self) -> None:
        self.buffers: dict[Any, Array] = {}

    def get(self, key: Any, shape: tuple[int, ...], dtype: Any) -> Array:
        """The buffer ``key``, (re)allocated if its shape or dtype changed."""
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[key] = np.empty(shape, dtype)
        return buf


def build_step(
    model: Any, loss: Any, optimizer: Any, *, inplace: bool,
    grad_transform: Callable[[Any], Any] | None = None,
) -> Callable[..., tuple[Any, Any, Any]] | None:
    """A fused NumPy ``step(params, state, x, t) -> (params, state, value)``.

    Returns ``None`` unless ``model`` is a flat :func:`~bpcore.sequential` of
    dense layers and sigmoid/tanh/relu/identity activations and ``loss`` is one
    of bpcore's. The step computes what the portable step computes, to
    rounding: activations are computed in place in the fresh pre-activations,
    softmax cross-entropy against integer labels indexes instead of building
    a one-hot matrix, backward works in the fresh gradients, and bpcore's own
    optimizers update from the gradients' buffers. With ``inplace`` the new
    parameters and optimizer state are written into the arrays passed in;
    otherwise nothing passed in is modified. ``grad_transform`` (``grads ->
    grads``, e.g. a gradient all-reduce) runs between backward and the update;
    the update may overwrite the arrays it returns.
    """
    from .. import losses as losses_mod
    from ..optim import AdamState, SGDState, spec

    ops = _plan(model)
    builtin_losses = {lo.fn for lo in losses_mod.LOSSES.values()}
    if ops is None or loss.fn not in builtin_losses:
        return None
    fused_ce = loss.fn is losses_mod.softmax_cross_entropy.fn
    loss_fn, update = loss.fn, optimizer.update
    rule = spec(optimizer)
    update_kwargs = {"inplace": True} if inplace else {}
    n = len(ops)
    dense_at = [k for k, op in enumerate(ops) if op == _DENSE]
    # dx of op k is needed only if a dense layer comes before it.
    first_dense = dense_at[0] if dense_at else n
    act_forward, act_backward = _ACT_FORWARD, _ACT_BACKWARD
    add_reduce = np.add.reduce  # np.sum without its Python wrapper
    # Activations, masks and backward deltas live in buffers reused across calls;
    # the weight gradients too when nothing but this step ever sees them.
    workspace = _Workspace()
    grads_in_workspace = inplace and rule is not None and grad_transform is None

    def forward_backward(params: Any, x: Array, t: Array) -> tuple[Any, list[Any]]:
        buf = workspace.get
        a, free = x, False  # free: owned by this step and cached by no one
        caches: list[Any] = [None] * n
        for k, op in enumerate(ops):
            if op == _DENSE:
                p = params[k]
                W = p["W"]
                caches[k] = a
                dtype = a.dtype if a.dtype == W.dtype else np.result_type(a, W)
                a = np.matmul(a, W, out=buf(k, (a.shape[0], W.shape[1]), dtype))
                np.add(a, p["b"], out=a)
                free = True
            elif op != _IDENTITY:
                if not free:
                    a = np.array(a, copy=True)
                caches[k] = a = act_forward[op](a)
                free = False
        if fused_ce and free and t.ndim == 1 and t.dtype.kind in "iu":
            value, dy = softmax_cross_entropy_labels_(a, t)
        else:
            value, dy = loss_fn(a, t, xp=xp_numpy)  # returns a fresh gradient
        grads: list[Any] = [{}] * n
        for k in range(n - 1, first_dense - 1, -1):
            op = ops[k]
            if op == _DENSE:
                c = caches[k]
                W = params[k]["W"]
                gW = buf(("W", k), W.shape, dy.dtype) if grads_in_workspace else None
                grads[k] = {"W": np.matmul(c.T, dy, out=gW), "b": add_reduce(dy, axis=0)}
                if k > first_dense:
                    dy = np.matmul(dy, W.T, out=buf(("dx", k), c.shape, dy.dtype))
            elif op == _RELU:
                uint = _SAME_SIZE_UINT.get(dy.dtype.itemsize)
                mask = None if uint is None else buf(("mask", k), dy.shape, uint)
                dy = relu_backward_(caches[k], dy, mask)
            elif op != _IDENTITY:
                dy = act_backward[op](caches[k], dy)
        return value, grads

    if grad_transform is not None:
        local_forward_backward = forward_backward

        def forward_backward(params: Any, x: Array, t: Array) -> tuple[Any, list[Any]]:
            value, grads = local_forward_backward(params, x, t)
            return value, list(grad_transform(tuple(grads)))

    def generic_update(grads: list[Any], state: Any, params: Any) -> tuple[Any, Any]:
        return update(tuple(grads), state, params, xp=xp_numpy, **update_kwargs)

    if rule is None:

        def step(params: Any, state: Any, x: Array, t: Array) -> tuple[Any, Any, Any]:
            value, grads = forward_backward(params, x, t)
            params, state = generic_update(grads, state, params)
            return params, state, value

        return step

    if rule[0] == "sgd":
        _, lr, mu, nesterov, wd = rule
        leaf_inplace = sgd_leaf(lr, mu, nesterov, wd, own_grad=True)
        leaf_new = sgd_leaf_new(lr, mu, nesterov, wd)

        def step(params: Any, state: Any, x: Array, t: Array) -> tuple[Any, Any, Any]:
            value, grads = forward_backward(params, x, t)
            velocity = state.velocity
            if inplace:
                for k in dense_at:
                    g, p = grads[k], params[k]
                    if velocity is None:
                        for key in p:
                            leaf_inplace(g[key], p[key])
                    else:
                        v = velocity[k]
                        for key in p:
                            leaf_inplace(g[key], p[key], v[key])
                return params, state, value
            new = list(params)
            new_v = None if velocity is None else list(velocity)
            for k in dense_at:
                g, p = grads[k], params[k]
                if velocity is None:
                    new[k] = {key: leaf_new(g[key], p[key]) for key in p}
                else:
                    v = velocity[k]
                    pairs = {key: leaf_new(g[key], p[key], v[key]) for key in p}
                    new[k] = {key: pv[0] for key, pv in pairs.items()}
                    new_v[k] = {key: pv[1] for key, pv in pairs.items()}  # type: ignore[index]
            state = state if new_v is None else SGDState(tuple(new_v))
            return tuple(new), state, value

        return step

    _, lr, b1, b2, eps, wd, decoupled = rule

    def adam_step(params: Any, state: Any, x: Array, t: Array) -> tuple[Any, Any, Any]:
        value, grads = forward_backward(params, x, t)
        count = state.count + 1
        if inplace:
            leaf = adam_leaf(lr, b1, b2, eps, wd, decoupled, count, own_grad=True)
            for k in dense_at:
                g, p, m, v = grads[k], params[k], state.m[k], state.v[k]
                for key in p:
                    leaf(g[key], p[key], m[key], v[key])
            return params, AdamState(count, state.m, state.v), value
        leaf_new = adam_leaf_new(lr, b1, b2, eps, wd, decoupled, count)
        new, new_m, new_v = list(params), list(state.m), list(state.v)
        for k in dense_at:
            g, p, m, v = grads[k], params[k], state.m[k], state.v[k]
            triples = {key: leaf_new(g[key], p[key], m[key], v[key]) for key in p}
            new[k] = {key: r[0] for key, r in triples.items()}
            new_m[k] = {key: r[1] for key, r in triples.items()}
            new_v[k] = {key: r[2] for key, r in triples.items()}
        return tuple(new), AdamState(count, tuple(new_m), tuple(new_v)), value

    return adam_step
