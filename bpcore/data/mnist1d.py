"""MNIST-1D (Greydanus & Kobak, "Scaling down deep learning", 2020), built locally.

The ``mnist1d`` package (``pip install "bpcore[mnist1d]"``) makes the paper's
data set from its ten hand-drawn templates: ``make_dataset(get_dataset_args())``
gives 4,000 training and 1,000 test signals of length 40 (10 classes), the
same every time (its seed, 42), in about 3 s. Its download path (the ``url``
of the arguments) is never used, and nothing is cached unless asked: with a
``path`` the arrays are written there once (``.npz``, atomically) and read
back the next time.

``make_dataset`` seeds Python's and NumPy's global random generators; their
states are put back afterwards, so loading the data changes nothing else in
the process.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["INSTALL", "LENGTH", "load_mnist1d"]

#: The signal length of every sample.
LENGTH = 40
INSTALL = 'pip install "bpcore[mnist1d]"  (the mnist1d package)'
_KEYS = ("x", "y", "x_test", "y_test")


def _build() -> dict[str, np.ndarray]:
    """The paper's data set from the templates (never downloaded)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(f"the MNIST-1D data set is built by the mnist1d package, which is not "
                        f"installed: {INSTALL}") from None
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        data: dict[str, Any] = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002 (put back as it was)
    return {k: np.asarray(data[k]) for k in _KEYS}


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in _KEYS}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not an MNIST-1D cache written by bpcore ({exc}); remove it "
                        "and it is built again") from None
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"],
                     y_test=arrays["y_test"])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_mnist1d(path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """The MNIST-1D arrays: ``x`` (4000, 40) float64, ``y`` (4000,) int64, ``x_test``
    (1000, 40), ``y_test`` (1000,).

    Parameters
    ----------
    path : path-like, optional
        A cache file (``.npz``): read if it exists, else written after building.
        Without it the data are built in memory and nothing is written.

    Raises
    ------
    DataError
        Without the ``mnist1d`` package, or for a cache file that is not one.
    """
    target = None if path is None else Path(path).expanduser()
    if target is not None and target.is_dir():
        target = target / "mnist1d.npz"
    if target is not None and target.exists():
        arrays = _read(target)
    else:
        arrays = _build()
        if target is not None:
            _write(target, arrays)
    x, y = arrays["x"].astype(np.float64), arrays["y"].astype(np.int64)
    x_test, y_test = arrays["x_test"].astype(np.float64), arrays["y_test"].astype(np.int64)
    for name, a, b in (("x", x, y), ("x_test", x_test, y_test)):
        if a.ndim != 2 or a.shape[1] != LENGTH or b.shape != (a.shape[0],) or \
                not np.all(np.isfinite(a)) or b.min() < 0 or b.max() > 9:
            raise DataError(f"the MNIST-1D arrays {name} are malformed (shape {a.shape}); "
                            f"remove the cache {target} and it is built again")
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
