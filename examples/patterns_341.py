"""The 3-4-1 network on its four patterns, trained with bpcore's functional core.

The four patterns ``[0,0,1] [1,1,1] [1,0,1] [0,1,1]`` have targets ``0 1 1 0``:
the output is the XOR of the first two inputs (the third is a constant
"bias" input), so no single layer can learn it. A 3-4-1 network of sigmoid
units, trained full-batch by plain gradient descent on ``E = 1/2 sum (t - y)^2``,
does:

    python examples/patterns_341.py
    python examples/patterns_341.py --backend torch --epochs 3000
"""

from __future__ import annotations

import argparse

import numpy as np

import bpcore as bp
from bpcore.data import load_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=2000, help="full-batch steps")
    parser.add_argument("--lr", type=float, default=2.0, help="learning rate")
    parser.add_argument("--seed", type=int, default=1, help="seeds the initial weights")
    parser.add_argument("--backend", default="numpy", help="numpy, torch, jax, ...")
    args = parser.parse_args(argv)

    ds = load_dataset("patterns")                       # X (4, 3), labels (4,)
    net = bp.mlp([3, 4, 1], activation="sigmoid", output="sigmoid")
    opt = bp.sgd(lr=args.lr)
    step = bp.train_step(net, "half_sse", opt)

    with bp.use_backend(args.backend) as backend:
        X = backend.asarray(ds.X.astype(np.float32))
        T = backend.asarray(ds.y.reshape(-1, 1).astype(np.float32))  # targets (4, 1)
        params = net.init(args.seed)
        state = opt.init(params)
        for epoch in range(args.epochs + 1):
            if epoch in (0, args.epochs) or epoch % max(1, args.epochs // 5) == 0:
                y = bp.predict(net, params, X)
                error, _ = bp.half_sse(y, T)
                print(f"epoch {epoch:5d}  error {float(error):.6f}")
            if epoch < args.epochs:
                params, state, _ = step(params, state, X, T)

        y = bp.to_numpy(bp.predict(net, params, X))[:, 0]
    print(f"\n3-4-1 network on {backend.name} after {args.epochs} epochs:")
    for pattern, target, output in zip(ds.X.astype(int).tolist(), ds.y.tolist(), y.tolist()):
        print(f"  {pattern} -> {output:.3f}  (target {target})")
    learned = bool(np.all((y > 0.5) == (ds.y == 1)))
    print(f"patterns learned: {'yes' if learned else 'no'}")


if __name__ == "__main__":
    main()
