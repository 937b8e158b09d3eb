"""Backend-specific fast paths behind the portable API, chosen by namespace.

The portable kernels (:mod:`bpcore.layers`, :mod:`bpcore.losses`,
:mod:`bpcore.optim`) are written once against the Array API standard and
never write into an array. On a backend with mutable arrays a training step
can do better: it owns every intermediate it creates (pre-activations,
activations, gradients), so it may compute activations in place, fuse the
loss with its gradient, and reuse a gradient's buffer for the update.

:func:`fast_module` picks the module of fast kernels for a namespace
(NumPy: :mod:`bpcore.fast.numpy`; CuPy: :mod:`bpcore.fast.cupy`, fused CUDA
kernels, not yet verified on a GPU) or ``None``, in which case callers use the
portable kernels; :func:`fused_step` builds a fused training step where the
network, loss and optimizer are all ones the fast module knows. Every fast
kernel is tested against its portable twin on the same inputs
(``tests/test_fast.py``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["cupy_fast_enabled", "fast_module", "fused_step", "is_mutable"]


def is_mutable(xp: ModuleType) -> bool:
    """Whether arrays of namespace ``xp`` can be written in place (not JAX's)."""
    return not array_api_compat.is_jax_namespace(xp)


def fast_module(xp: ModuleType) -> ModuleType | None:
    """The module of fast kernels for namespace ``xp``, or ``None`` (use the portable ones).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> fast_module(xp).__name__
    'bpcore.fast.numpy'
    """
    if array_api_compat.is_numpy_namespace(xp):
        return importlib.import_module(".numpy", __name__)
    if array_api_compat.is_cupy_namespace(xp) and cupy_fast_enabled():
        return importlib.import_module(".cupy", __name__)
    return None


def cupy_fast_enabled() -> bool:
    """Whether the fused CuPy kernels are switched on (``BPCORE_CUPY_FAST=1``).

    Off by default: the kernels in :mod:`bpcore.fast.cupy` have been checked
    on the CPU (host-compiled bodies against the portable kernels) but not yet
    compiled and run on a GPU, so CuPy runs the portable kernels unless this
    opt-in is set. A GPU session runs the ``gpu`` tests with it set.
    """
    return os.environ.get("BPCORE_CUPY_FAST", "") == "1"


def fused_step(
    xp: ModuleType, model: Any, loss: Any, optimizer: Any, *, inplace: bool,
    grad_transform: Callable[[Any], Any] | None = None,
) -> Callable[..., tuple[Any, Any, Any]] | None:
    """A fused ``step(params, state, x, t)`` for namespace ``xp``, or ``None``.

    ``None`` means there is no fast path for this backend or for this
    network (a layer, loss or optimizer the fast module does not know); the
    caller then runs the portable kernels. The fused step computes the same
    thing as the portable one, to rounding. ``grad_transform`` (``grads ->
    grads``) runs between backward and the update, as in :func:`bpcore.train_step`.
    """
    module = fast_module(xp)
    if module is None:
        return None
    build: Callable[..., Callable[..., tuple[Any, Any, Any]] | None] = module.build_step
    if grad_transform is None:
        return build(model, loss, optimizer, inplace=inplace)
    return build(model, loss, optimizer, inplace=inplace, grad_transform=grad_transform)
