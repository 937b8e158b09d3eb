"""Numbers as users pass them: any real number type where a number is expected,
any integral type where an int is.

``3``, ``np.int64(3)``, ``np.array(3)`` (0-D) are the same int; ``0.1``,
``np.float32(0.1)``, ``Fraction(1, 10)``, ``Decimal("0.1")`` and a 0-D float
array the same float. ``bool``, strings, complex numbers and arrays with more
than one element are refused with the error class the caller names, whose
message says what the value was meant to be.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

from .errors import BpcoreError, SettingError

__all__ = ["integer", "real"]


def _scalar(value: Any) -> Any:
    """A 0-D array's value (``np.array(3)`` → ``3``); anything else unchanged."""
    if not isinstance(value, numbers.Number) and getattr(value, "shape", None) == ():
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def real(value: Any, what: str, *, error: type[BpcoreError] = SettingError) -> float:
    """``value`` as a float if it is a real number of any type (finite or not:
    the caller checks the range); else ``error`` saying ``what`` it was meant to be."""
    v = _scalar(value)
    if isinstance(v, bool) or isinstance(v, (str, bytes, complex)):
        raise error(f"{what} must be a real number, got {value!r}")
    try:
        return float(v)  # NumPy scalars, Fraction, Decimal, ...
    except (TypeError, ValueError):
        raise error(f"{what} must be a real number, got {value!r}") from None


def integer(value: Any, what: str, *, low: int = 1,
            error: type[BpcoreError] = SettingError) -> int:
    """``value`` as an int if it is an integer of any integral type and ``>= low``;
    else ``error`` saying ``what`` it was meant to be."""
    v = _scalar(value)
    kind = "a positive int" if low == 1 else f"an int >= {low}"
    if isinstance(v, bool):
        raise error(f"{what} must be {kind}, got {value!r}")
    try:
        n = operator.index(v)  # int, numpy integers; not 2.0
    except TypeError:
        raise error(f"{what} must be {kind}, got {value!r}") from None
    if n < low:
        raise error(f"{what} must be {kind}, got {value!r}")
    return n
