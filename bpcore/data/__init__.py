"""Data for training: loading, splitting, scaling and batching (host-side NumPy).

This is the data edge of bpcore: everything here works on NumPy arrays on the
host and never touches the kernels. A training loop loads a :class:`Dataset`,
splits it (:func:`split`), fits a :class:`Scaler` on the training part only
(:func:`fit_scaler`), and draws each epoch's batches with
:func:`batch_indices`, before moving a batch to its backend.

Examples
--------
>>> from bpcore.data import batch_indices, fit_scaler, load_dataset, split
>>> ds = load_dataset("digits")
>>> s = split(ds, val=0.1, test=0.2, seed=0)
>>> scaler = fit_scaler(s.X_train)
>>> X = scaler.transform(s.X_train)
>>> first = next(batch_indices(len(X), 32, seed=0, epoch=0))
>>> X[first].shape
(32, 64)
"""

from __future__ import annotations

from .idx import parse_idx, read_idx
from .prep import SCALERS, Scaler, Splits, batch_indices, fit_scaler, split
from .sets import BUILTIN, Dataset, load_dataset

__all__ = [
    "BUILTIN",
    "SCALERS",
    "Dataset",
    "Scaler",
    "Splits",
    "batch_indices",
    "fit_scaler",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "split",
]
