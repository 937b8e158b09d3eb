"""Model.fit as people use it: labels as they have them, Keras-style options,
callbacks, divergence that keeps the last finite state, pickling."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from conftest import require_backend

import bpcore as bp
from bpcore import Model
from bpcore.callbacks import EarlyStopping, History
from bpcore.errors import LabelError, NonFiniteError


def blobs(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0, 0, 1], [0, 3.0, 0, -1], [0, 0, 3.0, 0]])
    labels = np.arange(n) % 3
    return centers[labels] + rng.normal(0.0, 0.5, size=(n, 4)), labels


def small(**kwargs: Any) -> Model:
    options: dict[str, Any] = {"activation": "tanh", "lr": 0.05, "batch_size": 16}
    options.update(kwargs)
    return Model([4, 8, 3], **options)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]),
    np.array([-5, 10, 250000]),
    np.array([2.0, 4.0, 6.0]),
], ids=["strings", "ints-with-gaps", "whole-floats"])
def test_labels_as_users_have_them(labels: np.ndarray, tmp_path: Any) -> None:
    X, y = blobs()
    model = small()
    model.fit(X, labels[y], epochs=30, verbose=0)
    assert model.classes_.tolist() == sorted(labels.tolist())
    predicted = model.predict(X)
    assert predicted.dtype == model.classes_.dtype
    assert np.mean(predicted == labels[y]) > 0.9
    assert model.predict_proba(X).shape == (48, 3)
    assert model.evaluate(X, labels[y])["accuracy"] > 0.9
    loaded = Model.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.predict(X), predicted)
    with pytest.raises(LabelError, match="not trained on"):
        model.evaluate(X[:2], np.array([labels[0], "zebra" if labels.dtype.kind == "U" else 7]))


def test_integer_labels_in_range_keep_their_meaning() -> None:
    X, y = blobs()
    model = small()
    model.fit(X[y != 1], y[y != 1], epochs=2, verbose=0)  # class 1 absent from training
    assert model.classes_.tolist() == [0, 1, 2] and model.encoding.identity


def test_one_class_is_refused_before_training() -> None:
    X, _ = blobs()
    model = small()
    with pytest.raises(LabelError, match="one class"):
        model.fit(X, np.zeros(len(X), dtype=int), verbose=0)
    assert model.epoch == 0 and model.scaler is None


def test_history_is_a_dict_of_lists_and_a_list_of_records() -> None:
    X, y = blobs()
    model = small()
    history = model.fit(X, y, epochs=3, validation_split=0.25, verbose=0)
    assert isinstance(history, History) and history is model.history
    assert history.epoch == [1, 2, 3]
    assert len(history.history["loss"]) == 3 and len(history["val_accuracy"]) == 3
    assert history[-1]["epoch"] == 3 and history[0]["loss"] == history["loss"][0]
    assert list(history) == history.records


def test_validation_split_holds_out_the_last_rows() -> None:
    X, y = blobs()
    a = small(seed=1)
    a.fit(X, y, epochs=2, validation_split=0.25, verbose=0)
    b = small(seed=1)
    b.fit(X[:36], y[:36], epochs=2, validation_data=(X[36:], y[36:]), verbose=0)
    assert a.history["val_loss"] == pytest.approx(b.history["val_loss"], rel=1e-6)
    assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-6)
    with pytest.raises(bp.BpcoreError, match="validation_split"):
        small().fit(X, y, validation_split=1.5)


def test_batch_size_and_shuffle() -> None:
    X, y = blobs()
    steps = []

    def count(model: Model, record: dict[str, Any]) -> None:
        steps.append(record["loss"])

    a = small()
    a.fit(X, y, epochs=1, batch_size=48, shuffle=False, verbose=0, callbacks=[count])
    b = small()
    b.fit(X[::-1], y[::-1], epochs=1, batch_size=48, shuffle=False, verbose=0)
    # one batch of all rows: the order of the rows does not change the step
    for p, q in zip(bp.tree.leaves(a.params), bp.tree.leaves(b.params)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert len(steps) == 1


def test_verbose_levels(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = blobs()
    small().fit(X, y, epochs=2, verbose=2)
    err = capsys.readouterr().err
    assert err.count("epoch ") == 2 and "epoch 2/2" in err
    small().fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr().err == ""
    with pytest.raises(bp.BpcoreError, match="verbose"):
        small().fit(X, y, verbose=3)


def test_early_stopping_restores_the_best_epoch() -> None:
    X, y = blobs()
    model = small(lr=0.3)
    seen: dict[int, Any] = {}

    def keep(m: Model, record: dict[str, Any]) -> None:
        seen[record["epoch"]] = m.snapshot()

    stop = EarlyStopping("val_loss", patience=2, restore_best=True)
    model.fit(X[:36], y[:36], epochs=200, validation_data=(X[36:], y[36:]), verbose=0,
              callbacks=[keep, stop])
    assert model.epoch < 200  # stopped early
    assert stop.best_epoch is not None and model.epoch == stop.best_epoch + 2
    best = seen[stop.best_epoch]
    for p, q in zip(bp.tree.leaves(model.params), bp.tree.leaves(best[0])):
        np.testing.assert_array_equal(p, q)
    assert min(model.history["val_loss"]) == pytest.approx(stop.best)


def test_bad_callbacks_fail_before_training() -> None:
    X, y = blobs()
    model = small()
    with pytest.raises(bp.BpcoreError, match="neither callable"):
        model.fit(X, y, epochs=2, callbacks=[5])
    assert model.epoch == 0
    with pytest.raises(bp.BpcoreError, match="does not report"):
        model.fit(X, y, epochs=2, verbose=0, callbacks=[EarlyStopping("val_accuracy")])


def test_sample_weight_two_is_a_duplicated_row() -> None:
    X, y = blobs(12)
    w = np.ones(12)
    w[:3] = 2.0
    a = small(batch_size=64)
    a.fit(X, y, epochs=3, sample_weight=w, verbose=0, shuffle=False)
    dup = np.concatenate([np.arange(12), np.arange(3)])
    b = small(batch_size=64)
    b.scaler = bp.data.fit_scaler(X, "standard")  # the same scaling as a's
    b.fit(X[dup], y[dup], epochs=3, verbose=0, shuffle=False)
    for p, q in zip(bp.tree.leaves(a.params), bp.tree.leaves(b.params)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert a.evaluate(X, y, sample_weight=w)["loss"] == pytest.approx(
        b.evaluate(X[dup], y[dup])["loss"], rel=1e-5)
    with pytest.raises(bp.BpcoreError, match="sample_weight"):
        small().fit(X, y, sample_weight=w[:5])


def test_divergence_names_the_batch_and_keeps_the_last_finite_state(tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=(64, 1)) * 100
    model = Model([3, 8, 1], loss="mse", optimizer="sgd", lr=10.0, scaling="none",
                  batch_size=8)
    with pytest.raises(NonFiniteError, match=r"epoch \d+, batch \d+ of 8.*lower the learning"):
        model.fit(X, y, epochs=30, verbose=0)
    assert all(np.all(np.isfinite(a)) for a in bp.tree.arrays(model.params))
    assert all(np.all(np.isfinite(a)) for a in bp.tree.arrays(model.opt_state))
    model.save(tmp_path / "kept.npz")  # nothing non-finite to refuse


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_pickle_and_deepcopy_rebuild_the_model(backend: str) -> None:
    require_backend(backend)
    X, y = blobs()
    model = small(backend=backend)
    model.fit(X, np.array(["a", "b", "c"])[y], epochs=2, verbose=0)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert clone.backend.name == backend and clone.epoch == 2
        np.testing.assert_array_equal(clone.predict(X), model.predict(X))
        clone.fit(X, np.array(["a", "b", "c"])[y], epochs=1, verbose=0)  # trains on
    assert model.epoch == 2


@pytest.mark.parametrize("backend", ["jax"])
def test_compiled_fit_equals_eager(backend: str) -> None:
    require_backend(backend)
    X, y = blobs(50)
    eager = small(backend=backend, dtype="float64", batch_size=8)
    eager.fit(X, y, epochs=2, verbose=0)
    compiled = small(backend=backend, dtype="float64", batch_size=8, compile=True)
    compiled.fit(X, y, epochs=2, verbose=0)
    for p, q in zip(bp.tree.leaves(eager.params), bp.tree.leaves(compiled.params)):
        np.testing.assert_allclose(bp.to_numpy(p), bp.to_numpy(q), rtol=1e-9, atol=1e-12)
    loop = compiled._loops[False]
    assert "lax.scan" in loop.methods["jax"]
