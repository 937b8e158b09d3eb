"""The benchmark workloads: three MLPs, two convolutional networks and a recurrent
one, their batch sizes, data and arithmetic.

Every row of the benchmark (bpcore on each backend, the hand-written NumPy
step, PyTorch, JAX, the GEMM floor) starts from the same host arrays made
here: weights from bpcore's own initializer (one seed), and one batch of
inputs and integer labels. So all rows do the same arithmetic on the same
numbers, and only how they do it differs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..layers.arch import MNIST1D_CNN, MNIST1D_GRU

__all__ = [
    "BATCH_SIZES",
    "CONV_WORKLOADS",
    "DTYPES",
    "WORKLOADS",
    "Workload",
    "gemm_products",
    "host_batch",
    "host_params",
    "host_tree",
    "network",
    "step_flops",
]

#: Batch sizes of the full run, smallest first.
BATCH_SIZES = (16, 64, 256, 1024, 4096)
#: Floating-point types measured (float64 on the CPU only).
DTYPES = ("float32", "float64")


class Workload(NamedTuple):
    """One network and its training recipe."""

    name: str
    sizes: tuple[int, ...]
    activation: str
    optimizer: str  # "sgd", "momentum" or "adam"
    lr: float
    description: str
    #: A network other than an MLP, as a :mod:`bpcore.layers.arch` string, and the
    #: per-sample shape of its inputs; ``sizes`` is then ``(features, classes)``.
    arch: str | None = None
    in_shape: tuple[int, ...] = ()

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``(n_in, n_out)`` of each dense layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:]))


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "seed", (784, 128, 64, 10), "sigmoid", "sgd", 0.1,
            "784-128-64-10, sigmoid, softmax cross-entropy, SGD lr 0.1 (the classic MNIST net)",
        ),
        Workload(
            "wide", (784, 1024, 1024, 10), "relu", "adam", 1e-3,
            "784-1024-1024-10, relu, softmax cross-entropy, Adam lr 1e-3 (GEMM-bound)",
        ),
        Workload(
            "deep", (784, *([256] * 8), 10), "relu", "momentum", 0.01,
            "784, eight hidden layers of 256, relu, softmax cross-entropy, SGD with "
            "momentum 0.9 lr 0.01 (many small layers: per-layer overhead)",
        ),
        Workload(
            "mnist1d-cnn", (40, 10), "relu", "adam", 1e-2,
            "the MNIST-1D paper's CNN: three conv1d (25 channels, kernels 5/3/3, stride 2, "
            "padding 1), relu, dense 125-10, softmax cross-entropy, Adam lr 1e-2",
            arch=MNIST1D_CNN, in_shape=(40,),
        ),
        Workload(
            "lenet", (784, 10), "relu", "momentum", 0.01,
            "LeNet-5 on 28x28: conv2d 6@5x5 (padding 2), max_pool 2, conv2d 16@5x5, "
            "max_pool 2, dense 400-120-84-10, relu, softmax cross-entropy, SGD momentum 0.9",
            arch="reshape(1,28,28),conv2d(6,5,padding=2),relu,max_pool2d(2),conv2d(16,5),"
                 "relu,max_pool2d(2),flatten,dense(120),relu,dense(84),relu,dense(10)",
            in_shape=(784,),
        ),
        Workload(
            "gru", (40, 10), "tanh", "adam", 1e-2,
            "the MNIST-1D paper's GRU baseline: bidirectional GRU (hidden 6) over 40 steps of "
            "1 value, flattened into dense 480-10, softmax cross-entropy, Adam lr 1e-2 (a "
            "time loop of small operations: per-operation overhead; the torch peers run "
            "torch.nn.GRU with the same weights)",
            arch=MNIST1D_GRU, in_shape=(40,),
        ),
    )
}
#: The workloads of networks other than MLPs (their own rows: no hand-written NumPy step
#: or jax.jit peer, which are MLP code).
CONV_WORKLOADS = tuple(name for name, w in WORKLOADS.items() if w.arch is not None)

N_CLASSES = 10
SEED = 0


def network(workload: Workload) -> Any:
    """The workload's bpcore network."""
    from ..layers import mlp
    from ..layers.arch import build

    if workload.arch is not None:
        return build(workload.arch, workload.in_shape)
    return mlp(list(workload.sizes), workload.activation)


def host_tree(workload: Workload, dtype: str) -> tuple[dict[str, np.ndarray], ...]:
    """The initial parameters of any workload as the network's tree of host arrays
    (``net.init(SEED)``: one dict per layer, ``{}`` for a layer without any)."""
    import array_api_compat.numpy as xp

    params = network(workload).init(SEED, xp=xp, dtype=dtype)
    return tuple({k: np.asarray(v) for k, v in p.items()} for p in params)


def host_params(workload: Workload, dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The initial ``(W, b)`` of every dense layer as host NumPy arrays.

    Drawn by bpcore's own initializer (``mlp(...).init(SEED)``), so every row
    of the benchmark starts from identical weights; ``W`` is ``(n_in, n_out)``.
    """
    import array_api_compat.numpy as xp

    from ..layers import mlp

    net = mlp(list(workload.sizes), workload.activation)
    params = net.init(SEED, xp=xp, dtype=dtype)
    return [(np.asarray(p["W"]), np.asarray(p["b"])) for p in params if p]


def host_batch(workload: Workload, batch: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch: inputs ``(batch, n_in)`` in [0, 1) like scaled pixels (``(batch,
    *in_shape)`` for a convolutional workload), and int64 labels."""
    rng = np.random.default_rng(SEED + batch)
    shape = workload.in_shape if workload.arch is not None else (workload.sizes[0],)
    x = rng.random((batch, *shape)).astype(dtype)
    t = rng.integers(0, workload.sizes[-1], size=batch).astype(np.int64)
    return x, t


Product = tuple[tuple[int, int], tuple[int, int], bool, bool]


def gemm_products(workload: Workload, batch: int) -> list[Product]:
    """The matrix products one training step needs, as ``(a_shape, b_shape, a_T, b_T)``.

    Forward ``x @ W`` per layer; backward ``dW = xᵀ dz`` per layer and
    ``dx = dz Wᵀ`` for every layer but the first. Shapes are those of the
    stored operands; ``a_T``/``b_T`` say the product uses its transpose (a view).
    A convolution (im2col, ``K = C_in·prod(kernel)`` rows, ``P`` output
    positions): ``y = W₂ cols`` ``(C_out, K)·(K, batch·P)``, ``dW = dy colsᵀ``
    and ``dcols = W₂ᵀ dy``.
    """
    if workload.arch is not None:
        return _network_products(workload, batch)
    out: list[Product] = []
    for i, (n_in, n_out) in enumerate(workload.layers):
        out.append(((batch, n_in), (n_in, n_out), False, False))  # z = x @ W
        out.append(((batch, n_in), (batch, n_out), True, False))  # dW = x.T @ dz
        if i > 0:
            out.append(((batch, n_out), (n_in, n_out), False, True))  # dx = dz @ W.T
    return out


def _network_products(workload: Workload, batch: int) -> list[Product]:
    """:func:`gemm_products` of a convolutional workload, from its network's layers."""
    from ..layers import output_shape

    net = network(workload)
    shape: tuple[Any, ...] = workload.in_shape
    out: list[Product] = []
    first = True
    for layer in net.config["layers"]:
        part = _layer_of(layer)
        after = output_shape(part, shape)
        if layer["name"] == "dense":
            n_in, n_out = layer["n_in"], layer["n_out"]
            out.append(((batch, n_in), (n_in, n_out), False, False))
            out.append(((batch, n_in), (batch, n_out), True, False))
            if not first:
                out.append(((batch, n_out), (n_in, n_out), False, True))
            first = False
        elif layer["name"] in ("conv1d", "conv2d"):
            k = layer["in_channels"] * int(np.prod(
                np.broadcast_to(layer["kernel_size"], (len(shape) - 1,))))
            c_out = layer["out_channels"]
            cells = batch * math.prod(int(n or 0) for n in after[1:])
            out.append(((c_out, k), (k, cells), False, False))  # y = W2 @ cols
            out.append(((c_out, cells), (k, cells), False, True))  # dW = dy @ cols.T
            if not first:
                out.append(((c_out, k), (c_out, cells), True, False))  # dcols = W2.T @ dy
            first = False
        elif layer["name"] in ("rnn", "gru", "lstm", "bidirectional"):
            out += _recurrent_products(layer, batch, shape, first)
            first = False
        shape = after
    return out


def _recurrent_products(layer: dict[str, Any], batch: int, shape: tuple[Any, ...],
                        first: bool) -> list[Product]:
    """A recurrent layer's products, per direction (``G`` gate blocks of ``H``, ``F``
    features, ``T`` steps): the input projection of every step at once, then per step
    ``h W_hhᵀ`` forward and ``d W_hh``, ``dᵀ h``, ``dᵀ x_t`` backward; ``dx`` at once."""
    from ..layers.recurrent import GATES

    inner = layer["layer"] if layer["name"] == "bidirectional" else layer
    D = 2 if layer["name"] == "bidirectional" else 1
    T, F, H = int(shape[0]), int(inner["n_in"]), int(inner["hidden"])
    GH = GATES[inner["name"]] * H
    one: list[Product] = [((batch * T, F), (GH, F), False, True)]  # x W_ihᵀ
    one += [((batch, H), (GH, H), False, True)] * T  # h W_hhᵀ
    one += [((batch, GH), (GH, H), False, False),  # dh = d W_hh
            ((batch, GH), (batch, H), True, False),  # dW_hh += dᵀ h
            ((batch, GH), (batch, F), True, False)] * T  # dW_ih += dᵀ x_t
    if not first:
        one.append(((batch * T, GH), (GH, F), False, False))  # dx = d W_ih
    return one * D


def _layer_of(config: dict[str, Any]) -> Any:
    from ..layers import from_config

    return from_config(config)


def step_flops(workload: Workload, batch: int) -> int:
    """Floating-point operations of the step's matrix products: ``2·m·n·k`` each,
    three products per layer but two for the first."""
    if workload.arch is not None:
        return sum(2 * (a[1] if a_t else a[0]) * (a[0] if a_t else a[1]) *
                   (b[0] if b_t else b[1]) for a, b, a_t, b_t in _network_products(
                       workload, batch))
    return sum(
        2 * batch * n_in * n_out * (2 if i == 0 else 3)
        for i, (n_in, n_out) in enumerate(workload.layers)
    )


def describe(workload: Workload) -> dict[str, Any]:
    """A JSON-able description of a workload, for the results files."""
    return {
        "sizes": list(workload.sizes),
        **({"arch": workload.arch, "in_shape": list(workload.in_shape)}
           if workload.arch is not None else {}),
        "activation": workload.activation,
        "optimizer": workload.optimizer,
        "lr": workload.lr,
        "description": workload.description,
    }
