"""The rows of the benchmark: bpcore on each backend, its peers, and the GEMM floor.

:func:`build` turns a row name, a workload, a batch size, a dtype and a
device kind (``"cpu"``/``"gpu"``) into a :class:`Runner`, whose ``step()``
is the one timed unit: a full training step (forward, loss, backward,
update) on a batch already on the device, with a synchronize at the end on
a GPU (and ``block_until_ready`` on JAX, which dispatches asynchronously
even on the CPU). Everything else (moving data, building the network,
compiling) happens in :func:`build`, outside the timed function. A row that
cannot run here raises :class:`Unavailable` with the reason.

Peers (the same arithmetic from the same initial weights, see
:mod:`bpcore.benchtools.workloads`):

* ``numpy-handwritten``: the classic vectorized NumPy tutorial step, explicit
  matmuls and in-place updates ``W -= lr * dW`` (Adam: the obvious in-place
  NumPy Adam);
* ``torch-eager``: ``torch.nn`` + autograd + ``torch.optim``;
* ``torch-compile``: the same with the forward and loss under
  ``torch.compile`` (backward compiled by AOTAutograd; ``torch.optim`` eager);
* ``jax-jit``: one ``jax.jit`` step (``value_and_grad`` + update) with the
  parameters and optimizer state donated;
* ``gemm-floor-<lib>``: only the step's matrix products, into preallocated
  outputs: the physical limit no step can beat.

bpcore's compiled rows run the step of :func:`bpcore.compile` (the same
portable kernels): ``bpcore-jax-compiled`` (``jax.jit``, params and state
donated), ``bpcore-torch-compiled`` (``torch.compile``) and
``bpcore-numpy-fused`` (``bpcore.compile`` on NumPy: the step driver in place).
``bpcore-numpy`` is ``train_step(validate=False, inplace=True)``,
``bpcore-numpy-functional`` the same without ``inplace`` and
``bpcore-numpy-default`` what a user gets by default (``train_step(net, loss,
opt)``: every batch validated, a functional update).
Their ``compile_s`` is reported apart from the step time: the seconds of the
calls that compiled (each includes running that one step, as the ``jax-jit``
peer's does).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .workloads import Workload, gemm_products, host_batch, host_params, host_tree, network

__all__ = [
    "BACKEND_ROWS",
    "COMPILED_ROWS",
    "PEER_ROWS",
    "ROWS",
    "Row",
    "Runner",
    "Unavailable",
    "build",
    "cpu_name",
    "device_name",
]


class Unavailable(Exception):
    """A row that cannot run here; the message says why."""


class Row(NamedTuple):
    """A row of the benchmark table."""

    name: str
    kind: str  # "bpcore", "peer" or "floor"
    library: str  # the array library it runs on
    select: str  # the --backends / --peers name that selects it
    devices: tuple[str, ...]
    max_batch: int | None = None


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("bpcore-numpy", "bpcore", "numpy", "numpy", ("cpu",)),
        Row("bpcore-numpy-functional", "bpcore", "numpy", "numpy", ("cpu",)),
        Row("bpcore-numpy-default", "bpcore", "numpy", "numpy", ("cpu",)),
        Row("bpcore-torch", "bpcore", "torch", "torch", ("cpu", "gpu")),
        Row("bpcore-jax", "bpcore", "jax", "jax", ("cpu", "gpu")),
        Row("bpcore-cupy", "bpcore", "cupy", "cupy", ("gpu",)),
        Row("bpcore-array_api_strict", "bpcore", "array_api_strict", "array_api_strict",
            ("cpu",), max_batch=64),
        Row("bpcore-jax-compiled", "bpcore", "jax", "jax-compiled", ("cpu", "gpu")),
        Row("bpcore-torch-compiled", "bpcore", "torch", "torch-compiled", ("cpu", "gpu")),
        Row("bpcore-numpy-fused", "bpcore", "numpy", "numpy-fused", ("cpu",)),
        Row("numpy-handwritten", "peer", "numpy", "handwritten", ("cpu",)),
        Row("torch-eager", "peer", "torch", "torch-eager", ("cpu", "gpu")),
        Row("torch-compile", "peer", "torch", "torch-compile", ("cpu", "gpu")),
        Row("jax-jit", "peer", "jax", "jax-jit", ("cpu", "gpu")),
        Row("gemm-floor-numpy", "floor", "numpy", "floor", ("cpu",)),
        Row("gemm-floor-torch", "floor", "torch", "floor", ("cpu", "gpu")),
        Row("gemm-floor-cupy", "floor", "cupy", "floor", ("gpu",)),
    )
}
#: Names ``--backends`` accepts (bpcore's backends).
BACKEND_ROWS = ("numpy", "torch", "jax", "cupy", "array_api_strict",
                "jax-compiled", "torch-compiled", "numpy-fused")
#: The ``--backends`` names of the compiled rows (:func:`bpcore.compile`).
COMPILED_ROWS = ("jax-compiled", "torch-compiled", "numpy-fused")
#: Names ``--peers`` accepts.
PEER_ROWS = ("handwritten", "torch-eager", "torch-compile", "jax-jit", "floor")
#: The floor each row's fraction of the GEMM floor is measured against.
FLOOR_OF = {"numpy": "gemm-floor-numpy", "array_api_strict": "gemm-floor-numpy",
            "jax": "gemm-floor-numpy", "torch": "gemm-floor-torch", "cupy": "gemm-floor-cupy"}


class Runner(NamedTuple):
    """A built row: ``step()`` is the timed unit."""

    step: Callable[[], None]
    device_name: str
    extra: dict[str, Any]


# --------------------------------------------------------------------------
# devices


@functools.cache
def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    """A readable name of the device a row runs on."""
    if device == "cpu":
        return f"{cpu_name()} ({os.cpu_count()} cores)"
    return _gpu_name()


@functools.cache
def _gpu_name() -> str:
    if _installed("torch"):
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    if _installed("cupy"):
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    return "GPU"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _need(module: str, hint: str) -> None:
    if not _installed(module):
        raise Unavailable(f"{module} is not installed ({hint})")


def _jax_device(device: str) -> Any:
    import jax

    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        raise Unavailable("jax has no GPU device here (jax[cuda] and a CUDA GPU needed)")
    return gpus[0]


def _torch_device(device: str) -> Any:
    import torch

    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Unavailable("torch has no CUDA device here (a CUDA build of torch and a GPU needed)")
    return torch.device("cuda:0")


def _cupy_ready() -> Any:
    _need("cupy", 'pip install "bpcore[cuda]"')
    import cupy

    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise Unavailable("cupy finds no CUDA device")
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable(f"cupy cannot reach a CUDA device: {exc}") from None
    return cupy


def _cupy_sync() -> None:
    import cupy

    cupy.cuda.get_current_stream().synchronize()


def _torch_sync() -> None:
    import torch

    torch.cuda.synchronize()


# --------------------------------------------------------------------------
# bpcore rows


def _bpcore_optimizer(workload: Workload) -> Any:
    from .. import optim

    if workload.optimizer == "sgd":
        return optim.sgd(workload.lr)
    if workload.optimizer == "momentum":
        return optim.sgd(workload.lr, momentum=0.9)
    return optim.adam(workload.lr)


def _bpcore(
    backend: str, workload: Workload, batch: int, dtype: str, device: str, *, inplace: bool,
    compiled: bool = False, validate: bool = False,
) -> Runner:
    import bpcore as bp

    info = bp.backends()[backend]
    if not info.available:
        raise Unavailable(f"backend {backend}: {info.reason}; install: {info.install}")
    target: Any = None
    if backend == "torch":
        target = str(_torch_device(device))
    elif backend == "jax":
        target = _jax_device(device)
        if dtype == "float64":
            import jax

            if not jax.config.read("jax_enable_x64"):
                raise Unavailable("float64 on jax needs jax_enable_x64 (the suite sets it)")
    elif backend == "cupy":
        _cupy_ready()
        target = 0
    net = network(workload)
    opt = _bpcore_optimizer(workload)
    params_host = list(host_tree(workload, dtype))
    x_host, t_host = host_batch(workload, batch, dtype)
    params = bp.to_backend(tuple(params_host), backend, device=target)
    x = bp.to_backend(x_host, backend, device=target)
    t = bp.to_backend(t_host, backend, device=target)
    state = opt.init(params)
    extra: dict[str, Any] = {}
    if compiled:
        step, params, state, extra = _compile(bp, backend, net, opt, params, state, x, t)
    else:
        step = bp.train_step(net, "softmax_cross_entropy", opt, validate=validate,
                             inplace=inplace)
        mode = "inplace=True" if inplace else "functional"
        extra["train_step"] = ("the default train_step (validate=True, functional)" if validate
                               else f"validate=False, {mode}")
    box = [params, state]

    if backend == "jax":
        import jax

        def run() -> None:
            box[0], box[1], value = step(box[0], box[1], x, t)
            jax.block_until_ready((box[0], box[1], value))

    elif backend == "cupy" or (backend == "torch" and device == "gpu"):
        sync = _cupy_sync if backend == "cupy" else _torch_sync

        def run() -> None:
            box[0], box[1], _ = step(box[0], box[1], x, t)
            sync()

    else:

        def run() -> None:
            box[0], box[1], _ = step(box[0], box[1], x, t)

    if backend == "torch":
        import torch

        extra["threads"] = torch.get_num_threads()
    return Runner(run, device_name(device), extra)


def _compile(
    bp: Any, backend: str, net: Any, opt: Any, params: Any, state: Any, x: Any, t: Any
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``bpcore.compile``'s step, compiled now (outside the timing): the first
    calls compile (PyTorch once more when Adam's step count first changes)."""
    if backend == "torch":
        import torch

        torch._dynamo.reset()  # compile this table's shapes afresh, as the torch-compile peer
    step = bp.compile(net, "softmax_cross_entropy", opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # until the compiled step has settled
            params, state, _ = step(params, state, x, t)
    method = step.methods.get(backend, "")
    if method.startswith("eager"):
        raise Unavailable(f"bpcore.compile ran eagerly: {method.removeprefix('eager: ')}")
    extra: dict[str, Any] = {"train_step": f"bpcore.compile: {method}"}
    if step.compile_seconds:
        extra["compile_s"] = round(sum(step.compile_seconds.values()), 2)
        extra["compiles"] = sum(step.compiles.values())
    if any("donated" in str(w.message) for w in caught):
        extra["donation"] = "not used by this jax backend"
    return step, params, state, extra


# --------------------------------------------------------------------------
# the hand-written NumPy step


def _handwritten(workload: Workload, batch: int, dtype: str) -> Runner:
    if workload.arch is not None:
        raise Unavailable("the hand-written NumPy step is the MLP tutorial's; this workload "
                          "is not an MLP")
    params = [(W.copy(), b.copy()) for W, b in host_params(workload, dtype)]
    x, t = host_batch(workload, batch, dtype)
    n, lr, sigmoid = len(params), workload.lr, workload.activation == "sigmoid"
    rows = np.arange(batch)
    velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    m = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    v = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    b1, b2, eps, count = 0.9, 0.999, 1e-8, [0]

    def sgd(i: int, W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray) -> None:
        W -= lr * dW
        b -= lr * db

    def momentum(i: int, W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray) -> None:
        for p, g, vel in ((W, dW, velocity[i][0]), (b, db, velocity[i][1])):
            vel *= 0.9
            vel += g
            p -= lr * vel

    def adam(i: int, W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray) -> None:
        k = count[0]
        for p, g, mm, vv in ((W, dW, m[i][0], v[i][0]), (b, db, m[i][1], v[i][1])):
            mm *= b1
            mm += (1 - b1) * g
            vv *= b2
            vv += (1 - b2) * g * g
            m_hat = mm / (1 - b1**k)
            v_hat = vv / (1 - b2**k)
            p -= lr * m_hat / (np.sqrt(v_hat) + eps)

    update = {"sgd": sgd, "momentum": momentum, "adam": adam}[workload.optimizer]

    def run() -> None:
        count[0] += 1
        # forward
        acts = [x]
        a = x
        for i, (W, b) in enumerate(params):
            z = a @ W + b
            if i < n - 1:
                if sigmoid:
                    with np.errstate(over="ignore"):  # exp(-z) -> inf gives 1/inf = 0
                        a = 1.0 / (1.0 + np.exp(-z))
                else:
                    a = np.maximum(z, 0)
                acts.append(a)
        # softmax cross-entropy
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(probs[rows, t]).mean()  # noqa: F841 (computed, as a real loop does)
        dz = probs
        dz[rows, t] -= 1
        dz /= batch
        # backward and update
        for i in range(n - 1, -1, -1):
            W, b = params[i]
            dW = acts[i].T @ dz
            db = dz.sum(axis=0)
            if i > 0:
                da = dz @ W.T
                if sigmoid:
                    dz = da * acts[i] * (1 - acts[i])
                else:
                    da[acts[i] <= 0] = 0
                    dz = da
            update(i, W, b, dW, db)

    return Runner(run, device_name("cpu"), {})


# --------------------------------------------------------------------------
# PyTorch


def _torch_network(workload: Workload, dtype: str, dev: Any) -> Any:
    """The workload's network as ``torch.nn`` modules with bpcore's initial weights
    (a convolution's and a recurrent layer's weights have the same layout; a dense
    ``W`` is ``weight.T``)."""
    import torch
    from torch import nn

    def tensor(a: np.ndarray) -> Any:
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)).clone())

    mods: list[Any] = []
    for config, p in zip(network(workload).config["layers"], host_tree(workload, dtype)):
        name = config["name"]
        if name == "reshape":
            mods.append(nn.Unflatten(1, tuple(config["shape"])))
        elif name == "flatten":
            mods.append(nn.Flatten())
        elif name in ("relu", "tanh", "sigmoid"):
            mods.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[name]())
        elif name == "dense":
            mod = nn.Linear(config["n_in"], config["n_out"])
            mod.weight, mod.bias = tensor(p["W"].T), tensor(p["b"])
            mods.append(mod)
        elif name in ("conv1d", "conv2d"):
            conv: Any = nn.Conv1d if name == "conv1d" else nn.Conv2d
            mod = conv(config["in_channels"], config["out_channels"], config["kernel_size"],
                      stride=config["stride"], padding=config["padding"],
                      dilation=config["dilation"])
            mod.weight, mod.bias = tensor(p["W"]), tensor(p["b"])
            mods.append(mod)
        elif name in ("rnn", "gru", "lstm", "bidirectional"):
            from .recurrent import torch_recurrent

            mods.append(torch_recurrent(config, p))
        elif name in ("max_pool1d", "max_pool2d"):
            pool: Any = nn.MaxPool1d if name == "max_pool1d" else nn.MaxPool2d
            mods.append(pool(config["kernel_size"], config["stride"], config["padding"],
                            config["dilation"]))
        else:
            raise Unavailable(f"no torch module for bpcore's {name} layer in this benchmark")
    return nn.Sequential(*mods).to(dev)


def _torch_model(workload: Workload, dtype: str, dev: Any) -> Any:
    import torch
    from torch import nn

    if workload.arch is not None:
        return _torch_network(workload, dtype, dev)
    mods: list[Any] = []
    host = host_params(workload, dtype)
    for i, (W, b) in enumerate(host):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(W.T)).clone())
            lin.bias = nn.Parameter(torch.from_numpy(b).clone())
        mods.append(lin)
        if i < len(host) - 1:
            mods.append(nn.Sigmoid() if workload.activation == "sigmoid" else nn.ReLU())
    return nn.Sequential(*mods).to(dev)


def _torch_optimizer(workload: Workload, params: Any) -> Any:
    import torch

    if workload.optimizer == "sgd":
        return torch.optim.SGD(params, lr=workload.lr)
    if workload.optimizer == "momentum":
        return torch.optim.SGD(params, lr=workload.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=workload.lr)


def _torch(workload: Workload, batch: int, dtype: str, device: str, *, compiled: bool) -> Runner:
    _need("torch", 'pip install "bpcore[torch]"')
    import torch
    import torch.nn.functional as F

    dev = _torch_device(device)
    model = _torch_model(workload, dtype, dev)
    opt = _torch_optimizer(workload, model.parameters())
    x_host, t_host = host_batch(workload, batch, dtype)
    x = torch.from_numpy(x_host).to(dev)
    t = torch.from_numpy(t_host).to(dev)

    def loss_of(x: Any, t: Any) -> Any:
        return F.cross_entropy(model(x), t)

    extra: dict[str, Any] = {"threads": torch.get_num_threads()}
    fn: Callable[[Any, Any], Any] = loss_of
    if compiled:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's own deprecation notices
                torch._dynamo.reset()
                fn = torch.compile(loss_of, dynamic=False)
                start = time.perf_counter()
                fn(x, t).backward()  # compile forward and backward now, not in the timed step
                opt.zero_grad(set_to_none=True)
            extra["compile_s"] = round(time.perf_counter() - start, 2)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"torch.compile failed: {type(exc).__name__}: {first[:200]}"
            raise Unavailable(reason) from None
    sync = _torch_sync if dev.type == "cuda" else None

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss = fn(x, t)
        loss.backward()
        opt.step()
        if sync is not None:
            sync()

    return Runner(run, device_name(device), extra)


# --------------------------------------------------------------------------
# JAX


def _jax_jit(workload: Workload, batch: int, dtype: str, device: str) -> Runner:
    _need("jax", 'pip install "bpcore[jax]"')
    import jax
    import jax.numpy as jnp

    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise Unavailable("float64 on jax needs jax_enable_x64 (the suite sets it)")
    if workload.arch is not None:
        raise Unavailable("the hand-written jax.jit step is an MLP's; for this workload the "
                          "JAX row is bpcore-jax-compiled (bpcore.compile: jax.jit)")
    dev = _jax_device(device)
    params = [(jax.device_put(W, dev), jax.device_put(b, dev))
              for W, b in host_params(workload, dtype)]
    x_host, t_host = host_batch(workload, batch, dtype)
    x, t = jax.device_put(x_host, dev), jax.device_put(t_host, dev)
    act = jax.nn.sigmoid if workload.activation == "sigmoid" else jax.nn.relu
    lr, kind = workload.lr, workload.optimizer
    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss_fn(params: Any, x: Any, t: Any) -> Any:
        a = x
        for i, (W, b) in enumerate(params):
            a = a @ W + b
            if i < len(params) - 1:
                a = act(a)
        log_p = jax.nn.log_softmax(a, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_p, t[:, None], axis=1))

    def update(params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        tm = jax.tree_util.tree_map
        if kind == "sgd":
            return tm(lambda p, g: p - lr * g, params, grads), state
        if kind == "momentum":
            vel = tm(lambda v, g: 0.9 * v + g, state, grads)
            return tm(lambda p, v: p - lr * v, params, vel), vel
        count, m, v = state
        count = count + 1
        m = tm(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = tm(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        step_size = lr / (1 - b1**count)
        root_bc2 = jnp.sqrt(1 - b2**count)
        new = tm(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / root_bc2 + eps), params, m, v)
        return new, (count, m, v)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    if kind == "sgd":
        state: Any = ()
    elif kind == "momentum":
        state = zeros
    else:
        state = (jnp.asarray(0, dtype=dtype), zeros, jax.tree_util.tree_map(jnp.zeros_like, params))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params: Any, state: Any, x: Any, t: Any) -> tuple[Any, Any, Any]:
        value, grads = jax.value_and_grad(loss_fn)(params, x, t)
        params, state = update(params, grads, state)
        return params, state, value

    box = [params, state]
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        box[0], box[1], value = step(box[0], box[1], x, t)  # compile now, outside the timing
        jax.block_until_ready(value)
    extra: dict[str, Any] = {"compile_s": round(time.perf_counter() - start, 2)}
    if any("donated" in str(w.message) for w in caught):
        extra["donation"] = "not used by this jax backend"

    def run() -> None:
        box[0], box[1], value = step(box[0], box[1], x, t)
        jax.block_until_ready((box[0], box[1], value))

    return Runner(run, device_name(device), extra)


# --------------------------------------------------------------------------
# the GEMM floor


def _floor(library: str, workload: Workload, batch: int, dtype: str, device: str) -> Runner:
    rng = np.random.default_rng(1)
    host = []
    for a_shape, b_shape, a_t, b_t in gemm_products(workload, batch):
        a = rng.standard_normal(a_shape).astype(dtype)
        b = rng.standard_normal(b_shape).astype(dtype)
        out_rows = a_shape[1] if a_t else a_shape[0]
        out_cols = b_shape[0] if b_t else b_shape[1]
        host.append((a, b, a_t, b_t, (out_rows, out_cols)))

    if library == "numpy":
        ops = [(a.T if a_t else a, b.T if b_t else b, np.empty(shape, dtype=dtype))
               for a, b, a_t, b_t, shape in host]
        matmul = np.matmul

        def run() -> None:
            for a, b, out in ops:
                matmul(a, b, out=out)

        return Runner(run, device_name(device), {})

    if library == "torch":
        _need("torch", 'pip install "bpcore[torch]"')
        import torch

        dev = _torch_device(device)
        tops = []
        for a, b, a_t, b_t, shape in host:
            ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
            tops.append((ta.T if a_t else ta, tb.T if b_t else tb,
                         torch.empty(shape, dtype=getattr(torch, dtype), device=dev)))
        sync = _torch_sync if dev.type == "cuda" else None

        def run() -> None:
            for a, b, out in tops:
                torch.matmul(a, b, out=out)
            if sync is not None:
                sync()

        return Runner(run, device_name(device), {"threads": torch.get_num_threads()})

    cupy = _cupy_ready()
    cops = []
    for a, b, a_t, b_t, shape in host:
        ca, cb = cupy.asarray(a), cupy.asarray(b)
        cops.append((ca.T if a_t else ca, cb.T if b_t else cb, cupy.empty(shape, dtype=dtype)))

    def run_cupy() -> None:
        for a, b, out in cops:
            cupy.matmul(a, b, out=out)
        _cupy_sync()

    return Runner(run_cupy, device_name(device), {})


# --------------------------------------------------------------------------


def build(row: str, workload: Workload, batch: int, dtype: str, device: str) -> Runner:
    """Build row ``row`` for one workload, batch size, dtype and device kind.

    Raises
    ------
    Unavailable
        If the row cannot run here (library missing, no GPU, batch too large
        for a slow reference backend, compile failure), with the reason.
    """
    spec = ROWS[row]
    if device not in spec.devices:
        raise Unavailable(f"{row} has no {device} version")
    if spec.max_batch is not None and batch > spec.max_batch:
        raise Unavailable(f"{row} runs at batch <= {spec.max_batch} only (a reference backend)")
    if device == "gpu" and dtype == "float64":
        raise Unavailable("float64 is measured on the CPU only")
    if spec.kind == "floor":
        return _floor(spec.library, workload, batch, dtype, device)
    if spec.kind == "bpcore":
        return _bpcore(spec.library, workload, batch, dtype, device,
                       inplace=not row.endswith(("-functional", "-default")),
                       validate=row.endswith("-default"),
                       compiled=spec.select in COMPILED_ROWS)
    if row == "numpy-handwritten":
        return _handwritten(workload, batch, dtype)
    if row in ("torch-eager", "torch-compile"):
        return _torch(workload, batch, dtype, device, compiled=row == "torch-compile")
    return _jax_jit(workload, batch, dtype, device)
