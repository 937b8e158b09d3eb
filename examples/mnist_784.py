"""The 784-128-64-10 sigmoid network, trained with SGD (lr 0.1, batches of 10).

The classic MNIST network: 784 pixel inputs, sigmoid hidden layers of 128 and
64 units, 10 outputs (logits, trained with softmax cross-entropy).

By default it runs on scikit-learn's bundled 8x8 digits made MNIST-shaped, so
it needs no download: each 8x8 image (pixel values 0..16) is upsampled to
24x24 by repeating every pixel as a 3x3 block, padded with a 2-pixel blank
border to 28x28 = 784 pixels, and rescaled to MNIST's 0..255. Give real MNIST
(the four IDX files, or a Keras mnist.npz) with ``--data mnist:DIR``:

    python examples/mnist_784.py                      # digits, as MNIST
    python examples/mnist_784.py --data mnist:~/data/mnist --epochs 5
    python examples/mnist_784.py --limit 500 --epochs 1   # a quick smoke run

Pixels are divided by 255 on the host (as is usual for MNIST), so the model
itself does no further scaling.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import bpcore as bp
from bpcore.data import Dataset, load_dataset, split


def digits_as_mnist(ds: Dataset) -> Dataset:
    """8x8 digits (0..16) -> 28x28 = 784 pixels (0..255): 3x3 blocks, 2-pixel border."""
    images = ds.X.reshape(-1, 8, 8)
    big = np.kron(images, np.ones((3, 3)))            # (n, 24, 24): each pixel a 3x3 block
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))       # (n, 28, 28): blank border, as MNIST
    X = big.reshape(len(big), 784) * (255.0 / 16.0)   # MNIST's 0..255 range
    return ds._replace(X=X, name=f"{ds.name} as 28x28")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="default data: digits upsampled to 28x28 (3x3 pixel blocks, 2-pixel border)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default="digits",
                        help="digits (upsampled to 784 pixels) or mnist:DIR")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training data")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--batch-size", type=int, default=10, help="samples per SGD step")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on only the first N training samples (a quick run)")
    parser.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, ...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per epoch

    ds = load_dataset(args.data)
    if ds.X.shape[1] == 64:
        ds = digits_as_mnist(ds)
    if ds.X.shape[1] != 784:
        parser.error(f"{ds.name} has {ds.X.shape[1]} features, not 784")
    parts = split(ds, val=0.0, test=0.2, seed=args.seed)
    X_train, y_train = parts.X_train / 255.0, parts.y_train
    if args.limit is not None:
        X_train, y_train = X_train[:args.limit], y_train[:args.limit]
    X_test = parts.X_test / 255.0

    model = bp.Model(
        [784, 128, 64, 10], activation="sigmoid", loss="softmax_cross_entropy",
        optimizer="sgd", lr=args.lr, batch_size=args.batch_size, scaling="none",
        backend=args.backend, seed=args.seed,
    )
    print(f"784-128-64-10 sigmoid network, SGD lr {args.lr}, batch {args.batch_size}, on "
          f"{ds.name}: {len(X_train)} training / {len(X_test)} test images, "
          f"{model.backend.name}")
    start = time.perf_counter()
    model.fit(X_train, y_train, epochs=args.epochs, progress=None)
    scores = model.evaluate(X_test, parts.y_test)
    print(f"test accuracy {100 * scores['accuracy']:.1f}% (loss {scores['loss']:.4f}) "
          f"after {args.epochs} epochs, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
