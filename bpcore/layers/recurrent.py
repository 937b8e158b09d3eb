"""Recurrent layers: Elman RNN (tanh), GRU and LSTM, trained by backpropagation through time.

The network is unrolled in time and every step shares the same weights, so
the backward pass runs the time loop in reverse and *sums* each shared
weight's gradient over the steps (Rumelhart, Hinton & Williams 1986, the
recurrent extension of the delta rule). Everything is written out here; no
backend autograd is used.

The kernels work on batch-first sequences ``x`` of shape ``(batch, time, F)``:

* ``rnn_forward / gru_forward / lstm_forward(params, x, state0=None, *,
  return_sequences=True, reverse=False)`` return ``(y, cache)``;
* ``*_backward(params, cache, dy, *, dh_last=None, need_dx=True, truncate=None)``
  return ``(dx, grads)``;
* :func:`bidirectional_forward` / :func:`bidirectional_backward` run both
  directions of any of the three.

The equations and the parameter layout are PyTorch's (``torch.nn.RNN``,
``torch.nn.GRU``, ``torch.nn.LSTM`` with ``num_layers=1``,
``batch_first=True``), so a torch module's weights load unchanged
(:func:`load_torch_state_dict`)::

    params = {"W_ih": (G*H, F), "W_hh": (G*H, H), "b_ih": (G*H,), "b_hh": (G*H,)}

with ``G = 1`` (RNN), ``3`` (GRU, gates ``r, z, n``) or ``4`` (LSTM, gates
``i, f, g, o``) stacked in that order along the first axis; the second
direction of a bidirectional layer carries the same keys with a
``_reverse`` suffix (torch's ``weight_ih_l0_reverse``).

Conventions shared by every kernel here
---------------------------------------
* **Initial state.** ``state0`` is ``h0`` of shape ``(batch, H)`` for the RNN
  and GRU, and a pair ``(h0, c0)`` for the LSTM (either may be ``None``);
  ``None`` means zeros. A bidirectional layer takes torch's ``(2, batch, H)``.
  When a state is given, ``grads`` also holds its gradient under ``"h0"``
  (and ``"c0"``), beside the parameter keys.
* **Final state.** ``cache.h_n`` (and ``cache.c_n``), ``(batch, H)``, or
  ``(2, batch, H)`` for two directions, for carrying the state across
  batches; its gradient enters the backward as ``dh_last`` (for the LSTM
  ``dh_last`` may be the pair ``(dh_n, dc_n)``).
* **Direction.** ``reverse=True`` reads the sequence from its last step to
  its first (the ``_reverse`` half of a torch bidirectional layer). Outputs
  stay aligned with the inputs (``y[:, t]`` is the state after reading
  ``x[:, t]``) and the final state is the one after reading ``x[:, 0]``.
* **return_sequences.** ``True``: ``y`` is every step's hidden state,
  ``(batch, time, D·H)``; ``False``: the final states only, ``(batch, D·H)``
  (for two directions ``concat(h_n[0], h_n[1])``, not ``y[:, -1]``), and
  ``dy`` is then their gradient.
* **Truncated BPTT.** ``truncate=k`` cuts the gradient every ``k`` steps, in
  reading order: exactly the gradient of running the layer over chunks of
  ``k`` steps with the state carried forward but detached between chunks
  (torch's ``h = h.detach()`` every ``k`` steps; ``c`` too). The initial
  state then gets gradient from the first chunk only; ``k >= time`` is the
  full gradient.

How the time loop is kept cheap
-------------------------------
The cost of a small recurrent layer is the number of array operations per
step and the memory it touches, not the arithmetic, so the kernels keep both
small (measured on the MNIST-1D GRU, benchmarks/e2e/gru_step.py):

* the input projection ``x W_ihᵀ + b`` of every step (and both directions)
  is one matmul before the loop;
* the two directions of a bidirectional layer run in *one* loop, as a
  leading axis ``D = 2`` of batched matmuls (``(D, batch, H) @ (D, H, G·H)``):
  the same number of operations per step as one direction;
* every per-step value stays a small ``(D, batch, ·)`` array: the cache holds
  them as tuples (nothing is stacked but the output), and the backward pass
  adds each step's weight gradients (``d_recᵀ h_{t-1}``, ``d_inᵀ x_t``) into
  small accumulators as it goes. Large ``(time, ...)`` temporaries cost more
  than the arithmetic here: each is fresh memory, page faults included, on
  every call (stacking them and multiplying once made the GRU's backward
  2.7 times slower on NumPy);
* each gate's sigmoid is ``½ tanh(½a) + ½`` (stable: ``tanh`` never
  overflows; exact to rounding), which lets the LSTM form all four gates
  with one ``tanh`` and their derivatives with one formula.

The standard has no in-place writes (and JAX arrays are immutable), so
nothing is written into buffers. Under ``jax.jit`` (:func:`bpcore.compile`)
the Python loops are unrolled into one XLA program.

The layer factories :func:`rnn`, :func:`gru`, :func:`lstm` and
:func:`bidirectional` wrap the kernels in the :class:`~bpcore.layers.core.Layer`
protocol.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, device_of, namespace, to_numpy
from ..errors import ArgumentError, SettingError, ShapeError
from ..init import _place as place
from ..init import as_generator
from .core import Layer, Params, Shape, positive_int, show_shape

__all__ = [
    "GATES",
    "GRUCache",
    "LSTMCache",
    "LAYERS",
    "RNNCache",
    "bidirectional",
    "bidirectional_backward",
    "bidirectional_forward",
    "gru",
    "gru_backward",
    "gru_forward",
    "load_torch_state_dict",
    "lstm",
    "lstm_backward",
    "lstm_forward",
    "rnn",
    "rnn_backward",
    "rnn_forward",
]

#: Gate blocks stacked in ``W_ih``/``W_hh``/``b_ih``/``b_hh`` for each cell kind.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

_KEYS = ("W_ih", "W_hh", "b_ih", "b_hh")
_REVERSE = "_reverse"
_TORCH_NAMES = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0",
                "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}


# --------------------------------------------------------------------------
# caches: the per-step values, one array of shape (D, batch, ...) per step in
# reading order (D = 1, or 2 for a bidirectional layer)

Steps = tuple[Array, ...]


class RNNCache(NamedTuple):
    """What the RNN's backward needs."""

    x: Array  # (batch, time, F) the input, in time order
    h0: Array  # (D, batch, H) the initial states (zeros when none was given)
    h: Steps  # per step (D, batch, H): the hidden states
    backwards: tuple[bool, ...]  # per direction: reads the last step first
    has_state: bool  # an initial state was given (its gradient is returned)
    return_sequences: bool

    @property
    def h_n(self) -> Array:
        """The final hidden state: ``(batch, H)``, or ``(2, batch, H)`` for two directions."""
        return _final(self.h, self.backwards)


class GRUCache(NamedTuple):
    """What the GRU's backward needs: the states and the gates."""

    x: Array  # (batch, time, F)
    h0: Array  # (D, batch, H)
    h: Steps  # per step (D, batch, H)
    rz: Steps  # per step (D, batch, 2H): reset and update gates
    n: Steps  # per step (D, batch, H): candidate state
    hn: Steps  # per step (D, batch, H): W_hn h_{t-1} + b_hn
    backwards: tuple[bool, ...]
    has_state: bool
    return_sequences: bool

    @property
    def h_n(self) -> Array:
        """The final hidden state: ``(batch, H)``, or ``(2, batch, H)`` for two directions."""
        return _final(self.h, self.backwards)


class LSTMCache(NamedTuple):
    """What the LSTM's backward needs: states, cells and gates."""

    x: Array  # (batch, time, F)
    h0: Array  # (D, batch, H)
    c0: Array  # (D, batch, H)
    h: Steps  # per step (D, batch, H)
    c: Steps  # per step (D, batch, H): cell states
    tc: Steps  # per step (D, batch, H): tanh(c)
    gates: Steps  # per step (D, batch, 4H): i, f, g, o
    backwards: tuple[bool, ...]
    has_state: bool
    return_sequences: bool

    @property
    def h_n(self) -> Array:
        """The final hidden state: ``(batch, H)``, or ``(2, batch, H)`` for two directions."""
        return _final(self.h, self.backwards)

    @property
    def c_n(self) -> Array:
        """The final cell state: ``(batch, H)``, or ``(2, batch, H)`` for two directions."""
        return _final(self.c, self.backwards)


Cache = RNNCache | GRUCache | LSTMCache


def _final(s: Steps, backwards: tuple[bool, ...]) -> Array:
    return s[-1][0, ...] if len(backwards) == 1 else s[-1]


# --------------------------------------------------------------------------
# checks (kernels check shapes: a mistake in a recurrent layout is easy to make)


def _check(plist: Sequence[Params], x: Array, kind: str, name: str) -> int:
    """Validate ``x`` and every direction's weights; return the hidden size ``H``."""
    if x.ndim != 3 or x.shape[1] < 1:
        raise ShapeError(
            f"{name}: x must be (batch, time, features) with time >= 1, got shape "
            f"{tuple(x.shape)}; a series of single values is x[..., None], shape (batch, time, 1)"
        )
    gates, n_in = GATES[kind], x.shape[2]
    H = plist[0]["W_hh"].shape[-1]
    want = {"W_ih": (gates * H, n_in), "W_hh": (gates * H, H),
            "b_ih": (gates * H,), "b_hh": (gates * H,)}
    for d, p in enumerate(plist):
        for key, shape in want.items():
            label = key + (_REVERSE if d else "")
            if key not in p:
                raise ShapeError(f"{name}: params has no {label!r}; a {kind} needs {list(want)}")
            got = tuple(p[key].shape)
            if got != shape:
                raise ShapeError(
                    f"{name}: params[{label!r}] must have shape {shape} for a {kind} with "
                    f"{n_in} input features and hidden size {H}, got {got}"
                )
    return int(H)


def _state(
    xp: ModuleType, s: Array | None, x: Array, D: int, H: int, name: str, label: str
) -> Array:
    """An initial state checked against ``(batch, H)`` (one direction) or
    ``(2, batch, H)`` (two), as ``(D, batch, H)``; zeros for ``None``."""
    if s is None:
        return xp.zeros((D, x.shape[0], H), dtype=x.dtype, device=device_of(x))
    want = (x.shape[0], H) if D == 1 else (D, x.shape[0], H)
    if tuple(s.shape) != want:
        raise ShapeError(
            f"{name}: {label} must have shape {want} ({'' if D == 1 else 'directions, '}"
            f"batch, hidden), got {tuple(s.shape)}"
        )
    return xp.expand_dims(s, axis=0) if D == 1 else s


def _check_truncate(truncate: Any) -> int | None:
    if truncate is None:
        return None
    if isinstance(truncate, bool) or not isinstance(truncate, numbers.Integral) or truncate < 1:
        raise SettingError(
            f"truncate must be a positive int (steps between gradient cuts) or None, "
            f"got {truncate!r}"
        )
    return int(truncate)


def _cut(s: int, truncate: int | None) -> bool:
    """Whether the gradient stops between reading steps ``s - 1`` and ``s``."""
    return truncate is not None and s > 0 and s % truncate == 0


# --------------------------------------------------------------------------
# pieces shared by the three cells


def _stacked(xp: ModuleType, plist: Sequence[Params], key: str) -> Array:
    """``params[key]`` of every direction on a leading axis ``D``."""
    return xp.stack([p[key] for p in plist], axis=0)


def _sigmoid(xp: ModuleType, a: Array) -> Array:
    # σ(a) = ½ tanh(½a) + ½: stable (tanh never overflows), three operations
    return xp.tanh(a * 0.5) * 0.5 + 0.5


def _reading(
    xp: ModuleType, a: Array, backwards: tuple[bool, ...], width: int | None = None
) -> Steps:
    """Each step of ``a`` (``(time, batch, D·width)``, time order) as ``(D, batch,
    width)``, every direction in its reading order; ``width=None``: ``a`` is
    ``(time, batch, k)``, the same for every direction (the input)."""
    if len(backwards) == 1:
        return tuple(xp.unstack(xp.expand_dims(xp.flip(a, axis=0) if backwards[0] else a,
                                               axis=1), axis=0))
    parts = [a if width is None else a[..., d * width:(d + 1) * width]
             for d in range(len(backwards))]
    return tuple(xp.unstack(xp.stack([xp.flip(p, axis=0) if back else p
                                      for p, back in zip(parts, backwards)], axis=1), axis=0))


def _project(
    xp: ModuleType, x: Array, plist: Sequence[Params], backwards: tuple[bool, ...], b: Array
) -> Steps:
    """``x_t W_ihᵀ + b`` for every step and direction in one matmul, per step
    ``(D, batch, G·H)`` in reading order. ``b``: ``(D, G·H)``, the biases folded
    into the input projection."""
    x_tm = xp.permute_dims(x, (1, 0, 2))  # (time, batch, F)
    W = plist[0]["W_ih"] if len(plist) == 1 else xp.concat([p["W_ih"] for p in plist], axis=0)
    return _reading(xp, x_tm @ W.mT + xp.reshape(b, (-1,)), backwards, W.shape[0] // len(plist))


def _outputs(xp: ModuleType, hs: Steps, backwards: tuple[bool, ...], seq: bool) -> Array:
    """The layer's output from the per-step states."""
    if not seq:
        last = hs[-1]  # (D, batch, H)
        return last[0, ...] if len(backwards) == 1 else xp.concat(xp.unstack(last), axis=-1)
    h = xp.stack(hs, axis=0)  # (time, D, batch, H)
    parts = [xp.flip(h[:, d, ...], axis=0) if back else h[:, d, ...]
             for d, back in enumerate(backwards)]  # each (time, batch, H), time order
    y = parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
    return xp.permute_dims(y, (1, 0, 2))  # (batch, time, D·H)


def _output_grads(
    xp: ModuleType, cache: Cache, dy: Array | None, dh_last: Array | None, H: int
) -> tuple[Steps, Array]:
    """Per-step output gradients in reading order, ``(D, batch, H)`` each (empty
    when there are none), and the gradient entering the last step from above
    (``dh_last``, plus ``dy`` when only the final state was returned)."""
    D, B = len(cache.backwards), cache.x.shape[0]
    dh = xp.zeros_like(cache.h0) if dh_last is None else _as_dirs(xp, dh_last, D)
    if dy is None:
        return (), dh
    if not cache.return_sequences:  # (batch, D·H) -> (D, batch, H)
        return (), dh + xp.permute_dims(xp.reshape(dy, (B, D, H)), (1, 0, 2))
    return _reading(xp, xp.permute_dims(dy, (1, 0, 2)), cache.backwards, H), dh


def _as_dirs(xp: ModuleType, s: Array, D: int) -> Array:
    return xp.expand_dims(s, axis=0) if D == 1 else s


class _Sums:
    """The shared weights' gradients, summed step by step as the loop runs backwards.

    Each step adds ``d_recᵀ h_{t-1}`` to ``dW_hh`` and ``d_inᵀ x_t`` to
    ``dW_ih`` (small batched matmuls whose operands are already in cache):
    cheaper than stacking every step's gradients into large arrays and
    multiplying once, which costs fresh memory (page faults) on every call.
    """

    def __init__(self, xp: ModuleType, cache: Cache, keep_d_in: bool) -> None:
        self.xp, self.cache, self.keep = xp, cache, keep_d_in
        self.x = _reading(xp, xp.permute_dims(cache.x, (1, 0, 2)), cache.backwards)
        self.W_ih: Array | None = None
        self.W_hh: Array | None = None
        self.b_ih: Array | None = None
        self.b_hh: Array | None = None
        self.d_in: list[Array] = []

    def add(self, t: int, h_prev: Array, d_in: Array, d_rec: Array | None = None) -> None:
        """Step ``t``'s gradients of the input and recurrent projections,
        ``(D, batch, G·H)`` (``d_rec`` is ``d_in`` for the RNN and the LSTM)."""
        dW_ih = d_in.mT @ self.x[t]
        dW_hh = (d_in if d_rec is None else d_rec).mT @ h_prev
        if self.W_ih is None:
            self.W_ih, self.W_hh, self.b_ih = dW_ih, dW_hh, d_in
            self.b_hh = d_rec
        else:
            self.W_ih, self.W_hh = self.W_ih + dW_ih, self.W_hh + dW_hh
            self.b_ih = self.b_ih + d_in
            self.b_hh = None if d_rec is None else self.b_hh + d_rec
        if self.keep:
            self.d_in.append(d_in)

    def result(self, plist: Sequence[Params]) -> tuple[Array | None, list[dict[str, Array]]]:
        """``dx`` (or ``None``) and each direction's weight gradients."""
        xp, cache = self.xp, self.cache
        assert self.W_ih is not None and self.W_hh is not None and self.b_ih is not None
        db_ih = xp.sum(self.b_ih, axis=1)  # the biases' sums over the batch, once
        db_hh = db_ih if self.b_hh is None else xp.sum(self.b_hh, axis=1)
        grads = [{"W_ih": self.W_ih[d, ...], "W_hh": self.W_hh[d, ...], "b_ih": db_ih[d, ...],
                  "b_hh": db_hh[d, ...]} for d in range(len(plist))]
        if not self.keep:
            return None, grads
        d = xp.stack(self.d_in[::-1], axis=0)  # (time, D, batch, G·H), reading order
        dx = None
        for k, back in enumerate(cache.backwards):
            part = d[:, k, ...] @ plist[k]["W_ih"]  # (time, batch, F)
            part = xp.flip(part, axis=0) if back else part
            dx = part if dx is None else dx + part
        assert dx is not None
        return xp.permute_dims(dx, (1, 0, 2)), grads


# --------------------------------------------------------------------------
# the three cells, over D directions at once


def _rnn_forward(
    xp: ModuleType, plist: Sequence[Params], x: Array, h0: Array, backwards: tuple[bool, ...],
    has_state: bool, return_sequences: bool,
) -> tuple[Array, RNNCache]:
    a_in = _project(xp, x, plist, backwards, _stacked(xp, plist, "b_ih") +
                    _stacked(xp, plist, "b_hh"))
    W_T = _stacked(xp, plist, "W_hh").mT  # (D, H, H)
    h, hs = h0, []
    for a_t in a_in:
        h = xp.tanh(a_t + h @ W_T)
        hs.append(h)
    cache = RNNCache(x, h0, tuple(hs), backwards, has_state, return_sequences)
    return _outputs(xp, cache.h, backwards, return_sequences), cache


def _rnn_backward(
    xp: ModuleType, plist: Sequence[Params], cache: RNNCache, dy_t: Steps,
    dh: Array, truncate: int | None, need_dx: bool,
) -> tuple[Array | None, list[dict[str, Array]], Array, None]:
    W = _stacked(xp, plist, "W_hh")
    sums = _Sums(xp, cache, need_dx)
    for t in range(len(cache.h) - 1, -1, -1):
        if dy_t:
            dh = dh + dy_t[t]
        h = cache.h[t]
        delta = dh * (1.0 - h * h)
        sums.add(t, cache.h[t - 1] if t else cache.h0, delta)
        dh = xp.zeros_like(dh) if _cut(t, truncate) else delta @ W
    dx, grads = sums.result(plist)
    return dx, grads, dh, None


def _gru_forward(
    xp: ModuleType, plist: Sequence[Params], x: Array, h0: Array, backwards: tuple[bool, ...],
    has_state: bool, return_sequences: bool,
) -> tuple[Array, GRUCache]:
    H = h0.shape[-1]
    b_ih, b_hh = _stacked(xp, plist, "b_ih"), _stacked(xp, plist, "b_hh")
    # b_hr, b_hz join the input projection; b_hn stays inside r ⊙ (W_hn h + b_hn)
    a_in = _project(xp, x, plist, backwards,
                    b_ih + xp.concat([b_hh[:, :2 * H], xp.zeros_like(b_hh[:, 2 * H:])], axis=-1))
    W_T = _stacked(xp, plist, "W_hh").mT  # (D, H, 3H)
    b_hn = xp.expand_dims(b_hh[:, 2 * H:], axis=1)  # (D, 1, H)
    h = h0
    hs, rzs, ns, hns = [], [], [], []
    for a_t in a_in:
        a_h = h @ W_T
        rz = _sigmoid(xp, a_t[..., :2 * H] + a_h[..., :2 * H])
        hn = a_h[..., 2 * H:] + b_hn
        n = xp.tanh(a_t[..., 2 * H:] + rz[..., :H] * hn)
        h = n + rz[..., H:] * (h - n)  # (1 - z) n + z h
        hs.append(h)
        rzs.append(rz)
        ns.append(n)
        hns.append(hn)
    cache = GRUCache(x, h0, tuple(hs), tuple(rzs), tuple(ns), tuple(hns), backwards, has_state,
                     return_sequences)
    return _outputs(xp, cache.h, backwards, return_sequences), cache


def _gru_backward(
    xp: ModuleType, plist: Sequence[Params], cache: GRUCache, dy_t: Steps,
    dh: Array, truncate: int | None, need_dx: bool,
) -> tuple[Array | None, list[dict[str, Array]], Array, None]:
    W = _stacked(xp, plist, "W_hh")
    H = cache.h0.shape[-1]
    sums = _Sums(xp, cache, need_dx)
    for t in range(len(cache.h) - 1, -1, -1):
        if dy_t:
            dh = dh + dy_t[t]
        h_prev = cache.h[t - 1] if t else cache.h0
        rz, n, hn = cache.rz[t], cache.n[t], cache.hn[t]
        z = rz[..., H:]
        dn = dh * (1.0 - z) * (1.0 - n * n)  # dā_n
        dhn = dn * rz[..., :H]  # d(W_hn h + b_hn)
        # dā_r = dā_n hn σ'(r), dā_z = dh (h_{t-1} - n) σ'(z): both gates at once
        drz = xp.concat([dn * hn, dh * (h_prev - n)], axis=-1) * (rz * (1.0 - rz))
        d_rec = xp.concat([drz, dhn], axis=-1)
        sums.add(t, h_prev, xp.concat([drz, dn], axis=-1), d_rec)
        dh = xp.zeros_like(dh) if _cut(t, truncate) else dh * z + d_rec @ W
    dx, grads = sums.result(plist)
    return dx, grads, dh, None


def _lstm_forward(
    xp: ModuleType, plist: Sequence[Params], x: Array, h0: Array, c0: Array,
    backwards: tuple[bool, ...], has_state: bool, return_sequences: bool,
) -> tuple[Array, LSTMCache]:
    H = h0.shape[-1]
    a_in = _project(xp, x, plist, backwards, _stacked(xp, plist, "b_ih") +
                    _stacked(xp, plist, "b_hh"))
    W_T = _stacked(xp, plist, "W_hh").mT  # (D, H, 4H)
    scale, shift = _lstm_affine(xp, x, H)
    h, c = h0, c0
    hs, cs, tcs, gs = [], [], [], []
    for a_t in a_in:
        # one tanh for all four gates: σ(a) = ½ tanh(½a) + ½ for i, f, o; tanh(a) for g
        s = xp.tanh((a_t + h @ W_T) * scale) * scale + shift
        c = s[..., H:2 * H] * c + s[..., :H] * s[..., 2 * H:3 * H]  # f c + i g
        tc = xp.tanh(c)
        h = s[..., 3 * H:] * tc  # o tanh(c)
        hs.append(h)
        cs.append(c)
        tcs.append(tc)
        gs.append(s)
    cache = LSTMCache(x, h0, c0, tuple(hs), tuple(cs), tuple(tcs), tuple(gs), backwards,
                      has_state, return_sequences)
    return _outputs(xp, cache.h, backwards, return_sequences), cache


def _lstm_affine(xp: ModuleType, x: Array, H: int) -> tuple[Array, Array]:
    """``(scale, shift)`` of the four gates, ``(4H,)``: ``s = tanh(a·scale)·scale + shift``."""
    half = xp.full((H,), 0.5, dtype=x.dtype, device=device_of(x))
    one, zero = xp.ones_like(half), xp.zeros_like(half)
    return xp.concat([half, half, one, half]), xp.concat([half, half, zero, half])


def _lstm_backward(
    xp: ModuleType, plist: Sequence[Params], cache: LSTMCache, dy_t: Steps,
    dh: Array, dc: Array, truncate: int | None, need_dx: bool,
) -> tuple[Array | None, list[dict[str, Array]], Array, Array]:
    W = _stacked(xp, plist, "W_hh")
    H = cache.h0.shape[-1]
    scale, shift = _lstm_affine(xp, cache.x, H)
    scale2 = scale * scale
    sums = _Sums(xp, cache, need_dx)
    for t in range(len(cache.h) - 1, -1, -1):
        if dy_t:
            dh = dh + dy_t[t]
        s, tc = cache.gates[t], cache.tc[t]
        c_prev = cache.c[t - 1] if t else cache.c0
        dc = dc + dh * s[..., 3 * H:] * (1.0 - tc * tc)
        # ds/da = scale² (1 - tanh²) = scale² - (s - shift)²: σ' for i, f, o, tanh' for g
        u = s - shift
        up = xp.concat([dc * s[..., 2 * H:3 * H], dc * c_prev, dc * s[..., :H], dh * tc], axis=-1)
        da = up * (scale2 - u * u)
        sums.add(t, cache.h[t - 1] if t else cache.h0, da)
        if _cut(t, truncate):
            dh, dc = xp.zeros_like(dh), xp.zeros_like(dc)
        else:
            dh, dc = da @ W, dc * s[..., H:2 * H]
    dx, grads = sums.result(plist)
    return dx, grads, dh, dc


# --------------------------------------------------------------------------
# the kernels over D directions: what the public kernels and the layers call


def _forward(
    kind: str, plist: Sequence[Params], x: Array, h0: Array | None, c0: Array | None,
    backwards: tuple[bool, ...], return_sequences: bool, xp: ModuleType | None, name: str,
    has_state: bool | None = None,
) -> tuple[Array, Cache]:
    xp = namespace(x, xp=xp)
    H = _check(plist, x, kind, name)
    D = len(backwards)
    if has_state is None:
        has_state = h0 is not None or c0 is not None
    h_init = _state(xp, h0, x, D, H, name, "h0")
    if kind == "lstm":
        c_init = _state(xp, c0, x, D, H, name, "c0")
        return _lstm_forward(xp, plist, x, h_init, c_init, backwards, has_state,
                             return_sequences)
    cell = _rnn_forward if kind == "rnn" else _gru_forward
    return cell(xp, plist, x, h_init, backwards, has_state, return_sequences)


def _backward(
    plist: Sequence[Params], cache: Cache, dy: Array | None, dh_last: Any, need_dx: bool,
    truncate: Any, xp: ModuleType | None,
) -> tuple[Array | None, list[dict[str, Array]], Array, Array | None]:
    """``(dx, per-direction grads, dh0, dc0)`` with the states' gradients ``(D, batch, H)``."""
    if not isinstance(cache, (RNNCache, GRUCache, LSTMCache)):
        raise ArgumentError(
            f"the cache must be the one the recurrent forward returned, got "
            f"{type(cache).__name__}"
        )
    xp = namespace(cache.x, xp=xp)
    truncate = _check_truncate(truncate)
    H, D = cache.h0.shape[-1], len(cache.backwards)
    if isinstance(cache, LSTMCache):
        dh_n, dc_n = dh_last if isinstance(dh_last, tuple) else (dh_last, None)
        dy_t, dh = _output_grads(xp, cache, dy, dh_n, H)
        dc = xp.zeros_like(cache.c0) if dc_n is None else _as_dirs(xp, dc_n, D)
        return _lstm_backward(xp, plist, cache, dy_t, dh, dc, truncate, need_dx)
    dy_t, dh = _output_grads(xp, cache, dy, dh_last, H)
    if isinstance(cache, RNNCache):
        return _rnn_backward(xp, plist, cache, dy_t, dh, truncate, need_dx)
    return _gru_backward(xp, plist, cache, dy_t, dh, truncate, need_dx)


def _single_grads(
    cache: Cache, grads: list[dict[str, Array]], dh0: Array, dc0: Array | None
) -> dict[str, Array]:
    """One direction's grads, with the initial state's (``(batch, H)``) when one was given."""
    out = dict(grads[0])
    if cache.has_state:
        out["h0"] = dh0[0, ...]
        if dc0 is not None:
            out["c0"] = dc0[0, ...]
    return out


# --------------------------------------------------------------------------
# the public kernels


def rnn_forward(
    params: Params, x: Array, h0: Array | None = None, *,
    return_sequences: bool = True, reverse: bool = False, xp: ModuleType | None = None,
) -> tuple[Array, RNNCache]:
    """Elman RNN with tanh, as ``torch.nn.RNN``:
    ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    Parameters
    ----------
    params : dict
        ``W_ih`` (H, F), ``W_hh`` (H, H), ``b_ih`` (H,), ``b_hh`` (H,).
    x : array, shape (batch, time, F)
    h0 : array, shape (batch, H), optional
        Initial state (zeros if omitted; if given, the backward returns its
        gradient as ``grads["h0"]``).
    return_sequences : bool
        Return every step's state (default) or only the final one.
    reverse : bool
        Read the sequence from its last step to its first (see the module notes).

    Returns
    -------
    y : array, shape (batch, time, H), or (batch, H) without ``return_sequences``
    cache : RNNCache
        ``cache.h_n`` is the final state.

    Examples
    --------
    >>> import numpy as np
    >>> H, F = 2, 3
    >>> params = {"W_ih": np.ones((H, F)), "W_hh": np.eye(H),
    ...           "b_ih": np.zeros(H), "b_hh": np.zeros(H)}
    >>> y, cache = rnn_forward(params, np.zeros((1, 4, F)))
    >>> y.shape, cache.h_n.shape
    ((1, 4, 2), (1, 2))
    """
    y, cache = _forward("rnn", [params], x, h0, None, (bool(reverse),), return_sequences, xp,
                        "rnn_forward")
    assert isinstance(cache, RNNCache)
    return y, cache


def rnn_backward(
    params: Params, cache: RNNCache, dy: Array | None, *,
    dh_last: Array | None = None, need_dx: bool = True, truncate: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array | None, dict[str, Array]]:
    """Backpropagation through time for :func:`rnn_forward`.

    With ``δ_t = (dy_t + dh_t)(1 - h_t²)`` (``dh_t`` arriving from step
    ``t + 1``, ``dh_{t-1} = δ_t W_hh``): ``dW_ih = Σ_t δ_tᵀ x_t``,
    ``dW_hh = Σ_t δ_tᵀ h_{t-1}``, ``db_ih = db_hh = Σ_t Σ_batch δ_t``,
    ``dx_t = δ_t W_ih``, ``dh0 = δ_1 W_hh``.

    Parameters
    ----------
    dy : array or None
        Gradient of the loss with respect to ``y``: ``(batch, time, H)``, or
        ``(batch, H)`` without ``return_sequences``; ``None`` for zero.
    dh_last : array, shape (batch, H), optional
        Gradient with respect to the final state ``cache.h_n``.
    need_dx : bool
        Skip ``dx`` (returned as ``None``) when false.
    truncate : int, optional
        Truncated BPTT: cut the gradient every ``truncate`` steps (module notes).

    Returns
    -------
    dx : array of shape (batch, time, F), or None
    grads : dict
        ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh`` (parameter shapes), and ``h0``
        ``(batch, H)`` when the forward was given an initial state.
    """
    dx, grads, dh0, _ = _backward([params], cache, dy, dh_last, need_dx, truncate, xp)
    return dx, _single_grads(cache, grads, dh0, None)


def gru_forward(
    params: Params, x: Array, h0: Array | None = None, *,
    return_sequences: bool = True, reverse: bool = False, xp: ModuleType | None = None,
) -> tuple[Array, GRUCache]:
    """Gated recurrent unit, as ``torch.nn.GRU``::

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Parameters
    ----------
    params : dict
        ``W_ih`` (3H, F), ``W_hh`` (3H, H), ``b_ih`` (3H,), ``b_hh`` (3H,),
        gate blocks in the order ``r, z, n``.
    x : array, shape (batch, time, F)
    h0 : array, shape (batch, H), optional
        Initial state (zeros if omitted; if given, its gradient is ``grads["h0"]``).
    return_sequences, reverse : bool
        As in :func:`rnn_forward`.

    Returns
    -------
    y : array, shape (batch, time, H), or (batch, H) without ``return_sequences``
    cache : GRUCache
        ``cache.h_n`` is the final state.

    Examples
    --------
    >>> import numpy as np
    >>> H, F = 2, 1
    >>> params = {"W_ih": np.ones((3 * H, F)), "W_hh": np.zeros((3 * H, H)),
    ...           "b_ih": np.zeros(3 * H), "b_hh": np.zeros(3 * H)}
    >>> y, cache = gru_forward(params, np.zeros((5, 7, F)), return_sequences=False)
    >>> y.shape  # z = σ(0) = ½ and n = 0: every state stays 0
    (5, 2)
    """
    y, cache = _forward("gru", [params], x, h0, None, (bool(reverse),), return_sequences, xp,
                        "gru_forward")
    assert isinstance(cache, GRUCache)
    return y, cache


def gru_backward(
    params: Params, cache: GRUCache, dy: Array | None, *,
    dh_last: Array | None = None, need_dx: bool = True, truncate: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array | None, dict[str, Array]]:
    """Backpropagation through time for :func:`gru_forward`.

    With ``dh`` the total gradient of ``h_t``: ``dā_n = dh (1 - z)(1 - n²)``,
    ``dā_z = dh (h_{t-1} - n) z (1 - z)``, ``dā_r = dā_n ⊙ hn ⊙ r (1 - r)`` and
    ``d(hn) = dā_n ⊙ r`` (``hn = W_hn h_{t-1} + b_hn``). The input projection's
    gradient is ``(dā_r, dā_z, dā_n)``, the recurrent one's
    ``(dā_r, dā_z, d(hn))``, and ``dh_{t-1} = dh ⊙ z + (dā_r, dā_z, d(hn)) W_hh``;
    the weights' gradients sum these over batch and time as in :func:`rnn_backward`.

    Parameters and returns are those of :func:`rnn_backward` (with ``3H``
    gate rows).
    """
    dx, grads, dh0, _ = _backward([params], cache, dy, dh_last, need_dx, truncate, xp)
    return dx, _single_grads(cache, grads, dh0, None)


def lstm_forward(
    params: Params, x: Array, state0: tuple[Array | None, Array | None] | None = None, *,
    return_sequences: bool = True, reverse: bool = False, xp: ModuleType | None = None,
) -> tuple[Array, LSTMCache]:
    """Long short-term memory, as ``torch.nn.LSTM`` (no projection)::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    Parameters
    ----------
    params : dict
        ``W_ih`` (4H, F), ``W_hh`` (4H, H), ``b_ih`` (4H,), ``b_hh`` (4H,),
        gate blocks in the order ``i, f, g, o``.
    x : array, shape (batch, time, F)
    state0 : pair of arrays (h0, c0), each (batch, H), optional
        Initial hidden and cell state (zeros if omitted; either may be
        ``None``). If given, the backward returns ``grads["h0"]`` and ``grads["c0"]``.
    return_sequences, reverse : bool
        As in :func:`rnn_forward`.

    Returns
    -------
    y : array, shape (batch, time, H), or (batch, H) without ``return_sequences``
    cache : LSTMCache
        ``cache.h_n`` and ``cache.c_n`` are the final states.
    """
    h0, c0 = _pair(state0, "lstm_forward")
    y, cache = _forward("lstm", [params], x, h0, c0, (bool(reverse),), return_sequences, xp,
                        "lstm_forward", has_state=state0 is not None)
    assert isinstance(cache, LSTMCache)
    return y, cache


def lstm_backward(
    params: Params, cache: LSTMCache, dy: Array | None, *,
    dh_last: Array | tuple[Array | None, Array | None] | None = None,
    need_dx: bool = True, truncate: int | None = None, xp: ModuleType | None = None,
) -> tuple[Array | None, dict[str, Array]]:
    """Backpropagation through time for :func:`lstm_forward`.

    With ``dh`` and ``dc = dc_{t+1} f_{t+1} + dh o (1 - tanh²c)`` the total
    gradients at step ``t``, the gate pre-activations get
    ``dā = (dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g²), dh tanh(c) o(1-o))``;
    ``dh_{t-1} = dā W_hh``, ``dc_{t-1} = dc ⊙ f``, and the weights' gradients
    sum ``dā`` over batch and time as in :func:`rnn_backward`.

    Parameters
    ----------
    dy : array or None
        As in :func:`rnn_backward`.
    dh_last : array (batch, H), or pair (dh_n, dc_n), optional
        Gradient with respect to the final state ``cache.h_n`` (and ``cache.c_n``).
    need_dx, truncate : as in :func:`rnn_backward`.

    Returns
    -------
    dx : array of shape (batch, time, F), or None
    grads : dict
        ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``, and ``h0``, ``c0`` (each
        ``(batch, H)``) when the forward was given an initial state.
    """
    dx, grads, dh0, dc0 = _backward([params], cache, dy, dh_last, need_dx, truncate, xp)
    return dx, _single_grads(cache, grads, dh0, dc0)


def _pair(state0: Any, name: str) -> tuple[Array | None, Array | None]:
    if state0 is None:
        return None, None
    if not isinstance(state0, (tuple, list)) or len(state0) != 2:
        raise ArgumentError(f"{name}: the LSTM's state0 is a pair (h0, c0), got "
                            f"{type(state0).__name__}")
    return state0[0], state0[1]


def _split_params(params: Params, name: str) -> list[Params]:
    if not isinstance(params, Mapping):
        raise ArgumentError(f"{name}: params must be a dict, got {type(params).__name__}")
    try:
        return [{k: params[k] for k in _KEYS}, {k: params[k + _REVERSE] for k in _KEYS}]
    except KeyError as exc:
        raise ShapeError(
            f"{name}: params has no {exc.args[0]!r}; a bidirectional layer needs "
            f"{[k + s for s in ('', _REVERSE) for k in _KEYS]} (load_torch_state_dict gives them)"
        ) from None


def _kind(kind: Any) -> str:
    if kind not in GATES:
        raise SettingError(f"unknown recurrent kind {kind!r}; choose rnn, gru or lstm")
    return str(kind)


def bidirectional_forward(
    params: Params, x: Array, state0: Any = None, *, kind: str,
    return_sequences: bool = True, xp: ModuleType | None = None,
) -> tuple[Array, Cache]:
    """Both directions of a recurrent layer, as ``torch.nn.RNN/GRU/LSTM(bidirectional=True)``.

    The two directions run in one time loop (a leading axis of two in every
    per-step matmul), so a bidirectional layer costs about what one direction does.

    Parameters
    ----------
    params : dict
        ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh`` for the forward direction and
        the same keys with a ``_reverse`` suffix for the reverse one (as
        :func:`load_torch_state_dict` returns them).
    x : array, shape (batch, time, F)
    state0 : optional
        Torch's layout: ``h0`` of shape ``(2, batch, H)`` (index 0 forward,
        1 reverse); for the LSTM a pair ``(h0, c0)`` of such arrays.
    kind : {"rnn", "gru", "lstm"}
    return_sequences : bool
        ``True``: ``y = concat(y_forward, y_reverse)`` on the feature axis,
        ``(batch, time, 2H)``, which is torch's ``output``. ``False``: the two
        final states, ``(batch, 2H)``, i.e. ``concat(h_n[0], h_n[1])`` (not
        ``output[:, -1]``: the reverse direction ends at the first step).

    Returns
    -------
    y : array
    cache : RNNCache, GRUCache or LSTMCache
        ``cache.h_n`` (and ``cache.c_n``) are ``(2, batch, H)``, as torch's.
    """
    kind = _kind(kind)
    h0, c0 = _pair(state0, "bidirectional_forward") if kind == "lstm" else (state0, None)
    return _forward(kind, _split_params(params, "bidirectional_forward"), x, h0, c0,
                    (False, True), return_sequences, xp, "bidirectional_forward",
                    has_state=state0 is not None)


def bidirectional_backward(
    params: Params, cache: Cache, dy: Array | None, *,
    dh_last: Any = None, need_dx: bool = True, truncate: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array | None, dict[str, Array]]:
    """Backpropagation through time for :func:`bidirectional_forward`.

    ``dy`` splits on the feature axis between the directions, each is
    backpropagated in its own reading order (``truncate`` counts steps in
    it), and ``dx`` is the sum of the two directions' ``dx``.

    Parameters
    ----------
    dy : array or None
        ``(batch, time, 2H)``, or ``(batch, 2H)`` without ``return_sequences``.
    dh_last : optional
        Gradient of ``cache.h_n``, ``(2, batch, H)``; for the LSTM also a pair
        ``(dh_n, dc_n)`` of such arrays.

    Returns
    -------
    dx : array of shape (batch, time, F), or None
    grads : dict
        The parameter keys (both directions), and ``h0`` (``c0``) of shape
        ``(2, batch, H)`` when the forward was given an initial state.
    """
    plist = _split_params(params, "bidirectional_backward")
    dx, (g_fwd, g_rev), dh0, dc0 = _backward(plist, cache, dy, dh_last, need_dx, truncate, xp)
    grads = {**g_fwd, **{k + _REVERSE: v for k, v in g_rev.items()}}
    if cache.has_state:
        grads["h0"] = dh0
        if dc0 is not None:
            grads["c0"] = dc0
    return dx, grads


# --------------------------------------------------------------------------
# torch weights in


def load_torch_state_dict(module_state_dict: Mapping[str, Any] | Any, kind: str) -> Params:
    """Parameters of these kernels from a ``torch.nn.RNN/GRU/LSTM`` state dict.

    ``weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0`` become ``W_ih, W_hh,
    b_ih, b_hh`` unchanged (same gate order and layout), and a bidirectional
    module's ``*_l0_reverse`` become ``W_ih_reverse`` etc. (the keys of
    :func:`bidirectional_forward` and of a :func:`bidirectional` layer).
    Values are copied to host NumPy arrays in their dtype; move them with
    ``xp.asarray`` (or ``bp.to_backend``). A module built with ``bias=False``
    loads with zero biases (the same function).

    Parameters
    ----------
    module_state_dict : mapping (or a torch module, whose ``state_dict()`` is taken)
        ``num_layers=1``; LSTM without ``proj_size``. A ``torch.nn.RNN`` must use
        ``nonlinearity="tanh"`` (not visible in its state dict: checking it is the caller's).
    kind : {"rnn", "gru", "lstm"}

    Returns
    -------
    params : dict of numpy arrays

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> module = torch.nn.GRU(4, 3, batch_first=True)  # doctest: +SKIP
    >>> params = load_torch_state_dict(module, "gru")  # doctest: +SKIP
    >>> sorted(params)  # doctest: +SKIP
    ['W_hh', 'W_ih', 'b_hh', 'b_ih']
    """
    kind = _kind(kind)
    sd = module_state_dict
    if not isinstance(sd, Mapping) and callable(getattr(sd, "state_dict", None)):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping):
        raise ArgumentError(
            f"load_torch_state_dict: expected a state dict or a torch module, got "
            f"{type(module_state_dict).__name__}"
        )
    suffixes = ["", _REVERSE] if "weight_ih_l0" + _REVERSE in sd else [""]
    known = {v + s for v in _TORCH_NAMES.values() for s in suffixes}
    unknown = sorted(set(sd) - known)
    if unknown:
        raise SettingError(
            f"load_torch_state_dict: unsupported keys {unknown} (only num_layers=1, "
            "no proj_size); known keys are weight_ih_l0, weight_hh_l0, bias_ih_l0, "
            "bias_hh_l0 and their _reverse versions"
        )
    params: dict[str, Any] = {}
    for s in suffixes:
        for key in ("W_ih", "W_hh"):
            if _TORCH_NAMES[key] + s not in sd:
                raise SettingError(f"load_torch_state_dict: missing {_TORCH_NAMES[key] + s!r}")
            params[key + s] = np.array(to_numpy(sd[_TORCH_NAMES[key] + s]), copy=True)
        W_ih, W_hh = params["W_ih" + s], params["W_hh" + s]
        H = W_hh.shape[1]
        if W_ih.shape[0] != GATES[kind] * H or W_hh.shape[0] != GATES[kind] * H:
            raise ShapeError(
                f"load_torch_state_dict: weight_ih_l0{s} {W_ih.shape} and weight_hh_l0{s} "
                f"{W_hh.shape} are not those of a {kind} ({GATES[kind]} gates of {H})"
            )
        for key in ("b_ih", "b_hh"):
            name = _TORCH_NAMES[key] + s
            params[key + s] = (np.array(to_numpy(sd[name]), copy=True) if name in sd
                               else np.zeros(GATES[kind] * H, dtype=W_hh.dtype))
    return params


# --------------------------------------------------------------------------
# layers


def _suffixes(D: int) -> tuple[str, ...]:
    return ("", _REVERSE)[:D]


def _recurrent(
    kind: str, n_in: int, hidden: int, *, backwards: tuple[bool, ...],
    return_sequences: bool, truncate: int | None, initial_state: str,
) -> Layer:
    """The layer of ``kind`` over ``len(backwards)`` directions (see :func:`rnn`)."""
    G, D = GATES[kind], len(backwards)
    learned = initial_state == "learned"
    states = ("h0", "c0") if kind == "lstm" else ("h0",)
    suffixes = _suffixes(D)
    name = kind if D == 1 else f"bidirectional_{kind}"

    def shapes() -> Params:
        out: dict[str, tuple[int, ...]] = {}
        for s in suffixes:
            out |= {"W_ih" + s: (G * hidden, n_in), "W_hh" + s: (G * hidden, hidden),
                    "b_ih" + s: (G * hidden,), "b_hh" + s: (G * hidden,)}
        if learned:
            out |= {k + s: (hidden,) for s in suffixes for k in states}
        return out

    def init(
        rng: int | np.random.Generator | None = None, *,
        xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
    ) -> Params:
        rng = as_generator(rng)
        bound = 1.0 / math.sqrt(hidden)  # torch's U(-1/√H, 1/√H) for every weight and bias
        out = {}
        for key, shape in shapes().items():
            host = (np.zeros(shape) if key.startswith(("h0", "c0"))
                    else rng.uniform(-bound, bound, size=shape))
            out[key] = place(host, xp, dtype, device)
        return out

    def forward(params: Params, x: Array, *, xp: ModuleType | None = None) -> tuple[Array, Any]:
        plist = [{k: params[k + s] for k in _KEYS} for s in suffixes]
        h0 = c0 = None
        if learned:  # (D, batch, H), or the kernels' (batch, H) for one direction
            xp = namespace(x, xp=xp)
            h0, c0 = (_broadcast(xp, params, k, suffixes, x.shape[0]) for k in ("h0", "c0"))
        return _forward(kind, plist, x, h0, c0, backwards, return_sequences, xp, name,
                        has_state=learned)

    def backward(
        params: Params, cache: Any, dy: Array, *,
        xp: ModuleType | None = None, need_dx: bool = True,
    ) -> tuple[Array | None, Params]:
        plist = [{k: params[k + s] for k in _KEYS} for s in suffixes]
        dx, per_dir, dh0, dc0 = _backward(plist, cache, dy, None, need_dx, truncate, xp)
        grads = {k + s: v for s, g in zip(suffixes, per_dir) for k, v in g.items()}
        if learned:
            xp = namespace(dh0, xp=xp)
            for k, ds in (("h0", dh0), ("c0", dc0)):
                if ds is not None:
                    grads |= {k + s: xp.sum(ds[d, ...], axis=0) for d, s in enumerate(suffixes)}
        return dx, {k: grads[k] for k in params}  # the parameters' key order (jit sorts keys)

    def out_shape(sample: Shape | None) -> Shape:
        if sample is not None and (len(sample) != 2 or sample[1] not in (None, n_in)):
            raise ShapeError(f"{name} takes (time, {n_in}) per sample (time steps of {n_in} "
                             f"features), got {show_shape(sample)}")
        time = None if sample is None else sample[0]
        return (time, D * hidden) if return_sequences else (D * hidden,)

    inner = {"name": kind, "n_in": n_in, "hidden": hidden,
             "return_sequences": return_sequences, "truncate": truncate,
             "initial_state": initial_state}
    if D == 1:
        config: dict[str, Any] = {**inner, "reverse": backwards[0]}
    else:
        config = {"name": "bidirectional", "layer": {**inner, "reverse": False}}
    return Layer(init, forward, backward, name, n_in, D * hidden, config, None, None, shapes,
                 (None, n_in), out_shape)


def _broadcast(
    xp: ModuleType, params: Params, key: str, suffixes: tuple[str, ...], batch: int
) -> Array | None:
    """A learned initial state ``(H,)`` per direction broadcast over the batch:
    ``(batch, H)`` for one direction, ``(2, batch, H)`` for two (the kernels' layouts)."""
    if key + suffixes[0] not in params:
        return None
    if len(suffixes) == 1:
        return xp.broadcast_to(params[key], (batch, params[key].shape[-1]))
    s = xp.stack([params[key + s] for s in suffixes], axis=0)  # (D, H)
    return xp.broadcast_to(xp.expand_dims(s, axis=1), (len(suffixes), batch, s.shape[-1]))


def _layer_args(
    fn: str, n_in: Any, hidden: Any, return_sequences: Any, reverse: Any, truncate: Any,
    initial_state: Any,
) -> tuple[int, int, bool, bool, int | None, str]:
    n_in = positive_int(n_in, f"{fn}(): n_in (features per step)")
    hidden = positive_int(hidden, f"{fn}(): hidden")
    for label, flag in (("return_sequences", return_sequences), ("reverse", reverse)):
        if not isinstance(flag, (bool, np.bool_)):
            raise SettingError(f"{fn}(): {label} must be True or False, got {flag!r}")
    if initial_state not in ("zeros", "learned"):
        raise SettingError(
            f"{fn}(): initial_state must be 'zeros' or 'learned', got {initial_state!r}"
        )
    return n_in, hidden, bool(return_sequences), bool(reverse), _check_truncate(truncate), \
        str(initial_state)


def _factory(kind: str) -> Callable[..., Layer]:
    def make(
        n_in: int, hidden: int, *, return_sequences: bool = True, reverse: bool = False,
        truncate: int | None = None, initial_state: str = "zeros",
    ) -> Layer:
        n_in, hidden, seq, rev, k, init_state = _layer_args(
            kind, n_in, hidden, return_sequences, reverse, truncate, initial_state)
        return _recurrent(kind, n_in, hidden, backwards=(rev,), return_sequences=seq,
                          truncate=k, initial_state=init_state)

    return make


_rnn, _gru, _lstm = _factory("rnn"), _factory("gru"), _factory("lstm")


def rnn(
    n_in: int, hidden: int, *, return_sequences: bool = True, reverse: bool = False,
    truncate: int | None = None, initial_state: str = "zeros",
) -> Layer:
    """An Elman RNN layer (tanh) over ``(batch, time, n_in)``, as ``torch.nn.RNN``.

    Parameters
    ----------
    n_in : int
        Features per time step.
    hidden : int
        Size ``H`` of the hidden state.
    return_sequences : bool
        Output every step's state, ``(batch, time, H)`` (default), or only the
        last one, ``(batch, H)``.
    reverse : bool
        Read the sequence from its end (outputs stay aligned with the inputs).
    truncate : int, optional
        Truncated BPTT: the gradient flows back at most ``truncate`` steps
        (cut every ``truncate`` steps, as torch's ``detach`` between chunks).
    initial_state : {"zeros", "learned"}
        The state before the first step: zeros, or a learned vector ``h0``
        of shape ``(H,)`` (a parameter; the LSTM also learns ``c0``).

    The parameters are torch's: ``W_ih`` (H, n_in), ``W_hh`` (H, H), ``b_ih``,
    ``b_hh`` (H,), drawn from U(-1/√H, 1/√H) as torch draws them; the
    gradient is that of :func:`rnn_backward`. Wrap in :func:`bidirectional`
    for both directions.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> from bpcore.layers.recurrent import rnn
    >>> layer = rnn(3, 5, return_sequences=False)
    >>> params = layer.init(0, xp=np)
    >>> y, cache = layer.forward(params, np.ones((2, 7, 3), dtype=np.float32))
    >>> y.shape, sorted(params)
    ((2, 5), ['W_hh', 'W_ih', 'b_hh', 'b_ih'])
    """
    return _rnn(n_in, hidden, return_sequences=return_sequences, reverse=reverse,
                truncate=truncate, initial_state=initial_state)


def gru(
    n_in: int, hidden: int, *, return_sequences: bool = True, reverse: bool = False,
    truncate: int | None = None, initial_state: str = "zeros",
) -> Layer:
    """A GRU layer over ``(batch, time, n_in)``, as ``torch.nn.GRU`` (:func:`gru_forward`).

    Parameters and options as :func:`rnn`, with ``3H`` gate rows (``r, z, n``).

    Examples
    --------
    The MNIST-1D baseline's recurrent part (40 steps of one value):

    >>> import numpy as np
    >>> from bpcore.layers.recurrent import bidirectional, gru
    >>> layer = bidirectional(gru(1, 6))
    >>> y, _ = layer.forward(layer.init(0, xp=np), np.zeros((100, 40, 1), dtype=np.float32))
    >>> y.shape, layer.n_out
    ((100, 40, 12), 12)
    """
    return _gru(n_in, hidden, return_sequences=return_sequences, reverse=reverse,
                truncate=truncate, initial_state=initial_state)


def lstm(
    n_in: int, hidden: int, *, return_sequences: bool = True, reverse: bool = False,
    truncate: int | None = None, initial_state: str = "zeros",
) -> Layer:
    """An LSTM layer over ``(batch, time, n_in)``, as ``torch.nn.LSTM`` (:func:`lstm_forward`).

    Parameters and options as :func:`rnn`, with ``4H`` gate rows
    (``i, f, g, o``); ``initial_state="learned"`` learns ``h0`` and ``c0``.
    """
    return _lstm(n_in, hidden, return_sequences=return_sequences, reverse=reverse,
                 truncate=truncate, initial_state=initial_state)


def bidirectional(layer: Layer | Mapping[str, Any]) -> Layer:
    """Both directions of a recurrent layer, outputs concatenated (forward first).

    ``bidirectional(gru(F, H))`` is ``torch.nn.GRU(F, H, bidirectional=True,
    batch_first=True)``: its output is ``(batch, time, 2H)`` (or
    ``(batch, 2H)``, the two final states, without ``return_sequences``), its
    parameters the layer's keys plus the same with a ``_reverse`` suffix.
    Both directions run in one time loop (:func:`bidirectional_forward`).

    Parameters
    ----------
    layer : Layer, or its config
        Made by :func:`rnn`, :func:`gru` or :func:`lstm` (one direction, not
        reversed); its options carry over.
    """
    cfg = layer.config if isinstance(layer, Layer) else layer
    if not isinstance(cfg, Mapping) or cfg.get("name") not in GATES:
        got = cfg.get("name") if isinstance(cfg, Mapping) else type(layer).__name__
        raise SettingError(
            f"bidirectional() wraps an rnn, gru or lstm layer, e.g. bidirectional(gru(1, 6)); "
            f"got {got!r}"
        )
    if cfg.get("reverse"):
        raise SettingError("bidirectional() takes a forward layer (reverse=False): it adds "
                           "the reversed direction itself")
    kind = cfg["name"]
    n_in, hidden, seq, _, k, init_state = _layer_args(
        kind, cfg["n_in"], cfg["hidden"], cfg.get("return_sequences", True), False,
        cfg.get("truncate"), cfg.get("initial_state", "zeros"))
    return _recurrent(kind, n_in, hidden, backwards=(False, True), return_sequences=seq,
                      truncate=k, initial_state=init_state)


#: The recurrent layer kinds by config name, for :func:`bpcore.layers.from_config`
#: (``LAYERS[name](**config_without_name)``).
LAYERS: dict[str, Callable[..., Layer]] = {
    "rnn": rnn,
    "gru": gru,
    "lstm": lstm,
    "bidirectional": bidirectional,
}
