"""Weight initializers, drawn on the host so one seed means one set of weights.

The Array API standard has no random numbers. Every initializer draws in
float64 from a seeded :class:`numpy.random.Generator` on the host, casts to the
requested dtype, then moves the result with ``xp.asarray(..., device=...)``:
the same seed gives bit-identical initial weights on NumPy, CuPy, PyTorch, JAX
and array-api-strict. (This is the host edge, where NumPy is allowed.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .backend import Array, get_backend, resolve_dtype
from .errors import SettingError, ShapeError

__all__ = [
    "INITIALIZERS",
    "as_generator",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "initializer",
    "zeros",
]


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A NumPy ``Generator`` from a seed (an existing generator passes through)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _room(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape``, after checking that a float64 draw of it fits in this machine's memory
    (refused with the estimate before anything is allocated)."""
    need = 8 * math.prod(int(n) for n in shape)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: let NumPy decide
        return shape
    if need > have:
        raise ShapeError(
            f"a weight of shape {tuple(shape)} needs {need / 2**30:,.1f} GiB to initialize but "
            f"this machine has {have / 2**30:,.1f} GiB of memory; use smaller layers"
        )
    return shape


def _place(host: np.ndarray, xp: ModuleType | None, dtype: Any, device: Any) -> Array:
    if xp is None:
        b = get_backend()
        xp, device = b.xp, (b.device if device is None else device)
    dt = resolve_dtype(xp, dtype)
    name = "float64" if dt == xp.float64 else "float32"
    return xp.asarray(host.astype(name), device=device)


def glorot_uniform(
    rng: np.random.Generator, shape: tuple[int, int], *,
    xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
) -> Array:
    """Glorot/Xavier uniform: U(-a, a) with ``a = sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Host generator; the draw is made in float64 and then cast.
    shape : (fan_in, fan_out)
    xp, dtype, device : optional
        Where to create the array; the current backend and float32 by default.

    Examples
    --------
    >>> import numpy as np, bpcore
    >>> W = bpcore.init.glorot_uniform(np.random.default_rng(0), (3, 4))
    >>> W.shape, str(W.dtype)
    ((3, 4), 'float32')
    """
    fan_in, fan_out = shape
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return _place(rng.uniform(-a, a, size=_room(shape)), xp, dtype, device)


def glorot_normal(
    rng: np.random.Generator, shape: tuple[int, int], *,
    xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
) -> Array:
    """Glorot/Xavier normal: N(0, s²) with ``s = sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = shape
    s = math.sqrt(2.0 / (fan_in + fan_out))
    return _place(rng.normal(0.0, s, size=_room(shape)), xp, dtype, device)


def he_uniform(
    rng: np.random.Generator, shape: tuple[int, int], *,
    xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
) -> Array:
    """He/Kaiming uniform: U(-a, a) with ``a = sqrt(6 / fan_in)`` (for ReLU)."""
    a = math.sqrt(6.0 / shape[0])
    return _place(rng.uniform(-a, a, size=_room(shape)), xp, dtype, device)


def he_normal(
    rng: np.random.Generator, shape: tuple[int, int], *,
    xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
) -> Array:
    """He/Kaiming normal: N(0, s²) with ``s = sqrt(2 / fan_in)`` (for ReLU)."""
    s = math.sqrt(2.0 / shape[0])
    return _place(rng.normal(0.0, s, size=_room(shape)), xp, dtype, device)


def zeros(
    rng: np.random.Generator | None, shape: tuple[int, ...], *,
    xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
) -> Array:
    """All zeros (biases). ``rng`` is accepted for a uniform signature and unused."""
    return _place(np.zeros(_room(shape)), xp, dtype, device)


Initializer = Callable[..., Array]

INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "zeros": zeros,
}


def initializer(name_or_fn: str | Initializer) -> Initializer:
    """Look an initializer up by name (a callable passes through)."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise SettingError(
            f"unknown initializer {name_or_fn!r}; choose one of {', '.join(INITIALIZERS)}"
        ) from None
