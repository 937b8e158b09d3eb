"""Validation at the public boundary: bad input fails here, in plain words.

Kernels trust their inputs; the functions that people call with their own
data (:func:`bpcore.train_step`, :func:`bpcore.predict`, the ``Model``) run
these checks first, so a wrong shape, dtype, label, NaN, backend or device is
reported with its fix instead of a backend's traceback.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from . import tree
from .backend import SUPPORTED_DTYPES, Array, backend_name, device_of, dtype_name, namespace
from .errors import (
    ArgumentError,
    BackendMismatchError,
    BpcoreError,
    DTypeError,
    LabelError,
    NonFiniteError,
    SettingError,
    ShapeError,
)

__all__ = [
    "Guard",
    "WeightError",
    "check_features",
    "check_finite",
    "check_params",
    "check_state",
    "check_targets",
    "check_weights",
]


def check_params(params: Any, model: Any = None) -> tuple[ModuleType, Array]:
    """Namespace and a reference array of a parameter tree, after checking that
    every leaf is an array of one backend, device and float dtype, and (given
    the ``model``) that the structure and shapes are those the network makes.

    Touches no data: shapes, types and dtypes only.

    Raises
    ------
    ArgumentError, BackendMismatchError, DTypeError, ShapeError
    """
    leaves = tree.leaves(params)
    ref = next((a for a in leaves if tree.is_array(a)), None)
    if ref is None:
        raise SettingError("the parameters hold no arrays; create them with model.init(seed)")
    xp = namespace(ref)
    kind, dtype = type(ref), ref.dtype
    name = dtype_name(dtype, xp)
    if name not in SUPPORTED_DTYPES:
        raise DTypeError(
            f"parameters are {name}; bpcore computes in float32 or float64: "
            "create them with model.init(seed, dtype='float32')"
        )
    device = None if kind is np.ndarray else device_of(ref)
    for a in leaves:
        if type(a) is not kind or a.dtype != dtype or (
                device is not None and device_of(a) != device):
            _explain_params(params, ref, xp)
    if model is not None and getattr(model, "shapes", None) is not None:
        _check_shapes(params, model.shapes(), model)
    return xp, ref


def _explain_params(params: Any, ref: Array, xp: ModuleType) -> None:
    """Raise the error that names the first leaf unlike ``ref``."""
    first, = (p for p, a in tree.paths(params) if a is ref)
    for path, a in tree.paths(params):
        if not tree.is_array(a):
            raise ArgumentError(
                f"parameter {path} is a {type(a).__name__}, not an array; parameters are "
                "arrays made by model.init(seed)"
            )
        try:
            ns = namespace(a)
        except BackendMismatchError:
            raise BackendMismatchError(
                f"parameter {path} is a {type(a).__module__}.{type(a).__qualname__}, not an "
                "array of a supported backend"
            ) from None
        if ns is not xp:
            raise BackendMismatchError(
                f"parameter {path} is a {backend_name(ns)} array but {first} is "
                f"{backend_name(xp)}; move them to one backend: bp.to_backend(params, "
                f"'{backend_name(xp)}')"
            )
        if device_of(a) != device_of(ref):
            raise BackendMismatchError(
                f"parameter {path} is on device {device_of(a)} but {first} on "
                f"{device_of(ref)}; move them to one device with bp.to_backend(params, device=...)"
            )
        if a.dtype != ref.dtype:
            raise DTypeError(
                f"parameter {path} is {dtype_name(a.dtype, xp)} but {first} is "
                f"{dtype_name(ref.dtype, xp)}; bpcore trains in one dtype: cast them all, e.g. "
                f"bp.tree.map_arrays(lambda a: xp.astype(a, xp.{dtype_name(ref.dtype, xp)}), "
                "params)"
            )


def _check_shapes(params: Any, want: Any, model: Any, where: str = "") -> None:
    """Compare a parameter tree with the network's ``shapes()`` tree (``None``: unknown)."""
    if want is None:
        return
    label = where or "the parameters"
    if isinstance(want, tuple):
        if not isinstance(params, (tuple, list)) or len(params) != len(want):
            got = f"{len(params)} entries" if isinstance(params, (tuple, list)) else \
                f"a {type(params).__name__}"
            raise ShapeError(
                f"{label} hold {got} but the network has {len(want)} layers (one dict per "
                "layer, {} for a layer without parameters); create them with net.init(seed)"
            )
        layers = getattr(model, "config", {}).get("layers") if isinstance(
            getattr(model, "config", None), dict) else None
        for i, (p, w) in enumerate(zip(params, want)):
            name = layers[i].get("name") if isinstance(layers, list) and i < len(layers) and \
                isinstance(layers[i], dict) else None
            _check_shapes(p, w, None, f"layer {i}" + (f" ({name})" if name else ""))
        return
    if isinstance(want, dict):
        if not isinstance(params, dict) or set(params) != set(want):
            have: Any = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ShapeError(
                f"{label} has parameters {have} but the network needs {sorted(want)}; "
                "create them with net.init(seed) (or load them for this network)"
            )
        for key, shape in want.items():
            found = tuple(params[key].shape)
            if found != tuple(shape):
                raise ShapeError(
                    f"{label}: {key} has shape {found} but the network needs {tuple(shape)}; "
                    "these parameters are for another network"
                )


_TRAIN_STATE = ("opt", "layers", "step", "seed")  # bpcore.step.TrainState's fields


def check_state(state: Any, optimizer: Any, params: Any, *, model: Any = None) -> None:
    """The optimizer state matches the optimizer (its kind) and the parameters
    (structure, shapes, backend, dtype); for a network with layer state
    (``model.init_state``) the state is a ``TrainState`` whose counters are
    integers and whose layer state is of the parameters' backend and dtype.
    Touches no data.

    Raises
    ------
    ArgumentError, ShapeError, DTypeError, BackendMismatchError
    """
    if getattr(state, "_fields", None) == _TRAIN_STATE:
        _check_train_state(state, params)
        state = state.opt
    elif getattr(model, "init_state", None) is not None:
        raise ArgumentError(
            "this network keeps layer state or depends on the mode (batch_norm, dropout): its "
            f"step takes the state made by bp.train_state(net, opt, params), not a "
            f"{type(state).__name__}"
        )
    rule = getattr(optimizer, "rule", None)
    if rule is None:
        return
    fix = "create it with opt.init(params) for this optimizer and these parameters"
    adam = hasattr(rule, "b1")  # an AdamRule (this layer does not import bpcore.optim)
    want, fields = ("AdamState", ("count", "m", "v")) if adam else ("SGDState", ("velocity",))
    if getattr(state, "_fields", None) != fields:
        raise ArgumentError(
            f"the optimizer state is a {type(state).__name__} but {optimizer.name} keeps a "
            f"{want}; {fix}"
        )
    if not adam:
        trees = [] if state.velocity is None else [state.velocity]
        if (state.velocity is None) != (not rule.momentum):
            raise ArgumentError(f"the SGD state's velocity does not fit momentum "
                                f"{rule.momentum}; {fix}")
    else:
        count = state.count
        if isinstance(count, bool) or not (
                isinstance(count, (int, np.integer)) or getattr(count, "shape", None) == ()):
            raise ArgumentError(f"Adam's step count must be an int, got {count!r}; {fix}")
        if isinstance(count, (int, np.integer)) and count < 0:
            raise SettingError(f"Adam's step count must be >= 0, got {count}; {fix}")
        trees = [state.m, state.v]
    shapes = [tuple(a.shape) for a in tree.leaves(params)]
    for part in trees:
        leaves = tree.leaves(part)
        if [tuple(getattr(a, "shape", ())) for a in leaves] != shapes:
            raise ShapeError(f"the optimizer state does not have the parameters' shapes; {fix}")
        ref = tree.first_array(params)
        if leaves and (type(leaves[0]) is not type(ref) or leaves[0].dtype != ref.dtype):
            raise DTypeError(
                "the optimizer state is not of the parameters' backend and dtype; " + fix
            )


def _check_train_state(state: Any, params: Any) -> None:
    fix = "create it with bp.train_state(net, opt, params)"
    for name in ("step", "seed"):
        v = getattr(state, name)
        integral = (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or (
            tree.is_array(v) and getattr(v, "shape", None) == ()
            and namespace(v).isdtype(v.dtype, "integral"))
        if not integral:
            raise ArgumentError(f"the training state's {name} must be an int (a 0-D integer "
                                f"array), got {v!r}"[:200] + f"; {fix}")
    ref = tree.first_array(params)
    for path, a in tree.paths(state.layers):
        if tree.is_array(a) and (type(a) is not type(ref) or a.dtype != ref.dtype):
            raise DTypeError(f"layer state {path} is not of the parameters' backend and dtype; "
                             f"{fix} (or move it with bp.to_backend)")


def check_features(
    x: Array, ref: Array, n_in: int | None, *, finite: bool = True, model: Any = None
) -> None:
    """Check a batch of inputs against the parameters it will meet.

    Without ``model`` (or for a network of flat inputs) ``x`` must be
    ``(batch, n_in)``. Given the network, ``x`` is ``(batch, *sample)`` with
    ``sample`` the per-sample shape its first layer takes (its ``in_shape``,
    e.g. ``(1, 40)`` for a convolution), and the shape is run through the
    network's shape inference (its ``out_shape``), so that a batch any layer
    cannot take is refused here, naming that layer.

    Raises
    ------
    BackendMismatchError, ShapeError, DTypeError, NonFiniteError
    """
    xp = _same_backend("x", x, ref)
    n_index = getattr(model, "n_index", None)
    if n_index is not None:  # integer indices (an embedding first)
        _check_indices(x, n_index, model, xp)
        return
    sample = _sample_shape(model)
    if sample is not None and len(sample) > 1:
        if x.ndim != len(sample) + 1:
            axes = ", ".join("?" if n is None else str(n) for n in sample)
            hint = ("for one sample use x[None, ...]" if x.ndim == len(sample) else
                    "give each sample that shape (channels first), e.g. with "
                    "xp.reshape, or begin the network with bp.reshape(...)")
            raise ShapeError(
                f"x must be {len(sample) + 1}-D (batch, {axes}) for this network, got shape "
                f"{tuple(x.shape)}; {hint}"
            )
    elif x.ndim != 2 and (sample is not None or model is None or x.ndim < 2):
        hint = (
            "for one sample use x[None, :]" if x.ndim == 1
            else "flatten each sample, e.g. xp.reshape(x, (x.shape[0], -1))"
        )
        raise ShapeError(
            f"x must be 2-D (batch, features), got shape {tuple(x.shape)}; {hint}"
        )
    if x.shape[0] == 0:
        raise ShapeError("x is an empty batch (0 samples); pass at least one sample")
    if n_in is not None and x.ndim == 2 and x.shape[1] != n_in:
        raise ShapeError(
            f"x has {x.shape[1]} features but the network's first layer takes {n_in}; "
            f"build the network with {x.shape[1]} inputs or fix the data"
        )
    infer = getattr(model, "out_shape", None)
    if infer is not None:
        try:
            infer(tuple(int(n) for n in x.shape[1:]))
        except ShapeError as exc:
            raise ShapeError(f"x of shape {tuple(x.shape)} does not fit the network: {exc}") \
                from None
    want = dtype_name(ref.dtype, xp)
    got = dtype_name(x.dtype, xp)
    if got != want:
        raise DTypeError(
            f"x is {got} but the parameters are {want}; cast with "
            f"xp.astype(x, xp.{want}) (or init the parameters with dtype='{got}')"
            if got in SUPPORTED_DTYPES
            else f"x is {got}; features must be {want}: cast with xp.astype(x, xp.{want})"
        )
    if finite:
        _finite("x", x, xp)


def _check_indices(x: Array, n_index: int, model: Any, xp: ModuleType) -> None:
    """Integer inputs of a network that begins with an embedding."""
    if not xp.isdtype(x.dtype, "integral"):
        raise DTypeError(
            f"x is {dtype_name(x.dtype, xp)} but this network begins with an embedding of "
            f"{n_index} rows, which takes integer indices: cast with xp.astype(x, xp.int64)"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ShapeError(f"x must be a batch of indices, (batch,) or (batch, time), got shape "
                         f"{tuple(x.shape)}")
    if bool(xp.min(x) < 0) or bool(xp.max(x) >= n_index):
        bad = int(xp.min(x)) if bool(xp.min(x) < 0) else int(xp.max(x))
        raise LabelError(f"index {bad} is out of range: the embedding has {n_index} rows, so "
                         f"indices must lie in [0, {n_index - 1}]")
    infer = getattr(model, "out_shape", None)
    if infer is not None:
        try:
            infer(tuple(int(n) for n in x.shape[1:]))
        except ShapeError as exc:
            raise ShapeError(f"x of shape {tuple(x.shape)} does not fit the network: {exc}") \
                from None


def _sample_shape(model: Any) -> tuple[int | None, ...] | None:
    """The per-sample input shape a network takes (``Layer.in_shape``, else
    ``(n_in,)``), ``None`` if any; duck-typed: this module sits below the layers."""
    if model is None:
        return None
    shape = getattr(model, "in_shape", None)
    if shape is not None:
        return tuple(shape)
    n_in = getattr(model, "n_in", None)
    return None if n_in is None else (n_in,)


def check_targets(
    t: Array, ref: Array, batch: int, n_out: int | None, kind: str, *, finite: bool = True
) -> None:
    """Check targets for a loss whose ``targets`` kind is ``classes``, ``binary``
    or ``values`` (see :class:`bpcore.losses.Loss`).

    Raises
    ------
    BackendMismatchError, ShapeError, DTypeError, LabelError, NonFiniteError
    """
    xp = _same_backend("targets", t, ref)
    if t.ndim == 0 or t.shape[0] != batch:
        raise ShapeError(
            f"{batch} inputs but targets of shape {tuple(t.shape)}; give one target per row of x"
        )
    integral = xp.isdtype(t.dtype, "integral")
    if kind == "classes" and t.ndim == 1:
        if not integral:
            raise LabelError(
                f"class labels must be integers, got {dtype_name(t.dtype, xp)}; cast them "
                "with xp.astype(y, xp.int64) (or pass one-hot rows of shape (batch, classes))"
            )
        if n_out is not None and batch and (
            bool(xp.min(t) < 0) or bool(xp.max(t) >= n_out)
        ):
            bad = int(xp.min(t)) if bool(xp.min(t) < 0) else int(xp.max(t))
            raise LabelError(
                f"label {bad} is out of range: the network has {n_out} outputs, so labels "
                f"must lie in [0, {n_out - 1}]; fix the labels or give the last layer "
                "one output per class"
            )
        return
    if integral and kind != "classes":
        t_name = dtype_name(t.dtype, xp)
        raise DTypeError(
            f"targets are {t_name} but this loss needs real-valued targets of the "
            f"parameters' dtype; cast with xp.astype(y, xp.{dtype_name(ref.dtype, xp)})"
        )
    if t.ndim != 2 or (n_out is not None and t.shape[1] != n_out):
        fix = " (reshape to (batch, 1))" if t.ndim == 1 and n_out == 1 else ""
        raise ShapeError(
            f"targets of shape {tuple(t.shape)} do not match the network's output "
            f"(batch, {n_out}){fix}"
        )
    want, got = dtype_name(ref.dtype, xp), dtype_name(t.dtype, xp)
    if got != want:
        raise DTypeError(
            f"targets are {got} but the parameters are {want}; cast with xp.astype(y, xp.{want})"
        )
    if finite:
        _finite("targets", t, xp)
        if kind == "binary" and batch and (bool(xp.min(t) < 0) or bool(xp.max(t) > 1)):
            raise LabelError(
                "binary cross-entropy targets must lie in [0, 1]; rescale them "
                "or use the mse loss for real-valued targets"
            )


def check_weights(weights: Array, ref: Array, batch: int) -> None:
    """Per-sample loss weights: shape ``(batch,)``, real, finite, ``>= 0``, not all zero.

    Raises
    ------
    BackendMismatchError, ShapeError, DTypeError, NonFiniteError, ValueError
    """
    xp = _same_backend("sample weights", weights, ref)
    if tuple(weights.shape) != (batch,):
        raise ShapeError(
            f"sample weights must have shape ({batch},), one per row of x, "
            f"got {tuple(weights.shape)}"
        )
    if not xp.isdtype(weights.dtype, "real floating"):
        raise DTypeError(
            f"sample weights are {dtype_name(weights.dtype, xp)}; give them in the parameters' "
            f"dtype: xp.astype(w, xp.{dtype_name(ref.dtype, xp)})"
        )
    _finite("sample weights", weights, xp)
    if batch and (bool(xp.min(weights) < 0) or not bool(xp.max(weights) > 0)):
        raise WeightError(
            "sample weights must be >= 0 with at least one > 0 in every batch; drop the "
            "samples of weight 0 or fix the weights"
        )


class WeightError(BpcoreError, ValueError):
    """Sample weights that are negative or all zero."""


def _same_backend(what: str, a: Any, ref: Array) -> ModuleType:
    xp = namespace(ref)
    try:
        ns = namespace(a)
    except BackendMismatchError:
        raise BackendMismatchError(
            f"{what} is a {type(a).__name__}, not an array of the parameters' backend "
            f"({backend_name(xp)}); convert it with bpcore.to_backend({what}, "
            f"'{backend_name(xp)}')"
        ) from None
    if ns is not xp:
        raise BackendMismatchError(
            f"{what} is a {backend_name(ns)} array but the parameters are on "
            f"{backend_name(xp)}; move it with bpcore.to_backend({what}, '{backend_name(xp)}')"
        )
    if device_of(a) != device_of(ref):
        raise BackendMismatchError(
            f"{what} is on device {device_of(a)} but the parameters are on "
            f"{device_of(ref)}; move it with bpcore.to_backend({what}, "
            f"'{backend_name(xp)}', device=...)"
        )
    return xp


def check_finite(what: str, a: Array) -> None:
    """A :class:`NonFiniteError` naming ``what`` if ``a`` holds NaN or infinity."""
    _finite(what, a, namespace(a))


def _finite(what: str, a: Array, xp: ModuleType) -> None:
    if _all_finite(a, xp):
        return
    ok = xp.isfinite(a)
    if not bool(xp.all(ok)):
        bad = int(xp.count_nonzero(~ok))
        raise NonFiniteError(
            f"{what} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}; "
            "remove or impute them before training"
        )


def _all_finite(a: Array, xp: ModuleType) -> bool:
    """Whether ``a`` (real floating) holds no NaN or infinity: one pass, no temporary.

    The sum of squares ``Σ a²`` (one dot product) is finite when every element
    is (NaN and ±∞ propagate, and no term is negative, so nothing cancels); a
    non-finite sum is either a NaN/∞ or an overflow of large finite values, and
    only then is every element tested."""
    flat = xp.reshape(a, (-1,))
    with np.errstate(over="ignore", invalid="ignore"):  # NumPy's, under array-api-strict too
        total = float(flat @ flat)
    if math.isfinite(total):
        return True
    return bool(xp.all(xp.isfinite(a)))


def _fits(params: Any, want: Any, out: list[Any]) -> bool:
    """Whether ``params`` has the structure and shapes of ``want`` (a network's
    ``shapes()``; ``None``: unknown), appending its arrays to ``out`` in order."""
    if want is None:
        out.extend(tree.leaves(params))
        return True
    if type(want) is tuple:
        if type(params) not in (tuple, list) or len(params) != len(want):
            return False
        return all(_fits(p, w, out) for p, w in zip(params, want))
    if type(params) is not dict or params.keys() != want.keys():
        return False
    for key, a in params.items():
        if getattr(a, "shape", None) != want[key]:
            return False
        out.append(a)
    return True


class Guard:
    """The checks of every batch of one network's steps, prepared once.

    :func:`check_params`, :func:`check_state`, :func:`check_features` and
    :func:`check_targets` explain what is wrong; a training step calls them
    on every batch, where nearly every batch is right. A guard checks the
    same properties the cheap way first — the parameter tree against the
    network's ``shapes()`` (computed once), one type and dtype compare per
    leaf, the per-sample input shape against those the network's shape
    inference has already accepted, the finiteness of ``x`` in one dot product
    (:func:`_all_finite`) — and calls the explaining check only when something
    differs, which then raises (or, for an input shape not seen before, accepts
    it and remembers it).

    Parameters
    ----------
    model : Layer
        The network.
    kind : str
        The loss's ``targets`` kind (``classes``, ``binary`` or ``values``).
    optimizer : Optimizer, optional
        For :meth:`state`.
    """

    def __init__(self, model: Any, kind: str, optimizer: Any = None) -> None:
        self.model, self.kind, self.optimizer = model, kind, optimizer
        shapes = getattr(model, "shapes", None)
        self._want = None if shapes is None else shapes()
        self._samples: set[tuple[int, ...]] = set()  # per-sample shapes the network takes
        self._plain = getattr(model, "n_index", None) is None  # float inputs, not indices
        self._stateful = getattr(model, "init_state", None) is not None
        self._n_out = getattr(model, "n_out", None)
        rule = getattr(optimizer, "rule", None)
        self._rule = rule
        self._adam = rule is not None and hasattr(rule, "b1")

    def params(self, params: Any) -> tuple[Array, list[Any]]:
        """The parameters' reference array and leaves, checked as
        :func:`check_params` does."""
        leaves: list[Any] = []
        if self._want is not None and _fits(params, self._want, leaves) and leaves:
            ref = leaves[0]
            kind, dtype = type(ref), ref.dtype
            if kind is np.ndarray:
                ok = dtype in _NUMPY_FLOATS and all(
                    type(a) is kind and a.dtype == dtype for a in leaves)
            else:
                device = device_of(ref)
                ok = dtype_name(dtype, namespace(ref)) in SUPPORTED_DTYPES and all(
                    type(a) is kind and a.dtype == dtype and device_of(a) == device
                    for a in leaves)
            if ok:
                return ref, leaves
        _, ref = check_params(params, self.model)
        return ref, tree.leaves(params)

    def batch(self, params: Any, x: Array, t: Array, weights: Array | None = None
              ) -> tuple[Array, list[Any]]:
        """:func:`bpcore.step.check_batch`: the parameters, the inputs and the
        targets (and per-sample weights); the parameters' reference array and leaves."""
        ref, leaves = self.params(params)
        xp = namespace(ref)
        if not (self._plain and type(x) is type(ref) and x.dtype == ref.dtype
                and tuple(x.shape[1:]) in self._samples and x.shape[0] > 0
                and (type(x) is np.ndarray or device_of(x) == device_of(ref))
                and _all_finite(x, xp)):
            check_features(x, ref, getattr(self.model, "n_in", None), model=self.model)
            if self._plain:
                self._samples.add(tuple(x.shape[1:]))
        n = int(x.shape[0])
        if not (self.kind == "classes" and type(t) is np.ndarray and type(ref) is np.ndarray
                and t.ndim == 1 and t.shape[0] == n and t.dtype.kind in "iu"
                and self._labels_in_range(t)):
            check_targets(t, ref, n, self._n_out, self.kind)
        if weights is not None:
            check_weights(weights, ref, n)
        return ref, leaves

    def _labels_in_range(self, t: Any) -> bool:
        """Whether integer labels ``t`` (NumPy) lie in ``[0, n_out)``: one reduction,
        the labels read as unsigned (a negative label reads as a huge one)."""
        if self._n_out is None:
            return True
        if t.dtype.kind == "i":
            unsigned = _UNSIGNED.get(t.dtype)
            if unsigned is None:  # the same width and byte order, unsigned
                unsigned = _UNSIGNED[t.dtype] = np.dtype(t.dtype.str.replace("i", "u"))
            t = t.view(unsigned)
        return int(t.max()) < self._n_out

    def state(self, state: Any, params: Any, leaves: list[Any]) -> None:
        """:func:`check_state`, with ``leaves`` the parameters' (from :meth:`batch`)."""
        rule = self._rule
        fields = getattr(state, "_fields", None)
        if rule is not None and not self._stateful:
            if self._adam:
                count = state.count if fields == ("count", "m", "v") else None
                if type(count) is int and count >= 0 and _like(state.m, leaves) \
                        and _like(state.v, leaves):
                    return
            elif fields == ("velocity",):
                velocity = state.velocity
                if (velocity is None and not rule.momentum) or (
                        velocity is not None and rule.momentum and _like(velocity, leaves)):
                    return
        check_state(state, self.optimizer, params, model=self.model)


_UNSIGNED: dict[Any, Any] = {}  # signed integer dtype -> its unsigned twin
_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _like(part: Any, leaves: list[Any]) -> bool:
    """Whether tree ``part`` holds arrays of the type, dtype and shape of ``leaves``, in order."""
    found = tree.leaves(part)
    return len(found) == len(leaves) and all(
        type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        for a, b in zip(found, leaves))
