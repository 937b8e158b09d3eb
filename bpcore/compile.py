"""Compiled training steps: one set of kernels, handed to each backend's compiler.

bpcore's kernels are pure Array API functions, so the very same
:func:`bpcore.train_step` that runs eagerly can be traced and compiled by the
backend its arrays belong to. :func:`compile` returns a :class:`CompiledStep`
that picks, at the first call on each backend, how the step runs there:

============  ===============================================================
backend       how the step runs
============  ===============================================================
JAX           ``jax.jit`` of the step with the kernels bound to JAX (the
              portable ones, and lax's convolutions where a kernel has a JAX
              specialization), parameter and optimizer-state buffers
              donated (XLA updates them in place)
PyTorch       ``torch.compile(step, fullgraph=True)`` (Inductor; CPU and CUDA)
NumPy         no compiler: the step driver with its NumPy
              specializations (``out=`` kernels into the workspace it owns,
              in-place updates), called directly
CuPy          eager, with a warning: the CUDA-graph capture belongs to the GPU
              work and is not implemented yet
array-api-    eager, with a warning: a reference backend with no compiler
strict
============  ===============================================================

A backend, network or step that cannot be compiled falls back to the eager
step with one warning per reason (``warnings.warn``) that says why. The
compiled and the eager steps compute the same thing: the same parameters
after any number of steps, to floating-point rounding.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from .backend import Array, backend_name, namespace
from .errors import ArgumentError, BpcoreError
from .layers.core import Layer
from .losses import LossFunction, get_loss
from .optim import Optimizer
from .step import Driver, TrainState, check_batch, check_stacked, train_loop, train_step
from .tree import first_array

__all__ = ["NO_COMPILER", "XLA_CPU_OPTIONS", "CompiledStep", "compile"]

Step = Callable[[Any, Any, Array, Array], tuple[Any, Any, Array]]

#: Why a backend runs eagerly under :func:`compile`.
NO_COMPILER = {
    "cupy": "CUDA-graph capture of CuPy steps is not implemented yet (it belongs to the GPU "
    "work); the eager CuPy step runs instead",
    "array_api_strict": "array_api_strict is a reference backend with no compiler; the eager "
    "step runs instead",
}

_READY_STEP_HINT = (
    "a step that validates every batch, or a layer that reads array values in Python, cannot "
    "be traced: build it with train_step(..., validate=False)"
)

#: XLA options of the compiled JAX step on the CPU. A donated parameter is read
#: by the forward and backward passes and then overwritten by its update; XLA's
#: default copy insertion cannot tell that every read comes first and copies
#: such parameters at the start of each step (4 MB a step for a 1024x1024
#: weight). Region analysis sees it and drops the copies; the arithmetic is
#: unchanged.
XLA_CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}

#: Calls watched after a new batch shape, until this many in a row compile nothing.
_SETTLE = 2

#: Modules whose warnings are hidden while torch.compile traces and compiles:
#: Dynamo's notes on array-api-compat's caches, Inductor's deprecation notices.
_TORCH_QUIET = (r"torch(\.|$)", r"array_api_compat(\.|$)")


class _Runner(NamedTuple):
    """How a step runs on one backend."""

    call: Step
    method: str
    compiler: str  # "jax.jit", "torch.compile", "" for none
    compiles: Callable[[], int] | None  # compiled variants so far (to spot recompiles)
    sync: Callable[[Any], None]  # wait for a result (for timing)
    compiled: bool  # a compiler is involved (failures fall back to eager)
    quiet: tuple[str, ...] = ()  # modules whose warnings are hidden while it compiles


def _no_sync(result: Any) -> None:
    """Eager CPU results are ready when the call returns."""


class CompiledStep:
    """A training step compiled for the backend of its inputs (built by :func:`compile`).

    Call it as the step it wraps: ``step(params, state, x, t) -> (params,
    state, loss_value)``. The first call on a backend chooses how the step
    runs there; the first call with a new batch shape validates that batch
    (when built with ``validate=True``) and compiles.

    Attributes
    ----------
    donate : bool
        Whether the ``params`` and ``state`` passed in are consumed (see
        :func:`compile`).
    methods : dict
        Backend name -> how the step runs there (``"jax.jit"``,
        ``"torch.compile"``, ``"numpy: the step driver's workspace, in place"``,
        ``"eager: <reason>"``).
    compile_seconds : dict
        ``(backend, x shape) -> seconds`` spent in calls that compiled
        (tracing, compiling and running that one step), including
        recompilations in the next calls, e.g. PyTorch's when Adam's step
        count first changes.
    compiles : dict
        ``(backend, x shape) -> number of compilations seen`` (1 for a step
        that compiled once for that shape).
    """

    def __init__(
        self, step: Callable[[ModuleType], Step], *, eager: Step, donate: bool,
        validate: Callable[..., None] | None, built: bool, torch_options: dict[str, Any],
        hint: str = "", loop: bool = False,
    ) -> None:
        self.loop = loop
        self._step_for = step  # namespace -> the step to hand to its compiler
        self._hint = hint
        self._eager = eager
        self._validate = validate
        self._built = built
        self._torch_options = torch_options
        self.donate = donate
        self.methods: dict[str, str] = {}
        self.compile_seconds: dict[tuple[str, tuple[int, ...]], float] = {}
        self.compiles: dict[tuple[str, tuple[int, ...]], int] = {}
        self._runners: dict[ModuleType, _Runner] = {}
        self._ready: dict[Any, Step] = {}
        self._watch: dict[Any, int] = {}
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        methods = ", ".join(f"{k}: {v}" for k, v in self.methods.items()) or "not called yet"
        return f"CompiledStep(donate={self.donate}, {methods})"

    def __call__(self, params: Any, state: Any, x: Array, t: Array) -> tuple[Any, Any, Array]:
        key = (type(x), x.shape, x.dtype, t.shape, t.dtype)
        run = self._ready.get(key)
        if run is not None:
            return run(params, state, x, t)
        return self._first_calls(key, params, state, x, t)

    # ------------------------------------------------------------------

    def _first_calls(
        self, key: Any, params: Any, state: Any, x: Array, t: Array
    ) -> tuple[Any, Any, Array]:
        """A call with a batch shape not yet settled: validate (the first time),
        compile, time the compilation, fall back to eager if compiling fails."""
        xp = namespace(x)
        new = key not in self._watch
        if new and self._validate is not None:
            self._validate(params, x, t)
        runner = self._runners.get(xp)
        if runner is None:
            runner = self._runners[xp] = self._runner(xp, first_array(params))
        if not runner.compiled:
            self._ready[key] = runner.call
            return runner.call(params, state, x, t)
        name = backend_name(xp)
        if new and name == "jax":
            state = _scalars_as_arrays(state, xp, first_array(params))
        before = runner.compiles() if runner.compiles is not None else None
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                for module in runner.quiet:
                    warnings.filterwarnings("ignore", module=module)
                result = runner.call(params, state, x, t)
                runner.sync(result)
        except BpcoreError:
            raise  # the step's own error about its input, raised while tracing
        except Exception as exc:
            if not new:
                raise
            reason = f"{runner.compiler} failed ({_first_line(exc)}); the eager step runs instead"
            if self._hint:
                reason += f" ({self._hint})"
            runner = self._runners[xp] = self._fallback(name, reason, stacklevel=4)
            self._ready[key] = runner.call
            return runner.call(params, state, x, t)
        seconds = time.perf_counter() - start
        compiled = runner.compiles() != before if runner.compiles is not None else new
        where = (name, tuple(int(n) for n in x.shape))
        if compiled:
            self.compile_seconds[where] = self.compile_seconds.get(where, 0.0) + seconds
            self.compiles[where] = self.compiles.get(where, 0) + 1
            self._watch[key] = _SETTLE
        else:
            self._watch[key] = self._watch.get(key, _SETTLE) - 1
        if self._watch[key] <= 0:
            self._ready[key] = runner.call
        return result

    def _runner(self, xp: ModuleType, ref: Array) -> _Runner:
        name = backend_name(xp)
        if name == "jax":
            runner = self._jax(self._step_for(xp),
                               getattr(getattr(ref, "device", None), "platform", ""))
        elif name == "torch":
            runner = self._torch(self._step_for(xp))
        elif name == "numpy":
            # NumPy has no compiler: the step driver with its NumPy specializations
            # and workspace (a ready step: as it was built).
            how = ("numpy: the step driver's workspace" + (", in place" if self.donate else "")
                   if self._built else "numpy: the step as built (no compiler)")
            runner = _Runner(self._eager, how, "", None, _no_sync, compiled=False)
        else:
            reason = NO_COMPILER.get(name, f"bpcore has no compiler for backend {name}; "
                                     "the eager step runs instead")
            return self._fallback(name, reason)
        self.methods[name] = runner.method
        return runner

    def _fallback(self, name: str, reason: str, stacklevel: int = 5) -> _Runner:
        """The eager step, with one warning per backend and reason (pointing at
        the caller's line: ``stacklevel`` counts the frames from here)."""
        if (name, reason) not in self._warned:
            self._warned.add((name, reason))
            warnings.warn(f"bpcore.compile: {name}: {reason}", UserWarning, stacklevel=stacklevel)
        self.methods[name] = f"eager: {reason}"
        return _Runner(self._eager, "eager", "", None, _no_sync, compiled=False)

    def _jax(self, step: Step, platform: str) -> _Runner:
        import jax

        options = _xla_options() if platform == "cpu" else None
        if self.loop:
            step = _scan(step)
        jitted = jax.jit(step, donate_argnums=(0, 1) if self.donate else (),
                         compiler_options=options)
        cache_size = getattr(jitted, "_cache_size", None)
        method = ("jax.jit of lax.scan" if self.loop else "jax.jit") + (
            ", params and state donated" if self.donate else "")
        return _Runner(jitted, method, "jax.jit", cache_size, jax.block_until_ready,
                       compiled=True)

    def _torch(self, step: Step) -> _Runner:
        import torch

        options = {"fullgraph": True, **self._torch_options}
        compiled = torch.compile(step, **options)
        if self.loop:  # the compiled step, k times: an unrolled loop would compile k times longer
            compiled = _python_loop(compiled)

        def compiles() -> int:
            from torch._dynamo.utils import counters

            return int(counters["stats"]["unique_graphs"])

        def sync(result: Any) -> None:
            value = result[2]
            if getattr(getattr(value, "device", None), "type", "cpu") == "cuda":
                torch.cuda.synchronize(value.device)

        shown = {k: v for k, v in options.items() if k != "fullgraph"}
        method = "torch.compile" + (f" {shown}" if shown else "") + (
            ", called once per step of the loop" if self.loop else "")
        return _Runner(compiled, method, "torch.compile", compiles, sync, compiled=True,
                       quiet=_TORCH_QUIET)


def _scan(step: Step) -> Step:
    """``k`` steps as one ``jax.lax.scan`` over stacked batches (one XLA program)."""
    import jax

    def loop(params: Any, state: Any, xs: Array, ts: Array) -> tuple[Any, Any, Array]:
        def body(carry: tuple[Any, Any], batch: tuple[Array, Array]) -> tuple[Any, Array]:
            p, s, value = step(*carry, *batch)
            return (p, s), value

        (params, state), values = jax.lax.scan(body, (params, state), (xs, ts))
        return params, state, values

    return loop


def _python_loop(step: Step) -> Step:
    """``k`` calls of ``step``, on ``xs[i]``, ``ts[i]``; the losses stacked."""

    def loop(params: Any, state: Any, xs: Array, ts: Array) -> tuple[Any, Any, Array]:
        values = []
        for i in range(xs.shape[0]):
            params, state, value = step(params, state, xs[i, ...], ts[i, ...])
            values.append(value)
        return params, state, namespace(xs).stack(values)

    return loop


@functools.cache
def _xla_options() -> dict[str, Any] | None:
    """:data:`XLA_CPU_OPTIONS` if this jaxlib knows them (``None`` if not)."""
    import jax
    import jax.numpy as jnp

    try:
        jax.jit(lambda a: a + 1, compiler_options=XLA_CPU_OPTIONS).lower(jnp.zeros(1)).compile()
    except Exception:
        return None
    return XLA_CPU_OPTIONS


def _first_line(exc: BaseException) -> str:
    """``Type: the first line of the message`` (two lines if the first ends in ':')."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else \
        (lines[0] if lines else "")
    return f"{type(exc).__name__}: {text[:240]}" if text else type(exc).__name__


def _scalars_as_arrays(state: Any, xp: ModuleType, ref: Array) -> Any:
    """Python numbers in an optimizer state (Adam's step count) as 0-D arrays on
    ``ref``'s device: ``jax.jit`` keys a Python int apart from the array it
    returns in its place, and would compile the step a second time."""
    if not (isinstance(state, tuple) and hasattr(state, "_fields")):
        return state
    if isinstance(state, TrainState):  # the optimizer's state inside
        return state._replace(opt=_scalars_as_arrays(state.opt, xp, ref),
                              step=xp.asarray(state.step, device=ref.device),
                              seed=xp.asarray(state.seed, device=ref.device))
    return type(state)(*(
        xp.asarray(v, device=ref.device)
        if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        for v in state
    ))


def compile(
    step: Step | Layer,
    loss: LossFunction | str | None = None,
    optimizer: Optimizer | None = None,
    *,
    donate: bool = True,
    validate: bool = True,
    grad_transform: Callable[[Any], Any] | None = None,
    torch_options: dict[str, Any] | None = None,
    loop: bool = False,
) -> CompiledStep:
    """Compile a training step for the backend of its inputs.

    Either ``compile(model, loss, optimizer)`` (the usual form: bpcore builds
    the portable step with :func:`bpcore.train_step` and validates the first
    batch of each shape outside the compiled code) or ``compile(step)`` for a
    ready ``step(params, state, x, t) -> (params, state, loss_value)``, e.g.
    ``train_step(..., validate=False)`` (a step that validates every batch
    does host synchronizations and cannot be traced; it falls back to eager).

    How the step runs, per backend of the arrays it is called with: JAX:
    ``jax.jit`` with the params and state donated; PyTorch (CPU and CUDA):
    ``torch.compile(step, fullgraph=True)``; NumPy: the step driver's in-place
    path (NumPy has no compiler); CuPy and array-api-strict: the eager step,
    with a warning saying why. Anything that fails to compile (an unknown
    backend, a layer that needs concrete values, a failing compiler) also
    runs eagerly, after one warning per backend and reason.

    Parameters
    ----------
    step : callable or Layer
        A ready step, or the network (then ``loss`` and ``optimizer`` are required).
    loss : Loss or str, optional
        As for :func:`bpcore.train_step`.
    optimizer : Optimizer, optional
        As for :func:`bpcore.train_step`.
    donate : bool
        Let the step consume the ``params`` and ``state`` passed in, as
        ``train_step(..., inplace=True)`` does: on JAX their buffers are
        donated to XLA (the arrays passed in are deleted; reading them
        raises), on NumPy and PyTorch they are updated in place. Always use
        the returned ones. ``False`` leaves them untouched (slower). With a
        ready ``step``, this only affects JAX (the step's own ``inplace``
        decides elsewhere).
    validate : bool
        Check the first batch of every shape (backend, shapes, dtypes, labels,
        NaN/Inf) eagerly, before it reaches the compiled code; later batches
        of that shape are not checked (a check costs host synchronizations).
        Only with the ``(model, loss, optimizer)`` form.
    grad_transform : callable, optional
        ``grads -> grads``, as for :func:`bpcore.train_step`; it must be
        traceable to compile (an MPI all-reduce is not: it runs eagerly).
    torch_options : dict, optional
        Extra ``torch.compile`` keywords, e.g. ``{"mode": "max-autotune"}``.
    loop : bool
        Compile :func:`bpcore.train_loop` instead: ``step(params, state, xs,
        ts) -> (params, state, values)`` runs ``k = xs.shape[0]`` steps on
        batches stacked as ``(k, batch, n_in)``. On JAX the ``k`` steps are one
        ``lax.scan`` in one XLA program (no per-step dispatch: what small
        batches need); on PyTorch the compiled step is called ``k`` times; on
        NumPy it is the driver's loop. Each new ``k`` compiles once.

    Returns
    -------
    CompiledStep
        ``step(params, state, x, t) -> (params, state, loss_value)`` with
        ``x`` of shape ``(batch, n_in)``. Same results as the eager step to
        rounding. On JAX and PyTorch the first call with each batch shape
        compiles (about a second with XLA, tens of seconds with Inductor on a
        small CPU); a smaller last batch compiles once more. On JAX, Adam's
        step count comes back as a 0-D integer array.

    Raises
    ------
    TypeError
        For a network without ``loss`` and ``optimizer``, or a ready step with them.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> net = bp.mlp([2, 3, 2], "tanh")
    >>> opt = bp.sgd(lr=0.1)
    >>> step = bp.compile(net, "softmax_cross_entropy", opt)
    >>> params = net.init(0); state = opt.init(params)
    >>> x = np.array([[0.0, 1.0]], dtype=np.float32); t = np.array([1])
    >>> params, state, value = step(params, state, x, t)  # on NumPy: the in-place step
    >>> step.methods
    {'numpy': "numpy: the step driver's workspace, in place"}
    """
    options = dict(torch_options or {})
    if isinstance(step, Layer):
        if loss is None or optimizer is None:
            raise ArgumentError(
                "compile(model, loss, optimizer) needs the loss and the optimizer too, e.g. "
                "bp.compile(net, 'softmax_cross_entropy', bp.sgd(0.1))"
            )
        model, loss = step, get_loss(loss)
        # torch.compile traces the portable kernels (fast=False: no workspace, whose
        # buffers it would guard on); jax.jit traces the kernels bound to JAX, whose
        # specializations (lax's convolutions) are traceable and use no workspace;
        # NumPy and the eager fallbacks run the driver with its specializations
        # and workspace.
        portable = Driver(model, loss, optimizer, fast=False, inplace=donate,
                          grad_transform=grad_transform).on
        bound = Driver(model, loss, optimizer, fast=True, inplace=donate,
                       grad_transform=grad_transform).on

        def traced(xp: ModuleType) -> Any:
            return (bound if backend_name(xp) == "jax" else portable)(xp)

        build = train_loop if loop else train_step
        eager = build(model, loss, optimizer, validate=False, inplace=donate,
                      grad_transform=grad_transform)
        n_in, n_out, kind = model.n_in, model.n_out, loss.targets

        def check(params: Any, x: Array, t: Array) -> None:
            (check_stacked if loop else check_batch)(params, x, t, n_in, n_out, kind,
                                                     model=model)

        return CompiledStep(traced, eager=eager, donate=donate,
                            validate=check if validate else None, built=True,
                            torch_options=options, loop=loop)
    if loss is not None or optimizer is not None or grad_transform is not None or loop:
        raise ArgumentError(
            "compile(step) takes a ready step alone; to have bpcore build it, pass the "
            "network: bp.compile(net, loss, optimizer)"
        )
    if not callable(step):
        raise ArgumentError(
            f"compile() takes a step function or a network (Layer), got {type(step).__name__}"
        )
    return CompiledStep(lambda xp: step, eager=step, donate=donate, validate=None, built=False,
                        torch_options=options, hint=_READY_STEP_HINT)
