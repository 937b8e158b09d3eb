"""The MNIST-1D paper's own PyTorch code, re-implemented faithfully for comparison.

Greydanus & Kobak, "Scaling down deep learning" (2020); the repository
greydanus/mnist1d, ``notebooks/models.py`` (``MLPBase``, ``ConvBase``) and
``notebooks/train.py`` (``get_model_args``, ``train_model``): the same
modules, initializations (PyTorch's defaults), loss, optimizer (Adam, lr
1e-2, no weight decay), batches (batch ``step`` is rows
``(step·100) mod 4000`` onwards, no shuffling), 8001 steps (``range(total_steps
+ 1)``), and the evaluation of the whole train and test sets every 250 steps.
Only the printing and the model checkpoints (``copy.deepcopy`` every 1000 steps)
are left out, and the seed is set for the model's initialization (its
``set_seed``: ``random``, ``numpy``, ``torch``). The data set is the paper's,
``make_dataset(get_dataset_args())``, built locally (never downloaded).

The reported accuracy is the test accuracy after the last step; the time is
``train_model``'s wall time (training and the periodic evaluation).

Usage::

    python benchmarks/e2e/mnist1d_reference.py --model cnn --seeds 0,1,2 --threads 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any


def _threads(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "2"


if __name__ == "__main__":  # before any library starts its thread pools
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads(sys.argv))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.optim as optim  # noqa: E402

ARGS = {  # get_model_args()
    "input_size": 40, "output_size": 10, "hidden_size": 256, "learning_rate": 1e-2,
    "weight_decay": 0, "batch_size": 100, "total_steps": 8000, "eval_every": 250,
    "device": "cpu",
}


class MLPBase(nn.Module):
    def __init__(self, input_size: int, output_size: int, hidden_size: int = 100) -> None:
        super().__init__()
        self.linear1 = nn.Linear(input_size, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class ConvBase(nn.Module):
    def __init__(self, output_size: int, channels: int = 25, linear_in: int = 125) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(linear_in, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, x.shape[-1])
        h1 = self.conv1(x).relu()
        h2 = self.conv2(h1).relu()
        h3 = self.conv3(h2).relu()
        h3 = h3.view(h3.shape[0], -1)
        return self.linear(h3)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the paper's set_seed)
    torch.manual_seed(seed)


def dataset() -> dict[str, Any]:
    """``make_dataset(get_dataset_args())``, the global generators' states kept."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        return make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002 (put back as it was)


def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    preds = model(inputs).argmax(-1).cpu().numpy()
    t = targets.cpu().numpy().astype(np.float32)
    return float(100 * sum(preds == t) / len(t))


def train_model(data: dict[str, Any], model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), args["learning_rate"],
                           weight_decay=args["weight_decay"])
    x_train, x_test = torch.Tensor(data["x"]), torch.Tensor(data["x_test"])
    y_train, y_test = torch.LongTensor(data["y"]), torch.LongTensor(data["y_test"])
    results: dict[str, list[float]] = {"train_losses": [], "test_losses": [], "train_acc": [],
                                       "test_acc": []}
    for step in range(args["total_steps"] + 1):
        bix = (step * args["batch_size"]) % len(x_train)
        x, y = x_train[bix:bix + args["batch_size"]], y_train[bix:bix + args["batch_size"]]
        loss = criterion(model(x), y)
        results["train_losses"].append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if args["eval_every"] > 0 and step % args["eval_every"] == 0:
            test_loss = criterion(model(x_test), y_test)
            results["test_losses"].append(test_loss.item())
            results["train_acc"].append(accuracy(model, x_train, y_train))
            results["test_acc"].append(accuracy(model, x_test, y_test))
    return results


def run(name: str, seed: int, data: dict[str, Any] | None = None,
        steps: int | None = None) -> dict[str, Any]:
    """One training run: ``{"model", "seed", "test_acc", "seconds", "steps"}``."""
    data = dataset() if data is None else data
    args = dict(ARGS, total_steps=ARGS["total_steps"] if steps is None else steps)
    set_seed(seed)
    model = MLPBase(40, 10) if name == "mlp" else ConvBase(10)
    start = time.perf_counter()
    results = train_model(data, model, args)
    seconds = time.perf_counter() - start
    return {"model": name, "seed": seed, "test_acc": results["test_acc"][-1],
            "seconds": seconds, "steps": args["total_steps"] + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="cnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(args.threads))
    data = dataset()
    for seed in (int(s) for s in args.seeds.split(",")):
        r = run(args.model, seed, data, args.steps)
        print(f"{r['model']} seed {seed}: test accuracy {r['test_acc']:.1f}%, "
              f"{r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
