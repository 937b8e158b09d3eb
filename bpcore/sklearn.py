"""scikit-learn estimators trained by bpcore: :class:`MLPClassifier` and :class:`MLPRegressor`.

Drop-in replacements for :class:`sklearn.neural_network.MLPClassifier` and
:class:`~sklearn.neural_network.MLPRegressor`: the same parameters and
defaults, the same fitted attributes, the same initial weights for a
``random_state`` (drawn on the host from the same ``RandomState`` stream, so
the same seed gives the same model on every backend), the same loss, L2
penalty, optimizers, mini-batches, stopping rule and warnings. The training
itself runs through bpcore's step driver (:class:`bpcore.step.Driver`) on the
array backend of the data (see the classes' examples).

**Array API.** With ``sklearn.set_config(array_api_dispatch=True)`` (and
``SCIPY_ARRAY_API=1`` in the environment, as scikit-learn requires), fitting
on PyTorch, JAX, CuPy or array-api-strict arrays keeps the computation and
the fitted arrays (``coefs_``, ``intercepts_``, ``classes_`` where ``y`` is
numeric) on that backend and device, and ``predict``/``predict_proba``
return arrays of that backend. Without dispatch, inputs are converted to
NumPy first, as scikit-learn does. ``backend=`` and ``device=`` choose where
to compute whatever the inputs are (e.g. ``backend="torch",
device="cuda"`` for NumPy data); the fitted arrays then live there and
predictions come back in the namespace of the arrays passed in.

**Where this differs from scikit-learn.** In float64 on NumPy the fitted
model is scikit-learn's to rounding (the tests compare ``coefs_``,
``loss_curve_`` and ``n_iter_`` for every solver). The loss is computed from
the logits (log-sum-exp) rather than from probabilities clipped at machine
epsilon, so ``loss_curve_`` differs only where scikit-learn clips. Sparse
inputs are accepted and densified (bpcore's kernels are dense).
``loss="poisson"`` refuses ``y < 0`` instead of producing NaN. Non-finite
weights after a fit raise :class:`bpcore.NonFiniteError` (a ``ValueError``,
with scikit-learn's message). ``dtype=None`` follows scikit-learn (float32
data stays float32, anything else becomes float64); ``dtype="float32"`` is
faster where float64 is not needed.

scikit-learn (>= 1.6) is an optional dependency, imported by this module only.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from itertools import pairwise
from numbers import Integral, Real
from types import ModuleType
from typing import Any, ClassVar, NamedTuple, cast

import array_api_compat
import numpy as np

try:
    import scipy.sparse as _sparse
    import sklearn
    from sklearn.base import (
        BaseEstimator,
        ClassifierMixin,
        RegressorMixin,
        _fit_context,
        is_classifier,
    )
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.exceptions import NotFittedError as _SkNotFittedError
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, gen_batches
    from sklearn.utils._param_validation import (
        Interval,
        InvalidParameterError,
        Options,
        StrOptions,
    )
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (
        _check_partial_fit_first_call,
        type_of_target,
        unique_labels,
    )
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bpcore.sklearn needs scikit-learn >= 1.6 (and SciPy): pip install 'bpcore[train]' "
        f"({_exc})"
    ) from _exc

from . import tree
from .backend import (
    BACKEND_NAMES,
    Array,
    backend_name,
    device_of,
    dtype_name,
    is_mutable,
    namespace,
    to_backend,
    to_numpy,
)
from .dispatch import specialization
from .errors import ArgumentError, BpcoreError, DataError, LabelError, NonFiniteError, SettingError
from .layers import Layer, mlp, sigmoid_forward, softmax_forward
from .losses import Loss, LossFunction, binary_cross_entropy, mse, softmax_cross_entropy
from .optim import AdamRule, AdamState, Optimizer, adam, adam_update, sgd
from .step import Driver

__all__ = ["MLPClassifier", "MLPRegressor", "NotFittedError", "ParameterError"]

#: scikit-learn's activation names -> bpcore's layers.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

_STOCHASTIC = ("sgd", "adam")


# --------------------------------------------------------------------------
# losses with scikit-learn's scaling, over bpcore's kernels


def _times(loss: Callable[..., tuple[Array, Array]], name: str, targets: str,
           value_scale: float, grad_scale: float) -> Loss:
    """``loss`` with its value and gradient multiplied by constants."""
    if value_scale == 1.0 and grad_scale == 1.0:
        return Loss(name, loss, targets)

    def fn(y: Array, t: Array, *, xp: ModuleType | None = None,
           weights: Array | None = None) -> tuple[Array, Array]:
        value, dy = loss(y, t, xp=xp, weights=weights)
        return value * value_scale, dy * grad_scale

    return Loss(name, fn, targets)


def _poisson(z: Array, t: Array, *, xp: ModuleType | None = None,
             weights: Array | None = None) -> tuple[Array, Array]:
    """Half the Poisson deviance of ``ŷ = exp(z)``, scikit-learn's ``poisson`` loss:
    ``E = Σⱼ Σᵢ rᵢ (tᵢⱼ log(tᵢⱼ/ŷᵢⱼ) − tᵢⱼ + ŷᵢⱼ)`` with ``rᵢ = wᵢ/Σw`` (``1/batch``
    unweighted); ``∂E/∂z = rᵢ (ŷ − t)`` (the log link's canonical gradient)."""
    xp = namespace(z, xp=xp)
    y = xp.exp(z)
    positive = t > 0
    # t log t, with 0 log 0 = 0 (log of 1 where t is 0, never of 0)
    t_log_t = xp.where(positive, t * xp.log(xp.where(positive, t, 1.0)), 0.0)
    if weights is None:
        r = 1.0 / z.shape[0]
        return xp.sum(t_log_t - t * z - t + y) * r, (y - t) * r
    r = (weights / xp.sum(weights))[:, None]
    return xp.sum(r * (t_log_t - t * z - t + y)), r * (y - t)


def _loss_for(kind: str, n_outputs: int) -> LossFunction:
    """The loss of scikit-learn's MLP for a problem ``kind``, as bpcore kernels.

    scikit-learn's batch loss is the (weighted) mean over the samples, summed
    over the outputs, and its gradient ``δ = ŷ − t`` divided by the batch (or
    ``Σw``). bpcore's ``binary_cross_entropy`` and ``mse`` average over the
    outputs too, so they are scaled back; for squared error scikit-learn
    reports ``½·mean`` over samples *and* outputs but descends
    ``½ Σⱼ meanᵢ`` — both are kept as they are.
    """
    if kind == "multiclass":
        loss = Loss("log_loss", softmax_cross_entropy, "classes")
    elif kind == "binary":  # binary and multilabel: logistic outputs
        loss = _times(binary_cross_entropy, "binary_log_loss", "binary", n_outputs, n_outputs)
    elif kind == "poisson":
        loss = Loss("poisson", _poisson, "values")
    else:
        loss = _times(mse, "squared_error", "values", 0.5, 0.5 * n_outputs)
    # a Loss is a LossFunction (its fields are read-only, which the Protocol does not say)
    return cast(LossFunction, loss)


# --------------------------------------------------------------------------
# where the arrays live


def _dispatch() -> bool:
    return bool(sklearn.get_config().get("array_api_dispatch", False))


def _is_backend_array(a: Any) -> bool:
    """An array of a bpcore backend other than NumPy (torch, JAX, CuPy, strict)."""
    return (a is not None and not isinstance(a, np.ndarray) and not _sparse.issparse(a)
            and array_api_compat.is_array_api_obj(a))


def _where(a: Array) -> tuple[str, str]:
    """``(backend name, device as text)`` of an array."""
    if isinstance(a, np.ndarray) or _sparse.issparse(a):
        return "numpy", "cpu"
    return backend_name(namespace(a)), str(device_of(a))


def _moved(a: Any, name: str, device: Any) -> Any:
    """``a`` on backend ``name`` and ``device`` (itself if it is there already)."""
    if a is None:
        return None
    if _sparse.issparse(a):
        a = a.toarray()
    here = _where(a) if _is_backend_array(a) or isinstance(a, np.ndarray) else None
    if here is not None and here[0] == name and (device is None or here[1] == str(device)):
        return a
    return to_backend(a, name, device=device)


def _follow_x(a: Any, x: Any) -> Any:
    """Under array API dispatch, ``y`` or ``sample_weight`` moved to ``X``'s
    backend and device ("everything follows X"); labels that only NumPy can
    hold (strings, objects) stay where they are."""
    if a is None or not _dispatch():
        return a
    if not (_is_backend_array(x) or isinstance(x, np.ndarray)):
        return a
    if not (_is_backend_array(a) or isinstance(a, np.ndarray)):
        return a
    if isinstance(a, np.ndarray) and a.dtype.kind not in "biuf":
        return a
    name, device = _where(x)
    if _where(a) == (name, device):
        return a
    return to_backend(a, name, device=device_of(x) if name != "numpy" else None)


def _float_dtypes(x: Any) -> tuple[Any, ...]:
    """The float dtypes validation may keep, highest first, as scikit-learn's
    array-API estimators ask for them (float64 only where the backend has it)."""
    if not (_dispatch() and _is_backend_array(x)):
        return (np.float64, np.float32)
    xp = array_api_compat.array_namespace(x)
    info = xp.__array_namespace_info__().dtypes(kind="real floating", device=device_of(x))
    return tuple(info[k] for k in ("float64", "float32") if k in info)


def _supported(xp: ModuleType, device: Any, name: str) -> bool:
    """Whether backend ``xp`` holds ``name`` (float32/float64) on ``device``."""
    try:
        return name in xp.__array_namespace_info__().dtypes(kind="real floating",
                                                             device=device)
    except (AttributeError, TypeError):
        return hasattr(xp, name)


# --------------------------------------------------------------------------
# the training step: bpcore's driver plus scikit-learn's L2 penalty


def _step(driver: Driver, xp: ModuleType, alpha: float) -> Callable[..., Any]:
    """``step(params, state, x, t, w, eta) -> (params, state, loss)``.

    The driver's gradients of the batch loss, plus scikit-learn's L2 penalty
    on the weights (not the biases): ``∂/∂W ½α‖W‖²/n = αW/n``, with ``n`` the
    batch (or ``Σw``); ``loss`` includes ``½α Σ‖W‖²/n``, computed on the
    weights before the update, as scikit-learn does. ``eta`` (SGD only)
    scales the whole gradient: with the optimizer's own rate 1 this is
    scikit-learn's momentum, whose velocity is in parameter units, for any
    learning-rate schedule. Then the driver's optimizer update.
    """
    b = driver.bound(xp)

    def step(params: Any, state: Any, x: Array, t: Array, w: Array | None = None,
             eta: Any = None) -> tuple[Any, Any, Array]:
        value, grads = driver.gradients(params, x, t, weights=w, bound=b)
        if alpha:
            c = alpha / (x.shape[0] if w is None else xp.sum(w))
            total = None
            new = []
            for g, p in zip(grads, params):
                if g:
                    W = p["W"]
                    square = xp.sum(W * W)
                    total = square if total is None else total + square
                    g = {"W": g["W"] + c * W, "b": g["b"]}
                new.append(g)
            grads = tuple(new)
            if total is not None:
                value = value + (0.5 * c) * total
        if eta is not None:
            grads = tree.map_arrays(lambda g: g * eta, grads)
        params, state = driver.update(grads, state, params, bound=b)
        return params, state, value

    return step


@functools.lru_cache(maxsize=16)
def _jax_epoch(net_sizes: tuple[int, ...], activation: str, kind: str, n_outputs: int,
               solver: tuple[Any, ...], alpha: float) -> Callable[..., Any]:
    """One epoch on JAX as one XLA program: ``jax.jit`` of a ``lax.scan`` of
    :func:`_step` over the batches (rows gathered inside, parameters and
    optimizer state donated). Kept across fits and clones of one configuration,
    so a refit or a cross-validation compiles once."""
    import jax
    import jax.numpy as jnp

    net = mlp(list(net_sizes), activation, "identity")
    driver = Driver(net, _loss_for(kind, n_outputs), _optimizer(solver), fast=False)
    step = _step(driver, jnp, alpha)

    def epoch(params: Any, state: Any, x: Array, t: Array, w: Array, rows: Array,
              mask: Array, eta: Any) -> tuple[Any, Any, Array]:
        def body(carry: tuple[Any, Any], batch: tuple[Array, Array]) -> tuple[Any, Array]:
            r, m = batch
            p, s, value = step(*carry, jnp.take(x, r, axis=0), jnp.take(t, r, axis=0),
                               jnp.take(w, r, axis=0) * m, eta)
            return (p, s), value

        (params, state), values = jax.lax.scan(body, (params, state), (rows, mask))
        return params, state, values

    return jax.jit(epoch, donate_argnums=(0, 1))


def _activate(z: Array, out_activation: str) -> Array:
    """The output activation of scikit-learn's MLP, with bpcore's kernels."""
    if out_activation == "softmax":
        return softmax_forward(z)[0]
    if out_activation == "logistic":
        return sigmoid_forward(z)[0]
    if out_activation == "exp":
        return namespace(z).exp(z)
    return z


@functools.lru_cache(maxsize=64)
def _predictor(units: tuple[int, ...], activation: str, out_activation: str,
               jax: bool) -> Callable[[Any, Array], Array]:
    """``predict(params, x)``: the forward pass of one architecture and its output
    activation (a driver without workspace: its outputs reach the caller);
    compiled with ``jax.jit`` on JAX."""
    driver = Driver(mlp(list(units), activation, "identity"), "mse")

    def predict(params: Any, x: Array) -> Array:
        return _activate(driver.predict(params, x), out_activation)

    if jax:
        import jax as jax_

        return jax_.jit(predict)
    return predict


def _accuracy(proba: Array, t: Array, w: Array | None, multiclass: bool) -> Array:
    """``accuracy_score`` of probabilities against class indices (or subset
    accuracy against 0/1 columns), weighted by ``w``."""
    xp = namespace(proba)
    if multiclass:
        hit = xp.astype(xp.argmax(proba, axis=1) == t, proba.dtype)
    else:
        hit = xp.astype(xp.all((proba > 0.5) == (t > 0.5), axis=1), proba.dtype)
    return xp.mean(hit) if w is None else xp.sum(hit * w) / xp.sum(w)


def _r2(y: Array, t: Array, w: Array | None) -> Array:
    """``r2_score`` (uniform average over the outputs, weighted by ``w``; 1 or 0
    for a constant target, NaN for non-finite predictions)."""
    xp = namespace(y)
    r = xp.ones((t.shape[0], 1), dtype=t.dtype, device=device_of(t)) if w is None \
        else w[:, None]
    mean = xp.sum(r * t, axis=0) / xp.sum(r)
    residual = xp.sum(r * (t - y) ** 2, axis=0)
    total = xp.sum(r * (t - mean) ** 2, axis=0)
    ones = xp.ones_like(total)
    constant = xp.where(residual == 0, ones, 0.0 * ones)  # force_finite, as r2_score
    r2 = xp.mean(xp.where(total != 0, 1.0 - residual / xp.where(total != 0, total, ones),
                          constant))
    return xp.where(xp.all(xp.isfinite(y)), r2, xp.nan * r2)


@functools.lru_cache(maxsize=8)
def _metric(name: str, multiclass: bool, jax: bool) -> Callable[..., Array]:
    """``score(outputs, t, w) -> 0-D array``: :func:`_accuracy` or :func:`_r2`,
    one compiled program on JAX."""
    fn: Callable[..., Array] = (functools.partial(_accuracy, multiclass=multiclass)
                                if name == "accuracy" else _r2)
    if jax:
        import jax as jax_

        return jax_.jit(fn)
    return fn


def _on_jax(a: Array) -> bool:
    return backend_name(namespace(a)) == "jax"


def _index_dtype(xp: ModuleType, device: Any) -> Any:
    """The backend's default integer type for indices (int64, int32 on JAX
    without 64-bit mode)."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except (AttributeError, TypeError, KeyError):
        return xp.int64


def _adam(lr: float, b1: float, b2: float, eps: float) -> Optimizer:
    """Adam as scikit-learn writes it: ``p ← p − η√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)``.

    bpcore's :func:`~bpcore.optim.adam_update` kernel (and its in-place
    specializations) with other bias-correction scalars: step size
    ``η√(1−β₂ᵗ)/(1−β₁ᵗ)`` and ``1`` for the root, so that ``ε`` is added to
    ``√v`` as scikit-learn does (``torch.optim.Adam`` adds it to ``√v̂``, which
    differs where gradients are below ~1e-7: weights of features that are
    always zero, say).
    """
    base = adam(lr=lr, betas=(b1, b2), eps=eps)
    rule = base.rule
    assert isinstance(rule, AdamRule)

    def update(grads: Any, state: Any, params: Any, *, xp: ModuleType | None = None,
               inplace: bool = False) -> tuple[Any, Any]:
        xp = namespace(tree.first_array(params), xp=xp)
        count = state.count + 1
        scalars = (lr * (1.0 - b2**count) ** 0.5 / (1.0 - b1**count), 1.0)
        g, p, m, v = (tree.leaves(a) for a in (grads, params, state.m, state.v))
        special = specialization(adam_update, xp) if inplace and is_mutable(xp) else None
        if special is not None:  # in place: the gradients are the step's own (scratch)
            for cols in zip(g, p, m, v):
                special(rule, scalars, *cols, scratch=True)
            return params, AdamState(count, state.m, state.v)
        out = [adam_update(rule, scalars, *cols, xp=xp) for cols in zip(g, p, m, v)]
        return (tree.replace(params, [o[0] for o in out]),
                AdamState(count, tree.replace(params, [o[1] for o in out]),
                          tree.replace(params, [o[2] for o in out])))

    return Optimizer(base.init, update, "adam", base.config, None)


def _optimizer(solver: tuple[Any, ...]) -> Optimizer:
    """The optimizer for ``("adam", lr, b1, b2, eps)`` (:func:`_adam`) or
    ``("sgd", momentum, nesterov)``: bpcore's SGD at rate 1, the rate scaling
    the gradient instead (see :func:`_step`)."""
    if solver[0] == "adam":
        _, lr, b1, b2, eps = solver
        return _adam(lr, b1, b2, eps)
    _, mu, nesterov = solver
    return sgd(lr=1.0, momentum=mu, nesterov=bool(nesterov and mu > 0))


# --------------------------------------------------------------------------
# the estimators


class ParameterError(SettingError, InvalidParameterError):
    """A constructor parameter out of its range or of the wrong type: scikit-learn's
    own check and message, raised as a :class:`~bpcore.errors.SettingError`."""


class NotFittedError(BpcoreError, _SkNotFittedError):
    """``predict`` (or another method that needs the fitted weights) before ``fit``."""


def _validated(estimator: Any, *args: Any, **kwargs: Any) -> Any:
    """scikit-learn's ``validate_data``, its refusals raised as bpcore errors with
    scikit-learn's message (so ``except ValueError`` and its checks still match)."""
    try:
        return validate_data(estimator, *args, **kwargs)
    except BpcoreError:
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    except TypeError as exc:
        raise ArgumentError(str(exc)) from exc


class _Prepared(NamedTuple):
    """A data set on the compute backend: inputs, targets, weights."""

    x: Array
    t: Array
    w: Array | None


class _BaseMLP(BaseEstimator):
    """What :class:`MLPClassifier` and :class:`MLPRegressor` share."""

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [None, StrOptions(set(BACKEND_NAMES))],
        "device": "no_validation",
        "dtype": "no_validation",
    }

    # set by the subclasses' __init__ (scikit-learn's convention: no logic there)
    hidden_layer_sizes: Any
    activation: str
    solver: str
    alpha: float
    batch_size: Any
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    random_state: Any
    tol: float
    verbose: Any
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: Any
    max_fun: int
    backend: str | None
    device: Any
    dtype: Any

    # ------------------------------------------------------------------ hooks

    def _validate_params(self) -> None:
        """scikit-learn's parameter checks (``_parameter_constraints``), their
        refusals raised as :class:`ParameterError` (a SettingError)."""
        try:
            super()._validate_params()
        except InvalidParameterError as exc:
            raise ParameterError(str(exc)) from exc

    def _kind(self) -> str:
        raise NotImplementedError

    def _targets(self, y: Any, incremental: bool) -> tuple[Any, int]:
        """The training targets and the number of network outputs."""
        raise NotImplementedError

    def _validation_score(self, z: Array, data: _Prepared) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ fit

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False) -> Any:
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if any(not isinstance(s, Integral) or s <= 0 for s in sizes):
            raise SettingError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        y = _follow_x(y, X)
        sample_weight = _follow_x(sample_weight, X)
        X, y = _validated(
            self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
            dtype=_float_dtypes(X), y_numeric=not is_classifier(self), reset=first_pass,
        )
        if sample_weight is not None:
            try:
                sample_weight = _check_sample_weight(sample_weight, X)
            except ValueError as exc:
                raise DataError(str(exc)) from exc
        where = _where(X)
        if first_pass:
            self._fit_input = where
        t, n_outputs = self._targets(y, incremental)
        self.n_outputs_ = n_outputs
        layer_units = [int(X.shape[1]), *[int(s) for s in sizes], n_outputs]

        data = self._to_compute(X, t, sample_weight, first_pass)
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, data.x)
        elif [tuple(int(n) for n in c.shape) for c in self.coefs_] != \
                list(pairwise(layer_units)):
            raise SettingError(
                f"warm_start/partial_fit: the network has layers "
                f"{[tuple(c.shape) for c in self.coefs_]} but this data needs "
                f"{list(pairwise(layer_units))}; fit it anew (warm_start=False)"
            )
        if self.solver in _STOCHASTIC:
            self._fit_stochastic(data, layer_units, incremental)
        else:
            self._fit_lbfgs(data, layer_units)
        if not all(np.all(np.isfinite(to_numpy(a))) for a in [*self.coefs_, *self.intercepts_]):
            raise NonFiniteError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed (e.g. with StandardScaler), or "
                "the learning rate is too large."
            )
        return self

    def _to_compute(self, X: Any, t: Any, sample_weight: Any, first_pass: bool) -> _Prepared:
        """The validated data on the backend, device and dtype this model computes on."""
        if _sparse.issparse(X):
            X = X.toarray()
        name, device = self._compute_place(X, first_pass)
        x = _moved(X, name, device)
        xp = namespace(x)
        here = device_of(x)
        dtype = self.coefs_[0].dtype if not first_pass else \
            self._compute_dtype(xp, here, x.dtype)
        if x.dtype != dtype:
            x = xp.astype(x, dtype)
        if name == "jax":  # committed to its device: one compilation per shape
            x = xp.asarray(x, device=here)
        t = _moved(t, name, here)
        if self._kind() != "multiclass":  # 0/1 columns or values, in the model's dtype
            t = xp.astype(t, dtype)
        w = None if sample_weight is None else xp.astype(_moved(sample_weight, name, here),
                                                         dtype)
        return _Prepared(x, t, w)

    def _compute_place(self, X: Any, first_pass: bool) -> tuple[str, Any]:
        """The backend name and device to compute on."""
        if not first_pass:
            ref = self.coefs_[0]
            return backend_name(namespace(ref)), device_of(ref)
        source = _where(X)[0]
        name = self.backend or source
        if self.device is not None:
            return name, self.device
        if name == source and source != "numpy":
            return name, device_of(X)
        return name, None

    def _compute_dtype(self, xp: ModuleType, device: Any, given: Any) -> Any:
        """The dtype to compute in: ``dtype`` if set, else the data's (float64 or
        float32), float32 where the backend has no float64."""
        if self.dtype is not None:
            name = dtype_name(self.dtype)
            if name not in ("float32", "float64"):
                raise SettingError(
                    f"dtype={self.dtype!r} is not supported: bpcore computes in float32 or "
                    "float64; pass dtype='float32', dtype='float64' or None (the data's)"
                )
            if not _supported(xp, device, name):
                raise SettingError(
                    f"dtype={name!r} is not available on {backend_name(xp)} here (for JAX, "
                    "enable jax_enable_x64); pass dtype='float32'"
                )
            return getattr(xp, name)
        name = dtype_name(given, xp)
        if name not in ("float32", "float64") or not _supported(xp, device, name):
            name = "float32"
        return getattr(xp, name)

    def _initialize(self, layer_units: list[int], x: Array) -> None:
        """scikit-learn's ``_initialize``: Glorot-uniform weights and biases, drawn
        from ``self._random_state`` in its order, then moved to ``x``'s backend."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        xp, device, dtype = namespace(x), device_of(x), x.dtype
        host = np.dtype(dtype_name(dtype, xp))  # cast on the host: the same bits everywhere
        factor = 2.0 if self.activation == "logistic" else 6.0
        coefs, intercepts = [], []
        for fan_in, fan_out in pairwise(layer_units):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            b = self._random_state.uniform(-bound, bound, fan_out)
            coefs.append(xp.asarray(W.astype(host), device=device))
            intercepts.append(xp.asarray(b.astype(host), device=device))
        self.coefs_, self.intercepts_ = coefs, intercepts
        self._opt_state = None
        if self.solver in _STOCHASTIC:
            self.loss_curve_: list[float] = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self._best_coefs = [xp.asarray(c, copy=True) for c in coefs]
                self._best_intercepts = [xp.asarray(c, copy=True) for c in intercepts]
                self.validation_scores_: list[float] | None = []
                self.best_validation_score_: float | None = -np.inf
                self.best_loss_: float | None = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _out_activation(self) -> str:
        raise NotImplementedError

    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # ------------------------------------------------------------------ bpcore pieces

    def _network(self, layer_units: Sequence[int]) -> Layer:
        return mlp(list(layer_units), _ACTIVATIONS[self.activation], "identity")

    def _params(self) -> tuple[dict[str, Array], ...]:
        """``coefs_``/``intercepts_`` as bpcore's parameter tree of :func:`bpcore.mlp`
        (a ``{}`` for each activation layer between the dense ones)."""
        out: list[dict[str, Array]] = []
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            if i:
                out.append({})
            out.append({"W": W, "b": b})
        return tuple(out)

    def _set_params_tree(self, params: Sequence[dict[str, Array]]) -> None:
        dense = [p for p in params if p]
        self.coefs_ = [p["W"] for p in dense]
        self.intercepts_ = [p["b"] for p in dense]

    def _solver_key(self) -> tuple[Any, ...]:
        if self.solver == "adam":
            return ("adam", float(self.learning_rate_init), float(self.beta_1),
                    float(self.beta_2), float(self.epsilon))
        return ("sgd", float(self.momentum), bool(self.nesterovs_momentum))

    def _train_step(self, xp: ModuleType, layer_units: Sequence[int]) -> Callable[..., Any]:
        """The eager training step on namespace ``xp``: the driver with its
        specializations, updating in place where arrays are mutable."""
        driver = Driver(self._network(layer_units), _loss_for(self._kind(), self.n_outputs_),
                        _optimizer(self._solver_key()), fast=True, inplace=True,
                        workspace=True)
        return _step(driver, xp, float(self.alpha))

    def _forward(self, x: Array) -> Array:
        """The network's output for ``x``, after the output activation
        (probabilities for a classifier)."""
        units = (int(self.coefs_[0].shape[0]), *(int(c.shape[1]) for c in self.coefs_))
        run = _predictor(units, _ACTIVATIONS[self.activation], self.out_activation_, _on_jax(x))
        return run(self._params(), x)

    # ------------------------------------------------------------------ SGD and Adam

    def _fit_stochastic(self, data: _Prepared, layer_units: list[int], incremental: bool) -> None:
        """scikit-learn's ``_fit_stochastic``: epochs of shuffled mini-batches through
        bpcore's step, the loss curve, the stopping rule and the warnings."""
        xp = namespace(data.x)
        device = device_of(data.x)
        on_jax = backend_name(xp) == "jax"
        params = self._params()
        if not incremental or self._opt_state is None:
            state = _optimizer(self._solver_key()).init(params)
            if on_jax and isinstance(state, AdamState):  # the step count as an array: one trace
                state = AdamState(xp.asarray(0, device=device), state.m, state.v)
            self._opt_state = state
            self._learning_rate = float(self.learning_rate_init)
        state = self._opt_state

        if self.early_stopping and incremental:
            raise SettingError("partial_fit does not support early_stopping=True")
        train, val = data, None
        if self.early_stopping:
            train, val = self._split(data)
        n_samples = int(train.x.shape[0])
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        batches = list(gen_batches(n_samples, batch_size))
        rows = np.array([s.stop - s.start for s in batches], dtype=np.float64)
        run = (self._jax_epochs(train, layer_units, batches) if on_jax
               else self._eager_epochs(train, layer_units, batches))
        sgd_solver = self.solver == "sgd"
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:  # sklearn.utils.shuffle's draw, without its overhead
                    perm = np.arange(n_samples)
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                eta = self._learning_rate if sgd_solver else None
                params, state, values = run(params, state, sample_idx if self.shuffle else None,
                                            eta)
                self._set_params_tree(params)
                self._opt_state = state
                self.n_iter_ += 1
                batch_losses = to_numpy(values).astype(np.float64)
                self.loss_ = float(batch_losses @ rows) / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(val)
                if sgd_solver and self.learning_rate == "invscaling":
                    self._learning_rate = (float(self.learning_rate_init)
                                           / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                        "and the optimization hasn't converged yet.", ConvergenceWarning,
                        stacklevel=4)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        if self.early_stopping:
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _eager_epochs(self, train: _Prepared, layer_units: list[int],
                      batches: list[slice]) -> Callable[..., Any]:
        """``epoch(params, state, order, eta) -> (params, state, losses)``: the batches
        one step at a time through the driver (NumPy, PyTorch, CuPy, array-api-strict)."""
        xp = namespace(train.x)
        device = device_of(train.x)
        step = self._train_step(xp, layer_units)
        x, t, w = train

        def epoch(params: Any, state: Any, order: np.ndarray | None,
                  eta: Any) -> tuple[Any, Any, Array]:
            values = []
            xs, ts, ws = x, t, w
            if order is not None:  # the epoch's rows in order, once; batches are then views
                index = xp.asarray(order, device=device)
                xs, ts = xp.take(x, index, axis=0), xp.take(t, index, axis=0)
                ws = None if w is None else xp.take(w, index, axis=0)
            for s in batches:
                wb = None if ws is None else ws[s]
                params, state, value = step(params, state, xs[s, ...], ts[s, ...], wb, eta)
                values.append(value)
            return params, state, xp.stack(values)

        return epoch

    def _jax_epochs(self, train: _Prepared, layer_units: list[int],
                    batches: list[slice]) -> Callable[..., Any]:
        """The same epoch on JAX as one compiled program (a ``lax.scan`` over the
        batches). Every batch is padded to the full size with rows of weight 0
        (exactly the same loss, penalty and gradient), so one shape compiles once."""
        xp = namespace(train.x)
        device = device_of(train.x)
        x, t, w = train
        n = int(x.shape[0])
        size = batches[0].stop - batches[0].start
        mask = np.zeros((len(batches), size))
        for i, s in enumerate(batches):
            mask[i, :s.stop - s.start] = 1.0
        mask_dev = xp.asarray(mask, dtype=x.dtype, device=device)
        weights = xp.ones(n, dtype=x.dtype, device=device) if w is None else w
        run = _jax_epoch(tuple(layer_units), _ACTIVATIONS[self.activation], self._kind(),
                         self.n_outputs_, self._solver_key(), float(self.alpha))
        identity = np.arange(n)

        def epoch(params: Any, state: Any, order: np.ndarray | None,
                  eta: Any) -> tuple[Any, Any, Array]:
            order = identity if order is None else order
            index = np.zeros((len(batches), size), dtype=np.int32)
            for i, s in enumerate(batches):
                index[i, :s.stop - s.start] = order[s]
            rate = None if eta is None else xp.asarray(eta, dtype=x.dtype, device=device)
            return run(params, state, x, t, weights, xp.asarray(index, device=device),
                       mask_dev, rate)

        return epoch

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's ``trigger_stopping``: stop, or (adaptive SGD) divide the
        learning rate by 5 until it falls to 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {self._learning_rate:f}")
        return False

    def _split(self, data: _Prepared) -> tuple[_Prepared, _Prepared]:
        """scikit-learn's early-stopping split (stratified for one output of a
        classifier), drawn from the model's random state."""
        n = int(data.x.shape[0])
        stratify = None
        if hasattr(self, "predict_proba") and self.n_outputs_ == 1:
            stratify = to_numpy(data.t).astype(bool).reshape(n, 1)
        train_idx, val_idx = train_test_split(
            np.arange(n), random_state=self._random_state,
            test_size=self.validation_fraction, stratify=stratify)
        if len(val_idx) < 2:
            raise SettingError("The validation set is too small. Increase "
                               "'validation_fraction' or the size of your dataset.")
        xp = namespace(data.x)
        device = device_of(data.x)

        def part(idx: np.ndarray) -> _Prepared:
            rows = xp.asarray(idx, device=device)
            w = None if data.w is None else xp.take(data.w, rows, axis=0)
            return _Prepared(xp.take(data.x, rows, axis=0), xp.take(data.t, rows, axis=0), w)

        return part(train_idx), part(val_idx)

    def _update_no_improvement_count(self, val: _Prepared | None) -> None:
        if val is not None:
            score = self._validation_score(self._forward(val.x), val)
            assert self.validation_scores_ is not None and self.best_validation_score_ is not None
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                xp = namespace(val.x)
                self._best_coefs = [xp.asarray(c, copy=True) for c in self.coefs_]
                self._best_intercepts = [xp.asarray(c, copy=True) for c in self.intercepts_]
        else:
            assert self.best_loss_ is not None
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # ------------------------------------------------------------------ L-BFGS

    def _fit_lbfgs(self, data: _Prepared, layer_units: list[int]) -> None:
        """scipy's L-BFGS-B on the whole data set, with bpcore's loss and gradients
        (packed into one float64 vector on the host at each evaluation)."""
        import scipy.optimize

        xp = namespace(data.x)
        device, dtype = device_of(data.x), data.x.dtype
        driver = Driver(self._network(layer_units), _loss_for(self._kind(), self.n_outputs_))
        shapes = [tuple(int(n) for n in c.shape) for c in self.coefs_]
        shapes += [tuple(int(n) for n in b.shape) for b in self.intercepts_]
        sizes = [math.prod(s) for s in shapes]
        bounds = np.cumsum([0, *sizes])
        n_dense = len(self.coefs_)
        n = float(data.x.shape[0]) if data.w is None else float(xp.sum(data.w))
        alpha = float(self.alpha)

        def unpack(theta: np.ndarray) -> list[Array]:
            return [xp.asarray(theta[bounds[i]:bounds[i + 1]].reshape(s), dtype=dtype,
                               device=device) for i, s in enumerate(shapes)]

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            arrays = unpack(theta)
            self.coefs_, self.intercepts_ = arrays[:n_dense], arrays[n_dense:]
            value, grads = driver.gradients(self._params(), data.x, data.t, weights=data.w)
            dense = [g for g in grads if g]
            gW = [g["W"] for g in dense]
            gb = [g["b"] for g in dense]
            loss = float(value)
            if alpha:
                loss += 0.5 * alpha * sum(float(xp.sum(W * W)) for W in self.coefs_) / n
                gW = [g + (alpha / n) * W for g, W in zip(gW, self.coefs_)]
            flat = np.concatenate([to_numpy(g).astype(np.float64).reshape(-1)
                                   for g in gW + gb])
            return loss, flat

        theta0 = np.concatenate([to_numpy(a).astype(np.float64).reshape(-1)
                                 for a in [*self.coefs_, *self.intercepts_]])
        result = scipy.optimize.minimize(
            loss_grad, theta0, method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        if result.status != 0:
            message = result.message
            if isinstance(message, bytes):
                message = message.decode("latin1")
            warnings.warn(
                f"lbfgs failed to converge after {result.nit} iteration(s) (status="
                f"{result.status}):\n{message}.\n\nIncrease the number of iterations to improve "
                f"the convergence (max_iter={self.max_iter}).\nYou might also want to scale "
                "the data as shown in:\n    "
                "https://scikit-learn.org/stable/modules/preprocessing.html",
                ConvergenceWarning, stacklevel=4)
        self.n_iter_ = min(int(result.nit), int(self.max_iter))
        self.loss_ = float(result.fun)
        arrays = unpack(result.x)
        self.coefs_, self.intercepts_ = arrays[:n_dense], arrays[n_dense:]

    # ------------------------------------------------------------------ predict

    def _outputs(self, X: Any, method: str) -> tuple[Array, tuple[str, Any]]:
        """The network's raw output for ``X`` on the compute backend, and where
        the caller's ``X`` lives (backend name, device), for the result."""
        try:
            check_is_fitted(self)
        except _SkNotFittedError as exc:
            raise NotFittedError(str(exc)) from exc
        X = _validated(self, X, accept_sparse=["csr", "csc"], reset=False,
                          dtype=_float_dtypes(X))
        where = _where(X)
        if _dispatch() and where != getattr(self, "_fit_input", where) and not (
                where[0] == "numpy" and self._fit_input[0] == "numpy"):
            fit_name, fit_device = self._fit_input
            why = (f"Array namespaces used during fit ({fit_name}) and {method} "
                   f"({where[0]}) differ." if fit_name != where[0] else
                   f"Devices used during fit ({fit_device}) and {method} ({where[1]}) differ.")
            raise DataError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same "
                f"namespace and the same device as those passed to fit(). {why} Move X to "
                "that backend and device, or refit on this one."
            )
        if _sparse.issparse(X):
            X = X.toarray()
        ref = self.coefs_[0]
        x = _moved(X, backend_name(namespace(ref)), device_of(ref))
        xp = namespace(x)
        if x.dtype != ref.dtype:
            x = xp.astype(x, ref.dtype)
        back = (where[0], None if where[0] == "numpy" else device_of(X))
        return self._forward(x), back

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.array_api_support = True
        return tags


def _back(a: Array, where: tuple[str, Any]) -> Array:
    """A result moved to the caller's backend and device."""
    return _moved(a, where[0], where[1])


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, trained by bpcore on any array backend.

    scikit-learn's :class:`~sklearn.neural_network.MLPClassifier` (same
    parameters, defaults, fitted attributes and behaviour; see the module
    docstring for the few differences): log-loss of a softmax output for
    several classes, of logistic outputs for two classes and multi-label
    targets, with an L2 penalty ``alpha``, minimized by ``adam``, ``sgd`` or
    ``lbfgs``.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(100,)
        Units of each hidden layer; the input and output sizes come from the data.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
    alpha : float, default=1e-4
        L2 penalty on the weights: ``½α‖W‖²/n`` added to each batch's loss.
    batch_size : int or 'auto', default='auto'
        ``min(200, n_samples)`` for 'auto'.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        SGD's schedule.
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, \
warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction, \
beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As in scikit-learn.
    backend : {'numpy', 'cupy', 'torch', 'jax', 'array_api_strict'}, default=None
        Where to compute; ``None``: the backend of ``X`` (NumPy unless array
        API dispatch is on).
    device : str or device, default=None
        The device on that backend (``"cuda"``, ``"cuda:1"``, ...); ``None``:
        ``X``'s (or the backend's default).
    dtype : {'float32', 'float64'}, default=None
        ``None``: the data's float dtype, float64 for other inputs (as
        scikit-learn), float32 where the backend has no float64.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, \
best_validation_score_, t_, coefs_, intercepts_, n_features_in_, \
feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn; ``coefs_`` and ``intercepts_`` are arrays of the
        backend the model computes on.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from bpcore.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier(max_iter=500, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.95
    True
    """

    def __init__(
        self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
        solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
        learning_rate: str = "constant", learning_rate_init: float = 0.001,
        power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
        random_state: Any = None, tol: float = 1e-4, verbose: Any = False,
        warm_start: bool = False, momentum: float = 0.9, nesterovs_momentum: bool = True,
        early_stopping: bool = False, validation_fraction: float = 0.1, beta_1: float = 0.9,
        beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: Any = 10,
        max_fun: int = 15000, backend: str | None = None, device: Any = None,
        dtype: Any = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def _kind(self) -> str:
        return "multiclass" if self._label_binarizer.y_type_ == "multiclass" else "binary"

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _targets(self, y: Any, incremental: bool) -> tuple[Any, int]:
        """scikit-learn's label handling (a ``LabelBinarizer``), as bpcore targets:
        class indices for several classes, 0/1 columns for binary and multi-label."""
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(_values(classes)) != set(_values(self.classes_)):
                    raise LabelError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif set(_values(classes)) - set(_values(self.classes_)):
                raise LabelError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}.")
        y = _follow_labels(y, self._label_binarizer.classes_)
        Y = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":
            xp = array_api_compat.array_namespace(Y)
            return xp.argmax(Y, axis=1), int(Y.shape[1])
        return Y, int(Y.shape[1])

    def _validation_score(self, z: Array, data: _Prepared) -> float:
        """Accuracy of the probabilities ``z`` on the validation set (subset
        accuracy for multi-label), weighted by its sample weights; what
        ``accuracy_score`` gives."""
        score = _metric("accuracy", self._kind() == "multiclass", _on_jax(z))
        return float(score(z, data.t, data.w))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Fit the model to ``X`` (n_samples, n_features) and labels ``y``
        ((n_samples,), or an indicator matrix for multi-label)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None,
                    classes: Any = None) -> MLPClassifier:
        """One epoch over ``(X, y)``; ``classes`` (all the labels) on the first call.
        Only for the stochastic solvers (``sgd``, ``adam``)."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> Any:
        """The predicted classes, shape (n_samples,) (or the indicator matrix of a
        multi-label model), in the namespace of ``X`` unless the classes are strings."""
        proba, where = self._outputs(X, "predict")
        xp = namespace(proba)
        integer = _index_dtype(xp, device_of(proba))
        if self.out_activation_ == "softmax":
            index = xp.argmax(proba, axis=1)
        elif self._label_binarizer.y_type_.startswith("multilabel"):
            return _back(xp.astype(proba > 0.5, integer), where)
        else:
            index = xp.astype(proba[:, 0] > 0.5, integer)
        classes = self.classes_
        if classes.shape[0] == 1:  # trained on one class (scikit-learn predicts it)
            index = xp.zeros_like(index)
        if isinstance(classes, np.ndarray):
            labels = classes[to_numpy(index)]
            if classes.dtype.kind not in "biuf":
                return labels
            return _back(labels, where) if where[0] != "numpy" else labels
        cns = array_api_compat.array_namespace(classes)
        labels = cns.take(classes, _moved(index, *_where_of(classes)), axis=0)
        return _back(labels, where)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes), in ``classes_`` order
        (two columns for a binary model), in the namespace of ``X``."""
        proba, where = self._outputs(X, "predict_proba")
        if self.n_outputs_ == 1:
            xp = namespace(proba)
            proba = xp.concat([1.0 - proba, proba], axis=1)
        return _back(proba, where)

    def predict_log_proba(self, X: Any) -> Any:
        """``log(predict_proba(X))``."""
        proba, where = self._outputs(X, "predict_log_proba")
        xp = namespace(proba)
        if self.n_outputs_ == 1:
            proba = xp.concat([1.0 - proba, proba], axis=1)
        return _back(xp.log(proba), where)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, trained by bpcore on any array backend.

    scikit-learn's :class:`~sklearn.neural_network.MLPRegressor` (same
    parameters, defaults and fitted attributes; see the module docstring):
    half squared error (``loss='squared_error'``) or half Poisson deviance
    with a log link (``loss='poisson'``) of an identity output, with an L2
    penalty ``alpha``. Parameters and attributes as :class:`MLPClassifier`
    (no ``classes_``); ``y`` may have several columns.

    Examples
    --------
    >>> import numpy as np
    >>> from bpcore.sklearn import MLPRegressor
    >>> X = np.linspace(-1, 1, 200)[:, None]; y = X[:, 0] ** 2
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), solver="lbfgs", random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.95
    True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,),
        activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
        batch_size: Any = "auto", learning_rate: str = "constant",
        learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
        shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
        verbose: Any = False, warm_start: bool = False, momentum: float = 0.9,
        nesterovs_momentum: bool = True, early_stopping: bool = False,
        validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
        epsilon: float = 1e-8, n_iter_no_change: Any = 10, max_fun: int = 15000,
        backend: str | None = None, device: Any = None, dtype: Any = None,
    ) -> None:
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def _kind(self) -> str:
        return "poisson" if self.loss == "poisson" else "squared_error"

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _targets(self, y: Any, incremental: bool) -> tuple[Any, int]:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        xp = array_api_compat.array_namespace(y)
        if self.loss == "poisson" and bool(xp.any(y < 0)):
            raise DataError("loss='poisson' needs y >= 0 (it models counts or rates); "
                            "some values of y are negative")
        y = xp.reshape(y, (-1, 1)) if y.ndim == 1 else y
        return y, int(y.shape[1])

    def _validation_score(self, z: Array, data: _Prepared) -> float:
        """R² on the validation set (uniform average over the outputs, weighted by
        the sample weights, 1 or 0 for a constant target): what ``r2_score`` gives."""
        return float(_metric("r2", False, _on_jax(z))(z, data.t, data.w))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Fit the model to ``X`` (n_samples, n_features) and ``y`` ((n_samples,) or
        (n_samples, n_outputs))."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)``; only for the stochastic solvers (``sgd``, ``adam``)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> Any:
        """Predictions, shape (n_samples,) or (n_samples, n_outputs), in the
        namespace of ``X``."""
        z, where = self._outputs(X, "predict")
        xp = namespace(z)
        if z.shape[1] == 1:
            z = xp.reshape(z, (-1,))
        return _back(z, where)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# --------------------------------------------------------------------------
# helpers of the label handling


def _values(classes: Any) -> list[Any]:
    """The labels of ``classes`` as Python values (for set comparisons)."""
    host = classes if isinstance(classes, np.ndarray) else to_numpy(classes)
    return list(host.tolist())


def _where_of(a: Array) -> tuple[str, Any]:
    """Backend name and device object of an array."""
    if isinstance(a, np.ndarray):
        return "numpy", None
    return backend_name(namespace(a)), device_of(a)


def _follow_labels(y: Any, classes: Any) -> Any:
    """``y`` where the label binarizer's ``classes`` are (the binarizer compares
    them with ``y`` in one namespace)."""
    if isinstance(classes, np.ndarray):
        return y if isinstance(y, np.ndarray) else to_numpy(y)
    if isinstance(y, np.ndarray) and y.dtype.kind not in "biuf":
        return y
    return _moved(y, *_where_of(classes))

