"""The benchmark workloads: three MLPs, their batch sizes, data and arithmetic.

Every row of the benchmark (bpcore on each backend, the hand-written NumPy
step, PyTorch, JAX, the GEMM floor) starts from the same host arrays made
here: weights from bpcore's own initializer (one seed), and one batch of
inputs and integer labels. So all rows do the same arithmetic on the same
numbers, and only how they do it differs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BATCH_SIZES",
    "DTYPES",
    "WORKLOADS",
    "Workload",
    "gemm_products",
    "host_batch",
    "host_params",
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
    )
}

N_CLASSES = 10
SEED = 0


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
    """One batch: inputs ``(batch, n_in)`` in [0, 1) like scaled pixels, and int64 labels."""
    rng = np.random.default_rng(SEED + batch)
    x = rng.random((batch, workload.sizes[0])).astype(dtype)
    t = rng.integers(0, workload.sizes[-1], size=batch).astype(np.int64)
    return x, t


Product = tuple[tuple[int, int], tuple[int, int], bool, bool]


def gemm_products(workload: Workload, batch: int) -> list[Product]:
    """The matrix products one training step needs, as ``(a_shape, b_shape, a_T, b_T)``.

    Forward ``x @ W`` per layer; backward ``dW = xᵀ dz`` per layer and
    ``dx = dz Wᵀ`` for every layer but the first. Shapes are those of the
    stored operands; ``a_T``/``b_T`` say the product uses its transpose (a view).
    """
    out: list[Product] = []
    for i, (n_in, n_out) in enumerate(workload.layers):
        out.append(((batch, n_in), (n_in, n_out), False, False))  # z = x @ W
        out.append(((batch, n_in), (batch, n_out), True, False))  # dW = x.T @ dz
        if i > 0:
            out.append(((batch, n_out), (n_in, n_out), False, True))  # dx = dz @ W.T
    return out


def step_flops(workload: Workload, batch: int) -> int:
    """Floating-point operations of the step's matrix products: ``2·m·n·k`` each,
    three products per layer but two for the first."""
    return sum(
        2 * batch * n_in * n_out * (2 if i == 0 else 3)
        for i, (n_in, n_out) in enumerate(workload.layers)
    )


def describe(workload: Workload) -> dict[str, Any]:
    """A JSON-able description of a workload, for the results files."""
    return {
        "sizes": list(workload.sizes),
        "activation": workload.activation,
        "optimizer": workload.optimizer,
        "lr": workload.lr,
        "description": workload.description,
    }
