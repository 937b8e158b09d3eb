"""Mixed precision: bfloat16 / float16 compute with float32 master weights.

:func:`mixed_precision_step` runs the step driver of :func:`bpcore.train_step`
(:class:`bpcore.step.Driver`) with casts at its edges. The parameters the
caller holds (the *master* weights) and the optimizer state stay float32;
each step

1. casts the parameters and the batch to the compute dtype (``xp.astype``),
2. runs the portable forward kernels in that dtype,
3. casts the network's output up to float32 and computes the loss and its
   gradient there (softmax / log-sum-exp in bfloat16 loses digits of the
   loss value, and the loss is cheap next to the matmuls),
4. multiplies that gradient by the loss scale, casts it to the compute dtype
   and runs the portable backward kernels in that dtype,
5. casts the gradients up to float32, unscales them and (with dynamic loss
   scaling) skips the update and halves the scale when any gradient is
   ``inf``/``NaN``, or doubles it after ``growth_interval`` good steps in a
   row (the rule of ``torch.cuda.amp.GradScaler``: initial scale 2**16,
   growth 2.0 every 2000 steps, backoff 0.5; all of them parameters),
6. updates the float32 master weights with the optimizer.

Any network the step driver trains works: n-D inputs (convolutions and
pooling over ``(batch, channels, length)``), layer state (batch norm's running
statistics are updated from the compute dtype's batch statistics and kept in
float32, like the master weights; dropout's masks are those of
:func:`bpcore.train_step` for the same seed and step), and integer inputs (a
network that begins with an embedding: its indices are not cast).

Loss scaling exists for float16, whose smallest normal number is 6e-5: small
gradients flush to zero unless they are scaled up first. bfloat16 has
float32's exponent range, so it needs none (``loss_scale=None`` is its
default).

Which backends have which compute dtype:

=================  ========  ========
backend            bfloat16  float16
=================  ========  ========
torch (CPU, CUDA)  yes       yes
jax                yes       yes
cupy               no        yes
numpy              no        yes
array_api_strict   no        no
=================  ========  ========

NumPy has no bfloat16. ``ml_dtypes.bfloat16`` (installed with JAX) exists,
but NumPy's matmul on it returns float32, so the "bfloat16" step would
silently compute its matmuls in float32; bpcore refuses instead of
pretending. array_api_strict implements only the standard's float32 and
float64.

TF32 matmuls (NVIDIA Ampere and later) are a separate, explicit opt-in:
:func:`allow_tf32`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat

from . import tree
from .backend import Array, backend_name, dtype_name, namespace
from .checks import check_features, check_params, check_targets
from .errors import DTypeError, SettingError
from .layers.core import Layer
from .losses import LossFunction
from .optim import Optimizer
from .step import Driver, Edges, TrainState

__all__ = [
    "COMPUTE_DTYPES",
    "MixedState",
    "MixedStep",
    "ScalerState",
    "TF32Setting",
    "allow_tf32",
    "compute_dtype_of",
    "mixed_precision_step",
    "tf32",
]

#: The compute dtypes :func:`mixed_precision_step` accepts.
COMPUTE_DTYPES = ("bfloat16", "float16")


class ScalerState(NamedTuple):
    """Dynamic loss scaling's state (host numbers, as ``GradScaler`` keeps them).

    Attributes
    ----------
    scale : float
        The factor the loss gradient is multiplied by before backward.
    good_steps : int
        Finite steps in a row since the scale last changed.
    skipped : int
        Steps skipped so far because a gradient was not finite.
    """

    scale: float
    good_steps: int
    skipped: int


class MixedState(NamedTuple):
    """The state of a mixed-precision step: the optimizer's (float32) and the
    loss scaler's (``None`` without dynamic loss scaling).

    For a network with layer state (batch norm's running statistics,
    dropout's step counter) ``opt`` is a :class:`~bpcore.step.TrainState`
    holding the optimizer's state beside the layer state, as
    :func:`bpcore.train_state` makes it; the layer state stays float32.
    """

    opt: Any
    scaler: ScalerState | None


class MixedStep(NamedTuple):
    """A mixed-precision training step: ``init(params) -> state`` and
    ``step(params, state, x, t) -> (params, state, value)``; calling the
    object calls ``step``."""

    init: Callable[..., MixedState]
    step: Callable[[Any, MixedState, Array, Array], tuple[Any, MixedState, Array]]
    config: dict[str, Any]

    def __call__(
        self, params: Any, state: MixedState, x: Array, t: Array
    ) -> tuple[Any, MixedState, Array]:
        return self.step(params, state, x, t)


def compute_dtype_of(xp: ModuleType, name: str) -> Any:
    """``xp``'s dtype object for compute dtype ``name`` ('bfloat16' or 'float16').

    Raises
    ------
    DTypeError
        The name is not a compute dtype, or the backend does not have it
        (NumPy and CuPy have no bfloat16; array_api_strict has neither).
    """
    if name not in COMPUTE_DTYPES:
        raise DTypeError(
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}; "
            "for float32 training use bp.train_step"
        )
    backend = backend_name(xp)
    dtype = getattr(xp, name, None)
    if dtype is None or (
        name == "bfloat16"
        and (array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp))
    ):
        have = [n for n in COMPUTE_DTYPES if getattr(xp, n, None) is not None]
        if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp):
            have = ["float16"]
        fix = (
            f"use compute_dtype={have[0]!r}" if have
            else "use the torch or jax backend for mixed precision"
        )
        why = (
            " (ml_dtypes.bfloat16 exists, but NumPy's matmul on it returns float32, "
            "so the matmuls would not run in bfloat16)"
            if name == "bfloat16" and array_api_compat.is_numpy_namespace(xp) else ""
        )
        raise DTypeError(
            f"the {backend} backend has no {name}{why}; {fix}, or use the torch or jax "
            "backend, which have both bfloat16 and float16"
        )
    return dtype


def _check_scaling(loss_scale: Any, growth_factor: float, backoff_factor: float,
                   growth_interval: int) -> None:
    if loss_scale is not None and loss_scale != "dynamic":
        ok = isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool)
        if not ok or not math.isfinite(loss_scale) or loss_scale <= 0:
            raise SettingError(
                f"loss_scale must be 'dynamic', a finite number > 0 or None, got {loss_scale!r}"
            )
    if not growth_factor > 1.0:
        raise SettingError(f"growth_factor must be > 1, got {growth_factor!r}")
    if not 0.0 < backoff_factor < 1.0:
        raise SettingError(f"backoff_factor must lie in (0, 1), got {backoff_factor!r}")
    if not isinstance(growth_interval, int) or growth_interval < 1:
        raise SettingError(f"growth_interval must be an integer >= 1, got {growth_interval!r}")


def mixed_precision_step(
    model: Layer, loss: LossFunction | str, optimizer: Optimizer, *,
    compute_dtype: str = "bfloat16",
    loss_scale: str | float | None = "default",
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
    validate: bool = True,
) -> MixedStep:
    """Build a training step that computes in bfloat16 or float16 and keeps
    float32 master weights.

    Parameters
    ----------
    model : Layer
        A network, e.g. ``bp.mlp([64, 128, 10], "relu")``.
    loss : Loss or str
        As for :func:`bpcore.train_step`. The loss and its gradient are
        computed in float32 (the output is cast up first).
    optimizer : Optimizer
        Updates the float32 master weights; its state stays float32.
    compute_dtype : {'bfloat16', 'float16'}
        The dtype of the forward and backward kernels.
    loss_scale : 'dynamic', float or None
        ``'dynamic'``: scale the loss gradient, skip steps whose gradients are
        not finite and adapt the scale (``GradScaler``'s rule). A number: a
        fixed scale (unscaled before the update, no skipping). ``None``: no
        scaling. The default is ``'dynamic'`` for float16, ``None`` for
        bfloat16.
    init_scale, growth_factor, backoff_factor, growth_interval
        Dynamic scaling: start at ``init_scale``; multiply by
        ``backoff_factor`` when a step is skipped, by ``growth_factor``
        after ``growth_interval`` finite steps in a row.
    validate : bool
        Check the parameters (float32) and every batch, as
        :func:`bpcore.train_step` does.

    Returns
    -------
    MixedStep
        ``state = mp.init(params)`` (``mp.init(params, seed=s)`` keys dropout's
        masks); ``params, state, value = mp(params, state, x, t)`` with
        ``params`` float32 master weights, ``x`` float32 of shape
        ``(batch, *sample)`` (``(batch, n_in)`` for a dense network; integer
        indices for a network that begins with an embedding) and ``value`` the
        float32 0-D loss (unscaled).
        Nothing passed in is modified. Dynamic scaling reads one boolean
        back to the host per step (whether every gradient is finite).

    Raises
    ------
    DTypeError
        ``compute_dtype`` is unknown or the backend lacks it (NumPy has no
        bfloat16; array_api_strict has neither), or the master weights are
        not float32.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> from bpcore.mixed import mixed_precision_step
    >>> net, opt = bp.mlp([2, 4, 2], "tanh"), bp.sgd(lr=0.1)
    >>> mp = mixed_precision_step(net, "softmax_cross_entropy", opt, compute_dtype="float16")
    >>> params = net.init(0)
    >>> state = mp.init(params)
    >>> x = np.array([[0.0, 1.0]], dtype=np.float32); t = np.array([1])
    >>> params, state, value = mp(params, state, x, t)
    >>> str(params[0]["W"].dtype), value.dtype == np.float32
    ('float32', True)
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise DTypeError(
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}; "
            "for float32 training use bp.train_step"
        )
    if loss_scale == "default":
        loss_scale = "dynamic" if compute_dtype == "float16" else None
    _check_scaling(loss_scale, growth_factor, backoff_factor, growth_interval)
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise SettingError(f"init_scale must be a finite number > 0, got {init_scale!r}")
    # The portable kernels, allocating: the compute dtype's arrays are new each step.
    driver = Driver(model, loss, optimizer, fast=False)
    n_in, n_out, kind = model.n_in, model.n_out, driver.loss.targets
    indices = model.n_index is not None  # integer inputs: never cast
    dynamic = loss_scale == "dynamic"
    fixed = None if dynamic or loss_scale is None else float(loss_scale)
    dtypes: dict[Any, Any] = {}  # namespace -> compute dtype object

    def init(params: Any, *, seed: int = 0) -> MixedState:
        if validate:
            _check_master(params)
        scaler = ScalerState(float(init_scale), 0, 0) if dynamic else None
        # the optimizer's state, or a TrainState with the layers' state (``seed``: dropout's)
        return MixedState(driver.init_state(params, seed=seed), scaler)

    def edges(xp: ModuleType, cdt: Any, scale: float | None) -> Edges:
        """Casts in to the compute dtype, out to float32 (and the loss scale)."""
        f32 = xp.float32

        def low(a: Array) -> Array:
            return xp.astype(a, cdt)

        def dy_in(dy: Array) -> Array:
            # scale in float32, then round to the compute dtype
            return low(dy if scale is None else xp.multiply(dy, scale))

        def grads_out(grads: Any) -> Any:
            if scale is None:
                return tree.map_arrays(lambda g: xp.astype(g, f32), grads)
            inv = 1.0 / scale
            return tree.map_arrays(lambda g: xp.multiply(xp.astype(g, f32), inv), grads)

        # The loss (softmax, log-sum-exp) in float32: cheap, and exact to float32.
        return Edges(params=lambda p: tree.map_arrays(low, p), x=(lambda a: a) if indices else low,
                     y=lambda y: xp.astype(y, f32), dy=dy_in, grads=grads_out)

    def step(
        params: Any, state: MixedState, x: Array, t: Array
    ) -> tuple[Any, MixedState, Array]:
        if validate:
            ref = _check_master(params)
            check_features(x, ref, n_in, model=model)
            check_targets(t, ref, x.shape[0], n_out, kind)
        xp = namespace(x)
        try:
            cdt = dtypes[xp]
        except KeyError:
            cdt = dtypes[xp] = compute_dtype_of(xp, compute_dtype)
        scaler = state.scaler
        scale = scaler.scale if scaler is not None else fixed
        inner = state.opt  # a TrainState for a network with layer state
        ctx = driver._context(inner, True, "the mixed-precision step")
        with _overflow_expected(xp, dynamic):
            value, grads, layers = driver._gradients(params, x, t, edges(xp, cdt, scale), None,
                                                     None, ctx)
        if scaler is not None:
            if not _all_finite(xp, grads):
                # Skip the update: the scale was too large for this step. The layer
                # state stays as it was; the step counter moves on (new dropout masks).
                scaler = ScalerState(
                    scaler.scale * backoff_factor, 0, scaler.skipped + 1
                )
                if isinstance(inner, TrainState):
                    inner = inner._replace(step=inner.step + 1)
                return params, MixedState(inner, scaler), value
            good = scaler.good_steps + 1
            if good >= growth_interval:
                scaler = ScalerState(scaler.scale * growth_factor, 0, scaler.skipped)
            else:
                scaler = ScalerState(scaler.scale, good, scaler.skipped)
        b = driver.bound(xp)
        if not isinstance(inner, TrainState):
            params, opt_state = driver.update(grads, inner, params, bound=b)
            return params, MixedState(opt_state, scaler), value
        params, opt_state = driver.update(grads, inner.opt, params, bound=b)
        if ctx is not None:  # the new running statistics, in the layer state's dtype
            layers = tree.map(lambda new, old: xp.astype(new, old.dtype) if tree.is_array(new)
                              else new, layers, inner.layers)
        else:
            layers = inner.layers
        return params, MixedState(TrainState(opt_state, layers, inner.step + 1, inner.seed),
                                  scaler), value

    config = {
        "compute_dtype": compute_dtype, "loss_scale": loss_scale, "init_scale": init_scale,
        "growth_factor": growth_factor, "backoff_factor": backoff_factor,
        "growth_interval": growth_interval,
    }
    return MixedStep(init, step, config)


def _overflow_expected(xp: ModuleType, dynamic: bool) -> AbstractContextManager[Any]:
    """Silence NumPy's overflow warnings where dynamic loss scaling expects
    and handles overflow (an ``inf`` gradient skips the step); a no-op elsewhere."""
    if dynamic and array_api_compat.is_numpy_namespace(xp):
        import numpy as np  # the host edge: NumPy's error state, not a kernel

        return np.errstate(over="ignore", invalid="ignore")
    return nullcontext()


def _check_master(params: Any) -> Array:
    xp, ref = check_params(params)
    name = dtype_name(ref.dtype, xp)
    if name != "float32":
        raise DTypeError(
            f"mixed precision keeps float32 master weights, but the parameters are {name}; "
            "create them with model.init(seed, dtype='float32')"
        )
    return ref


def _all_finite(xp: ModuleType, grads: Any) -> bool:
    """Whether every gradient is finite: one host read for the whole tree."""
    flags = [xp.all(xp.isfinite(g)) for g in tree.arrays(grads)]
    if not flags:
        return True
    return bool(xp.all(xp.stack(flags)))


# --------------------------------------------------------------------------
# TF32


class TF32Setting(NamedTuple):
    """What :func:`allow_tf32` did.

    Attributes
    ----------
    enabled : bool
        The setting asked for.
    previous : dict
        The settings before the call (``torch_matmul``, ``torch_cudnn``:
        bool or ``None`` without torch; ``CUPY_TF32``: the environment value
        or ``None``), for :func:`tf32` to restore.
    effective : bool
        Whether a CUDA device is present for the setting to change anything.
    message : str
        What the setting does here, in words.
    """

    enabled: bool
    previous: dict[str, Any]
    effective: bool
    message: str


def _torch_if_loaded() -> Any:
    import importlib.util
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"]
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def allow_tf32(enabled: bool = True) -> TF32Setting:
    """Let float32 matmuls run on TF32 tensor cores (an explicit opt-in).

    TF32 keeps float32's range but rounds the matmul inputs to 10 mantissa
    bits (about 3 decimal digits), for several times the matmul throughput
    on NVIDIA Ampere and later GPUs. bpcore never turns it on by itself.

    Sets ``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` (when torch is installed) and the
    ``CUPY_TF32`` environment variable (``"1"`` / ``"0"``). CuPy reads
    ``CUPY_TF32`` when it initialises its cuBLAS handles, so call this before
    the first CuPy matmul of the process (or export ``CUPY_TF32=1`` in the
    shell). Without a CUDA device nothing changes numerically, and the
    returned :class:`TF32Setting` says so in ``message``.

    Parameters
    ----------
    enabled : bool
        ``True`` to allow TF32, ``False`` to forbid it.

    Returns
    -------
    TF32Setting
        Includes the previous settings; :func:`tf32` restores them.
    """
    enabled = bool(enabled)
    torch = _torch_if_loaded()
    previous: dict[str, Any] = {
        "torch_matmul": None, "torch_cudnn": None, "CUPY_TF32": os.environ.get("CUPY_TF32"),
    }
    cuda = False
    if torch is not None:
        previous["torch_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        previous["torch_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        cuda = bool(torch.cuda.is_available())
    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    if not cuda:
        cuda = _cupy_has_device()
    state = "allowed" if enabled else "forbidden"
    if cuda:
        message = f"TF32 matmuls {state} (takes effect on Ampere or newer GPUs)"
    else:
        message = (
            f"TF32 matmuls {state}, but there is no CUDA device here: TF32 only changes "
            "float32 matmuls on NVIDIA Ampere or newer GPUs, so on the CPU nothing changes"
        )
    return TF32Setting(enabled, previous, cuda, message)


def _cupy_has_device() -> bool:
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no driver, no device: CuPy raises its own CUDA errors
        return False


def _restore_tf32(previous: dict[str, Any]) -> None:
    torch = _torch_if_loaded()
    if torch is not None and previous["torch_matmul"] is not None:
        torch.backends.cuda.matmul.allow_tf32 = previous["torch_matmul"]
        torch.backends.cudnn.allow_tf32 = previous["torch_cudnn"]
    if previous["CUPY_TF32"] is None:
        os.environ.pop("CUPY_TF32", None)
    else:
        os.environ["CUPY_TF32"] = previous["CUPY_TF32"]


@contextmanager
def tf32(enabled: bool = True) -> Iterator[TF32Setting]:
    """:func:`allow_tf32` for the duration of a ``with`` block, then restore.

    Examples
    --------
    >>> from bpcore.mixed import tf32
    >>> with tf32() as setting:
    ...     setting.enabled
    True
    """
    setting = allow_tf32(enabled)
    try:
        yield setting
    finally:
        _restore_tf32(setting.previous)
