"""bpcore's kernels as the compute core of your own training loop.

No ``Model``, no ``train_step``: this loop calls the forward and backward
kernels of each layer, a loss and an optimizer update itself, as code that
already has its own loop (its own batching, logging, schedule, early
stopping) would. Here: a 2-32-32-3 ReLU network on three interleaved spirals,
with a learning rate that decays every epoch, which ``Model`` does not do.

    python examples/own_training_loop.py
    python examples/own_training_loop.py --epochs 50 --n 300
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

import bpcore as bp
from bpcore.layers.activations import relu_backward, relu_forward
from bpcore.layers.dense import dense_backward, dense_forward


def spirals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spiral arms in 2-D: X (n, 2) float32, labels (n,) int64."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    r = rng.uniform(0.05, 1.0, size=n)
    angle = 3.0 * np.pi * r + labels * (2.0 * np.pi / 3.0) + rng.normal(0.0, 0.2, size=n)
    X = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return X.astype(np.float32), labels.astype(np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--n", type=int, default=600, help="training samples")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02, help="initial learning rate")
    parser.add_argument("--decay", type=float, default=0.99, help="lr factor per epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, y = spirals(args.n, args.seed)
    rng = np.random.default_rng(args.seed)
    sizes = [2, 32, 32, 3]
    # one dict per dense layer, drawn on the host (He init for ReLU)
    layers = [
        {"W": bp.init.he_uniform(rng, (n_in, n_out)), "b": bp.init.zeros(rng, (n_out,))}
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    loss_fn = bp.softmax_cross_entropy
    lr = args.lr
    opt = bp.adam(lr=lr)
    state = opt.init(layers)

    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(args.n)
        total = 0.0
        for i in range(0, args.n, args.batch):
            idx = order[i:i + args.batch]
            x, t = X[idx], y[idx]
            # forward: dense -> relu -> dense -> relu -> dense (logits)
            caches = []
            a = x
            for k, params in enumerate(layers):
                z, dense_cache = dense_forward(params, a)
                if k < len(layers) - 1:
                    a, relu_cache = relu_forward(z)
                else:
                    a, relu_cache = z, None
                caches.append((dense_cache, relu_cache))
            value, dy = loss_fn(a, t)                      # loss and d loss / d logits
            total += float(value) * len(idx)
            # backward: the chain rule, layer by layer, last first
            grads: list[dict[str, np.ndarray]] = [{}] * len(layers)
            for k in reversed(range(len(layers))):
                dense_cache, relu_cache = caches[k]
                if relu_cache is not None:
                    dy = relu_backward(relu_cache, dy)
                dy, grads[k] = dense_backward(layers[k], dense_cache, dy, need_dx=k > 0)
            layers, state = opt.update(grads, state, layers)
        # our own schedule: rebuild the optimizer with a smaller lr, keep its state
        lr *= args.decay
        opt = bp.adam(lr=lr)
        if epoch == 1 or epoch % max(1, args.epochs // 5) == 0:
            print(f"epoch {epoch:4d}  loss {total / args.n:.4f}  lr {lr:.5f}")

    logits = X
    for k, params in enumerate(layers):
        logits, _ = dense_forward(params, logits)
        if k < len(layers) - 1:
            logits, _ = relu_forward(logits)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
    print(f"training accuracy on the spirals: {100 * accuracy:.1f}%")


if __name__ == "__main__":
    main()
