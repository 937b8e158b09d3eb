"""MNIST-1D: bpcore against the paper's own PyTorch code, in one run.

For each seed and each of the paper's networks (the MLP 40-100-100-10 with a
residual block, the CNN of three conv1d and a linear layer), this runs

* ``reference``: the paper's code (``mnist1d_reference.py``: PyTorch, Adam lr
  1e-2, batch 100, 8001 steps, batches in order, evaluation every 250 steps);
* ``bpcore[BACKEND]``: the same protocol written with bpcore (the same
  networks from ``--arch`` strings with PyTorch's initialization scheme
  ``init="torch"``, Adam lr 1e-2, the same batches in the same order, the loss
  read back every step as ``loss.item()`` does, the same evaluations); on JAX
  through ``bp.compile``;
* with ``--recipe``: ``bpcore train --data mnist1d`` (its default recipe; the
  MLP with ``--arch``), as a user runs it, in a subprocess; the time is the
  training time it reports (``-v``).

The rows of one seed run one after another (reference first), each right
after a 21-step warm-up of its own (thread pools, first calls, JAX's
compilation), so the ratio of times is measured in one run on one machine.
Prints a Markdown table (and writes ``--json``). Usage::

    python benchmarks/e2e/mnist1d_compare.py --seeds 0,1,2 --threads 2 [--backends numpy,torch,jax]
        [--recipe] [--json mnist1d.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _threads(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "2"


_N = _threads(sys.argv)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _N)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist1d_reference as reference  # noqa: E402
import numpy as np  # noqa: E402

import bpcore as bp  # noqa: E402
from bpcore.commands.train import MNIST1D_CNN, MNIST1D_MLP  # noqa: E402
from bpcore.layers.arch import build  # noqa: E402

ARCH = {"mlp": MNIST1D_MLP, "cnn": MNIST1D_CNN}


def torch_init(spec: str) -> str:
    """The architecture with PyTorch's default initialization in every dense and conv."""
    return re.sub(r"(dense|conv1d)\(([^()]*)\)", r"\1(\2,init='torch')", spec)


def bpcore_run(name: str, seed: int, data: dict[str, Any], backend: str,
               steps: int = 8000) -> dict[str, Any]:
    """The reference protocol with bpcore on ``backend``."""
    net = build(torch_init(ARCH[name]), (40,))
    opt = bp.adam(1e-2)
    with bp.use_backend(backend) as b:
        xp = b.xp
        params = net.init(seed)
        state = opt.init(params)
        if backend == "jax":
            step = bp.compile(net, "softmax_cross_entropy", opt, validate=False)
        else:
            step = bp.train_step(net, "softmax_cross_entropy", opt, validate=False,
                                 inplace=True)
        x = xp.asarray(data["x"].astype(np.float32))
        y = xp.asarray(data["y"].astype(np.int64 if backend != "jax" else np.int32))
        x_test = xp.asarray(data["x_test"].astype(np.float32))
        y_test = xp.asarray(data["y_test"].astype(np.int64 if backend != "jax" else np.int32))
        n, batch = x.shape[0], 100
        batches = [(x[i:i + batch, ...], y[i:i + batch]) for i in range(0, n, batch)]

        def accuracy(xs: Any, ys: Any) -> float:
            logits = bp.predict(net, params, xs, validate=False)
            return float(100 * np.mean(bp.to_numpy(xp.argmax(logits, axis=1))
                                       == bp.to_numpy(ys)))

        test_acc = []
        start = time.perf_counter()
        for s in range(steps + 1):
            xb, yb = batches[(s * batch % n) // batch]
            params, state, loss = step(params, state, xb, yb)
            float(loss)  # as loss.item()
            if s % 250 == 0:
                logits = bp.predict(net, params, x_test, validate=False)
                float(bp.softmax_cross_entropy(logits, y_test)[0])
                accuracy(x, y)
                test_acc.append(accuracy(x_test, y_test))
        seconds = time.perf_counter() - start
    return {"model": name, "seed": seed, "test_acc": test_acc[-1], "seconds": seconds,
            "steps": steps + 1}


def recipe_run(name: str, seed: int) -> dict[str, Any]:
    """``bpcore train --data mnist1d`` with its defaults (``--arch`` for the MLP)."""
    cmd = [sys.executable, "-m", "bpcore", "train", "--data", "mnist1d", "--seed", str(seed),
           "--threads", _N, "--quiet", "-v"]
    if name == "mlp":
        cmd += ["--arch", MNIST1D_MLP]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = done.stdout + done.stderr
    acc = float(re.search(r"test accuracy ([0-9.]+)%", out).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"training ([0-9.]+) s", out).group(1))  # type: ignore[union-attr]
    return {"model": name, "seed": seed, "test_acc": acc, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--backends", default="numpy")
    parser.add_argument("--recipe", action="store_true")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(args.threads))
    data = reference.dataset()
    rows: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.models.split(","):
            reference.run(name, seed, data, 20)  # warm-up: thread pools, first calls
            r = reference.run(name, seed, data, args.steps)
            rows.append({**r, "row": "reference (PyTorch)"})
            print(f"{name} seed {seed} reference: {r['test_acc']:.1f}% {r['seconds']:.1f} s",
                  flush=True)
            for backend in args.backends.split(","):
                bpcore_run(name, seed, data, backend, 20)  # warm-up (JAX: compiles)
                r = bpcore_run(name, seed, data, backend, args.steps)
                rows.append({**r, "row": f"bpcore[{backend}], the paper's protocol"})
                print(f"{name} seed {seed} bpcore[{backend}]: {r['test_acc']:.1f}% "
                      f"{r['seconds']:.1f} s", flush=True)
            if args.recipe:
                r = recipe_run(name, seed)
                rows.append({**r, "row": "bpcore train --data mnist1d (default recipe)"})
                print(f"{name} seed {seed} recipe: {r['test_acc']:.1f}% {r['seconds']:.1f} s",
                      flush=True)
    print("\n| network | row | test accuracy per seed (%) | median | seconds per seed | "
          "time ÷ reference |")
    print("|---|---|---|---:|---|---:|")
    for name in args.models.split(","):
        ref = [r for r in rows if r["model"] == name and r["row"].startswith("reference")]
        for label in dict.fromkeys(r["row"] for r in rows if r["model"] == name):
            mine = [r for r in rows if r["model"] == name and r["row"] == label]
            accs = " / ".join(f"{r['test_acc']:.1f}" for r in mine)
            secs = " / ".join(f"{r['seconds']:.1f}" for r in mine)
            ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(mine, ref))
            print(f"| {name} | {label} | {accs} | "
                  f"{statistics.median(r['test_acc'] for r in mine):.1f} | {secs} | "
                  f"{ratio:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
