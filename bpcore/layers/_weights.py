"""Initial weights of layers whose weight is not a ``(fan_in, fan_out)`` matrix.

A convolution's ``W`` has shape ``(C_out, C_in, *kernel)``; its fans are
PyTorch's (``torch.nn.init._calculate_fan_in_and_fan_out``): ``fan_in = C_in ·
prod(kernel)``, ``fan_out = C_out · prod(kernel)``. The schemes are those of
:mod:`bpcore.init` with these fans, plus ``"torch"``, PyTorch's own default for
``nn.Linear`` and ``nn.Conv*`` (``kaiming_uniform_(a=√5)``): ``W`` and ``b``
both ``U(-1/√fan_in, 1/√fan_in)``. As in :mod:`bpcore.init`, every draw is
made in float64 on the host from the seeded generator, then cast and moved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import Array, get_backend, resolve_dtype
from ..errors import SettingError

__all__ = ["SCHEMES", "check_scheme", "draw", "place"]


def _uniform(bound: float) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]:
    return lambda rng, shape: rng.uniform(-bound, bound, size=shape)


def _normal(std: float) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]:
    return lambda rng, shape: rng.normal(0.0, std, size=shape)


#: ``name -> (fan_in, fan_out) -> host sampler``.
SCHEMES: dict[str, Callable[[int, int], Callable[..., np.ndarray]]] = {
    "glorot_uniform": lambda fi, fo: _uniform(math.sqrt(6.0 / (fi + fo))),
    "glorot_normal": lambda fi, fo: _normal(math.sqrt(2.0 / (fi + fo))),
    "he_uniform": lambda fi, fo: _uniform(math.sqrt(6.0 / fi)),
    "he_normal": lambda fi, fo: _normal(math.sqrt(2.0 / fi)),
    "torch": lambda fi, fo: _uniform(1.0 / math.sqrt(fi)),
}


def check_scheme(init: Any, where: str) -> str:
    """``init`` if it names a scheme, else a SettingError listing them."""
    if not isinstance(init, str) or init not in SCHEMES:
        raise SettingError(
            f"{where}: unknown initializer {init!r}; choose one of {', '.join(SCHEMES)}"
        )
    return init


def place(host: np.ndarray, xp: ModuleType | None, dtype: Any, device: Any) -> Array:
    """A float64 host array cast to ``dtype`` on ``xp`` (the current backend by default)."""
    if xp is None:
        b = get_backend()
        xp, device = b.xp, (b.device if device is None else device)
    dt = resolve_dtype(xp, dtype)
    return xp.asarray(host.astype("float64" if dt == xp.float64 else "float32"), device=device)


def draw(
    init: str, rng: np.random.Generator, shape: tuple[int, ...], bias: int, fan_in: int,
    fan_out: int, *, xp: ModuleType | None, dtype: Any, device: Any,
) -> tuple[Array, Array]:
    """``(W, b)``: ``W`` of ``shape`` drawn by scheme ``init`` with these fans, and
    ``b`` of shape ``(bias,)``: zeros, or for ``"torch"`` drawn as ``W`` is."""
    sample = SCHEMES[init](fan_in, fan_out)
    W = place(sample(rng, shape), xp, dtype, device)
    b_host = sample(rng, (bias,)) if init == "torch" else np.zeros(bias)
    return W, place(b_host, xp, dtype, device)
