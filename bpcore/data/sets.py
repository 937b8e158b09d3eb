"""Data sets: the built-in toys, scikit-learn's digits, MNIST from local files,
and the user's own ``.npz`` / ``.csv`` files.

Everything here is host-side NumPy (the data edge). Nothing is ever
downloaded: a missing file raises :class:`~bpcore.errors.DataError` saying
where to put it.
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError
from .idx import read_idx

__all__ = ["BUILTIN", "Dataset", "load_dataset"]

#: The data sets named by a plain word; ``mnist:DIR`` and ``fashion-mnist:DIR``
#: and file paths are accepted as well.
BUILTIN = ("digits", "xor", "patterns")

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_SITES = {
    "mnist": "the MNIST site (https://yann.lecun.com/exdb/mnist/ or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",
}


class Dataset(NamedTuple):
    """A data set on the host, raw (unscaled).

    Attributes
    ----------
    X : numpy.ndarray, shape (n, features), float64
    y : numpy.ndarray
        ``(n,)`` int64 class labels, or ``(n, k)`` float64 real-valued targets.
    n_classes : int or None
        Number of classes (``max(label) + 1``) for labels; ``None`` for targets.
    name : str
    X_test, y_test : numpy.ndarray or None
        A predefined test split (MNIST's ``t10k`` files), else ``None``.
    """

    X: np.ndarray
    y: np.ndarray
    n_classes: int | None
    name: str
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def load_dataset(spec: str | os.PathLike[str] = "digits") -> Dataset:
    """Load a data set by name or path.

    Parameters
    ----------
    spec : str or path-like
        * ``"digits"``: scikit-learn's bundled 8×8 digits (1797 × 64, 10 classes).
        * ``"xor"``: the four XOR patterns (2 features, labels 0 1 1 0).
        * ``"patterns"``: the 3-4-1 patterns ``[0,0,1] [1,1,1] [1,0,1] [0,1,1]``
          with labels 0 1 1 0.
        * ``"mnist1d"``: MNIST-1D (Greydanus & Kobak), built locally by the
          ``mnist1d`` package: 4000 × 40 training signals and its own 1000 test
          signals, 10 classes; ``"mnist1d:PATH"`` caches the arrays in PATH
          (see :mod:`bpcore.data.mnist1d`).
        * ``"mnist:PATH"`` / ``"fashion-mnist:PATH"``: PATH is a directory with
          the four IDX files (``train-images-idx3-ubyte`` etc., each optionally
          ``.gz``) or a Keras-layout ``mnist.npz`` (``x_train, y_train, x_test,
          y_test``). Images are flattened to 784 features; the ``t10k`` files
          become the predefined test split.
        * a path to a ``.npz`` (keys ``X``/``y``, ``x``/``y``, or the MNIST layout;
          optional ``X_test``/``y_test``) or a ``.csv`` (numeric, the label in the
          last column, an optional header row).

    Returns
    -------
    Dataset
        ``X`` of shape ``(n, features)`` float64. Integer-valued targets become
        int64 labels of shape ``(n,)`` with ``n_classes = max + 1``; others
        float64 targets of shape ``(n, k)`` with ``n_classes = None``.

    Raises
    ------
    DataError
        For an unknown spec, a missing file (the message says where to put
        it), or a malformed one (the message names the file and the problem).

    Examples
    --------
    >>> ds = load_dataset("xor")
    >>> ds.X.shape, ds.y.tolist(), ds.n_classes
    ((4, 2), [0, 1, 1, 0], 2)
    """
    if isinstance(spec, os.PathLike):
        return _load_file(Path(spec))
    if not isinstance(spec, str):
        raise DataError(
            f"a data set is named by a string or a path, got {type(spec).__name__}"
        )
    word = spec.strip()
    if word == "digits":
        return _digits()
    if word == "xor":
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
        return Dataset(X, np.array([0, 1, 1, 0], dtype=np.int64), 2, "xor")
    if word == "patterns":
        X = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float64)
        return Dataset(X, np.array([0, 1, 1, 0], dtype=np.int64), 2, "patterns")
    if word == "mnist1d" or word.startswith("mnist1d:"):
        from .mnist1d import load_mnist1d

        cache = word.partition(":")[2] or None
        a = load_mnist1d(cache)
        return Dataset(a["x"], a["y"], 10, "mnist1d", a["x_test"], a["y_test"])
    for kind in ("mnist", "fashion-mnist"):
        if word.startswith(kind + ":"):
            where = word[len(kind) + 1:]
            if not where:
                raise DataError(
                    f"{kind}: needs a directory after the colon, e.g. --data {kind}:~/data/{kind}"
                )
            return _mnist(kind, Path(where).expanduser())
    path = Path(word).expanduser()
    if path.suffix.lower() in (".npz", ".csv") or path.exists():
        return _load_file(path)
    raise DataError(
        f"unknown data set {spec!r}; use one of {', '.join(BUILTIN)}, mnist1d, mnist:DIR, "
        "fashion-mnist:DIR, or a path to a .npz or .csv file"
    )


# --------------------------------------------------------------------------
# built-in sets


def _digits() -> Dataset:
    """scikit-learn's bundled digits (1797 8x8 images), read from the file it ships
    (``sklearn/datasets/data/digits.csv.gz``) without importing scikit-learn,
    which takes longer than the whole default training run."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the digits data set comes with scikit-learn, which is not installed; "
            'install it with: pip install "bpcore[train]"'
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / \
        "digits.csv.gz"
    try:
        with gzip.open(path, "rb") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read scikit-learn's digits file {path}: {exc}") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise DataError(f"{path}: expected 65 columns (64 pixels and the label), got "
                        f"shape {table.shape}")
    return Dataset(table[:, :64], table[:, 64].astype(np.int64), 10, "digits")


def _mnist(kind: str, where: Path) -> Dataset:
    site = _MNIST_SITES[kind]
    if where.is_file():
        if where.suffix.lower() != ".npz":
            raise DataError(
                f"{kind}:{where}: expected a directory with the IDX files or an mnist.npz "
                "file, got another kind of file"
            )
        return _npz(where, name=kind)
    if not where.is_dir():
        raise DataError(
            f"{kind}: {where} does not exist. Download train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            f"t10k-labels-idx1-ubyte.gz from {site}, place them in {where}, "
            f"then pass --data {kind}:{where} (bpcore never downloads anything)"
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in _MNIST_FILES.items():
        for candidate in (where / stem, where / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(stem)
    if missing:
        for npz in (where / f"{kind}.npz", where / "mnist.npz"):
            if npz.is_file():
                return _npz(npz, name=kind)
        raise DataError(
            f"{kind}: {where} lacks {', '.join(m + '[.gz]' for m in missing)}. Download "
            f"{', '.join(m + '.gz' for m in missing)} from {site}, place them in {where}, "
            f"then pass --data {kind}:{where} (or put a Keras-layout mnist.npz there); "
            "bpcore never downloads anything"
        )
    arrays = {key: read_idx(p) for key, p in found.items()}
    X, y = _images(arrays["train_images"], arrays["train_labels"], found["train_images"])
    X_test, y_test = _images(arrays["test_images"], arrays["test_labels"], found["test_images"])
    return _make(X, y, kind, X_test, y_test, source=str(where))


def _images(images: np.ndarray, labels: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if labels.ndim != 1 or images.ndim < 2 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: {images.shape[0] if images.ndim else 0} images of shape "
            f"{images.shape[1:]} but labels of shape {labels.shape}; the image and label "
            "files do not belong together"
        )
    return images.reshape(images.shape[0], -1).astype(np.float64), labels


# --------------------------------------------------------------------------
# the user's own files


def _load_file(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; give a .npz "
            "(arrays X and y) or a .csv (numeric, label in the last column)"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path passed as --data")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a {suffix} file")
    return _npz(path, name=path.stem) if suffix == ".npz" else _csv(path)


def _npz(path: Path, name: str) -> Dataset:
    try:
        # our own handle: np.load leaks its file when the archive is corrupt
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            keys = set(z.files)
            if {"x_train", "y_train"} <= keys:
                X, y = z["x_train"], z["y_train"]
                X_test = z["x_test"] if "x_test" in keys else None
                y_test = z["y_test"] if "y_test" in keys else None
            else:
                xk = "X" if "X" in keys else "x" if "x" in keys else None
                if xk is None or "y" not in keys:
                    raise DataError(
                        f"{path}: expected arrays X and y (or x and y, or x_train, y_train, "
                        f"x_test, y_test), found {', '.join(sorted(keys)) or 'none'}; "
                        "save with np.savez(path, X=X, y=y)"
                    )
                X, y = z[xk], z["y"]
                tk = "X_test" if "X_test" in keys else "x_test" if "x_test" in keys else None
                X_test = z[tk] if tk else None
                y_test = z["y_test"] if "y_test" in keys else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: cannot read it as a .npz archive ({exc}); the file may be "
            "truncated, corrupt, or hold pickled objects (which bpcore never loads)"
        ) from None
    if (X_test is None) != (y_test is None):
        raise DataError(f"{path}: has a test split for only one of X and y; give both or neither")
    X = _features(X, path)
    if X_test is not None:
        X_test = _features(X_test, path, "test ")
        if X_test.shape[1] != X.shape[1]:
            raise DataError(
                f"{path}: the test split has {X_test.shape[1]} features but the training "
                f"data {X.shape[1]}"
            )
    return _make(X, y, name, X_test, y_test, source=str(path))


def _features(X: np.ndarray, path: Path, which: str = "") -> np.ndarray:
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: {which}features must be numeric, got dtype {X.dtype}")
    if X.ndim < 1 or X.shape[0] == 0:
        raise DataError(f"{path}: the {which}feature array is empty (shape {X.shape})")
    X = X.reshape(X.shape[0], -1) if X.ndim != 2 else X
    X = X.astype(np.float64)
    if X.shape[1] == 0:
        raise DataError(f"{path}: the {which}samples have no features (shape {X.shape})")
    if not np.isfinite(X).all():
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise DataError(
            f"{path}: the {which}features hold {bad} NaN or infinite value"
            f"{'s' if bad != 1 else ''}; remove or impute them first"
        )
    return X


def _csv(path: Path) -> Dataset:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            skip, first = 0, ""
            for first in f:
                skip += 1
                if first.strip():
                    break
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as a text file ({exc})") from None
    if not first.strip():
        raise DataError(f"{path}: the file is empty")
    delimiter = _delimiter(first)
    # a header names the features: a data row may still have a named label last
    header = not _numeric_row(_fields(first.rstrip("\r\n"), delimiter)[:-1] or ["x"])
    try:  # the fast C parser; on any problem, re-parse in Python for a precise message
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            values = np.loadtxt(
                path, delimiter=delimiter, skiprows=skip if header else 0, ndmin=2,
                dtype=np.float64, comments=None, encoding="utf-8-sig",
            )
    except (ValueError, UnicodeDecodeError):
        values, named = _csv_slow(path, delimiter, skip if header else 0)
        if named is not None:
            return _make(_checked_csv(values, path), named, path.stem, source=str(path))
    if values.shape[0] == 0:
        raise DataError(f"{path}: has a header row but no data")
    if values.shape[1] < 2:
        raise DataError(
            f"{path}: each row needs at least two columns (features, then the label), "
            f"found {values.shape[1]}"
        )
    values = _checked_csv(values, path)
    return _make(values[:, :-1], values[:, -1], path.stem, source=str(path))


def _checked_csv(values: np.ndarray, path: Path) -> np.ndarray:
    """The parsed numbers, refused with the row and column of a NaN/Inf."""
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        what = "a missing value (NaN)" if np.isnan(values[i, j]) else "an infinite value"
        raise DataError(
            f"{path}: data row {i + 1}, column {j + 1} holds {what}; {len(bad)} "
            f"value{'s' if len(bad) != 1 else ''} in all are not finite: remove or impute "
            "them first"
        )
    return values


def _csv_slow(path: Path, delimiter: str, skip: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse a CSV in Python, raising a DataError that names the line and column.

    Returns the numbers, and the labels when the last column names classes
    (then the numbers are the features only)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as a text file ({exc})") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if i >= skip and line.strip()]
    rows = [(n, _fields(line, delimiter)) for n, line in numbered]
    if not rows:
        return np.empty((0, 0)), None
    width = len(rows[0][1])
    named = width >= 2 and all(len(f) == width and f[-1] != "" and _number(f[-1]) is None
                               for _, f in rows)
    if named:  # the last column names the classes
        labels = np.array([f[-1] for _, f in rows])
        rows = [(n, f[:-1]) for n, f in rows]
        width -= 1
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, (lineno, fields) in enumerate(rows):
        if len(fields) != width:
            raise DataError(
                f"{path}: line {lineno} has {len(fields)} columns but line {rows[0][0]} "
                f"has {width}; every row needs the same number of columns"
            )
        for j, field in enumerate(fields):
            if field == "":
                raise DataError(
                    f"{path}: line {lineno}, column {j + 1} is empty (a missing value); "
                    "remove or impute it first"
                )
            v = _number(field)
            if v is None:
                raise DataError(
                    f"{path}: line {lineno}, column {j + 1}: {field!r} is not a number"
                )
            values[i, j] = v
    return values, (labels if named else None)


def _delimiter(first: str) -> str:
    for d in (",", ";", "\t"):
        if d in first:
            return d
    return ","


def _fields(line: str, delimiter: str) -> list[str]:
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter), [])]


def _number(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


def _numeric_row(fields: list[str]) -> bool:
    """A data row: every field is a number or empty (a missing value)."""
    return all(f == "" or _number(f) is not None for f in fields)


# --------------------------------------------------------------------------
# targets: labels or real values


def _make(
    X: np.ndarray, y: Any, name: str,
    X_test: np.ndarray | None = None, y_test: Any = None, *, source: str,
) -> Dataset:
    y = _targets(np.asarray(y), X.shape[0], source)
    if y_test is not None and X_test is not None:
        y_test = _targets(np.asarray(y_test), X_test.shape[0], source, "test ")
    labels = [t for t in (y, y_test) if t is not None]
    if all(t.dtype.kind in "OSU" for t in labels):  # named classes, e.g. "cat", "dog"
        out = [t.reshape(t.shape[0]).astype(str) for t in labels]
        n_classes = len(np.unique(np.concatenate(out)))
        return Dataset(X, out[0], n_classes, name, X_test, out[1] if len(out) > 1 else None)
    if all(_integral(t) for t in labels):
        out = [t.reshape(t.shape[0]).astype(np.int64) for t in labels]
        classes = np.unique(np.concatenate(out))
        # labels 0..k-1 mean outputs 0..k-1; any others (gaps, negative, large) are
        # numbered in order by the model, one output per class
        n_classes = int(classes[-1]) + 1 if classes[0] >= 0 and classes[-1] < len(classes) \
            else len(classes)
        y = out[0]
        y_test = out[1] if len(out) > 1 else None
        return Dataset(X, y, n_classes, name, X_test, y_test)
    floats = [(t.reshape(t.shape[0], 1) if t.ndim == 1 else t).astype(np.float64) for t in labels]
    if len(floats) > 1 and floats[1].shape[1] != floats[0].shape[1]:
        raise DataError(
            f"{source}: training targets have {floats[0].shape[1]} columns but test "
            f"targets {floats[1].shape[1]}"
        )
    return Dataset(X, floats[0], None, name, X_test, floats[1] if len(floats) > 1 else None)


def _targets(y: np.ndarray, n: int, source: str, which: str = "") -> np.ndarray:
    if y.dtype.kind in "OSU":
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"{source}: {n} {which}samples but {which}labels of shape "
                            f"{y.shape}; give one label per row of X")
        return y
    if y.dtype.kind not in "biuf":
        raise DataError(f"{source}: {which}targets must be numeric, got dtype {y.dtype}")
    if y.ndim == 0 or y.shape[0] != n:
        raise DataError(
            f"{source}: {n} {which}samples but {which}targets of shape {y.shape}; "
            "give one target (label) per row of X"
        )
    if y.ndim > 2:
        raise DataError(
            f"{source}: {which}targets must be (n,) labels or (n, k) values, got shape {y.shape}"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{source}: the {which}targets hold NaN or infinite values; remove them")
    if y.ndim == 1:
        y = y.reshape(n, 1) if not _integral(y) else y
    elif y.shape[1] == 1 and _integral(y):
        y = y.reshape(n)
    return y


def _integral(y: np.ndarray) -> bool:
    """Labels: an integer dtype, or floats that are all whole numbers, in 1 column."""
    if y.ndim == 2 and y.shape[1] != 1:
        return False
    if y.dtype.kind in "biu":
        return True
    return bool(np.all(y == np.round(y)))
