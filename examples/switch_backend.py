"""The same training on every installed backend, switching with one line.

bpcore's kernels are written once against the Array API, so the array
library is just a setting: inside ``with bp.use_backend(name):`` the network's
weights (drawn on the host from one seed, so identical everywhere) and the
data are created on that backend and every step runs there. The final losses
agree to float32 rounding.

    python examples/switch_backend.py
    python examples/switch_backend.py --backends numpy torch --epochs 50
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import bpcore as bp


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 4 dimensions: X (n, 4) float32, labels (n,) int64."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(3, 4))
    labels = rng.integers(0, 3, size=n)
    X = centers[labels] + rng.normal(0.0, 1.0, size=(n, 4))
    return X.astype(np.float32), labels.astype(np.int64)


def train(X: Any, y: Any, *, epochs: int, batch: int, seed: int) -> float:
    """Train a 4-16-3 tanh network with Adam on the current backend; the final loss."""
    net = bp.mlp([4, 16, 3], activation="tanh")
    opt = bp.adam(lr=0.01)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    params = net.init(seed)                      # on the current backend (use_backend)
    state = opt.init(params)
    for _ in range(epochs):
        for i in range(0, X.shape[0], batch):
            j = min(i + batch, X.shape[0])
            params, state, _ = step(params, state, X[i:j, ...], y[i:j])
    loss, _ = bp.softmax_cross_entropy(bp.predict(net, params, X), y)
    return float(loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backends", nargs="*", default=None,
                        help="backends to run (default: every one installed here)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=256, help="training samples")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X_host, y_host = make_data(args.n, args.seed)
    available = [name for name, info in bp.backends().items() if info.available]
    for name in args.backends or available:
        if name not in available:
            print(f"{name:<17} skipped: {bp.backends()[name].reason}")
            continue
        start = time.perf_counter()
        # the one line that picks the backend:
        with bp.use_backend(name) as backend:
            loss = train(backend.asarray(X_host), backend.asarray(y_host),
                         epochs=args.epochs, batch=args.batch, seed=args.seed)
        print(f"{name:<17} final loss {loss:.6f}   ({time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
