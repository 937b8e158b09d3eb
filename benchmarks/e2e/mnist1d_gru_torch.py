"""The MNIST-1D paper's GRU baseline in PyTorch: the reference bpcore is measured against.

Greydanus (2020), "Scaling down deep learning" (github.com/greydanus/mnist1d):
the GRU baseline of ``notebooks/models.py`` trained by ``notebooks/train.py``,
written out again here (not copied) with the same recipe:

* model: ``torch.nn.GRU(input_size=1, hidden_size=6, batch_first=True,
  bidirectional=True)`` over the 40 steps of a sample (one value a step) from a
  zero initial state, every step's output (2 x 6) flattened into one vector of
  480, then ``torch.nn.Linear(480, 10)``; torch's default initialization;
* training: ``torch.optim.Adam(lr=1e-2, weight_decay=0)``, cross-entropy, batch
  100, ``total_steps + 1 = 8001`` steps, batches taken in order without
  shuffling (``start = step * 100 % 4000``), ``loss.backward(); opt.step();
  opt.zero_grad()``;
* evaluation every 250 steps (test loss, train and test accuracy on the whole
  sets); the figure is the test accuracy at the last step.

The paper's script also deep-copies the model every 1000 steps; that is left
out (it costs microseconds). The data are ``mnist1d.data.make_dataset(
get_dataset_args())``: 4000 training and 1000 test samples, generated
locally (never downloaded).

    python benchmarks/e2e/mnist1d_gru_torch.py --seed 0 [--steps 8000] [--threads 2]

prints one JSON line: the seed, the final test accuracy (%), the training
time (steps only) and the total time (steps and evaluations), in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

HIDDEN, TIME, CLASSES = 6, 40, 10


def dataset() -> dict[str, Any]:
    """MNIST-1D as the paper makes it (its default arguments), generated locally."""
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def run(seed: int, steps: int, lr: float, batch: int, eval_every: int) -> dict[str, Any]:
    import torch

    data = dataset()
    torch.manual_seed(seed)  # the only randomness after the data: the initial weights
    gru = torch.nn.GRU(input_size=1, hidden_size=HIDDEN, batch_first=True, bidirectional=True)
    linear = torch.nn.Linear(2 * HIDDEN * TIME, CLASSES)
    params = list(gru.parameters()) + list(linear.parameters())

    def model(x: Any) -> Any:
        h0 = torch.zeros(2, x.shape[0], HIDDEN)
        out, _ = gru(x.view(*x.shape[:2], 1), h0)  # (batch, time, 2 * hidden)
        return linear(out.reshape(out.shape[0], -1))

    criterion = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(params, lr, weight_decay=0)
    x_train, x_test = torch.Tensor(data["x"]), torch.Tensor(data["x_test"])
    y_train, y_test = torch.LongTensor(data["y"]), torch.LongTensor(data["y_test"])

    def accuracy(x: Any, y: Any) -> float:
        with torch.no_grad():
            return 100.0 * float((model(x).argmax(-1) == y).float().mean())

    curve = []
    train_seconds = 0.0
    t_start = time.perf_counter()
    for step in range(steps + 1):
        t0 = time.perf_counter()
        start = (step * batch) % len(x_train)
        x, y = x_train[start:start + batch], y_train[start:start + batch]
        loss = criterion(model(x), y)
        loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
        train_seconds += time.perf_counter() - t0
        if eval_every > 0 and step % eval_every == 0:
            with torch.no_grad():
                test_loss = criterion(model(x_test), y_test).item()
            curve.append({"step": step, "test_loss": test_loss,
                          "train_acc": accuracy(x_train, y_train),
                          "test_acc": accuracy(x_test, y_test)})
    total = time.perf_counter() - t_start
    final = curve[-1]["test_acc"] if curve and curve[-1]["step"] == steps else \
        accuracy(x_test, y_test)
    return {"impl": "torch (paper recipe)", "seed": seed, "steps": steps + 1,
            "test_acc": final, "train_seconds": train_seconds, "total_seconds": total,
            "ms_per_step": 1e3 * train_seconds / (steps + 1), "curve": curve,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps(run(args.seed, args.steps, args.lr, args.batch, args.eval_every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
