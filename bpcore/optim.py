"""Optimizers as ``(init, update)`` pairs over parameter trees.

``state = opt.init(params)``; ``params, state = opt.update(grads, state, params)``.
Updates are functional by default: new arrays are returned and nothing passed
in is written to. ``update(..., inplace=True)`` instead writes the new values
into the ``params`` and state arrays themselves (what the hand-written NumPy
loop ``W -= lr * dW`` does), on backends whose arrays are mutable; on JAX it
stays functional. The formulas follow ``torch.optim`` exactly, so results
agree with PyTorch to rounding.

Each optimizer carries its rule as a typed value (:class:`SGDRule`,
:class:`AdamRule`, in :attr:`Optimizer.rule`); the update of one parameter
is one portable kernel (:func:`sgd_update`, :func:`adam_update`), with its
in-place NumPy specialization written beside it.

Every optimizer takes ``clip_norm=``: the gradients are first rescaled to a
global L2 norm of at most ``clip_norm`` (:func:`clip_by_global_norm`, as
``torch.nn.utils.clip_grad_norm_``), the usual guard against the exploding
gradients of recurrent networks. The same function serves as the step
driver's ``grad_transform`` for an optimizer of your own.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from . import cuda, tree
from .backend import Array, is_mutable, namespace
from .dispatch import Workspace, cupy_kernels_enabled, specialization, specializes
from .errors import BpcoreError
from .values import real

__all__ = [
    "AdamRule",
    "AdamState",
    "HyperParameterError",
    "OPTIMIZERS",
    "Optimizer",
    "SGDRule",
    "SGDState",
    "adam",
    "adam_scalars",
    "adam_update",
    "adamw",
    "clip_by_global_norm",
    "get_optimizer",
    "global_norm",
    "momentum",
    "sgd",
    "sgd_update",
]

Update = Callable[[Any, Any, Any], tuple[Any, Any]]


class HyperParameterError(BpcoreError, ValueError):
    """An optimizer's hyper-parameter is not a valid number."""


class SGDRule(NamedTuple):
    """SGD's hyper-parameters (``torch.optim.SGD``'s names)."""

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


class AdamRule(NamedTuple):
    """Adam's hyper-parameters; ``decoupled`` is AdamW's weight decay."""

    lr: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False


class SGDState(NamedTuple):
    """SGD's state: the momentum buffers (``None`` without momentum)."""

    velocity: Any


class AdamState(NamedTuple):
    """Adam's state: the step count and the first and second moment estimates."""

    count: Any
    m: Any
    v: Any


# --------------------------------------------------------------------------
# the update of one parameter: portable kernels, their specializations beside them


def sgd_update(
    rule: SGDRule, g: Array, p: Array, v: Array | None = None, *, xp: ModuleType | None = None
) -> tuple[Array, Array | None]:
    """One SGD step for parameter ``p`` with gradient ``g`` (and velocity ``v``).

    ``g ← g + λp``; ``v ← μv + g``; ``p ← p − η (g + μv if nesterov else v)``
    (``p ← p − η g`` without momentum), as ``torch.optim.SGD``.

    Returns
    -------
    (p, v) : the new parameter and velocity (``None`` without momentum).
    """
    lr, mu, nesterov, wd = rule
    if wd:
        g = g + wd * p
    if v is None:
        return p - lr * g, None
    v = mu * v + g
    return p - lr * (g + mu * v if nesterov else v), v


@specializes(sgd_update, "numpy")
def _sgd_update_numpy(
    rule: SGDRule, g: Array, p: Array, v: Array | None = None, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array | None]:
    """:func:`sgd_update` with ``out=`` ufuncs: the new ``p`` and ``v`` are written
    into ``out`` (by default ``p`` and ``v`` themselves: **in place**) and
    returned. With ``scratch`` the gradient's buffer holds the temporaries (no
    allocation); otherwise ``g`` is only read. The new ``p`` may go into
    ``g``'s own buffer (``out=(g, ...)``: the functional step's lending).
    Without it a step takes 30.1% longer (seed network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    lr, mu, nesterov, wd = rule
    p_out, v_out = (p, v) if out is None else (*out, None)[:2]
    if wd:
        decayed = np.multiply(p, wd)
        g, scratch = np.add(g, decayed, out=decayed), True
    step = g
    if v is not None:
        v = np.add(np.multiply(v, mu, out=v_out), g, out=v_out)
        step = np.add(g, np.multiply(v, mu), out=g if scratch else None) if nesterov else v
    np.subtract(p, np.multiply(step, lr, out=g if scratch else None), out=p_out)
    return p_out, v


@specializes(sgd_update, "torch")
def _sgd_update_torch(
    rule: SGDRule, g: Array, p: Array, v: Array | None = None, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array | None]:
    """:func:`sgd_update` with PyTorch's fused ``add(..., alpha=)``, into ``out``
    (by default ``p`` and ``v``: **in place**); ``g`` is only read.
    Without it a step takes 46.2% longer (deep network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    torch = sys.modules["torch"]
    lr, mu, nesterov, wd = rule
    p_out, v_out = (p, v) if out is None else (*out, None)[:2]
    if wd:
        g = torch.add(g, p, alpha=wd)
    step = g
    if v is not None:
        v = torch.add(torch.mul(v, mu, out=v_out), g, out=v_out)
        step = torch.add(g, v, alpha=mu) if nesterov else v
    torch.add(p, step, alpha=-lr, out=p_out)
    return p_out, v


cuda.elementwise("sgd", "T g, T lr, T wd, int32 use_wd", "T p", """
    T gg = use_wd ? g + wd * p : g;
    p = p - lr * gg;
""", ("lr", "wd", "use_wd"))
cuda.elementwise(
    "sgd_momentum", "T g, T lr, T mu, T wd, int32 use_wd, int32 nesterov", "T p, T v", """
    T gg = use_wd ? g + wd * p : g;
    v = mu * v + gg;
    T s = nesterov ? gg + mu * v : v;
    p = p - lr * s;
""", ("lr", "mu", "wd", "use_wd", "nesterov"))


@specializes(sgd_update, "cupy", enabled=cupy_kernels_enabled)
def _sgd_update_cupy(
    rule: SGDRule, g: Array, p: Array, v: Array | None = None, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array | None]:
    """:func:`sgd_update` in one CUDA kernel per parameter, into ``out`` (by
    default ``p`` and ``v``: **in place**); ``g`` is only read."""
    lr, mu, nesterov, wd = rule
    if out is not None:
        p, v = _copied_into(out, (p, v))
    if v is None:
        cuda.launch("sgd", g, lr, wd, int(bool(wd)), p)
    else:
        cuda.launch("sgd_momentum", g, lr, mu, wd, int(bool(wd)), int(nesterov), p, v)
    return p, v


def adam_scalars(rule: AdamRule, count: Any) -> tuple[Any, Any]:
    """Adam's bias corrections at step ``count``: ``(η / (1 − β₁ᵗ), √(1 − β₂ᵗ))``."""
    return rule.lr / (1.0 - rule.b1**count), (1.0 - rule.b2**count) ** 0.5


def adam_update(
    rule: AdamRule, scalars: tuple[Any, Any], g: Array, p: Array, m: Array, v: Array, *,
    xp: ModuleType | None = None,
) -> tuple[Array, Array, Array]:
    """One Adam(W) step for parameter ``p`` (Kingma & Ba, bias-corrected).

    ``m ← β₁m + (1−β₁)g``; ``v ← β₂v + (1−β₂)g²``;
    ``p ← p − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)``, as ``torch.optim.Adam``.
    Weight decay adds ``λp`` to ``g`` (Adam, L2) or, ``decoupled`` (AdamW),
    first decays the weights: ``p ← p (1 − ηλ)``. ``scalars`` are
    :func:`adam_scalars` of the step count.

    Returns
    -------
    (p, m, v) : the new parameter and moments.
    """
    xp = namespace(p, xp=xp)
    step_size, root_bc2 = scalars
    if rule.weight_decay and rule.decoupled:
        p = p * (1.0 - rule.lr * rule.weight_decay)
    elif rule.weight_decay:
        g = g + rule.weight_decay * p
    m = rule.b1 * m + (1.0 - rule.b1) * g
    v = rule.b2 * v + (1.0 - rule.b2) * (g * g)
    return p - step_size * (m / (xp.sqrt(v) / root_bc2 + rule.eps)), m, v


@specializes(adam_update, "numpy")
def _adam_update_numpy(
    rule: AdamRule, scalars: tuple[Any, Any], g: Array, p: Array, m: Array, v: Array, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array, Array]:
    """:func:`adam_update` with ``out=`` ufuncs: the new ``p``, ``m`` and ``v``
    are written into ``out`` (by default ``p``, ``m`` and ``v`` themselves:
    **in place**) and returned. With ``scratch`` the gradient's buffer is the
    only scratch space (no allocation: ``(1-β₂)g²`` is formed as ``((1-β₁)g)² ·
    (1-β₂)/(1-β₁)²``, equal to rounding); otherwise one temporary. The new
    ``p`` may go into ``g``'s own buffer (``out=(g, m', v')``: the functional
    step's lending; AdamW's decayed weights then take a temporary).
    Without it a step takes 40.5% longer (wide network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    step_size, root_bc2 = scalars
    b1, b2, wd = rule.b1, rule.b2, rule.weight_decay
    p_out, m_out, v_out = (p, m, v) if out is None else out
    if wd and rule.decoupled:  # (into a temporary where p_out is g's buffer, read below)
        p = np.multiply(p, 1.0 - rule.lr * wd, out=None if p_out is g else p_out)
    elif wd:
        g = np.add(g, np.multiply(p, wd), out=g if scratch else None)
        scratch = True
    s = g if scratch else np.empty_like(g)
    np.multiply(g, 1.0 - b1, out=s)  # s = (1-b1) g
    m = np.add(np.multiply(m, b1, out=m_out), s, out=m_out)
    np.multiply(s, s, out=s)  # s = (1-b1)^2 g^2
    np.multiply(s, (1.0 - b2) / (1.0 - b1) ** 2, out=s)  # s = (1-b2) g^2
    v = np.add(np.multiply(v, b2, out=v_out), s, out=v_out)
    np.sqrt(v, out=s)
    np.divide(s, root_bc2, out=s)
    np.add(s, rule.eps, out=s)
    np.divide(m, s, out=s)
    np.multiply(s, step_size, out=s)
    np.subtract(p, s, out=p_out)
    return p_out, m, v


@specializes(adam_update, "torch")
def _adam_update_torch(
    rule: AdamRule, scalars: tuple[Any, Any], g: Array, p: Array, m: Array, v: Array, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array, Array]:
    """:func:`adam_update` with PyTorch's fused ``lerp``, ``addcmul`` and
    ``addcdiv`` (seven passes, as ``torch.optim.Adam``, where the portable form
    takes thirteen), into ``out`` (by default ``p``, ``m`` and ``v``: **in
    place**). With ``scratch`` the gradient's buffer holds the denominator.
    ``lerp`` forms ``m + (1-β₁)(g - m)``: equal to ``β₁m + (1-β₁)g`` to rounding.
    Without it a step takes 32.1% longer (wide network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    torch = sys.modules["torch"]
    step_size, root_bc2 = scalars
    wd = rule.weight_decay
    p_out, m_out, v_out = (p, m, v) if out is None else out
    if wd and rule.decoupled:
        p = torch.mul(p, 1.0 - rule.lr * wd, out=p_out)
    elif wd:
        g, scratch = torch.add(g, p, alpha=wd), True
    m = torch.lerp(m, g, 1.0 - rule.b1, out=m_out)
    v = torch.mul(v, rule.b2, out=v_out).addcmul_(g, g, value=1.0 - rule.b2)
    denom = torch.sqrt(v, out=g if scratch else None).div_(root_bc2).add_(rule.eps)
    torch.addcdiv(p, m, denom, value=-step_size, out=p_out)
    return p_out, m, v


# mode 0: no decay; 1: AdamW (decay the weights); 2: Adam with L2 (decay the gradient).
cuda.elementwise(
    "adam", "T g, T decay, T wd, T b1, T b2, T eps, T step_size, T root_bc2, int32 mode",
    "T p, T m, T v", """
    T gg = g;
    T pp = p;
    if (mode == 1) { pp = pp * decay; } else if (mode == 2) { gg = gg + wd * pp; }
    m = b1 * m + (T(1) - b1) * gg;
    v = b2 * v + (T(1) - b2) * (gg * gg);
    p = pp - step_size * (m / (sqrt(v) / root_bc2 + eps));
""", ("decay", "wd", "b1", "b2", "eps", "step_size", "root_bc2", "mode"))


@specializes(adam_update, "cupy", enabled=cupy_kernels_enabled)
def _adam_update_cupy(
    rule: AdamRule, scalars: tuple[Any, Any], g: Array, p: Array, m: Array, v: Array, *,
    xp: ModuleType | None = None, scratch: bool = False, out: tuple[Any, ...] | None = None,
) -> tuple[Array, Array, Array]:
    """:func:`adam_update` in one CUDA kernel per parameter, into ``out`` (by
    default ``p``, ``m`` and ``v``: **in place**); ``g`` is only read."""
    if out is not None:
        p, m, v = _copied_into(out, (p, m, v))
    step_size, root_bc2 = scalars
    wd = rule.weight_decay
    mode = 0 if not wd else (1 if rule.decoupled else 2)
    cuda.launch("adam", g, 1.0 - rule.lr * wd, wd, rule.b1, rule.b2, rule.eps,
                step_size, root_bc2, mode, p, m, v)
    return p, m, v


def _copied_into(out: tuple[Any, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` copied into the arrays of ``out`` (the kernels update their outputs)."""
    result = []
    for dst, src in zip((*out, None, None), values):
        if src is not None:
            dst[...] = src
        result.append(None if src is None else dst)
    return tuple(result)


# --------------------------------------------------------------------------
# gradient clipping


def global_norm(grads: Any, *, xp: ModuleType | None = None) -> Array:
    """The L2 norm of every array in a tree taken together, ``‖(‖g₁‖, ‖g₂‖, ...)‖₂``.

    A 0-D array of the gradients' backend (the norm of norms, as
    ``torch.nn.utils.clip_grad_norm_`` forms it); a tree without arrays has
    norm ``0.0``.
    """
    leaves = tree.arrays(grads)
    if not leaves:
        return 0.0
    xp = namespace(leaves[0], xp=xp)
    norms = [xp.linalg.vector_norm(g) for g in leaves]
    dtype = xp.result_type(*norms)
    return xp.linalg.vector_norm(xp.stack([xp.astype(n, dtype) for n in norms]))


def clip_by_global_norm(grads: Any, max_norm: float, *, xp: ModuleType | None = None) -> Any:
    """Rescale a tree of gradients to global L2 norm at most ``max_norm``.

    Every array becomes ``g · min(1, max_norm / (‖g‖ + 1e-6))`` with ``‖g‖``
    the :func:`global_norm` of the whole tree, as
    ``torch.nn.utils.clip_grad_norm_`` (the same ``1e-6``; a non-finite norm
    gives non-finite gradients, as torch's default). The direction of the
    update is kept; only its length is capped. Nothing is written in place,
    and nothing is read back to the host (it traces under ``jax.jit``).

    Parameters
    ----------
    grads : tree of arrays (dicts, lists, tuples; see :mod:`bpcore.tree`)
    max_norm : float
        Positive.

    Returns
    -------
    grads : a tree of ``grads``'s structure

    Examples
    --------
    Every optimizer takes it as ``clip_norm=``; for the step driver's
    ``grad_transform`` (any optimizer) bind ``max_norm``:

    >>> import functools, numpy as np, bpcore as bp
    >>> grads = {"W": np.full(4, 3.0), "b": np.full(4, 4.0)}  # norms 6 and 8
    >>> float(global_norm(grads))
    10.0
    >>> clipped = clip_by_global_norm(grads, 5.0)
    >>> round(float(global_norm(clipped)), 5), np.round(clipped["W"], 5).tolist()
    (5.0, [1.5, 1.5, 1.5, 1.5])
    >>> clip = functools.partial(clip_by_global_norm, max_norm=1.0)
    >>> step = bp.train_step(bp.mlp([2, 1]), "mse", bp.sgd(0.1), grad_transform=clip)
    """
    limit = _clip_norm("clip_by_global_norm", max_norm)
    if limit is None:
        raise HyperParameterError("clip_by_global_norm: max_norm must be a number > 0, got None")
    leaves = tree.arrays(grads)
    if not leaves:
        return grads
    xp = namespace(leaves[0], xp=xp)
    norm = global_norm(grads, xp=xp)
    scale = xp.clip(limit / (norm + 1e-6), max=1.0)  # the 1e-6 is torch's
    return tree.map_arrays(lambda g: g * xp.astype(scale, g.dtype), grads)


# --------------------------------------------------------------------------
# the optimizer over a whole tree


class Optimizer(NamedTuple):
    """An optimizer: ``init(params) -> state`` and
    ``update(grads, state, params, *, xp=None, inplace=False) -> (params, state)``.

    ``inplace=True`` overwrites the ``params`` and state arrays (mutable
    backends only; JAX stays functional) and returns them; ``grads`` is
    never written to. ``rule`` is the typed description of bpcore's own
    optimizers (``None`` for one of your own, which the step driver then
    calls through ``update``); ``clip_norm`` the global gradient norm the
    update clips to first (``None``: no clipping; see :func:`clip_by_global_norm`).
    """

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, Any]]
    name: str
    config: dict[str, Any]
    rule: SGDRule | AdamRule | None = None
    clip_norm: float | None = None

    def bind(
        self, xp: ModuleType, *, inplace: bool = False, own_grads: bool = False,
        fast: bool = True, ws: Workspace | None = None,
    ) -> Update:
        """``update(grads, state, params) -> (params, state)`` for namespace ``xp``,
        with the rule's specialization for it chosen now.

        ``own_grads`` says the gradients belong to the caller of the update
        alone (the step driver's), so they may serve as scratch space. ``ws``
        is the step driver's workspace: where it lends (NumPy), a functional
        update takes its new arrays from it and lends them to the caller, a
        new parameter going into its gradient's buffer when that is one of
        the workspace's (see :class:`~bpcore.dispatch.Workspace`).
        """
        if self.rule is None:
            kwargs = {"inplace": True} if inplace else {}
            return lambda g, s, p: self.update(g, s, p, xp=xp, **kwargs)
        update = _bind(self.rule, xp, inplace=inplace, own_grads=own_grads, fast=fast, ws=ws)
        return update if self.clip_norm is None else _clipped(update, self.clip_norm, xp)


def _clipped(update: Update, max_norm: float, xp: ModuleType | None) -> Update:
    """``update`` applied to the gradients clipped to global norm ``max_norm``."""

    def clipped_update(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
        return update(clip_by_global_norm(grads, max_norm, xp=xp), state, params)

    return clipped_update


#: The trees an update pairs, for :func:`bpcore.tree.aligned`'s errors.
_ADAM_TREES = ("parameters", "gradients", "first moments (state.m)",
               "second moments (state.v)")
_SGD_TREES = ("parameters", "gradients", "momentum buffers (state.velocity)")


def _bind(
    rule: SGDRule | AdamRule, xp: ModuleType, *, inplace: bool, own_grads: bool, fast: bool,
    ws: Workspace | None = None,
) -> Update:
    """The tree-wide update of ``rule`` on namespace ``xp`` (see :meth:`Optimizer.bind`)."""
    adam = isinstance(rule, AdamRule)
    kernel: Callable[..., Any] = adam_update if adam else sgd_update
    special = specialization(kernel, xp) if fast else None
    mutable = is_mutable(xp)
    # functional with a specialization: the results go into new arrays (no copies),
    # lent by the workspace where it lends
    fresh = special is not None and not inplace
    lender = ws if fresh and ws is not None and ws.lends else None

    def write_back(a: Array, new: Array) -> Array:
        a[...] = new
        return a

    def leaf(args: tuple[Any, ...], g: Array, p: Array, *slots: Array) -> tuple[Any, ...]:
        if special is not None:
            out = tuple(xp.empty_like(a) for a in (p, *slots)) if fresh else None
            return tuple(special(rule, *args, g, p, *slots, xp=xp, scratch=own_grads, out=out))
        new = kernel(rule, *args, g, p, *slots, xp=xp)
        if inplace and mutable:
            return tuple(write_back(a, b) for a, b in zip((p, *slots), new))
        return new

    # the arrays passed in are the arrays returned: no tree to rebuild
    same_arrays = inplace and (special is not None or mutable)

    def update(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
        # Gradients and state are paired with the parameters by path, not by
        # position: dict keys may come in another order (a JAX pytree sorts them).
        if adam:
            count = state.count + 1
            args: tuple[Any, ...] = (adam_scalars(rule, count),)  # type: ignore[arg-type]
            rows = tree.aligned(params, grads, state.m, state.v, names=_ADAM_TREES)
        elif state.velocity is not None:
            args, rows = (), tree.aligned(params, grads, state.velocity, names=_SGD_TREES)
        else:
            args, rows = (), tree.aligned(params, grads, names=_SGD_TREES)
        n_slots = len(rows[0]) - 2 if rows else (2 if adam else int(state.velocity is not None))
        if special is not None and inplace:  # the hot path: straight to the kernel
            for p, g, *slots in rows:
                special(rule, *args, g, p, *slots, scratch=own_grads)
            return params, (AdamState(count, state.m, state.v) if adam else state)
        if lender is not None and special is not None:  # the new p into g's buffer
            outs = lender.outputs(rows, own_grads)
            out = [special(rule, *args, r[1], r[0], *r[2:], scratch=own_grads, out=o)
                   for r, o in zip(rows, outs)]
            lender.lend(*[a for o in out for a in o])
        else:
            out = [leaf(args, g, p, *slots) for p, g, *slots in rows]
        if same_arrays:
            new_params, new_slots = params, [state.m, state.v] if adam else [state.velocity]
        else:
            new_params = tree.replace(params, [o[0] for o in out])
            new_slots = [tree.replace(params, [o[i] for o in out])
                         for i in range(1, 1 + n_slots)] or [None]
        if adam:
            return new_params, AdamState(count, *new_slots)
        return new_params, SGDState(new_slots[0])

    return update


def _zeros_like(params: Any) -> Any:
    return tree.map_arrays(lambda a: namespace(a).zeros_like(a), params)


def _number(name: str, key: str, value: Any, *, below: float | None = None) -> float:
    """A finite real number ``>= 0`` (and ``< below``) as a float, or a clear error."""
    number = real(value, f"{name}: {key}", error=HyperParameterError)
    if not math.isfinite(number) or number < 0 or (below is not None and number >= below):
        bound = f" and < {below:g}" if below is not None else ""
        raise HyperParameterError(
            f"{name}: {key} must be a finite number >= 0{bound}, got {value!r}"
        )
    return number


def _clip_norm(name: str, value: Any) -> float | None:
    """``clip_norm`` checked: ``None`` or a finite number > 0."""
    if value is None:
        return None
    number = _number(name, "clip_norm", value)
    if number == 0:
        raise HyperParameterError(
            f"{name}: clip_norm must be > 0 (or None for no clipping), got {value!r}"
        )
    return number


def _make(
    rule: SGDRule | AdamRule, name: str, config: dict[str, Any], clip_norm: Any = None
) -> Optimizer:
    adam = isinstance(rule, AdamRule)
    clip = _clip_norm(config["name"], clip_norm)
    if clip is not None:
        config = {**config, "clip_norm": clip}  # absent when None: older configs unchanged

    def init(params: Any) -> Any:
        if isinstance(rule, AdamRule):
            return AdamState(0, _zeros_like(params), _zeros_like(params))
        return SGDState(_zeros_like(params) if rule.momentum else None)

    def update(
        grads: Any, state: Any, params: Any, *,
        xp: ModuleType | None = None, inplace: bool = False,
    ) -> tuple[Any, Any]:
        ref = tree.first_array(params)
        if ref is None:
            return params, (AdamState(state.count + 1, state.m, state.v) if adam else state)
        xp = namespace(ref, xp=xp)
        if clip is not None:
            grads = clip_by_global_norm(grads, clip, xp=xp)
        return _bind(rule, xp, inplace=inplace, own_grads=False, fast=True)(grads, state, params)

    return Optimizer(init, update, name, config, rule, clip)


def sgd(
    lr: float = 0.01, momentum: float = 0.0, *,
    nesterov: bool = False, weight_decay: float = 0.0, clip_norm: float | None = None,
) -> Optimizer:
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 decay.

    ``g ← g + λp``; ``v ← μv + g``; ``p ← p − η (g + μv if nesterov else v)``
    (``p ← p − η g`` without momentum), as ``torch.optim.SGD``
    (:func:`sgd_update`). ``clip_norm``: clip the gradients to this global
    norm first (:func:`clip_by_global_norm`).

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> opt = bp.sgd(lr=0.5)
    >>> p = {"W": np.ones(2)}
    >>> p, s = opt.update({"W": np.ones(2)}, opt.init(p), p)
    >>> p["W"].tolist()
    [0.5, 0.5]
    """
    lr = _number("sgd", "lr", lr)
    mu = _number("sgd", "momentum", momentum)
    wd = _number("sgd", "weight_decay", weight_decay)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise HyperParameterError(f"sgd: nesterov must be True or False, got {nesterov!r}")
    if nesterov and mu == 0:
        raise HyperParameterError("sgd: nesterov=True needs momentum > 0, e.g. momentum=0.9")
    nesterov = bool(nesterov)
    name = "sgd" if not mu else ("nesterov" if nesterov else "momentum")
    return _make(SGDRule(lr, mu, nesterov, wd), name, {
        "name": "sgd", "lr": lr, "momentum": mu, "nesterov": nesterov, "weight_decay": wd,
    }, clip_norm)


def momentum(lr: float = 0.01, momentum: float = 0.9, **kwargs: Any) -> Optimizer:
    """SGD with momentum 0.9 by default (see :func:`sgd`)."""
    return sgd(lr, momentum, **kwargs)


def _adam(
    name: str, lr: float, betas: tuple[float, float], eps: float,
    weight_decay: float, decoupled: bool, clip_norm: float | None,
) -> Optimizer:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise HyperParameterError(
            f"{name}: betas must be two numbers in [0, 1), e.g. (0.9, 0.999), got {betas!r}"
        ) from None
    try:
        b1 = _number(name, "betas[0]", b1, below=1.0)
        b2 = _number(name, "betas[1]", b2, below=1.0)
    except HyperParameterError:
        raise HyperParameterError(f"{name}: betas must lie in [0, 1), got {betas!r}") from None
    lr = _number(name, "lr", lr)
    eps = _number(name, "eps", eps)
    wd = _number(name, "weight_decay", weight_decay)
    return _make(AdamRule(lr, b1, b2, eps, wd, decoupled), name, {
        "name": name, "lr": lr, "betas": [b1, b2], "eps": eps, "weight_decay": wd,
    }, clip_norm)


def adam(
    lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    *, weight_decay: float = 0.0, clip_norm: float | None = None,
) -> Optimizer:
    """Adam (Kingma & Ba), bias-corrected, as ``torch.optim.Adam`` (:func:`adam_update`).

    ``m ← β₁m + (1−β₁)g``; ``v ← β₂v + (1−β₂)g²``;
    ``p ← p − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)``. ``weight_decay`` adds ``λp``
    to the gradient (L2); for decoupled decay use :func:`adamw`. ``clip_norm``:
    clip the gradients to this global norm first (:func:`clip_by_global_norm`).

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> opt = bp.adam(lr=0.1, clip_norm=1.0)
    >>> p = {"W": np.zeros(2)}
    >>> p, s = opt.update({"W": np.array([30.0, 40.0])}, opt.init(p), p)
    >>> opt.config["clip_norm"], np.round(s.m["W"], 6).tolist()  # m = 0.1 * g / |g|
    (1.0, [0.06, 0.08])
    """
    return _adam("adam", lr, betas, eps, weight_decay, False, clip_norm)


def adamw(
    lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    *, weight_decay: float = 0.01, clip_norm: float | None = None,
) -> Optimizer:
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay
    ``p ← p (1 − ηλ)`` before the Adam step, as ``torch.optim.AdamW``
    (``clip_norm`` as in :func:`adam`)."""
    return _adam("adamw", lr, betas, eps, weight_decay, True, clip_norm)


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
    except (KeyError, TypeError):
        raise HyperParameterError(
            f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}"
        ) from None
    try:
        return factory(**kwargs)
    except TypeError as exc:  # an unknown or a missing keyword: the signature's own message
        raise HyperParameterError(f"{name}: {exc}; see help(bpcore.{name}) for its "
                                  "hyper-parameters") from None
