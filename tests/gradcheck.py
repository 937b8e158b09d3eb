"""Test helpers shared by the kernel tests: a float64 gradient checker and
checks that an output stayed on its input's backend.

The gradient check compares an analytic gradient ``g`` of a scalar function
``f`` with a central difference along a random direction ``v``::

    (f(x + h v) - f(x - h v)) / (2 h)  ≈  <g, v>

In float64 with ``h = 1e-6`` the two agree to about 1e-9 relative, so the
default ``rtol = 1e-6`` passes a right formula and fails a wrong one (the
kernel tests also check that deliberately wrong gradients fail).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

import bpcore as bp
from bpcore.backend import device_of

__all__ = [
    "assert_like",
    "assert_same_tree",
    "check_gradient",
    "directional_derivatives",
    "host",
    "put",
    "snapshot",
]


def put(xp: ModuleType, a: Any, dtype: str | None = None) -> Any:
    """Move a host array (or nested list) onto backend ``xp`` (its default device)."""
    a = np.asarray(a)
    if dtype is not None:
        a = a.astype(dtype)
    return xp.asarray(a)


def host(a: Any) -> np.ndarray:
    """A float64 NumPy copy of an array of any backend (a 0-D one included)."""
    return np.array(bp.to_numpy(a), dtype=np.float64, copy=True)


def snapshot(tree: Any) -> Any:
    """A NumPy copy of every array in a nest of dicts/lists/tuples (to detect mutation)."""
    return bp.tree.map_arrays(lambda a: np.array(bp.to_numpy(a), copy=True), tree)


def flat_snapshot(tree: Any) -> list[np.ndarray]:
    """NumPy copies of every array in a tree, in traversal order (to detect mutation)."""
    out: list[np.ndarray] = []

    def keep(a: Any) -> Any:
        out.append(np.array(bp.to_numpy(a), copy=True))
        return a

    bp.tree.map_arrays(keep, tree)
    return out


def assert_same_tree(tree: Any, before: Any) -> None:
    """Assert every array in ``tree`` still equals (bit for bit) its ``snapshot``."""
    now = snapshot(tree)
    flat_now: list[np.ndarray] = []
    flat_before: list[np.ndarray] = []
    bp.tree.map_arrays(flat_now.append, now)
    bp.tree.map_arrays(flat_before.append, before)
    for a, b in zip(flat_now, flat_before, strict=True):
        np.testing.assert_array_equal(a, b, strict=True)


def directional_derivatives(
    f: Callable[[np.ndarray], float],
    x: Any,
    grad: Any,
    *,
    seed: int = 0,
    eps: float = 1e-6,
    n_directions: int = 2,
) -> list[tuple[float, float]]:
    """``(numeric, analytic)`` directional derivatives of ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        Maps a float64 host array of ``x``'s shape to a Python float.
    x : array_like
        The point, on the host, float64.
    grad : array
        The analytic gradient ``∂f/∂x`` (any backend), shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    g = host(grad)
    assert g.shape == x.shape, f"gradient shape {g.shape} != input shape {x.shape}"
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_directions):
        v = rng.standard_normal(x.shape)
        numeric = (f(x + eps * v) - f(x - eps * v)) / (2.0 * eps)
        analytic = float(np.sum(g * v))
        out.append((numeric, analytic))
    return out


def check_gradient(
    f: Callable[[np.ndarray], float],
    x: Any,
    grad: Any,
    *,
    seed: int = 0,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    n_directions: int = 2,
) -> None:
    """Assert ``grad`` is the gradient of ``f`` at ``x`` (float64 central differences).

    Raises ``AssertionError`` naming both values when, along some random
    direction, ``|numeric - analytic| > rtol * max(|numeric|, |analytic|) + atol``.
    """
    for numeric, analytic in directional_derivatives(
        f, x, grad, seed=seed, eps=eps, n_directions=n_directions
    ):
        tol = rtol * max(abs(numeric), abs(analytic)) + atol
        assert abs(numeric - analytic) <= tol, (
            f"gradient check failed: central difference {numeric!r} vs "
            f"analytic {analytic!r} (|diff| {abs(numeric - analytic):.3g} > tol {tol:.3g})"
        )


def assert_like(out: Any, like: Any, xp: ModuleType, shape: tuple[int, ...] | None = None) -> None:
    """Assert ``out`` is an array of namespace ``xp``, on ``like``'s device, in its dtype."""
    assert bp.namespace(out) is xp, f"{type(out)} is not an array of {xp.__name__}"
    assert device_of(out) == device_of(like), f"device {device_of(out)} != {device_of(like)}"
    assert out.dtype == like.dtype, f"dtype {out.dtype} != {like.dtype}"
    if shape is not None:
        assert tuple(out.shape) == tuple(shape), f"shape {tuple(out.shape)} != {shape}"
