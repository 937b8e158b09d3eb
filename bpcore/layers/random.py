"""Random bits that are the same on every backend: Threefry-2x32, in the standard's integers.

The Array API standard has no random number generator, and every library's
own generator gives different numbers. A *counter-based* generator needs none:
its output is a pure function of a key and a counter, built from additions,
rotations and exclusive ors of 32-bit words, which the standard's integer
operations compute identically everywhere. This is Threefry-2x32 with 20
rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011;
the Random123 reference), the generator JAX itself uses: for the same key
and counters it gives JAX's bits (``jax.extend.random.threefry_2x32``; the
tests compare them).

The words are held as ``uint32`` where the backend can shift them (NumPy,
CuPy, JAX, array-api-strict) and as ``int64`` masked to 32 bits where it
cannot (PyTorch has no ``uint32`` shifts; every intermediate then stays below
2⁶², so nothing overflows): the same values either way. Under ``jax.jit`` the
key and counters may be traced arrays.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..backend import Array, backend_name

__all__ = ["random_bits", "threefry2x32", "word_dtype"]

_MASK = 0xFFFFFFFF
_PARITY = 0x1BD11BDA
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)


def word_dtype(xp: ModuleType) -> Any:
    """The integer dtype the words are held in on ``xp`` (``uint32``, or ``int64`` on torch)."""
    return xp.int64 if backend_name(xp) == "torch" else xp.uint32


def threefry2x32(
    k0: Array, k1: Array, x0: Array, x1: Array, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Threefry-2x32-20 of the counters ``(x0, x1)`` under the key ``(k0, k1)``.

    All four are integer arrays of :func:`word_dtype` holding values in
    ``[0, 2³²)`` (broadcastable to one shape); returns the two output words.
    Each round: ``x0 += x1; x1 = rotl(x1, R) ^ x0``, with the key injected
    every four rounds (``k2 = k0 ^ k1 ^ 0x1BD11BDA``).
    """
    masked = x0.dtype != xp.uint32  # int64 words: keep them to 32 bits

    def add(a: Array, b: Any) -> Array:
        s = a + b
        return s & _MASK if masked else s

    def rotl(a: Array, r: int) -> Array:
        s = (a << r) | (a >> (32 - r))
        return s & _MASK if masked else s

    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = add(x0, ks[0]), add(x1, ks[1])
    for r in range(20):
        x0 = add(x0, x1)
        x1 = rotl(x1, _ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:
            i = r // 4 + 1
            x0 = add(x0, ks[i % 3])
            x1 = add(add(x1, ks[(i + 1) % 3]), i)
    return x0, x1


def random_bits(
    n: int, *, seed: Any, stream: int, step: Any, xp: ModuleType, device: Any = None
) -> Array:
    """``n`` random 32-bit words (values in ``[0, 2³²)``, :func:`word_dtype`).

    The key is ``(seed, stream)``, the counters ``(step, j)`` for ``j < ⌈n/2⌉``,
    and the two output words of counter ``j`` are words ``j`` and ``⌈n/2⌉ + j``.
    ``seed`` and ``step`` may be ints or 0-D integer arrays (traced ones
    included), ``stream`` is an int; each must lie in ``[0, 2³²)``.
    """
    dt = word_dtype(xp)
    half = (n + 1) // 2

    def word(v: Any) -> Array:
        if isinstance(v, int):
            return xp.asarray(v & _MASK, dtype=dt, device=device)
        return xp.astype(v, dt) & _MASK if dt != xp.uint32 else xp.astype(v, dt)

    counter = xp.arange(half, dtype=dt, device=device)
    y0, y1 = threefry2x32(word(seed), word(stream), word(step) + xp.zeros_like(counter),
                          counter, xp=xp)
    return xp.concat([y0, y1])[:n]
