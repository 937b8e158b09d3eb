"""CuPy fast paths: fused CUDA kernels behind the portable API.

**Status: written without a GPU.** The kernels' arithmetic has been checked on
the CPU by compiling their bodies with a host C++ compiler against the
portable kernels, and :func:`build_step`'s control flow by running it with
NumPy standing in for CuPy and those host-compiled bodies for the kernels
(``tests/test_fast_cupy.py``). They have not yet been compiled by NVRTC or
run on a device (nor the raw kernel's block-wide reductions with more than
one thread): the ``gpu`` tests in that file do that. Not here yet: one update
kernel over all parameters at once, and CUDA-graph capture of the step.

What is here, each with the formulas and operation order of its portable
twin (:mod:`bpcore.layers.activations`, :mod:`bpcore.losses`,
:mod:`bpcore.optim`):

* ``bias_<act>`` — ``y = act(z + b)`` for ``act`` in sigmoid (the stable
  form), tanh, relu, identity, in one pass; ``y`` may be ``z`` itself.
* ``<act>_backward`` — ``dy ← dy · f'(·)`` in place, no temporaries.
* ``softmax_ce_labels`` — softmax cross-entropy value and gradient against
  integer labels in one pass: one thread block per row (max, sum of exp,
  gradient), no one-hot matrix.
* ``sgd`` / ``sgd_momentum`` / ``adam`` — one elementwise kernel per
  parameter that updates ``p`` (and ``v``, ``m``) in place.

The CUDA sources are plain strings (:data:`KERNELS`); the CuPy kernel
objects are built on first use, so importing this module needs neither CuPy
nor CUDA. The kernels take float32 or float64 (bpcore's parameter dtypes).

The module has the interface :mod:`bpcore.fast` expects of a fast module:
``sgd_leaf`` and ``adam_leaf`` (used by ``optimizer.update(..., inplace=True)``)
and ``build_step`` (used by :func:`bpcore.train_step`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "KERNELS",
    "KernelSource",
    "adam_leaf",
    "bias_activation_",
    "activation_backward_",
    "build_step",
    "get_kernel",
    "sgd_leaf",
    "softmax_cross_entropy_labels_",
]


class KernelSource(NamedTuple):
    """The source of one kernel.

    Attributes
    ----------
    kind : str
        ``"elementwise"`` (a ``cupy.ElementwiseKernel``) or ``"raw"`` (a
        ``cupy.RawKernel``, compiled once per dtype).
    name : str
        The kernel's name (raw: the function name, with ``REAL`` replaced by
        ``float`` or ``double``).
    in_params, out_params : str
        Elementwise: CuPy's parameter lists (``"T z, T b"``). Raw: empty.
    body : str
        Elementwise: the per-element operation. Raw: the whole CUDA C source,
        with ``REAL`` standing for the floating type.
    scalars : tuple of str
        Elementwise: the input parameters passed as scalars, not arrays.
    """

    kind: str
    name: str
    in_params: str
    out_params: str
    body: str
    scalars: tuple[str, ...] = ()


_BIAS = {
    # Stable sigmoid, as the portable kernel: only exp(-|s|) <= 1 is formed.
    "sigmoid": (
        "T s = z + b;\n"
        "T e = exp(-fabs(s));\n"
        "T r = T(1) / (T(1) + e);\n"
        "y = s >= T(0) ? r : e * r;"
    ),
    "tanh": "y = tanh(z + b);",
    # where(s > 0, s, 0): NaN gives 0, as the portable kernel.
    "relu": "T s = z + b;\ny = s > T(0) ? s : T(0);",
    "identity": "y = z + b;",
}

_BACKWARD = {
    # y is the activation's output (relu: its input or output; same sign test).
    "sigmoid": "dy = dy * (y * (T(1) - y));",
    "tanh": "dy = dy * (T(1) - y * y);",
    "relu": "dy = y > T(0) ? dy : T(0);",
}

_SGD = (
    "T gg = use_wd ? g + wd * p : g;\n"
    "p = p - lr * gg;"
)

_SGD_MOMENTUM = (
    "T gg = use_wd ? g + wd * p : g;\n"
    "v = mu * v + gg;\n"
    "T s = nesterov ? gg + mu * v : v;\n"
    "p = p - lr * s;"
)

# mode 0: no decay; 1: AdamW (decay the weights); 2: Adam with L2 (decay the gradient).
_ADAM = (
    "T gg = g;\n"
    "T pp = p;\n"
    "if (mode == 1) { pp = pp * decay; } else if (mode == 2) { gg = gg + wd * pp; }\n"
    "m = b1 * m + c1 * gg;\n"
    "v = b2 * v + c2 * (gg * gg);\n"
    "p = pp - step_size * (m / (sqrt(v) / root_bc2 + eps));"
)

# One block per row; blockDim.x is a power of two; shared memory: blockDim.x REALs.
# dz may be z itself: every element is read before it is written by the same
# thread, and the label's logit is read before any thread writes.
_SOFTMAX_CE = r"""
extern "C" __global__ void softmax_ce_labels_REAL(
    const REAL* z, const long long* labels, REAL* dz, REAL* row_loss,
    const int batch, const int k)
{
    extern __shared__ unsigned char smem_raw[];
    REAL* sh = reinterpret_cast<REAL*>(smem_raw);
    const int row = blockIdx.x;
    if (row >= batch) { return; }
    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    const REAL* zr = z + (long long)row * k;
    REAL* dr = dz + (long long)row * k;

    // log-sum-exp: shift by the row maximum so exp never overflows.
    // Start from the row's first logit (k >= 1): no INFINITY macro under NVRTC.
    REAL m = zr[0];
    for (int j = tid; j < k; j += nt) { m = fmax(m, zr[j]); }
    sh[tid] = m;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) { sh[tid] = fmax(sh[tid], sh[tid + s]); }
        __syncthreads();
    }
    m = sh[0];
    __syncthreads();

    const long long lab = labels[row];
    const bool ok = lab >= 0 && lab < k;
    const REAL zero = 0;
    REAL picked = ok ? zr[lab] - m : zero / zero;  // a bad label gives NaN, not a stray read

    REAL total = 0;
    for (int j = tid; j < k; j += nt) { total += exp(zr[j] - m); }
    sh[tid] = total;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) { sh[tid] = sh[tid] + sh[tid + s]; }
        __syncthreads();
    }
    total = sh[0];

    if (tid == 0) { row_loss[row] = log(total) - picked; }
    for (int j = tid; j < k; j += nt) {
        REAL p = exp(zr[j] - m) / total;
        REAL t = (j == lab) ? (REAL)1 : (REAL)0;
        dr[j] = (p - t) / (REAL)batch;
    }
}
"""

#: Every kernel's source, by name.
KERNELS: dict[str, KernelSource] = {}
for _act, _op in _BIAS.items():
    KERNELS[f"bias_{_act}"] = KernelSource(
        "elementwise", f"bpcore_bias_{_act}", "T z, T b", "T y", _op
    )
for _act, _op in _BACKWARD.items():
    KERNELS[f"{_act}_backward"] = KernelSource(
        "elementwise", f"bpcore_{_act}_backward", "T y", "T dy", _op
    )
KERNELS["sgd"] = KernelSource(
    "elementwise", "bpcore_sgd", "T g, T lr, T wd, int32 use_wd", "T p", _SGD,
    ("lr", "wd", "use_wd"),
)
KERNELS["sgd_momentum"] = KernelSource(
    "elementwise", "bpcore_sgd_momentum",
    "T g, T lr, T mu, T wd, int32 use_wd, int32 nesterov", "T p, T v", _SGD_MOMENTUM,
    ("lr", "mu", "wd", "use_wd", "nesterov"),
)
KERNELS["adam"] = KernelSource(
    "elementwise", "bpcore_adam",
    "T g, T decay, T wd, T b1, T b2, T c1, T c2, T eps, T step_size, T root_bc2, int32 mode",
    "T p, T m, T v", _ADAM,
    ("decay", "wd", "b1", "b2", "c1", "c2", "eps", "step_size", "root_bc2", "mode"),
)
KERNELS["softmax_ce_labels"] = KernelSource("raw", "softmax_ce_labels_REAL", "", "", _SOFTMAX_CE)
del _act, _op


def _cupy() -> Any:
    import cupy

    return cupy


def _array_api() -> Any:
    """CuPy's Array API namespace (the portable kernels' ``xp`` on this path)."""
    import array_api_compat.cupy

    return array_api_compat.cupy


@functools.cache
def get_kernel(name: str, real: str = "float") -> Any:
    """The compiled CuPy kernel ``name`` (built on first use; needs CuPy and CUDA).

    ``real`` (``"float"`` or ``"double"``) picks the raw kernels' type;
    elementwise kernels take their type from their arguments.
    """
    src = KERNELS[name]
    cp = _cupy()
    if src.kind == "elementwise":
        return cp.ElementwiseKernel(src.in_params, src.out_params, src.body, src.name)
    return cp.RawKernel(src.body.replace("REAL", real), src.name.replace("REAL", real))


def _real(dtype: Any) -> str:
    cp = _cupy()
    if dtype == cp.float32:
        return "float"
    if dtype == cp.float64:
        return "double"
    raise TypeError(f"the CuPy fast kernels take float32 or float64, got {dtype}")


# --------------------------------------------------------------------------
# activations and loss


def bias_activation_(z: Any, b: Any, act: str, out: Any = None) -> Any:
    """``act(z + b)`` (bias ``b`` of shape ``(n,)`` broadcast over the rows of
    ``z``), written into ``out`` (default: ``z`` itself) and returned."""
    out = z if out is None else out
    return get_kernel(f"bias_{act}")(z, b, out)


def activation_backward_(y: Any, dy: Any, act: str) -> Any:
    """``dy ← dy · f'`` in place for ``act`` in sigmoid/tanh (``y`` its output)
    and relu (``y`` its input or output); returns ``dy``."""
    return get_kernel(f"{act}_backward")(y, dy)


def softmax_cross_entropy_labels_(z: Any, labels: Any, out: Any = None) -> tuple[Any, Any]:
    """Softmax cross-entropy of logits ``z`` (batch, k) against integer labels.

    Returns ``(value, dz)`` as the portable loss does: ``value`` a 0-D array,
    ``dz = (softmax(z) - onehot) / batch`` written into ``out`` (default: ``z``).
    A label outside ``[0, k)`` gives a NaN value (train_step's validation
    rejects such labels before this runs).
    """
    cp = _cupy()
    batch, k = z.shape
    z = cp.ascontiguousarray(z)
    out = z if out is None else out
    labels = cp.ascontiguousarray(labels.astype(cp.int64, copy=False))
    row_loss = cp.empty((batch,), dtype=z.dtype)
    threads = 32
    while threads < k and threads < 256:
        threads *= 2
    kernel = get_kernel("softmax_ce_labels", _real(z.dtype))
    kernel(
        (batch,), (threads,), (z, labels, out, row_loss, cp.int32(batch), cp.int32(k)),
        shared_mem=threads * z.dtype.itemsize,
    )
    return cp.sum(row_loss) / batch, out


# --------------------------------------------------------------------------
# optimizer updates (the interface bpcore.optim expects of a fast module)


def sgd_leaf(
    lr: float, mu: float, nesterov: bool, wd: float, *, own_grad: bool
) -> Callable[..., None]:
    """An in-place SGD update ``leaf(g, p[, v])`` that overwrites ``p`` (and
    ``v``) in one kernel; ``g`` is only read (``own_grad`` is accepted for the
    NumPy module's interface)."""

    def leaf(g: Any, p: Any, v: Any = None) -> None:
        if v is None:
            get_kernel("sgd")(g, lr, wd, int(bool(wd)), p)
        else:
            get_kernel("sgd_momentum")(g, lr, mu, wd, int(bool(wd)), int(nesterov), p, v)

    return leaf


def adam_leaf(
    lr: float, b1: float, b2: float, eps: float, wd: float, decoupled: bool, t: int,
    *, own_grad: bool,
) -> Callable[..., None]:
    """An in-place Adam(W) update ``leaf(g, p, m, v)`` for step ``t``: one
    kernel per parameter that overwrites ``p``, ``m`` and ``v``."""
    step_size = lr / (1.0 - b1**t)
    root_bc2 = (1.0 - b2**t) ** 0.5
    mode = 0 if not wd else (1 if decoupled else 2)
    decay = 1.0 - lr * wd

    def leaf(g: Any, p: Any, m: Any, v: Any) -> None:
        get_kernel("adam")(
            g, decay, wd, b1, b2, 1.0 - b1, 1.0 - b2, eps, step_size, root_bc2, mode, p, m, v
        )

    return leaf


# --------------------------------------------------------------------------
# the fused training step

_DENSE, _SIGMOID, _TANH, _RELU, _IDENTITY = range(5)
_ACT_NAME = {_SIGMOID: "sigmoid", _TANH: "tanh", _RELU: "relu", _IDENTITY: "identity"}


def build_step(
    model: Any, loss: Any, optimizer: Any, *, inplace: bool,
    grad_transform: Callable[[Any], Any] | None = None,
) -> Callable[..., tuple[Any, Any, Any]] | None:
    """A fused CuPy ``step(params, state, x, t) -> (params, state, value)``, or
    ``None`` (the caller then runs the portable kernels).

    Same contract as :func:`bpcore.fast.numpy.build_step`: a flat sequential
    network of dense layers and sigmoid/tanh/relu/identity with one of
    bpcore's losses. A dense layer followed by an activation runs as one
    matmul and one fused bias+activation kernel; activation backward runs in
    place; softmax cross-entropy against integer labels runs as one kernel;
    bpcore's SGD and Adam(W) update each parameter with one kernel (into
    copies unless ``inplace``). Unverified on a GPU (see the module doc).
    """
    from .. import losses as losses_mod
    from ..optim import AdamState, SGDState, spec
    from .numpy import _plan

    ops = _plan(model)
    builtin_losses = {lo.fn for lo in losses_mod.LOSSES.values()}
    if ops is None or loss.fn not in builtin_losses:
        return None
    xp_cupy = _array_api()
    cp = _cupy()
    fused_ce = loss.fn is losses_mod.softmax_cross_entropy.fn
    loss_fn, update = loss.fn, optimizer.update
    rule = spec(optimizer)
    n = len(ops)
    dense_at = [k for k, op in enumerate(ops) if op == _DENSE]
    first_dense = dense_at[0] if dense_at else n
    # Fuse dense k with the activation right after it (bias + activation in one pass).
    fuse = {
        k: ops[k + 1] for k in dense_at if k + 1 < n and ops[k + 1] in _ACT_NAME
    }

    def forward_backward(params: Any, x: Any, t: Any) -> tuple[Any, list[Any]]:
        a = x
        owned = False
        caches: list[Any] = [None] * n
        k = 0
        while k < n:
            op = ops[k]
            if op == _DENSE:
                p = params[k]
                caches[k] = a
                z = cp.matmul(a, p["W"])
                act = fuse.get(k, _IDENTITY)
                a = bias_activation_(z, p["b"], _ACT_NAME[act])
                owned = True
                if k in fuse:
                    caches[k + 1] = a
                    owned = act == _IDENTITY  # a cached activation output is not scratch
                    k += 2
                    continue
            elif op != _IDENTITY:
                zero = cp.zeros((), dtype=a.dtype)  # a lone activation: bias 0
                caches[k] = a = bias_activation_(a, zero, _ACT_NAME[op], out=cp.empty_like(a))
                owned = False
            k += 1
        if fused_ce and owned and t.ndim == 1 and t.dtype.kind in "iu":
            value, dy = softmax_cross_entropy_labels_(a, t)
        else:
            value, dy = loss_fn(a, t, xp=xp_cupy)
        grads: list[Any] = [{}] * n
        for k in range(n - 1, first_dense - 1, -1):
            op = ops[k]
            if op == _DENSE:
                c = caches[k]
                grads[k] = {"W": cp.matmul(c.T, dy), "b": cp.sum(dy, axis=0)}
                if k > first_dense:
                    dy = cp.matmul(dy, params[k]["W"].T)
            elif op != _IDENTITY:
                # dy is always this step's own (a loss gradient or a matmul result).
                dy = activation_backward_(caches[k], dy, _ACT_NAME[op])
        return value, grads

    def run_backward(params: Any, x: Any, t: Any) -> tuple[Any, list[Any]]:
        value, grads = forward_backward(params, x, t)
        if grad_transform is not None:
            grads = list(grad_transform(tuple(grads)))
        return value, grads

    def copy_tree(tree: Any) -> Any:
        return [{key: a.copy() for key, a in d.items()} for d in tree]

    if rule is None:

        def generic(params: Any, state: Any, x: Any, t: Any) -> tuple[Any, Any, Any]:
            value, grads = run_backward(params, x, t)
            kwargs = {"inplace": True} if inplace else {}
            params, state = update(tuple(grads), state, params, xp=xp_cupy, **kwargs)
            return params, state, value

        return generic

    if rule[0] == "sgd":
        _, lr, mu, nesterov, wd = rule
        leaf = sgd_leaf(lr, mu, nesterov, wd, own_grad=True)

        def sgd_step(params: Any, state: Any, x: Any, t: Any) -> tuple[Any, Any, Any]:
            value, grads = run_backward(params, x, t)
            velocity = state.velocity
            if not inplace:
                params = copy_tree(params)
                velocity = None if velocity is None else copy_tree(velocity)
            for k in dense_at:
                for key in params[k]:
                    if velocity is None:
                        leaf(grads[k][key], params[k][key])
                    else:
                        leaf(grads[k][key], params[k][key], velocity[k][key])
            if inplace:
                return params, state, value
            vel = None if velocity is None else tuple(velocity)
            return tuple(params), SGDState(vel), value

        return sgd_step

    _, lr, b1, b2, eps, wd, decoupled = rule

    def adam_step(params: Any, state: Any, x: Any, t: Any) -> tuple[Any, Any, Any]:
        value, grads = run_backward(params, x, t)
        count = state.count + 1
        leaf = adam_leaf(lr, b1, b2, eps, wd, decoupled, count, own_grad=True)
        m, v = state.m, state.v
        if not inplace:
            params, m, v = copy_tree(params), copy_tree(m), copy_tree(v)
        for k in dense_at:
            for key in params[k]:
                leaf(grads[k][key], params[k][key], m[k][key], v[k][key])
        if inplace:
            return params, AdamState(count, state.m, state.v), value
        return tuple(params), AdamState(count, tuple(m), tuple(v)), value

    return adam_step
