"""Dropout (Srivastava et al., 2014) with masks reproducible on every backend.

Training mode: each unit is kept with probability ``1 - p`` and scaled by
``1 / (1 - p)`` (inverted dropout, as ``torch.nn.Dropout``)::

    y = x · m / (1 - p),    dx = dy · m / (1 - p),    m = [u ≥ p],  u ~ U[0, 1)

Evaluation mode: ``y = x``, ``dx = dy``. The mask comes from the
counter-based generator of :mod:`bpcore.layers.random`, keyed by the run's
seed and the layer's stream (its position in the network) and counted by the
training step: the same seed, step and network give the same mask on NumPy,
CuPy, PyTorch, JAX and array-api-strict, and a step replayed (a resumed run,
a diverged batch re-run) draws the same mask again. The unit is dropped when
its 32-bit word is below ``round(p · 2³²)``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ..backend import Array, device_of, namespace
from ..errors import SettingError
from ..values import real
from .core import Context, Layer, Params
from .random import random_bits

__all__ = ["dropout", "dropout_backward", "dropout_forward", "dropout_mask"]


def dropout_mask(
    shape: tuple[int, ...], p: float, *, seed: Any, stream: int, step: Any, xp: ModuleType,
    device: Any = None,
) -> Array:
    """The boolean keep-mask of ``shape``: ``True`` where the unit is kept
    (probability ``1 - p``)."""
    n = math.prod(shape)
    bits = random_bits(n, seed=seed, stream=stream, step=step, xp=xp, device=device)
    threshold = min(round(p * 2.0**32), 2**32 - 1)
    return xp.reshape(bits >= threshold, shape)


def dropout_forward(
    x: Array, *, p: float, train: bool, seed: Any = 0, stream: int = 0, step: Any = 0,
    xp: ModuleType | None = None,
) -> tuple[Array, Array | None]:
    """``y = where(m, x / (1 - p), 0)`` in training (the cache is the mask ``m``),
    ``y = x`` in evaluation (the cache is ``None``)."""
    xp = namespace(x, xp=xp)
    if not train or p == 0.0:
        return x, None
    keep = dropout_mask(tuple(x.shape), p, seed=seed, stream=stream, step=step, xp=xp,
                        device=device_of(x))
    zero = xp.zeros((), dtype=x.dtype, device=device_of(x))
    return xp.where(keep, x * (1.0 / (1.0 - p)), zero), keep


def dropout_backward(
    keep: Array | None, dy: Array, *, p: float, xp: ModuleType | None = None
) -> Array:
    """``dx = where(m, dy / (1 - p), 0)`` (``dx = dy`` when nothing was dropped)."""
    if keep is None:
        return dy
    xp = namespace(dy, xp=xp)
    zero = xp.zeros((), dtype=dy.dtype, device=device_of(dy))
    return xp.where(keep, dy * (1.0 / (1.0 - p)), zero)


def _no_params(rng: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Params:
    return {}


def _no_state(*, xp: Any = None, dtype: Any = None, device: Any = None) -> Params:
    return {}


def dropout(p: float = 0.5) -> Layer:
    """A dropout layer: in training, each unit zeroed with probability ``p`` and the
    rest scaled by ``1/(1-p)``; in evaluation, the identity (see the module).

    Its layer state is empty (``{}``); it reads the mode, the seed and the step
    counter from the step's :class:`~bpcore.layers.core.Context`.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> from bpcore.layers import Context
    >>> layer = bp.dropout(0.5)
    >>> y, _, _ = layer.forward({}, np.ones((1, 8)), ctx=Context(train=False))
    >>> y.tolist()
    [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    """
    rate = real(p, "dropout(): p")
    if not 0.0 <= rate < 1.0:
        raise SettingError(f"dropout(): p must lie in [0, 1), got {p!r}")

    def forward(params: Params, x: Array, *, xp: ModuleType | None = None,
                ctx: Context | None = None) -> tuple[Array, Array | None, Params]:
        if ctx is None:
            raise SettingError("dropout needs the step's context (training or evaluation, the "
                               "step counter): run it through the step driver")
        y, keep = dropout_forward(x, p=rate, train=ctx.train, seed=ctx.seed, stream=ctx.stream,
                                  step=ctx.step, xp=xp)
        return y, keep, ctx.state

    def backward(params: Params, cache: Array | None, dy: Array, *,
                 xp: ModuleType | None = None, need_dx: bool = True) -> tuple[Array, Params]:
        return dropout_backward(cache, dy, p=rate, xp=xp), {}

    return Layer(_no_params, forward, backward, "dropout", None, None,
                 {"name": "dropout", "p": rate}, None, None, dict, None, None, _no_state)
