"""Preparing a data set for training: splits, feature scaling and mini-batches.

All host-side NumPy. Every random choice is drawn from a generator seeded by
the caller, so a seed reproduces a split or an epoch's batch order exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError, SettingError, ShapeError
from .sets import Dataset

__all__ = ["SCALERS", "Scaler", "Splits", "batch_indices", "fit_scaler", "split"]

#: The feature scalings :func:`fit_scaler` knows.
SCALERS = ("standard", "minmax", "none")


class Splits(NamedTuple):
    """Train, validation and test arrays (validation and test may have 0 rows)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def split(
    ds: Dataset, *, val: float = 0.1, test: float = 0.2, seed: int = 0, stratify: bool = True
) -> Splits:
    """Split a data set into train, validation and test parts.

    Parameters
    ----------
    ds : Dataset
        ``X`` of shape ``(n, features)``; ``y`` of shape ``(n,)`` or ``(n, k)``.
    val, test : float
        Fractions of the samples for validation and test, ``0 <= val, test`` and
        ``val + test < 1``. A fraction above 0 gets at least one sample. When the
        data set has a predefined test split (MNIST's ``t10k`` files) that is
        the test set, ``test`` is ignored, and validation is carved out of the
        training data.
    seed : int
        Seeds the shuffle; the same seed gives the same split.
    stratify : bool
        For class labels, split each class in proportion, so every class is
        represented in every part where it has enough samples.

    Returns
    -------
    Splits
        ``X_*`` of shape ``(m, features)``, ``y_*`` of shape ``(m,)`` or ``(m, k)``.

    Raises
    ------
    DataError
        For fractions outside the range above, or too few samples to give
        every part at least one.

    Examples
    --------
    >>> from bpcore.data import load_dataset
    >>> s = split(load_dataset("digits"), val=0.1, test=0.2, seed=0)
    >>> len(s.X_train), len(s.X_val), len(s.X_test)
    (1258, 180, 359)
    """
    predefined = ds.X_test is not None and ds.y_test is not None
    _fraction("val", val)
    if not predefined:
        _fraction("test", test)
    if val + (0.0 if predefined else test) >= 1.0:
        raise DataError(
            f"val + test must be below 1 so that some data is left to train on, got "
            f"val={val}, test={test}"
        )
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    if X.ndim != 2 or y.ndim not in (1, 2) or X.shape[0] != y.shape[0]:
        raise DataError(
            f"data set {ds.name!r}: X of shape {X.shape} and y of shape {y.shape} do not "
            "match; X must be (n, features) and y (n,) or (n, k)"
        )
    n = X.shape[0]
    n_test = 0 if predefined else _count(test, n)
    n_val = _count(val, n)
    if n - n_test - n_val < 1:
        raise DataError(
            f"data set {ds.name!r} has {n} samples: too few for val={val} and test={test} "
            "with at least one sample in each part; lower the fractions or get more data"
        )
    rng = np.random.default_rng(seed)
    if stratify and ds.n_classes is not None and y.ndim == 1:
        test_idx, val_idx, train_idx = _stratified(y, n_test, n_val, rng)
    else:
        order = rng.permutation(n)
        test_idx, val_idx, train_idx = (
            order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        )
    if predefined:
        assert ds.X_test is not None and ds.y_test is not None
        X_test, y_test = ds.X_test, ds.y_test
    else:
        X_test, y_test = X[test_idx], y[test_idx]
    if ds.n_classes is not None and y.ndim == 1 and (n_val or n_test):
        missing = np.setdiff1d(np.unique(y), np.unique(y[train_idx]))
        if missing.size:
            raise DataError(
                f"data set {ds.name!r} ({n} samples): with val={val} and test={test} no "
                f"training sample is left of class {missing[0]!r}; lower the fractions "
                "(e.g. --val 0 --test 0 to train and evaluate on every sample) or get more data"
            )
    return Splits(X[train_idx], y[train_idx], X[val_idx], y[val_idx], X_test, y_test)


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and 0.0 <= value < 1.0
    ):
        raise DataError(f"{name} must be a fraction in [0, 1), got {value!r}; e.g. {name}=0.1")


def _count(fraction: float, n: int) -> int:
    """Round ``fraction * n`` half up; a positive fraction gets at least one."""
    k = math.floor(fraction * n + 0.5)
    return max(k, 1) if fraction > 0 else 0


def _stratified(
    y: np.ndarray, n_test: int, n_val: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes, inverse = np.unique(y, return_inverse=True)
    members = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    counts = np.array([len(m) for m in members], dtype=np.int64)
    test_k = _allocate(n_test, counts)
    val_k = _allocate(n_val, counts - test_k)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for m, t, v in zip(members, test_k, val_k, strict=True):
        parts[0].append(m[:t])
        parts[1].append(m[t:t + v])
        parts[2].append(m[t + v:])
    return tuple(  # type: ignore[return-value]
        rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts
    )


def _allocate(total: int, avail: np.ndarray) -> np.ndarray:
    """Share ``total`` samples among classes in proportion to ``avail``.

    Largest remainders, then two adjustments: a class keeps one sample back
    (for training) where it can, and every class gets one where ``total``
    allows.
    """
    alloc = np.zeros(len(avail), dtype=np.int64)
    if total == 0:
        return alloc
    cap = np.maximum(avail - 1, 0)
    if cap.sum() < total:
        cap = avail.copy()
    exact = total * avail / avail.sum()
    alloc = np.minimum(np.floor(exact).astype(np.int64), cap)
    eligible = cap >= 1
    floor = np.zeros_like(alloc)
    if total >= int(eligible.sum()):
        floor = eligible.astype(np.int64)
        alloc = np.maximum(alloc, floor)
    while alloc.sum() < total:
        alloc[np.argmax(np.where(alloc < cap, exact - alloc, -np.inf))] += 1
    while alloc.sum() > total:
        alloc[np.argmin(np.where(alloc > floor, exact - alloc, np.inf))] -= 1
    return alloc


# --------------------------------------------------------------------------
# feature scaling


class Scaler(NamedTuple):
    """A per-feature affine scaling ``(X - shift) / scale``, fitted on training data.

    Attributes
    ----------
    method : str
        ``"standard"``, ``"minmax"`` or ``"none"``.
    shift, scale : numpy.ndarray, shape (features,)
    """

    method: str
    shift: np.ndarray
    scale: np.ndarray

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - shift) / scale`` in float64; ``X`` of shape ``(n, features)``.

        Raises
        ------
        ShapeError
            If ``X`` is not 2-D with as many features as the scaler was fitted on.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.shift.shape[0]:
            raise ShapeError(
                f"the scaler was fitted on {self.shift.shape[0]} features but got data of "
                f"shape {X.shape}; scale data shaped like the training data (n, "
                f"{self.shift.shape[0]})"
            )
        return (X.astype(np.float64) - self.shift) / self.scale

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``method``, ``shift``, ``scale`` as lists of floats)."""
        return {
            "method": self.method,
            "shift": [float(v) for v in self.shift],
            "scale": [float(v) for v in self.scale],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Rebuild a scaler from :meth:`to_dict`'s output.

        Raises
        ------
        DataError
            If ``d`` lacks a key, names an unknown method, or its arrays differ
            in length or hold zeros or non-finite values in ``scale``.
        """
        try:
            method = d["method"]
            shift = np.asarray(d["shift"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a scaler description ({exc!r}): {d!r:.200}") from None
        if method not in SCALERS:
            raise DataError(f"unknown scaler method {method!r}; choose one of {', '.join(SCALERS)}")
        if shift.ndim != 1 or shift.shape != scale.shape:
            raise DataError(
                f"scaler shift {shift.shape} and scale {scale.shape} must be 1-D of one length"
            )
        if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale != 0).all()):
            raise DataError("scaler shift and scale must be finite and scale nonzero")
        return cls(method, shift, scale)


def fit_scaler(X_train: np.ndarray, method: str = "standard") -> Scaler:
    """Fit a feature scaling on the training split only.

    Parameters
    ----------
    X_train : numpy.ndarray, shape (n, features)
    method : str
        ``"standard"`` (zero mean, unit variance), ``"minmax"`` (the training
        range mapped to ``[0, 1]``) or ``"none"``. A constant feature gets scale
        1, so it is shifted but never divided by zero.

    Returns
    -------
    Scaler
        ``shift`` and ``scale`` of shape ``(features,)``; apply with
        ``scaler.transform(X)`` to every split.

    Examples
    --------
    >>> import numpy as np
    >>> s = fit_scaler(np.array([[0.0, 5.0], [2.0, 5.0]]), "minmax")
    >>> s.transform(np.array([[1.0, 5.0]])).tolist()
    [[0.5, 0.0]]
    """
    if method not in SCALERS:
        raise DataError(f"unknown scaler {method!r}; choose one of {', '.join(SCALERS)}")
    X = np.asarray(X_train)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(
            f"fit_scaler needs a non-empty 2-D (n, features) array, got shape {X.shape}"
        )
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise DataError("the training features hold NaN or infinite values; remove them first")
    features = X.shape[1]
    if method == "none":
        return Scaler(method, np.zeros(features), np.ones(features))
    low, high = X.min(axis=0), X.max(axis=0)
    constant = high == low
    if method == "minmax":
        shift, scale = low, high - low
    else:
        shift, scale = X.mean(axis=0), X.std(axis=0)
    return Scaler(method, shift, np.where(constant | (scale == 0), 1.0, scale))


# --------------------------------------------------------------------------
# mini-batches


def batch_indices(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays of the mini-batches of one epoch.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Samples per batch; the last batch may be smaller.
    seed, epoch : int
        The epoch's permutation is drawn from ``np.random.default_rng([seed,
        epoch])``, so it depends on nothing else: a resumed run reproduces it
        without saving any generator state.
    shuffle : bool
        If false, batches are ``0..n-1`` in order.

    Yields
    ------
    numpy.ndarray of int64, shape (batch,)
        Together they cover ``range(n)`` exactly once.

    Raises
    ------
    ValueError
        If ``batch_size < 1``, ``n < 0``, or ``seed`` or ``epoch`` is negative.

    Examples
    --------
    >>> [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=0, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    for name, value, low in (("n", n, 0), ("batch_size", batch_size, 1),
                             ("seed", seed, 0), ("epoch", epoch, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SettingError(f"batch_indices: {name} must be an int >= {low}, got {value!r}")
    if shuffle:
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
    else:
        order = np.arange(int(n))
    order = order.astype(np.int64, copy=False)
    return (order[i:i + batch_size] for i in range(0, int(n), int(batch_size)))
