"""Tests for bpcore.data: loaders (IDX, npz, csv, built-ins), split, Scaler, batch_indices."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bpcore.data import (
    Dataset,
    Scaler,
    batch_indices,
    fit_scaler,
    load_dataset,
    parse_idx,
    read_idx,
    split,
)
from bpcore.errors import DataError, ShapeError

# --------------------------------------------------------------------------
# IDX files


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian sizes and data)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.asarray(arr, dtype=dtype).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def fake_mnist(
    directory: Path, *, n: int = 12, n_test: int = 5, gz: bool = False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(directory / name, arr, gz=gz)
    return arrays


@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_parse_idx_every_dtype(code: int) -> None:
    arr = np.arange(24).reshape(2, 3, 4) - (5 if code != 0x08 else 0)
    out = parse_idx(idx_bytes(arr, code))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=gz)
    out = read_idx(path)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.uint8


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_unknown_type_code() -> None:
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        parse_idx(bytes([0, 0, 7, 1, 0, 0, 0, 1, 0]))


@pytest.mark.parametrize("cut", [2, 6, 20, -1])
def test_idx_truncated(tmp_path: Path, cut: int) -> None:
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    path = tmp_path / "t-idx3-ubyte"
    path.write_bytes(data[:cut])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_longer_than_header_says() -> None:
    with pytest.raises(DataError, match="longer than its header"):
        parse_idx(idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\0")


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "t.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cannot read") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------
# MNIST from local files


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_mnist_idx_directory(tmp_path: Path, gz: bool, kind: str) -> None:
    arrays = fake_mnist(tmp_path, gz=gz)
    ds = load_dataset(f"{kind}:{tmp_path}")
    assert ds.name == kind
    assert ds.X.shape == (12, 784) and ds.X.dtype == np.float64
    assert ds.y.dtype == np.int64 and ds.n_classes == 10
    assert ds.X_test is not None and ds.y_test is not None
    assert ds.X_test.shape == (5, 784)
    np.testing.assert_array_equal(ds.X[3], arrays["train-images-idx3-ubyte"][3].ravel())
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_mnist_keras_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    y_train = np.arange(8, dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=np.arange(3))
    for spec in (f"mnist:{path}", f"mnist:{tmp_path}", str(path)):
        ds = load_dataset(spec)
        assert ds.X.shape == (8, 784) and ds.n_classes == 8
        assert ds.X_test is not None and ds.X_test.shape == (3, 784)
        np.testing.assert_array_equal(ds.X[2], x_train[2].ravel())


def test_mnist_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(f"mnist:{tmp_path / 'absent'}")
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "absent") in msg
    assert "--data mnist:" in msg
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as info:
        load_dataset(f"fashion-mnist:{tmp_path / 'partial'}")
    assert "fashion-mnist" in str(info.value)


def test_mnist_mismatched_image_and_label_counts(tmp_path: Path) -> None:
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        load_dataset(f"mnist:{tmp_path}")


# --------------------------------------------------------------------------
# built-in sets


def test_digits() -> None:
    pytest.importorskip("sklearn")
    ds = load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float64
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.n_classes == 10 and ds.X_test is None
    assert load_dataset().name == "digits"


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(DataError, match=r'pip install "bpcore\[train\]"'):
        load_dataset("digits")


def test_digits_are_read_without_importing_sklearn() -> None:
    import subprocess
    import sys

    code = ("import sys, bpcore.data as d; ds = d.load_dataset('digits'); "
            "print(ds.X.shape, ds.n_classes, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "(1797, 64) 10 False"
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits")
    np.testing.assert_array_equal(ds.X, bunch.data)
    np.testing.assert_array_equal(ds.y, bunch.target)


def test_xor_and_patterns() -> None:
    xor = load_dataset("xor")
    np.testing.assert_array_equal(xor.X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert xor.y.tolist() == [0, 1, 1, 0] and xor.n_classes == 2
    pat = load_dataset("patterns")
    np.testing.assert_array_equal(pat.X, [[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]])
    assert pat.y.tolist() == [0, 1, 1, 0] and pat.y.dtype == np.int64


def test_unknown_spec() -> None:
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="needs a directory"):
        load_dataset("mnist:")


# --------------------------------------------------------------------------
# the user's own npz and csv files


@pytest.mark.parametrize("xkey", ["X", "x"])
def test_npz_labels_round_trip(tmp_path: Path, xkey: str) -> None:
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], dtype=np.int32)
    path = tmp_path / "mine.npz"
    np.savez(path, **{xkey: X, "y": y})
    ds = load_dataset(path)
    assert ds.name == "mine" and ds.n_classes == 4
    np.testing.assert_array_equal(ds.X, X.astype(np.float64))
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, y)


def test_npz_real_targets_and_test_split(tmp_path: Path) -> None:
    path = tmp_path / "reg.npz"
    y = np.linspace(0, 1, 6)
    np.savez(path, X=np.ones((6, 2)), y=y, X_test=np.zeros((2, 2)), y_test=np.array([0.5, 1.5]))
    ds = load_dataset(str(path))
    assert ds.n_classes is None
    assert ds.y.shape == (6, 1) and ds.y.dtype == np.float64
    assert ds.y_test is not None and ds.y_test.shape == (2, 1)


def test_npz_float_whole_numbers_are_labels(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, X=np.ones((3, 2)), y=np.array([[0.0], [2.0], [1.0]]))
    ds = load_dataset(path)
    assert ds.y.tolist() == [0, 2, 1] and ds.y.dtype == np.int64 and ds.n_classes == 3


def test_npz_multi_column_targets(tmp_path: Path) -> None:
    path = tmp_path / "k.npz"
    np.savez(path, X=np.ones((4, 2)), y=np.eye(4)[:, :2])
    ds = load_dataset(path)
    assert ds.n_classes is None and ds.y.shape == (4, 2)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"A": np.ones((3, 2)), "y": np.zeros(3)}, "expected arrays X and y"),
        ({"X": np.ones((3, 2)), "y": np.zeros(4)}, "3 samples but targets of shape"),
        ({"X": np.array([[1.0, np.nan]] * 3), "y": np.zeros(3)}, "NaN or infinite"),
        ({"X": np.ones((3, 2)), "y": np.array([0.5, np.inf, 1.0])}, "NaN or infinite"),
        ({"X": np.array([["a", "b"]] * 3), "y": np.zeros(3)}, "must be numeric"),
        ({"X": np.ones((0, 2)), "y": np.zeros(0)}, "empty"),
    ],
)
def test_npz_bad_files(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_npz_garbage_and_pickle(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match=r"cannot read it as a \.npz") as info:
        load_dataset(path)
    assert str(path) in str(info.value)
    obj = tmp_path / "obj.npz"
    np.savez(obj, X=np.array([{"a": 1}] * 2, dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match=r"pickled"):
        load_dataset(obj)


def test_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("f1,f2,label\n1.5,2,0\n3,4,2\n\n5,6,1\n")
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.X, [[1.5, 2], [3, 4], [5, 6]])
    assert ds.y.tolist() == [0, 2, 1] and ds.n_classes == 3 and ds.name == "h"


def test_csv_without_header_and_real_targets(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("1,2,0.25\n3,4,-1.5\n")
    ds = load_dataset(str(path))
    assert ds.X.shape == (2, 2) and ds.n_classes is None
    np.testing.assert_array_equal(ds.y, [[0.25], [-1.5]])


def test_csv_semicolons_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("\ufeffa;b\n1;0\n2;1\n".encode())
    ds = load_dataset(path)
    assert ds.X.tolist() == [[1.0], [2.0]] and ds.y.tolist() == [0, 1]


def test_csv_round_trip_matches_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 4))
    y = rng.integers(0, 3, 20)
    csv_path, npz_path = tmp_path / "a.csv", tmp_path / "a.npz"
    np.savetxt(csv_path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="")
    np.savez(npz_path, X=X, y=y)
    a, b = load_dataset(csv_path), load_dataset(npz_path)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-15)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.n_classes == b.n_classes


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,0\n3,1\n", "line 2 has 2 columns but line 1 has 3"),
        ("1,2,0\n3,,1\n", "line 2, column 2 is empty"),
        ("1,2,0\n3,nan,1\n", "row 2, column 2 holds a missing value"),
        ("1,2,0\n3,x,1\n", r"line 2, column 2: 'x' is not a number"),
        ("1\n2\n", "at least two columns"),
        ("a,b\n", "header row but no data"),
        ("\n\n", "empty"),
    ],
)
def test_csv_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file") as info:
        load_dataset(tmp_path / "gone.csv")
    assert "gone.csv" in str(info.value)
    other = tmp_path / "data.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(other)


# --------------------------------------------------------------------------
# split


def labelled(n_per_class: tuple[int, ...]) -> Dataset:
    y = np.concatenate([np.full(k, c, dtype=np.int64) for c, k in enumerate(n_per_class)])
    X = np.arange(len(y), dtype=np.float64)[:, None] * np.ones((1, 2))
    return Dataset(X, y, len(n_per_class), "toy")


def test_split_sizes_cover_everything_once() -> None:
    ds = labelled((40, 30, 30))
    s = split(ds, val=0.1, test=0.2, seed=0)
    assert (len(s.X_train), len(s.X_val), len(s.X_test)) == (70, 10, 20)
    ids = np.concatenate([s.X_train[:, 0], s.X_val[:, 0], s.X_test[:, 0]])
    assert sorted(ids.tolist()) == list(range(100))
    for X, y in ((s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)):
        np.testing.assert_array_equal(ds.y[X[:, 0].astype(int)], y)


def test_split_is_stratified() -> None:
    s = split(labelled((60, 30, 10)), val=0.1, test=0.2, seed=1)
    assert np.bincount(s.y_test, minlength=3).tolist() == [12, 6, 2]
    assert np.bincount(s.y_val, minlength=3).tolist() == [6, 3, 1]


def test_split_represents_every_class_where_possible() -> None:
    # 3 rare classes with 2 samples each: each still appears in test and in train
    s = split(labelled((50, 2, 2, 2)), val=0.0, test=0.1, seed=0)
    assert set(s.y_test.tolist()) == {0, 1, 2, 3}
    assert set(s.y_train.tolist()) == {0, 1, 2, 3}
    assert len(s.y_val) == 0 and s.X_val.shape == (0, 2)


def test_split_seed_determinism() -> None:
    ds = labelled((20, 20))
    a, b, c = split(ds, seed=5), split(ds, seed=5), split(ds, seed=6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.X_train, c.X_train)


def test_split_unstratified_and_real_targets() -> None:
    X = np.arange(50, dtype=np.float64)[:, None]
    ds = Dataset(X, X * 2.0, None, "reg")
    s = split(ds, val=0.2, test=0.2, seed=0)
    assert (len(s.X_train), len(s.X_val), len(s.X_test)) == (30, 10, 10)
    np.testing.assert_array_equal(s.y_test, s.X_test * 2.0)
    s2 = split(labelled((10, 10)), val=0.0, test=0.5, stratify=False, seed=0)
    assert len(s2.y_test) == 10


def test_split_uses_predefined_test_split() -> None:
    ds = labelled((10, 10))._replace(X_test=np.zeros((4, 2)), y_test=np.array([0, 1, 0, 1]))
    s = split(ds, val=0.1, test=0.9, seed=0)  # test is ignored
    assert s.X_test is ds.X_test and s.y_test is ds.y_test
    assert (len(s.X_train), len(s.X_val)) == (18, 2)
    assert sorted(s.y_val.tolist()) == [0, 1]


def test_split_tiny_xor() -> None:
    s = split(load_dataset("xor"), val=0.25, test=0.25, seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (2, 1, 1)


@pytest.mark.parametrize(
    ("val", "test"), [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5), (float("nan"), 0.1), (0.1, "0.2")]
)
def test_split_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(DataError):
        split(labelled((10, 10)), val=val, test=test)


def test_split_too_few_samples() -> None:
    with pytest.raises(DataError, match="too few"):
        split(labelled((1, 1)), val=0.3, test=0.3)


# --------------------------------------------------------------------------
# Scaler


def test_standard_scaler_uses_train_stats_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(200, 3))
    test = rng.normal(-5.0, 9.0, size=(50, 3))
    scaler = fit_scaler(train)
    np.testing.assert_allclose(scaler.shift, train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale, train.std(axis=0))
    t = scaler.transform(train)
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(t.std(axis=0), 1.0)
    np.testing.assert_allclose(scaler.transform(test), (test - train.mean(0)) / train.std(0))


def test_scaler_constant_columns_and_no_mutation() -> None:
    X = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    before = X.copy()
    for method in ("standard", "minmax"):
        s = fit_scaler(X, method)
        assert s.scale[1] == 1.0
        out = s.transform(X)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[:, 1], 0.0)
    np.testing.assert_array_equal(X, before)


def test_minmax_maps_train_to_unit_range() -> None:
    X = np.random.default_rng(2).uniform(-4, 9, size=(30, 4))
    out = fit_scaler(X, "minmax").transform(X)
    np.testing.assert_allclose(out.min(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(out.max(axis=0), 1.0)


def test_none_scaler_is_identity_in_float64() -> None:
    X = np.arange(6, dtype=np.int32).reshape(3, 2)
    out = fit_scaler(X, "none").transform(X)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, X)


def test_scaler_dict_round_trip() -> None:
    import json

    s = fit_scaler(np.random.default_rng(0).normal(size=(10, 3)))
    back = Scaler.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.method == "standard"
    np.testing.assert_array_equal(back.shift, s.shift)
    np.testing.assert_array_equal(back.scale, s.scale)


def test_scaler_errors() -> None:
    with pytest.raises(DataError, match="unknown scaler"):
        fit_scaler(np.ones((2, 2)), "robust")
    with pytest.raises(DataError, match="non-empty 2-D"):
        fit_scaler(np.ones(3))
    with pytest.raises(DataError, match="NaN"):
        fit_scaler(np.array([[np.nan]]))
    with pytest.raises(ShapeError, match="fitted on 2 features"):
        fit_scaler(np.ones((2, 2))).transform(np.ones((2, 3)))
    with pytest.raises(DataError):
        Scaler.from_dict({"method": "standard", "shift": [0.0]})
    with pytest.raises(DataError):
        Scaler.from_dict({"method": "standard", "shift": [0.0], "scale": [0.0]})


# --------------------------------------------------------------------------
# batch_indices


def test_batches_cover_each_index_once() -> None:
    batches = list(batch_indices(10, 3, seed=0, epoch=0))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert all(b.dtype == np.int64 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))


def test_batches_depend_only_on_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return np.concatenate(list(batch_indices(50, 8, seed=seed, epoch=epoch))).tolist()

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) == np.random.default_rng([1, 3]).permutation(50).tolist()
    assert order(1, 3) != order(1, 4)
    assert order(1, 3) != order(2, 3)


def test_batches_without_shuffle_and_empty() -> None:
    assert [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=0, shuffle=False)] == [
        [0, 1], [2, 3], [4]
    ]
    assert list(batch_indices(0, 4, seed=0, epoch=0)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": -2},
        {"batch_size": 2.5},
        {"n": -1},
        {"seed": -1},
        {"epoch": -3},
    ],
)
def test_batches_bad_arguments(kwargs: dict[str, float]) -> None:
    args = {"n": 10, "batch_size": 4, "seed": 0, "epoch": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        batch_indices(args.pop("n"), args.pop("batch_size"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("labels", "n_classes"), [
    (np.array([0, -1, 1, 0]), 3),
    (np.arange(250000, 250004), 4),
    (np.array([0, 2, 1, 2]), 3),
])
def test_integer_labels_count_their_classes(tmp_path: Path, labels: np.ndarray,
                                            n_classes: int) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((4, 2)), y=labels)
    ds = load_dataset(path)
    assert ds.n_classes == n_classes and ds.y.tolist() == labels.tolist()


def test_csv_with_named_classes(tmp_path: Path) -> None:
    path = tmp_path / "pets.csv"
    path.write_text("weight,height,kind\n4.0,30,cat\n30.5,60,dog\n5.1,28,cat\n")
    ds = load_dataset(path)
    assert ds.X.shape == (3, 2) and ds.y.tolist() == ["cat", "dog", "cat"]
    assert ds.n_classes == 2


def test_split_that_leaves_a_class_without_training_samples_is_refused() -> None:
    from bpcore.data import Dataset

    ds = Dataset(np.ones((3, 2)), np.array([0, 1, 2]), 3, "tiny")
    with pytest.raises(DataError, match="no training sample is left of class"):
        split(ds, val=0.0, test=0.34, seed=0)
