"""Optimizers as ``(init, update)`` pairs over parameter trees.

``state = opt.init(params)``; ``params, state = opt.update(grads, state, params)``.
Updates are functional by default: new arrays are returned and nothing passed
in is written to. ``update(..., inplace=True)`` instead writes the new values
into the ``params`` and state arrays themselves (what the hand-written NumPy
loop ``W -= lr * dW`` does), on backends whose arrays are mutable; on JAX it
stays functional. The formulas follow ``torch.optim`` exactly, so results
agree with PyTorch to rounding.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from .backend import Array, namespace
from .fast import fast_module, is_mutable

__all__ = [
    "AdamState",
    "OPTIMIZERS",
    "Optimizer",
    "SGDState",
    "adam",
    "adamw",
    "get_optimizer",
    "momentum",
    "sgd",
    "spec",
]


class Optimizer(NamedTuple):
    """An optimizer: ``init(params) -> state`` and
    ``update(grads, state, params, *, xp=None, inplace=False) -> (params, state)``.

    ``inplace=True`` overwrites the ``params`` and state arrays (mutable
    backends only; JAX stays functional) and returns them; ``grads`` is
    never written to.
    """

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, Any]]
    name: str
    config: dict[str, Any]


#: The hyper-parameters of every optimizer bpcore builds, keyed by its ``update``
#: function: ``("sgd", lr, momentum, nesterov, weight_decay)`` or
#: ``("adam", lr, b1, b2, eps, weight_decay, decoupled)``. A backend fast path
#: (:mod:`bpcore.fast`) reads it through :func:`spec` to run the same arithmetic.
_SPECS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[Any, ...]] = (
    weakref.WeakKeyDictionary()
)


def spec(optimizer: Optimizer) -> tuple[Any, ...] | None:
    """The exact update rule of an optimizer built by bpcore (``None`` for others).

    ``("sgd", lr, momentum, nesterov, weight_decay)`` or
    ``("adam", lr, beta1, beta2, eps, weight_decay, decoupled)``.
    """
    return _SPECS.get(optimizer.update)


def _inplace_ok(inplace: bool, xp: ModuleType | None, tree: Any) -> ModuleType | None:
    """The namespace to update in place with, or ``None`` to update functionally
    (not asked for, or arrays that cannot be written to, as JAX's)."""
    if not inplace:
        return None
    ref = _first_leaf(tree)
    if ref is None:
        return None
    ns = namespace(ref, xp=xp)
    return ns if is_mutable(ns) else None


def _first_leaf(tree: Any) -> Any:
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        for item in tree:
            found = _first_leaf(item)
            if found is not None:
                return found
        return None
    return tree


def _each_leaf(fn: Callable[..., None], *trees: Any) -> None:
    """Call ``fn`` on matching leaves of trees of one structure."""
    first = trees[0]
    if isinstance(first, dict):
        for k in first:
            _each_leaf(fn, *(t[k] for t in trees))
    elif isinstance(first, (list, tuple)):
        for parts in zip(*trees):
            _each_leaf(fn, *parts)
    else:
        fn(*trees)


class SGDState(NamedTuple):
    """SGD's state: the momentum buffers (``None`` without momentum)."""

    velocity: Any


class AdamState(NamedTuple):
    """Adam's state: the step count and the first and second moment estimates."""

    count: Any
    m: Any
    v: Any


def _zeros_like(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _zeros_like(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_zeros_like(v) for v in tree)
    xp = namespace(tree)
    return xp.zeros_like(tree)


def _map_n(fn: Callable[..., tuple[Any, ...]], n: int, *trees: Any) -> tuple[Any, ...]:
    """Apply ``fn`` leaf-wise over trees of one structure; ``fn`` returns n
    values per leaf and the result is n trees of that structure."""
    first = trees[0]
    if isinstance(first, dict):
        outs: tuple[dict[Any, Any], ...] = tuple({} for _ in range(n))
        for k in first:
            for out, r in zip(outs, _map_n(fn, n, *(t[k] for t in trees))):
                out[k] = r
        return outs
    if isinstance(first, (list, tuple)):
        cols = [_map_n(fn, n, *parts) for parts in zip(*trees)]
        return tuple(type(first)(c[i] for c in cols) for i in range(n))
    return fn(*trees)


def _check_hyper(name: str, **values: float) -> None:
    for key, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: {key} must be a finite number >= 0, got {v!r}")


def sgd(
    lr: float = 0.01, momentum: float = 0.0, *,
    nesterov: bool = False, weight_decay: float = 0.0,
) -> Optimizer:
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 decay.

    ``g ← g + λp``; ``v ← μv + g``; ``p ← p − η (g + μv if nesterov else v)``
    (``p ← p − η g`` without momentum), as ``torch.optim.SGD``.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> opt = bp.sgd(lr=0.5)
    >>> p = {"W": np.ones(2)}
    >>> p, s = opt.update({"W": np.ones(2)}, opt.init(p), p)
    >>> p["W"].tolist()
    [0.5, 0.5]
    """
    _check_hyper("sgd", lr=lr, momentum=momentum, weight_decay=weight_decay)
    if nesterov and momentum == 0:
        raise ValueError("sgd: nesterov=True needs momentum > 0, e.g. momentum=0.9")
    lr, mu, wd = float(lr), float(momentum), float(weight_decay)

    def init(params: Any) -> SGDState:
        return SGDState(_zeros_like(params) if mu else None)

    def plain(g: Array, p: Array) -> tuple[Array]:
        if wd:
            g = g + wd * p
        return (p - lr * g,)

    def with_momentum(g: Array, p: Array, v: Array) -> tuple[Array, Array]:
        if wd:
            g = g + wd * p
        v = mu * v + g
        step = g + mu * v if nesterov else v
        return p - lr * step, v

    def in_place(g: Array, p: Array, v: Array | None = None) -> None:
        # p and v are overwritten; g is only read (it may be the caller's).
        if wd:
            g = g + wd * p
        if v is None:
            p -= lr * g
            return
        v *= mu
        v += g
        p -= lr * (g + mu * v if nesterov else v)

    def update(
        grads: Any, state: SGDState, params: Any, *,
        xp: ModuleType | None = None, inplace: bool = False,
    ) -> tuple[Any, SGDState]:
        ns = _inplace_ok(inplace, xp, params)
        if ns is not None:
            fast = fast_module(ns)
            leaf = in_place if fast is None else fast.sgd_leaf(lr, mu, nesterov, wd, own_grad=False)
            if mu:
                _each_leaf(leaf, grads, params, state.velocity)
            else:
                _each_leaf(leaf, grads, params)
            return params, state
        if not mu:
            (new,) = _map_n(plain, 1, grads, params)
            return new, state
        new, vel = _map_n(with_momentum, 2, grads, params, state.velocity)
        return new, SGDState(vel)

    name = "sgd" if not mu else ("nesterov" if nesterov else "momentum")
    _SPECS[update] = ("sgd", lr, mu, nesterov, wd)
    return Optimizer(init, update, name, {
        "name": "sgd", "lr": lr, "momentum": mu, "nesterov": nesterov, "weight_decay": wd,
    })


def momentum(lr: float = 0.01, momentum: float = 0.9, **kwargs: Any) -> Optimizer:
    """SGD with momentum 0.9 by default (see :func:`sgd`)."""
    return sgd(lr, momentum, **kwargs)


def _adam(
    name: str, lr: float, betas: tuple[float, float], eps: float,
    weight_decay: float, decoupled: bool,
) -> Optimizer:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: betas must be two numbers in [0, 1), e.g. (0.9, 0.999), got {betas!r}"
        ) from None
    _check_hyper(name, lr=lr, eps=eps, weight_decay=weight_decay)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"{name}: betas must lie in [0, 1), got {betas!r}")
    lr, eps, wd = float(lr), float(eps), float(weight_decay)

    def init(params: Any) -> AdamState:
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def update(
        grads: Any, state: AdamState, params: Any, *,
        xp: ModuleType | None = None, inplace: bool = False,
    ) -> tuple[Any, AdamState]:
        t = state.count + 1
        step_size = lr / (1.0 - b1**t)
        root_bc2 = (1.0 - b2**t) ** 0.5
        xp_ = xp
        ns = _inplace_ok(inplace, xp, params)
        if ns is not None:
            fast = fast_module(ns)

            def in_place(g: Array, p: Array, m: Array, v: Array) -> None:
                # p, m and v are overwritten; g is only read (it may be the caller's).
                if wd and decoupled:
                    p *= 1.0 - lr * wd
                elif wd:
                    g = g + wd * p
                m *= b1
                m += (1.0 - b1) * g
                v *= b2
                v += (1.0 - b2) * (g * g)
                p -= step_size * (m / (ns.sqrt(v) / root_bc2 + eps))

            apply = in_place if fast is None else fast.adam_leaf(
                lr, b1, b2, eps, wd, decoupled, t, own_grad=False
            )
            _each_leaf(apply, grads, params, state.m, state.v)
            return params, AdamState(t, state.m, state.v)

        def leaf(g: Array, p: Array, m: Array, v: Array) -> tuple[Array, Array, Array]:
            ns = namespace(p, xp=xp_)
            if wd and decoupled:
                p = p * (1.0 - lr * wd)  # AdamW: decay the weights, not the gradient
            elif wd:
                g = g + wd * p
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            return p - step_size * (m / (ns.sqrt(v) / root_bc2 + eps)), m, v

        new, m, v = _map_n(leaf, 3, grads, params, state.m, state.v)
        return new, AdamState(t, m, v)

    _SPECS[update] = ("adam", lr, b1, b2, eps, wd, decoupled)
    return Optimizer(init, update, name, {
        "name": name, "lr": lr, "betas": [b1, b2], "eps": eps, "weight_decay": wd,
    })


def adam(
    lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    *, weight_decay: float = 0.0,
) -> Optimizer:
    """Adam (Kingma & Ba), bias-corrected, as ``torch.optim.Adam``.

    ``m ← β₁m + (1−β₁)g``; ``v ← β₂v + (1−β₂)g²``;
    ``p ← p − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)``. ``weight_decay`` adds ``λp``
    to the gradient (L2); for decoupled decay use :func:`adamw`.
    """
    return _adam("adam", lr, betas, eps, weight_decay, decoupled=False)


def adamw(
    lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    *, weight_decay: float = 0.01,
) -> Optimizer:
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay
    ``p ← p (1 − ηλ)`` before the Adam step, as ``torch.optim.AdamW``."""
    return _adam("adamw", lr, betas, eps, weight_decay, decoupled=True)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "momentum": momentum,
    "adam": adam,
    "adamw": adamw,
}


def get_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``sgd``, ``momentum``, ``adam``, ``adamw``)."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}"
        ) from None
    return factory(**kwargs)
