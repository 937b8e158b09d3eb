"""Small batches without per-call overhead: k training steps per call, beside
one step per call, ``jax.jit`` of a hand-written step and the GEMM floor.

At batch 16-64 a step is mostly dispatch, so the timed unit here is one
*epoch chunk* of ``k`` steps on ``k`` different batches, reported per step:

* ``bpcore-jax-loop``: ``bp.compile(net, loss, opt, loop=True)`` on JAX, one
  ``lax.scan`` over the ``k`` stacked batches in one XLA program;
* ``bpcore-numpy-loop``: ``bp.train_loop`` on NumPy (the step driver's
  workspace, in place), the loop ``Model.fit`` runs;
* ``bpcore-jax-compiled``, ``bpcore-numpy``: the same steps one call each;
* ``jax-jit``: a hand-written ``jax.jit`` step (parameters donated), called ``k`` times;
* ``numpy-handwritten``: the tutorial NumPy step, ``k`` times;
* ``gemm-floor-numpy``: only the step's matrix products, ``k`` times.

Rows and peers are those of ``bpcore bench`` (:mod:`bpcore.benchtools.rows`),
from the same initial weights. Each round times every row once, in a
shuffled order, for about ``--seconds``; a row's figure is its median per-step
time, and its ratios to the floor and to ``jax-jit`` are medians of the
per-round ratios, so a slow spell of this shared machine falls on both.

    python benchmarks/small_batch_loop.py --out benchmarks/results/2026-12-02-small-batch-loop
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
from collections.abc import Callable
from typing import Any

ROWS = ("bpcore-jax-loop", "bpcore-numpy-loop", "bpcore-jax-compiled", "bpcore-numpy",
        "jax-jit", "numpy-handwritten", "gemm-floor-numpy")


def _loop_row(name: str, workload: Any, batch: int, k: int) -> Callable[[], None]:
    """A call that runs ``k`` steps on ``k`` batches, state carried between calls."""
    import bpcore as bp

    backend = "jax" if "jax" in name else "numpy"
    with bp.use_backend(backend) as b:
        return _loop_run(bp, b, backend, workload, batch, k)


def _loop_run(bp: Any, b: Any, backend: str, workload: Any, batch: int,
              k: int) -> Callable[[], None]:
    from bpcore.benchtools.rows import _bpcore_optimizer
    from bpcore.benchtools.workloads import host_batch, host_params

    net = bp.mlp(list(workload.sizes), workload.activation)
    opt = _bpcore_optimizer(workload)
    params = _params_like(net, host_params(workload, "float32"), b)
    state = opt.init(params)
    x, t = host_batch(workload, batch * k, "float32")  # k different batches
    xs = b.asarray(x.reshape(k, batch, -1))
    ts = b.asarray(t.reshape(k, batch))
    if backend == "jax":
        loop = bp.compile(net, "softmax_cross_entropy", opt, loop=True)
    else:
        loop = bp.train_loop(net, "softmax_cross_entropy", opt, inplace=True, validate=False)
    carry = [params, state]

    def run() -> None:
        carry[0], carry[1], values = loop(carry[0], carry[1], xs, ts)
        if backend == "jax":
            values.block_until_ready()

    for _ in range(3):  # compile, settle
        run()
    return run


def _params_like(net: Any, host: list[tuple[Any, Any]], b: Any) -> tuple[Any, ...]:
    """The workload's host weights in ``net``'s parameter structure on backend ``b``."""
    it = iter(host)
    out = []
    for p in net.init(0, dtype="float32"):
        if p:
            W, bias = next(it)
            out.append({"W": b.asarray(W), "b": b.asarray(bias)})
        else:
            out.append({})
    return tuple(out)


def _single_row(name: str, workload: Any, batch: int, k: int) -> Callable[[], None]:
    from bpcore.benchtools.rows import build

    step = build(name, workload, batch, "float32", "cpu").step

    def run() -> None:
        for _ in range(k):
            step()

    return run


def _time(fn: Callable[[], None], seconds: float) -> float:
    """Median seconds of one call of ``fn`` over about ``seconds``."""
    times = []
    stop = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > stop and len(times) >= 3:
            return statistics.median(times)


def _facts(threads: int | None) -> dict[str, Any]:
    import array_api_compat
    import jax
    import numpy
    import threadpoolctl

    import bpcore
    from bpcore.benchtools.rows import cpu_name

    pools = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
             for p in threadpoolctl.threadpool_info()]
    return {
        "machine": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "bpcore": bpcore.__version__,
        "numpy": numpy.__version__, "jax": jax.__version__,
        "array_api_compat": array_api_compat.__version__, "threadpools": pools,
        "threads": threads or "library default", "load_at_start": os.getloadavg(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workload", default="seed")
    parser.add_argument("--sizes", default="16,64")
    parser.add_argument("--k", type=int, default=32, help="steps per call of the loop rows")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.3, help="per row per round")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/XLA threads (default: each library's own)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   f"intra_op_parallelism_threads={args.threads}")
    from bpcore.benchtools.workloads import WORKLOADS

    workload = WORKLOADS[args.workload]
    results: dict[str, Any] = {"facts": _facts(args.threads), "k": args.k,
                               "workload": args.workload, "sizes": {}}
    for batch in (int(s) for s in args.sizes.split(",")):
        runs = {name: (_loop_row if name.endswith("-loop") else _single_row)(
            name, workload, batch, args.k) for name in ROWS}
        per_round: dict[str, list[float]] = {name: [] for name in ROWS}
        order = list(ROWS)
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                per_round[name].append(_time(runs[name], args.seconds) / args.k)
        row: dict[str, Any] = {}
        for name in ROWS:
            ms = [1e3 * s for s in per_round[name]]
            row[name] = {
                "ms_per_step": statistics.median(ms),
                "x_floor": statistics.median(
                    a / f for a, f in zip(per_round[name], per_round["gemm-floor-numpy"])),
                "x_jax_jit": statistics.median(
                    a / j for a, j in zip(per_round[name], per_round["jax-jit"])),
                "spread": (max(ms) - min(ms)) / statistics.median(ms),
            }
            print(f"batch {batch:5d} {name:22s} {row[name]['ms_per_step']:8.4f} ms/step  "
                  f"x{row[name]['x_floor']:.2f} floor  x{row[name]['x_jax_jit']:.2f} jax-jit",
                  flush=True)
        results["sizes"][batch] = row
    results["facts"]["load_at_end"] = os.getloadavg()
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(results, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(_markdown(results))
    return 0


def _markdown(results: dict[str, Any]) -> str:
    facts = results["facts"]
    lines = [
        f"# Small batches, {results['k']} steps per call: {results['workload']} network, "
        "float32, CPU", "",
        f"{facts['machine']} ({facts['cpus']} CPUs), {facts['date']}; threads: "
        f"{facts['threads']}; load {facts['load_at_start'][0]:.2f} at start, "
        f"{facts['load_at_end'][0]:.2f} at end; numpy {facts['numpy']}, jax {facts['jax']}, "
        f"bpcore {facts['bpcore']}; BLAS: " + ", ".join(
            f"{p['internal_api']} {p['version']} ({p['architecture']}, {p['num_threads']} "
            "threads)" for p in facts["threadpools"]), "",
        "Per-step time (median of the rounds) and medians of the per-round ratios.", "",
        "| batch | row | ms / step | × GEMM floor | × jax-jit | spread |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for batch, row in results["sizes"].items():
        for name, r in row.items():
            lines.append(f"| {batch} | {name} | {r['ms_per_step']:.4f} | {r['x_floor']:.2f} | "
                         f"{r['x_jax_jit']:.2f} | {100 * r['spread']:.0f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
