"""Metrics of a training run: counting correct predictions, and writing the history.

:func:`count_correct` and :func:`predicted_labels` are portable (Array API)
and run on the model's backend; :func:`write_metrics` and
:func:`read_metrics` work on the per-epoch history that
:meth:`bpcore.Model.fit` returns (plain Python numbers, host side).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .backend import Array, namespace
from .errors import SettingError

__all__ = [
    "HISTORY_FIELDS",
    "METRICS_FORMATS",
    "count_correct",
    "predicted_labels",
    "read_metrics",
    "write_metrics",
]

#: The keys of one epoch's record in a training history, in column order.
HISTORY_FIELDS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_s",
)
#: File extensions :func:`write_metrics` understands.
METRICS_FORMATS = (".csv", ".json")


def predicted_labels(
    y: Array, *, threshold: float = 0.0, xp: ModuleType | None = None
) -> Array:
    """Class labels from network outputs.

    Parameters
    ----------
    y : array, shape (batch, k)
        Network outputs (logits or probabilities).
    threshold : float
        For one output (``k == 1``), the label is ``1`` where ``y > threshold``
        (0 for logits, 0.5 for probabilities); otherwise it is ``argmax(y)``.

    Returns
    -------
    labels : integer array, shape (batch,)
        The backend's index dtype (int64; int32 on JAX without 64-bit mode).

    Examples
    --------
    >>> import numpy as np
    >>> predicted_labels(np.array([[0.1, 2.0], [3.0, -1.0]])).tolist()
    [1, 0]
    """
    xp = namespace(y, xp=xp)
    if y.shape[1] == 1:
        # argmax over [threshold, y]: 1 where y > threshold, in argmax's own
        # index dtype (int64, or int32 on JAX without 64-bit mode)
        y = xp.concat([xp.full_like(y, threshold), y], axis=1)
    return xp.argmax(y, axis=1)


def count_correct(
    y: Array, labels: Array, *, threshold: float = 0.0, xp: ModuleType | None = None
) -> Array:
    """How many rows of ``y`` predict their label (a 0-D integer array).

    Parameters
    ----------
    y : array, shape (batch, k)
        Network outputs; see :func:`predicted_labels` for ``threshold``.
    labels : integer array, shape (batch,)

    Examples
    --------
    >>> import numpy as np
    >>> int(count_correct(np.array([[0.1, 2.0], [3.0, -1.0]]), np.array([1, 1])))
    1
    """
    xp = namespace(y, labels, xp=xp)
    return xp.count_nonzero(predicted_labels(y, threshold=threshold, xp=xp) == labels)


def write_metrics(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a per-epoch training history as CSV or JSON (chosen by the extension).

    Parameters
    ----------
    history : sequence of dict
        One record per epoch with the keys of :data:`HISTORY_FIELDS`
        (missing or ``None`` values become empty CSV cells / JSON ``null``).
    path : str or path-like
        ``*.csv``: a header row, then one row per epoch. ``*.json``: an object
        ``{"history": [...], **extra}``.
    extra : dict, optional
        More JSON data (test results, the run's settings); ignored for CSV.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        For an extension other than ``.csv`` or ``.json``.
    OSError
        If the file cannot be written.

    Examples
    --------
    >>> import tempfile, os
    >>> p = write_metrics([{"epoch": 1, "loss": 0.5}], os.path.join(tempfile.mkdtemp(), "m.csv"))
    >>> p.read_text().splitlines()[1]
    '1,0.5,,,,,'
    """
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in METRICS_FORMATS:
        raise SettingError(
            f"cannot write metrics to {target}: the extension must be .csv or .json "
            f"(got {target.suffix or 'none'}), e.g. --metrics run.csv"
        )
    rows = [{k: _clean(record.get(k)) for k in HISTORY_FIELDS} for record in history]
    if target.parent != Path():
        target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with target.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
        doc = {"history": rows, **{k: _clean_tree(v) for k, v in (extra or {}).items()}}
        target.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return target


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read back the history written by :func:`write_metrics` (empty cells are ``None``)."""
    target = Path(path).expanduser()
    if target.suffix.lower() == ".json":
        doc = json.loads(target.read_text(encoding="utf-8"))
        return list(doc["history"])
    with target.open(newline="", encoding="utf-8") as f:
        return [
            {k: (None if v == "" else (int(v) if k == "epoch" else float(v)))
             for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _clean(value: Any) -> Any:
    """A plain int/float/None (NaN and infinities become ``None``: JSON has none)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def _clean_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_tree(v) for v in value]
    return _clean(value)
