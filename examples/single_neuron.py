"""One sigmoid neuron, one training step, worked by hand with bpcore's kernels.

The neuron computes ``y = sigmoid(w . x + b)`` and is trained on the classic
error ``E = 1/2 (t - y)^2`` by gradient descent. Each quantity below is
computed twice: by the hand formula (in the comments and the printed line)
and by the bpcore kernel that a network would call, and the two agree.

    python examples/single_neuron.py              # one step, printed in full
    python examples/single_neuron.py --steps 20   # the error falling step by step
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import bpcore as bp
from bpcore.layers.activations import sigmoid_backward, sigmoid_forward
from bpcore.layers.dense import dense_backward, dense_forward


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--x", type=float, nargs=2, default=[1.0, 0.5], help="the two inputs")
    parser.add_argument("--w", type=float, nargs=2, default=[0.3, -0.2], help="initial weights")
    parser.add_argument("--b", type=float, default=0.1, help="initial bias")
    parser.add_argument("--t", type=float, default=1.0, help="target output")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (eta)")
    parser.add_argument("--steps", type=int, default=1, help="training steps to run")
    args = parser.parse_args(argv)

    x = np.array([args.x])                       # (1 sample, 2 inputs)
    t = np.array([[args.t]])                     # (1 sample, 1 output)
    params = {"W": np.array([[args.w[0]], [args.w[1]]]), "b": np.array([args.b])}
    sgd = bp.sgd(lr=args.lr)
    state = sgd.init(params)

    print(f"inputs x = {x[0].tolist()}, target t = {args.t}, learning rate = {args.lr}")
    for step in range(1, args.steps + 1):
        w1, w2, b = float(params["W"][0, 0]), float(params["W"][1, 0]), float(params["b"][0])
        x1, x2 = args.x
        # forward: z = w1 x1 + w2 x2 + b, y = 1 / (1 + exp(-z))
        z, dense_cache = dense_forward(params, x)
        y, sig_cache = sigmoid_forward(z)
        z_hand = w1 * x1 + w2 * x2 + b
        y_hand = 1.0 / (1.0 + math.exp(-z_hand))
        # error: E = 1/2 (t - y)^2 and its gradient dE/dy = y - t
        error, dy = bp.half_sse(y, t)
        error_hand = 0.5 * (args.t - y_hand) ** 2
        # backward through the sigmoid: dE/dz = (y - t) y (1 - y)   (the "delta")
        dz = sigmoid_backward(sig_cache, dy)
        delta_hand = (y_hand - args.t) * y_hand * (1.0 - y_hand)
        # backward through the weights: dE/dw_i = delta x_i, dE/db = delta
        _, grads = dense_backward(params, dense_cache, dz)
        # update: w_i <- w_i - eta dE/dw_i, b <- b - eta dE/db
        params, state = sgd.update(grads, state, params)

        if args.steps == 1 or step == 1 or step == args.steps:
            print(f"\nstep {step}")
            print(f"  weights       w = [{w1:.6f}, {w2:.6f}], b = {b:.6f}")
            print(f"  net input     z = w.x + b            = {float(z[0, 0]):.6f}"
                  f"  (by hand {z_hand:.6f})")
            print(f"  output        y = sigmoid(z)         = {float(y[0, 0]):.6f}"
                  f"  (by hand {y_hand:.6f})")
            print(f"  error         E = 1/2 (t - y)^2      = {float(error):.6f}"
                  f"  (by hand {error_hand:.6f})")
            print(f"  delta     dE/dz = (y - t) y (1 - y)  = {float(dz[0, 0]):.6f}"
                  f"  (by hand {delta_hand:.6f})")
            print(f"  gradients dE/dw = delta x            = "
                  f"[{float(grads['W'][0, 0]):.6f}, {float(grads['W'][1, 0]):.6f}]"
                  f"  (by hand [{delta_hand * x1:.6f}, {delta_hand * x2:.6f}])")
            print(f"            dE/db = delta              = {float(grads['b'][0]):.6f}")
            print(f"  updated       w = w - eta dE/dw      = [{float(params['W'][0, 0]):.6f}, "
                  f"{float(params['W'][1, 0]):.6f}]"
                  f"  (by hand [{w1 - args.lr * delta_hand * x1:.6f}, "
                  f"{w2 - args.lr * delta_hand * x2:.6f}])")
            print(f"                b = b - eta dE/db      = {float(params['b'][0]):.6f}"
                  f"  (by hand {b - args.lr * delta_hand:.6f})")
        elif step <= 5 or step % 5 == 0:
            print(f"step {step:3d}  error {float(error):.6f}  output {float(y[0, 0]):.6f}")

    y_after, _ = sigmoid_forward(dense_forward(params, x)[0])
    error_after, _ = bp.half_sse(y_after, t)
    print(f"\nafter {args.steps} step{'s' if args.steps != 1 else ''}: "
          f"output {float(y_after[0, 0]):.6f}, error {float(error_after):.6f}")


if __name__ == "__main__":
    main()
