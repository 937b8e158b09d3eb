"""One training step of the MNIST-1D GRU baseline: bpcore against PyTorch, interleaved.

The network is the paper's ``GRUBase`` (greydanus/mnist1d, notebooks/models.py):
a bidirectional GRU of hidden size 6 over 40 time steps of one value, its
outputs flattened into a linear classifier (480 -> 10); one step is forward,
softmax cross-entropy, backward and Adam (lr 1e-2) on a batch of 100, float32,
CPU. Every row starts from the same weights (torch's initialization, loaded
into bpcore with ``load_torch_state_dict``) and trains on the same batch. The
rows are built by :mod:`bpcore.benchtools.recurrent` (once, outside the timing):

* ``torch-eager``: ``torch.nn.GRU`` + ``torch.nn.Linear`` + ``torch.optim.Adam``,
  the paper's step (``loss.backward(); opt.step(); opt.zero_grad()``);
* ``torch-compile`` (``--torch-compile``): the same step under ``torch.compile``;
* ``bpcore-numpy``: ``bp.compile(net, loss, opt)`` on NumPy (the step driver's
  workspace, updates in place): bpcore's best NumPy path;
* ``bpcore-numpy-default``: ``bp.train_step`` as a user calls it (every batch
  checked, functional update);
* ``bpcore-torch``: ``bp.train_step(..., validate=False)`` on PyTorch tensors;
* ``bpcore-jax-compiled``: ``bp.compile`` on JAX (one ``jax.jit`` program).

Every round runs each row in turn, after a warm-up of at least ``--warmup``
seconds right before it (so thread pools another library left spinning have
gone back to sleep), and a row's time is its minimum over the rounds: the rows
meet the same conditions on a shared machine. Usage::

    python benchmarks/e2e/gru_step.py [--threads 1] [--rounds 7] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

BATCH, TIME, HIDDEN = 100, 40, 6


def _rows(names: list[str]) -> dict[str, Callable[[], Any]]:
    """Each row's timed step (:func:`bpcore.benchtools.recurrent.build`), built
    and called once (the first call compiles where there is a compiler)."""
    from bpcore.benchtools.recurrent import build

    rows: dict[str, Callable[[], Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        rows[name] = build(name, BATCH, "float32").step
        rows[name]()
        print(f"  built {name} ({time.perf_counter() - t0:.1f} s with its first step)",
              flush=True)
    return rows


def measure(rows: dict[str, Callable[[], Any]], rounds: int, warmup: float,
            calls: int) -> dict[str, list[float]]:
    """Seconds per step of every row in every round (interleaved)."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds):
        for name, step in rows.items():
            start = time.perf_counter()
            while time.perf_counter() - start < warmup:
                step()
            t0 = time.perf_counter()
            for _ in range(calls):
                step()
            times[name].append((time.perf_counter() - t0) / calls)
        best = {n: min(v) * 1e3 for n, v in times.items()}
        print(f"  round {r + 1}/{rounds}: " +
              ", ".join(f"{n} {ms:.2f} ms" for n, ms in best.items()), flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP and torch threads (set before the imports)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20, help="timed steps per row and round")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before each row")
    parser.add_argument("--torch-compile", action="store_true",
                        help="add the torch.compile row (Inductor compiles for a minute here)")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    names = ["torch-eager", "bpcore-numpy", "bpcore-numpy-default", "bpcore-torch"]
    if args.torch_compile:
        names.insert(1, "torch-compile")
    if not args.no_jax:
        names.append("bpcore-jax-compiled")
    print(f"GRU step: batch {BATCH}, {TIME} steps, hidden {HIDDEN} bidirectional, float32, "
          f"{args.threads} thread(s)", flush=True)
    rows = _rows(names)
    times = measure(rows, args.rounds, args.warmup, args.calls)
    best = {n: min(v) for n, v in times.items()}
    ref = best["torch-eager"]
    print(f"\n{'row':<24} {'ms/step':>8} {'median':>8} {'torch-eager / row':>18}")
    for n, t in best.items():
        median = sorted(times[n])[len(times[n]) // 2]
        print(f"{n:<24} {t * 1e3:8.2f} {median * 1e3:8.2f} {ref / t:18.2f}")
    if args.json:
        import numpy

        import bpcore

        out = {"workload": {"batch": BATCH, "time": TIME, "hidden": HIDDEN,
                            "bidirectional": True, "dtype": "float32", "optimizer": "adam"},
               "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
               "seconds_per_step": {n: v for n, v in times.items()},
               "best_ms": {n: t * 1e3 for n, t in best.items()},
               "speedup_vs_torch_eager": {n: ref / t for n, t in best.items()},
               "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                           "cpus": os.cpu_count(), "numpy": numpy.__version__,
                           "torch": torch.__version__, "bpcore": bpcore.__version__}}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
