"""XOR with one hidden layer, through the ``bpcore.Model`` convenience API.

XOR is the smallest problem a single layer cannot solve: the classes of
``(0,0), (1,1)`` and ``(0,1), (1,0)`` are not linearly separable. One hidden
layer of a few tanh units is enough:

    python examples/xor.py
    python examples/xor.py --hidden 2 --epochs 1000 --backend torch
"""

from __future__ import annotations

import argparse

import numpy as np

import bpcore as bp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--hidden", type=int, default=4, help="hidden units")
    parser.add_argument("--epochs", type=int, default=300, help="full-batch epochs")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights")
    parser.add_argument("--backend", default="numpy", help="numpy, torch, jax, ...")
    args = parser.parse_args(argv)

    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0])
    # 2 inputs -> hidden tanh units -> 1 logit; binary cross-entropy on the logit
    model = bp.Model(
        [2, args.hidden, 1], activation="tanh", loss="binary_cross_entropy",
        optimizer="adam", lr=args.lr, batch_size=4, scaling="none",
        backend=args.backend, seed=args.seed,
    )
    history = model.fit(X, y, epochs=args.epochs, progress=False)
    print(f"2-{args.hidden}-1 network, {args.epochs} epochs on {model.backend.name}: "
          f"loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")

    p = model.predict_proba(X)[:, 0]
    labels = model.predict(X)
    print("  x1 x2 | XOR | P(1)   predicted")
    for (x1, x2), target, prob, label in zip(X.astype(int).tolist(), y, p, labels):
        print(f"   {x1}  {x2} |  {target}  | {prob:.3f}  {label}")
    print(f"XOR learned: {'yes' if np.array_equal(labels, y) else 'no'}")


if __name__ == "__main__":
    main()
