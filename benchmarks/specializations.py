"""Does each backend specialization pay? One interleaved run, one switched off at a time.

For every workload, batch size and backend (NumPy, PyTorch CPU), the training
step ``train_step(..., validate=False, inplace=True)`` is timed with all of
the backend's specializations (``all``), with each one the workload uses left
out in turn (``-<kernel>``, the portable kernel in its place) and with none
(``fast=False``). Each round times every variant once, in a shuffled order;
a variant's cost is the median over the rounds of its time divided by the
time of ``all`` in the same round, so that a slow spell of the shared machine
falls on both. A specialization stays in bpcore only where leaving it out
costs at least 5% on some workload and batch (``bpcore.dispatch``); the
figure goes into its docstring.

    python benchmarks/specializations.py --out benchmarks/results/specializations.json

Run it single-threaded on a quiet machine (``--threads 1``, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any


def _registrations(backend: str) -> dict[str, Any]:
    """``kernel name -> portable kernel`` of ``backend``'s specializations."""
    import importlib

    from bpcore import losses, optim

    found = {}
    modules = [importlib.import_module(f"bpcore.layers.{name}")
               for name in ("activations", "dense", "conv", "pool")] + [losses, optim]
    for module in modules:
        for name, fn in vars(module).items():
            if callable(fn) and backend in getattr(fn, "specializations", {}):
                found[name] = fn
    return found


def _step(workload: Any, batch: int, backend: str, *, leave_out: Any = None,
          fast: bool = True) -> Any:
    """A built (and bound) training step with its data; ``leave_out``: the
    portable kernel whose ``backend`` specialization is left out."""
    import bpcore as bp
    from bpcore.benchtools.rows import _bpcore_optimizer
    from bpcore.benchtools.workloads import host_batch, host_params, host_tree, network

    opt = _bpcore_optimizer(workload)
    if workload.arch is not None:  # a convolutional network: the bench's own weights
        net = network(workload)
        params_host = list(host_tree(workload, "float32"))
    else:
        net = bp.mlp(list(workload.sizes), workload.activation)
        host = iter(host_params(workload, "float32"))
        params_host = []
        for p in net.init(0, dtype="float32"):
            if p:
                W, b = next(host)
                params_host.append({"W": W.copy(), "b": b.copy()})
            else:
                params_host.append({})
    x, t = host_batch(workload, batch, "float32")
    params = bp.to_backend(tuple(params_host), backend)
    x, t = bp.to_backend(x, backend), bp.to_backend(t, backend)
    state = opt.init(params)
    step = bp.train_step(net, "softmax_cross_entropy", opt, validate=False, inplace=True,
                         fast=fast)
    table = getattr(leave_out, "specializations", {})
    entry = table.pop(backend, None) if leave_out is not None else None
    try:
        params, state, _ = step(params, state, x, t)  # binds the kernels now
    finally:
        if entry is not None:
            table[backend] = entry
    box = [params, state]

    def run() -> None:
        box[0], box[1], _ = step(box[0], box[1], x, t)

    return run


#: The kernels each workload's network, loss and optimizer use.
USED = {
    "sigmoid": {"dense_forward", "dense_backward", "sigmoid_forward", "sigmoid_backward",
                "softmax_cross_entropy"},
    "relu": {"dense_forward", "dense_backward", "relu_forward", "relu_backward",
             "softmax_cross_entropy"},
    "sgd": {"sgd_update"}, "momentum": {"sgd_update"}, "adam": {"adam_update"},
}
#: The kernels of each layer name in an architecture string (the conv workloads).
LAYER_KERNELS = {
    "conv1d": {"conv1d_forward", "conv1d_backward"},
    "conv2d": {"conv2d_forward", "conv2d_backward"},
    "max_pool1d": {"max_pool_forward", "max_pool_backward"},
    "max_pool2d": {"max_pool_forward", "max_pool_backward"},
    "relu": {"relu_forward", "relu_backward"},
    "dense": {"dense_forward", "dense_backward"},
}


def _used(workload: Any) -> set[str]:
    """The kernels a workload's network, loss and optimizer use."""
    used = {"softmax_cross_entropy"} | USED[workload.optimizer]
    if workload.arch is None:
        return used | USED[workload.activation]
    for layer in workload.arch.split(","):
        used |= LAYER_KERNELS.get(layer.split("(")[0].strip(), set())
    return used | LAYER_KERNELS["dense"]  # the classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,torch")
    parser.add_argument("--workloads", default="seed,wide,deep",
                        help="any of bpcore bench's (seed,wide,deep,mnist1d-cnn,lenet)")
    parser.add_argument("--sizes", default="16,64,256,1024,4096")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.1, help="per variant per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np  # noqa: F401 (after the thread variables)

    import bpcore as bp
    from bpcore.benchtools.environment import environment
    from bpcore.benchtools.workloads import WORKLOADS

    if "torch" in args.backends:
        import torch

        torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        if not bp.backends()[backend].available:
            print(f"{backend}: unavailable", file=sys.stderr)
            continue
        kernels = _registrations(backend)
        for wname in args.workloads.split(","):
            workload = WORKLOADS[wname]
            for batch in (int(s) for s in args.sizes.split(",")):
                variants = {"all": _step(workload, batch, backend)}
                for name, fn in kernels.items():
                    if name in _used(workload):
                        variants[f"-{name}"] = _step(workload, batch, backend, leave_out=fn)
                variants["none"] = _step(workload, batch, backend, fast=False)
                times: dict[str, list[float]] = {k: [] for k in variants}
                order = list(variants)
                for _ in range(args.rounds):
                    random.shuffle(order)
                    for name in order:
                        run = variants[name]
                        run()  # warm
                        n, start = 0, time.perf_counter()
                        while time.perf_counter() - start < args.seconds or n < 2:
                            run()
                            n += 1
                        times[name].append((time.perf_counter() - start) / n)
                ratio = {k: statistics.median(a / b for a, b in zip(v, times["all"]))
                         for k, v in times.items()}
                row = {"backend": backend, "workload": wname, "batch": batch,
                       "ms": {k: round(min(v) * 1e3, 4) for k, v in times.items()},
                       "cost_of_leaving_out": {k[1:]: round(v - 1, 4)
                                               for k, v in ratio.items() if k.startswith("-")},
                       "none_vs_all": round(ratio["none"], 4)}
                results.append(row)
                worst = ", ".join(f"{k} {v:+.1%}" for k, v in row["cost_of_leaving_out"].items())
                print(f"{backend} {wname} {batch}: all {row['ms']['all']:.3f} ms, "
                      f"portable x{row['none_vs_all']:.2f}; without: {worst}", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for row in results:
        for k, v in row["cost_of_leaving_out"].items():
            key = f"{row['backend']}:{k}"
            if key not in summary or v > summary[key]["cost"]:
                summary[key] = {"cost": v, "workload": row["workload"], "batch": row["batch"]}
    print("\nlargest cost of leaving each out (keep if >= 5%):")
    for key, v in sorted(summary.items()):
        verdict = "keep" if v["cost"] >= 0.05 else "drop"
        print(f"  {key:40s} {v['cost']:+.1%} ({v['workload']}, batch {v['batch']}): {verdict}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"machine": platform.node(), "threads": args.threads,
                       "environment": environment(None), "rows": results,
                       "largest_cost": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
