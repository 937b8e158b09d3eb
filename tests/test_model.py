"""bpcore.Model: fit / evaluate / predict / save / load on every backend, and resume."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from conftest import require_backend

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.errors import (
    CheckpointError,
    DTypeError,
    LabelError,
    NonFiniteError,
    ShapeError,
)
from bpcore.model import Model, NotFittedError, optimizer_from_config


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matmuls: one BLAS/torch thread is fastest, and much faster on a busy machine."""
    from threadpoolctl import threadpool_limits

    torch = None
    try:
        import torch
    except ImportError:
        pass
    before = torch.get_num_threads() if torch is not None else 0
    if torch is not None:
        torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    if torch is not None:
        torch.set_num_threads(before)


def blobs(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs: X (n, 4) float64, labels (n,) int64."""
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0, 0, 1], [0, 3.0, 0, -1], [0, 0, 3.0, 0]])
    labels = np.arange(n) % 3
    X = centers[labels] + rng.normal(0.0, 0.5, size=(n, 4))
    return X * 10 + 5, labels.astype(np.int64)  # unscaled on purpose


def small_model(**kwargs: object) -> Model:
    options: dict[str, object] = {"activation": "tanh", "lr": 0.05, "batch_size": 16}
    options.update(kwargs)
    return Model([4, 8, 3], **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# every backend


def test_fit_evaluate_predict_on_every_backend(xp: ModuleType) -> None:
    X, y = blobs()
    X_before = X.copy()
    model = small_model()
    assert model.backend.name == backend_name(xp)
    history = model.fit(X, y, epochs=4, validation_data=(X[:12], y[:12]), progress=False)

    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(history[0]) == {
        "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_s",
    }
    assert history[-1]["accuracy"] > 0.9 and history[-1]["val_accuracy"] > 0.9
    np.testing.assert_array_equal(X, X_before)  # the caller's data are not touched
    assert bp.namespace(model.params[0]["W"]) is xp

    scores = model.evaluate(X, y)
    assert scores["accuracy"] == pytest.approx(history[-1]["accuracy"])
    assert scores["loss"] > 0

    labels = model.predict(X)  # NumPy in, NumPy out
    assert isinstance(labels, np.ndarray) and labels.shape == (48,)
    assert np.mean(labels == y) == pytest.approx(scores["accuracy"])
    proba = model.predict_proba(X)
    assert proba.shape == (48, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(proba, axis=1), labels)

    on_backend = model.predict_proba(xp.asarray(X))  # backend in, backend out
    assert bp.namespace(on_backend) is xp
    np.testing.assert_allclose(bp.to_numpy(on_backend), proba, rtol=1e-6)


def test_save_on_one_backend_load_on_another(xp: ModuleType, tmp_path: object) -> None:
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=2, progress=False)
    path = model.save(tmp_path / "model.npz")  # type: ignore[operator]

    on_numpy = Model.load(path, backend="numpy")
    assert on_numpy.backend.name == "numpy" and on_numpy.epoch == 2
    assert on_numpy.history == model.history
    np.testing.assert_array_equal(on_numpy.predict(X), model.predict(X))
    np.testing.assert_allclose(on_numpy.predict_proba(X), model.predict_proba(X), rtol=1e-5)
    for mine, theirs in zip(model.params, on_numpy.params):
        for k in mine:
            np.testing.assert_array_equal(bp.to_numpy(mine[k]), theirs[k])

    # and back: trained on NumPy, loaded on this backend
    with bp.use_backend("numpy"):
        host = small_model()
        host.fit(X, y, epochs=2, progress=False)
        host.save(tmp_path / "host.npz")  # type: ignore[operator]
    moved = Model.load(tmp_path / "host.npz")  # type: ignore[operator]
    assert moved.backend.name == backend_name(xp)
    np.testing.assert_array_equal(moved.predict(X), host.predict(X))
    assert moved.evaluate(X, y)["accuracy"] == pytest.approx(host.evaluate(X, y)["accuracy"])


def test_float64_on_every_backend(xp: ModuleType) -> None:
    X, y = blobs(24)
    model = small_model(dtype="float64")
    model.fit(X, y, epochs=1, progress=False)
    assert model.dtype == "float64"
    assert model.params[0]["W"].dtype == xp.float64
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------
# resume bit for bit


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_resume_is_bit_for_bit(backend: str, optimizer: str, tmp_path: object) -> None:
    require_backend(backend)
    X, y = blobs(40)
    kwargs = {"backend": backend, "optimizer": optimizer, "batch_size": 8, "seed": 3}
    straight = small_model(**kwargs)
    straight.fit(X, y, epochs=4, validation_data=(X[:8], y[:8]), progress=False)

    first = small_model(**kwargs)
    first.fit(X, y, epochs=2, validation_data=(X[:8], y[:8]), progress=False)
    first.save(tmp_path / "half.npz")  # type: ignore[operator]
    resumed = Model.load(tmp_path / "half.npz", backend=backend)  # type: ignore[operator]
    resumed.fit(X, y, epochs=2, validation_data=(X[:8], y[:8]), progress=False)

    assert resumed.epoch == straight.epoch == 4
    for a, b in zip(straight.params, resumed.params):
        for k in a:
            np.testing.assert_array_equal(bp.to_numpy(a[k]), bp.to_numpy(b[k]))
    a_state = bp.tree.map_arrays(bp.to_numpy, straight.opt_state)
    b_state = bp.tree.map_arrays(bp.to_numpy, resumed.opt_state)
    assert type(a_state) is type(b_state)
    for x, z in zip(_leaves(a_state), _leaves(b_state)):
        np.testing.assert_array_equal(x, z)
    keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
    assert [[r[k] for k in keys] for r in straight.history] == \
        [[r[k] for k in keys] for r in resumed.history]


def _leaves(tree: object) -> list[object]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [tree]


def test_saved_model_keeps_its_scaler_and_settings(tmp_path: object) -> None:
    X, y = blobs()
    model = small_model(scaling="minmax", optimizer="adamw", weight_decay=0.1, batch_size=5)
    model.fit(X, y, epochs=1, progress=False)
    model.extra["note"] = "kept"
    loaded = Model.load(model.save(tmp_path / "m.npz"))  # type: ignore[operator]
    assert loaded.scaler is not None and loaded.scaler.method == "minmax"
    np.testing.assert_array_equal(loaded.scaler.shift, X.min(axis=0))
    assert loaded.optimizer.config == model.optimizer.config
    assert (loaded.batch_size, loaded.seed, loaded.sizes) == (5, 0, [4, 8, 3])
    assert loaded.extra == {"note": "kept"}
    assert loaded.n_classes == 3


def test_save_refuses_to_overwrite(tmp_path: object) -> None:
    model = small_model()
    path = model.save(tmp_path / "m.npz")  # type: ignore[operator]
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(path)
    model.save(path, overwrite=True)


def test_load_corrupt_file_names_it(tmp_path: object) -> None:
    path = tmp_path / "broken.npz"  # type: ignore[operator]
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"broken\.npz"):
        Model.load(path)


# --------------------------------------------------------------------------
# what fit does with the data


def test_scaler_is_fitted_on_the_first_training_data_only() -> None:
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=1, progress=False)
    assert model.scaler is not None
    np.testing.assert_allclose(model.scaler.shift, X.mean(axis=0))
    shift = model.scaler.shift.copy()
    model.fit(X * 3 + 1, y, epochs=1, progress=False)  # a second fit reuses it
    np.testing.assert_array_equal(model.scaler.shift, shift)


def test_predict_before_fit_needs_the_scaler() -> None:
    X, _ = blobs()
    with pytest.raises(NotFittedError, match="call fit"):
        small_model().predict(X)
    labels = small_model(scaling="none").predict(X)  # nothing to fit: works
    assert labels.shape == (48,)


def test_binary_classifier_with_one_output() -> None:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 4, dtype=np.float64)
    y = np.array([0, 1, 1, 0] * 4)
    model = Model([2, 8, 1], activation="tanh", loss="binary_cross_entropy", lr=0.05,
                  batch_size=4, scaling="none")
    model.fit(X, y, epochs=150, progress=False)
    assert model.n_classes == 2
    np.testing.assert_array_equal(model.predict(X[:4]), [0, 1, 1, 0])
    proba = model.predict_proba(X[:4])
    assert proba.shape == (4, 1) and np.all((proba > 0) & (proba < 1))
    assert model.evaluate(X, y)["accuracy"] == 1.0


def test_regression_reports_no_accuracy() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.stack([X[:, 0] + X[:, 1], X[:, 2]], axis=1)
    model = Model([3, 16, 2], loss="mse", lr=0.01, batch_size=8)
    history = model.fit(X, y, epochs=5, progress=False)
    assert model.n_classes is None
    assert history[-1]["accuracy"] is None and history[-1]["loss"] < history[0]["loss"]
    assert model.evaluate(X, y)["accuracy"] is None
    assert model.predict(X).shape == (40, 2)


def test_integer_labels_with_mse_are_one_hot() -> None:
    X, y = blobs()
    model = small_model(loss="mse")
    model.fit(X, y, epochs=3, progress=False)
    assert model.n_classes == 3
    assert model.evaluate(X, y)["accuracy"] > 0.5
    assert set(np.unique(model.predict(X))) <= {0, 1, 2}


def test_half_sse_loss_is_reported_per_sample() -> None:
    X, y = blobs()
    model = small_model(loss="half_sse", batch_size=48, optimizer="sgd", lr=0.0)
    history = model.fit(X, y, epochs=1, progress=False)
    assert history[0]["loss"] == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-6)


def test_ready_layer_and_ready_optimizer() -> None:
    net = bp.sequential(bp.dense(4, 8), bp.relu(), bp.dense(8, 3))
    model = Model(net, optimizer=bp.sgd(lr=0.1, momentum=0.9))
    assert model.sizes == [4, 8, 3]
    X, y = blobs()
    model.fit(X, y, epochs=2, progress=False)
    assert optimizer_from_config(model.optimizer.config).config == model.optimizer.config
    with pytest.raises(ValueError, match="ready Optimizer"):
        Model(net, optimizer=bp.adam(), lr=0.1)


def test_callbacks_see_each_epoch_and_can_stop() -> None:
    X, y = blobs()
    seen: list[int] = []

    def stop_after_two(model: Model, record: dict[str, object]) -> bool:
        seen.append(int(record["epoch"]))  # type: ignore[call-overload]
        return model.epoch == 2

    history = small_model().fit(X, y, epochs=10, progress=False, callbacks=[stop_after_two])
    assert seen == [1, 2] and len(history) == 2


def test_logs_one_line_per_epoch(caplog: pytest.LogCaptureFixture) -> None:
    X, y = blobs()
    with caplog.at_level(logging.INFO, logger="bpcore"):
        small_model().fit(X, y, epochs=2, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "bpcore.model"]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  loss ") and "acc " in lines[0]
    assert "samples/s" in lines[1]


def test_progress_bar_draws_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    X, y = blobs()
    small_model().fit(X, y, epochs=1, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err
    small_model().fit(X, y, epochs=1)  # stderr is not a terminal here: no bar
    assert "epoch 1/1" not in capsys.readouterr().err


# --------------------------------------------------------------------------
# bad input: one clear error before any training


def test_bad_data_is_refused_with_its_fix() -> None:
    X, y = blobs()
    model = small_model()
    with pytest.raises(ShapeError, match="5 features but the network's first layer takes 4"):
        model.fit(np.ones((48, 5)), y, progress=False)
    with pytest.raises(ShapeError, match="2-D"):
        model.fit(X[:, 0], y, progress=False)
    with pytest.raises(ShapeError, match="one target"):
        model.fit(X, y[:10], progress=False)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="1 NaN or infinite value"):
        model.fit(bad, y, progress=False)
    four = y.copy()
    four[0] = 9  # a fourth class for a network with three outputs
    with pytest.raises(LabelError, match="4 classes"):
        model.fit(X, four, progress=False)
    with pytest.raises(LabelError, match="non-integer"):
        model.fit(X, y + 0.5, progress=False)
    with pytest.raises(DTypeError, match="real numbers"):
        model.fit(X.astype(str), y, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        model.fit(X, y, epochs=-1, progress=False)
    assert model.epoch == 0 and model.history == [] and model.scaler is None


def test_labels_for_one_output_must_be_binary() -> None:
    X, y = blobs()
    model = Model([4, 8, 1], loss="binary_cross_entropy")
    with pytest.raises(LabelError, match=r"3 classes .* one output tells two classes apart"):
        model.fit(X, y, progress=False)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        Model([4, 3], optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size"):
        Model([4, 3], batch_size=0)
    with pytest.raises(ValueError, match="scaling"):
        Model([4, 3], scaling="robust")
    with pytest.raises(TypeError, match="list of sizes"):
        Model("64,10")  # type: ignore[arg-type]
    with pytest.raises(bp.DTypeError, match="float32"):
        Model([4, 3], dtype="float16")


def test_diverging_training_says_to_lower_the_learning_rate() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 1)) * 100
    model = Model([3, 8, 1], loss="mse", optimizer="sgd", lr=10.0, scaling="none")
    with pytest.raises(NonFiniteError, match="lower the learning rate"):
        model.fit(X, y, epochs=30, progress=False)


def test_docstring_examples_run() -> None:
    import doctest

    import bpcore.model

    failures, tried = doctest.testmod(bpcore.model)
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------
# a network that begins with an embedding: integer inputs


def tokens(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 5 indices in [0, 12); label: whether index 3 occurs in them."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 12, size=(n, 5))
    return X, np.any(X == 3, axis=1).astype(np.int64)


def embedding_net(time: bool = True) -> bp.Layer:
    if time:  # (batch, time) indices
        return bp.sequential(bp.embedding(12, 4), bp.flatten(), bp.dense(20, 16), bp.relu(),
                             bp.dense(16, 2))
    return bp.sequential(bp.embedding(12, 4), bp.dense(4, 2))  # (batch,) indices


@pytest.mark.parametrize("time", [True, False])
def test_embedding_model_fits_predicts_saves_and_loads_integer_inputs(
    xp: ModuleType, time: bool, tmp_path: object
) -> None:
    X, y = tokens()
    if not time:
        X, y = X[:, 0], (X[:, 0] % 2).astype(np.int64)
    X_before = X.copy()
    model = Model(embedding_net(time), lr=0.02, batch_size=16, optimizer="adam")
    assert model.n_index == 12 and model.scaling == "none"
    history = model.fit(X, y, epochs=15, progress=False)
    np.testing.assert_array_equal(X, X_before)
    assert model.scaler is None  # indices are never scaled
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.8
    labels = model.predict(X)
    assert labels.shape == (len(X),)
    # the network sees the integers themselves, neither scaled nor cast to float
    logits = bp.predict(model.net, model.params, xp.asarray(X), state=model.opt_state)
    np.testing.assert_array_equal(np.argmax(bp.to_numpy(logits), axis=1), labels)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)
    assert model.evaluate(X, y)["accuracy"] == pytest.approx(np.mean(labels == y))

    path = model.save(tmp_path / "embedding.npz")  # type: ignore[operator]
    loaded = Model.load(path)
    assert loaded.n_index == 12 and loaded.epoch == 15 and loaded.scaler is None
    np.testing.assert_array_equal(loaded.predict(X), labels)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-6)
    loaded.fit(X, y, epochs=1, progress=False)
    assert loaded.epoch == 16
    on_numpy = Model.load(path, backend="numpy")
    np.testing.assert_array_equal(on_numpy.predict(X), labels)


def test_embedding_model_refuses_bad_indices_with_the_fix() -> None:
    X, y = tokens(16)
    model = Model(embedding_net(), batch_size=8)
    with pytest.raises(DTypeError, match=r"integer indices .* embedding of 12 rows.*"
                                         r"X\.astype\(np\.int64\)"):
        model.fit(X.astype(np.float64), y, progress=False)
    with pytest.raises(LabelError, match=r"index 12 is out of range: the embedding has 12 rows"):
        model.fit(np.where(X == 0, 12, X), y, progress=False)
    with pytest.raises(ShapeError, match=r"\(samples,\) or \(samples, time\)"):
        model.fit(X[:, :, None], y, progress=False)
    with pytest.raises(ShapeError, match=r"does not fit the network"):
        model.fit(X[:, :4], y, progress=False)  # the dense layer takes 5 x 4 features
    model.fit(X, y, epochs=1, progress=False)
    with pytest.raises(DTypeError, match=r"integer indices"):
        model.predict(X.astype(np.float32))
