"""bpcore.sklearn: scikit-learn's own estimator checks, the same models as
scikit-learn's MLP, every array backend under array API dispatch, and the tools
(Pipeline, GridSearchCV, cross_val_score with workers) the estimators must fit in."""

from __future__ import annotations

import os

# scikit-learn's array API dispatch needs SciPy's, switched on before SciPy is imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import copy
import pickle
import subprocess
import sys
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="bpcore.sklearn needs scikit-learn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import bpcore as bp  # noqa: E402
from bpcore.backend import backend_name, device_of  # noqa: E402
from bpcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

needs_dispatch = pytest.mark.skipif(
    os.environ.get("SCIPY_ARRAY_API") != "1",
    reason="array API dispatch needs SCIPY_ARRAY_API=1 before SciPy is imported",
)
quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# --------------------------------------------------------------------------
# scikit-learn's own checks: every one, no expected failures


@quiet
@parametrize_with_checks([MLPClassifier(max_iter=50), MLPRegressor(max_iter=50)])
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


# --------------------------------------------------------------------------
# the same model as scikit-learn's MLP (float64 on NumPy: equal to rounding)


def _classification(n_classes: int = 3, n: int = 150, seed: int = 0) -> tuple[Any, Any]:
    X, y = make_classification(n_samples=n, n_features=6, n_informative=4,
                               n_classes=n_classes, random_state=seed)
    return X, y


def _assert_same_model(ours: Any, theirs: Any, X: Any, *, rtol: float = 1e-9) -> None:
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(bp.to_numpy(a), b, rtol=rtol, atol=rtol)
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=rtol, nan_ok=True) \
            if theirs.best_loss_ is not None else ours.best_loss_ is None
    else:
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-7)
    for name in ("n_layers_", "n_outputs_", "out_activation_", "n_features_in_", "t_"):
        if hasattr(theirs, name):
            assert getattr(ours, name) == getattr(theirs, name), name
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                                   rtol=rtol, atol=rtol)
    else:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=rtol, atol=rtol)


@quiet
@pytest.mark.parametrize("params", [
    dict(max_iter=15),                                             # the defaults
    dict(max_iter=300, tol=1e-3, n_iter_no_change=3),              # stops on tol
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.3, max_iter=60,
         hidden_layer_sizes=(8, 5), activation="tanh", alpha=0.1, n_iter_no_change=2),
    dict(solver="sgd", learning_rate="invscaling", nesterovs_momentum=False, max_iter=10,
         batch_size=32, activation="logistic"),
    dict(solver="sgd", momentum=0.0, max_iter=10, shuffle=False, activation="identity"),
    dict(early_stopping=True, max_iter=40, n_iter_no_change=4, hidden_layer_sizes=(16,)),
    dict(solver="lbfgs", max_iter=30, hidden_layer_sizes=(12,), alpha=1e-2),
])
def test_classifier_is_sklearns_mlp(params: dict[str, Any]) -> None:
    X, y = _classification()
    kw = dict(random_state=0, **params)
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = neural_network.MLPClassifier(**kw).fit(X, y)
    _assert_same_model(ours, theirs, X, rtol=1e-6 if params.get("solver") == "lbfgs" else 1e-9)
    if params.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_validation_score_ == theirs.best_validation_score_


@quiet
@pytest.mark.parametrize("target", ["binary", "strings", "multilabel", "weighted"])
def test_classifier_targets_as_sklearn(target: str) -> None:
    X, y = _classification(n_classes=2 if target == "binary" else 3)
    sample_weight = None
    if target == "strings":
        y = np.array(["cat", "dog", "emu"])[y]
    elif target == "multilabel":
        y = np.stack([y == 0, y == 1, X[:, 0] > 0], axis=1).astype(int)
    elif target == "weighted":
        sample_weight = np.random.default_rng(0).uniform(0.2, 2.0, len(y))
    kw = dict(random_state=1, max_iter=12, hidden_layer_sizes=(20,), alpha=1e-3)
    ours = MLPClassifier(**kw).fit(X, y, sample_weight=sample_weight)
    theirs = neural_network.MLPClassifier(**kw).fit(X, y, sample_weight=sample_weight)
    _assert_same_model(ours, theirs, X)
    assert ours.predict(X).dtype == theirs.predict(X).dtype


@quiet
@pytest.mark.parametrize("params", [
    dict(max_iter=20),
    dict(loss="poisson", max_iter=20, hidden_layer_sizes=(10,)),
    dict(solver="sgd", learning_rate_init=0.01, max_iter=25, early_stopping=True,
         n_iter_no_change=3),
    dict(solver="lbfgs", max_iter=25, hidden_layer_sizes=(10,)),
])
@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_is_sklearns_mlp(params: dict[str, Any], outputs: int) -> None:
    X, y = make_regression(n_samples=120, n_features=5, n_targets=outputs, noise=0.1,
                           random_state=0)
    y = y / np.std(y)
    if params.get("loss") == "poisson":
        y = np.exp(y / 2)
    kw = dict(random_state=0, **params)
    ours = MLPRegressor(**kw).fit(X, y)
    theirs = neural_network.MLPRegressor(**kw).fit(X, y)
    _assert_same_model(ours, theirs, X, rtol=1e-6 if params.get("solver") == "lbfgs" else 1e-9)
    assert ours.predict(X).shape == y.shape


def test_convergence_warning_and_stopping_rule() -> None:
    X, y = _classification()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stops on tol, so no warning
        model = MLPClassifier(max_iter=500, tol=1e-2, n_iter_no_change=2,
                              random_state=0).fit(X, y)
    curve = model.loss_curve_
    assert model.n_iter_ == len(curve) < 500
    # scikit-learn's rule: stop at the first epoch that makes it n_iter_no_change + 1
    # epochs in a row whose loss is not below the best so far by tol
    best, count, stop = np.inf, 0, None
    for epoch, loss in enumerate(curve, 1):
        count = count + 1 if loss > best - 1e-2 else 0
        best = min(best, loss)
        if count > 2:
            stop = epoch
            break
    assert stop == len(curve)
    assert model.best_loss_ == min(curve)


@quiet
def test_partial_fit_and_warm_start_as_sklearn() -> None:
    X, y = _classification()
    classes = np.unique(y)
    ours, theirs = MLPClassifier(random_state=0), neural_network.MLPClassifier(random_state=0)
    for model in (ours, theirs):
        with pytest.raises(ValueError, match="classes must be passed"):
            clone(model).partial_fit(X, y)
        for start in (0, 50, 100):
            model.partial_fit(X[start:start + 50], y[start:start + 50], classes=classes)
    _assert_same_model(ours, theirs, X)
    with pytest.raises(ValueError, match=r"not in `self\.classes_`"):
        ours.partial_fit(X[:5], np.full(5, 7))
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")

    kw = dict(random_state=0, max_iter=5, warm_start=True)
    ours, theirs = MLPRegressor(**kw), neural_network.MLPRegressor(**kw)
    Xr, yr = make_regression(n_samples=80, n_features=4, random_state=0)
    for model in (ours, theirs):
        model.fit(Xr, yr / 100).fit(Xr, yr / 100)
    _assert_same_model(ours, theirs, Xr)
    assert len(ours.loss_curve_) == 10


def test_verbose_prints_sklearns_lines(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = _classification()
    MLPClassifier(max_iter=3, verbose=True, random_state=0, tol=10.0,
                  n_iter_no_change=1).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ")
    assert out[-1].endswith("consecutive epochs. Stopping.")


# --------------------------------------------------------------------------
# every backend: computation and fitted arrays stay there; the same model


def _on(xp: ModuleType, a: np.ndarray) -> Any:
    return xp.asarray(a)


@needs_dispatch
@quiet
def test_classifier_on_every_backend(xp: ModuleType) -> None:
    X, y = _classification()
    kw = dict(random_state=0, max_iter=8, hidden_layer_sizes=(16,), alpha=1e-3)
    reference = MLPClassifier(**kw).fit(X, y)
    Xb, yb = _on(xp, X), _on(xp, y)
    name, device = backend_name(bp.namespace(Xb)), device_of(Xb)
    with sklearn.config_context(array_api_dispatch=True):
        model = MLPClassifier(**kw).fit(Xb, yb)
        proba = model.predict_proba(Xb)
        labels = model.predict(Xb)
        score = model.score(Xb, yb)
    for a in [*model.coefs_, *model.intercepts_, model.classes_, proba, labels]:
        assert backend_name(bp.namespace(a)) == name
        assert device_of(a) == device
    np.testing.assert_allclose(bp.to_numpy(proba), reference.predict_proba(X),
                               rtol=1e-8, atol=1e-10)
    for a, b in zip(model.coefs_, reference.coefs_):
        np.testing.assert_allclose(bp.to_numpy(a), b, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(bp.to_numpy(labels), reference.predict(X))
    assert score == pytest.approx(reference.score(X, y))
    np.testing.assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=1e-8)
    again = pickle.loads(pickle.dumps(model))
    with sklearn.config_context(array_api_dispatch=True):
        np.testing.assert_array_equal(bp.to_numpy(again.predict(Xb)), bp.to_numpy(labels))
        if name != "numpy":  # fitted on this backend: a NumPy X is refused, as scikit-learn does
            with pytest.raises(ValueError, match="must use the same namespace"):
                model.predict(X)


@needs_dispatch
@quiet
def test_regressor_on_every_backend(xp: ModuleType) -> None:
    X, y = make_regression(n_samples=90, n_features=4, n_targets=2, random_state=0)
    y = y / np.std(y)
    w = np.random.default_rng(1).uniform(0.5, 1.5, len(y))
    kw = dict(random_state=0, max_iter=6, hidden_layer_sizes=(12,), early_stopping=True,
              batch_size=20)
    reference = MLPRegressor(**kw).fit(X, y, sample_weight=w)
    with sklearn.config_context(array_api_dispatch=True):
        model = MLPRegressor(**kw).fit(_on(xp, X), _on(xp, y), sample_weight=_on(xp, w))
        predicted = model.predict(_on(xp, X))
    assert backend_name(bp.namespace(predicted)) == backend_name(bp.namespace(_on(xp, X)))
    assert backend_name(bp.namespace(model.coefs_[0])) == backend_name(bp.namespace(predicted))
    np.testing.assert_allclose(bp.to_numpy(predicted), reference.predict(X), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(model.validation_scores_, reference.validation_scores_,
                               rtol=1e-8)


@quiet
@pytest.mark.parametrize("backend", ["torch", "jax", "array_api_strict"])
def test_backend_parameter_computes_there(backend: str) -> None:
    info = bp.backends()[backend]
    if not info.available:
        pytest.skip(f"backend {backend} unavailable: {info.reason}")
    X, y = _classification()
    kw = dict(random_state=0, max_iter=8, hidden_layer_sizes=(16,), alpha=1e-3)  # as above
    reference = MLPClassifier(**kw).fit(X, y)
    model = MLPClassifier(backend=backend, **kw).fit(X, y)
    assert backend_name(bp.namespace(model.coefs_[0])) == backend
    proba = model.predict_proba(X)
    assert isinstance(proba, np.ndarray)  # results come back as the inputs came: NumPy
    np.testing.assert_allclose(proba, reference.predict_proba(X), rtol=1e-8, atol=1e-10)
    if backend == "torch":  # (one float32 backend is enough: each JAX dtype compiles anew)
        float32 = MLPClassifier(backend=backend, dtype="float32", **kw).fit(X, y)
        assert bp.to_numpy(float32.coefs_[0]).dtype == np.float32
        np.testing.assert_allclose(float32.predict_proba(X), reference.predict_proba(X),
                                   atol=1e-4)


@quiet
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_backend_arrays_without_dispatch_become_numpy(backend: str) -> None:
    info = bp.backends()[backend]
    if not info.available:
        pytest.skip(f"backend {backend} unavailable: {info.reason}")
    X, y = _classification()
    xb = bp.to_backend(X, backend)
    model = MLPClassifier(max_iter=3, random_state=0).fit(xb, bp.to_backend(y, backend))
    assert isinstance(model.coefs_[0], np.ndarray)
    assert isinstance(model.predict(xb), np.ndarray)


# --------------------------------------------------------------------------
# the tools it must work in


@quiet
def test_pipeline_grid_search_and_cross_validation_with_workers() -> None:
    X, y = _classification(n=120)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0))
    pipe.fit(X, y)
    assert pipe.predict(X).shape == y.shape
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=2).fit(X, y)
    assert set(search.cv_results_["param_mlpclassifier__alpha"]) == {1e-4, 1e-1}
    scores = cross_val_score(pipe, X, y, cv=2, n_jobs=2)  # workers: pickled estimators
    assert scores.shape == (2,) and np.all(scores > 0.5)
    same = cross_val_score(pipe, X, y, cv=2, n_jobs=1)
    np.testing.assert_allclose(scores, same)
    for twin in (pickle.loads(pickle.dumps(pipe)), copy.deepcopy(pipe)):
        np.testing.assert_array_equal(twin.predict_proba(X), pipe.predict_proba(X))


def test_bad_settings_are_clear_errors() -> None:
    X, y = _classification()
    with pytest.raises(InvalidParameterError, match="solver"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(InvalidParameterError, match="backend"):
        MLPClassifier(backend="tensorflow").fit(X, y)
    with pytest.raises(bp.SettingError, match="float16"):
        MLPClassifier(dtype="float16").fit(X, y)
    with pytest.raises(bp.SettingError, match="hidden_layer_sizes must be > 0"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(bp.DataError, match="y >= 0"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))
    model = _fit_quietly(MLPClassifier(max_iter=1), X, y)
    with pytest.raises(ValueError, match="X has 5 features"):
        model.predict(X[:, :5])


def _fit_quietly(model: Any, X: Any, y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def test_importing_bpcore_does_not_import_sklearn() -> None:
    code = "import sys, bpcore; assert 'sklearn' not in sys.modules; " \
           "assert 'bpcore.sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run() -> None:
    import doctest

    import bpcore.sklearn

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the examples converge: no ConvergenceWarning
        failures, tried = doctest.testmod(bpcore.sklearn)
    assert tried >= 6 and failures == 0
