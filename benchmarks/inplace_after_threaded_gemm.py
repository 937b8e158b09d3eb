"""What an in-place SGD update of a weight costs right after a threaded GEMM read it.

The seed network's first weight (784 x 128 float32, 392 KiB: it fits in
one core's L2) is read by the forward GEMM ``x @ W`` and its gradient
written by ``x.T @ dz``, both on OpenBLAS's threads; then the update
``W - lr * dW`` is timed three ways, interleaved, over the same arrays:

* ``inplace``: written back into ``W`` (``train_step(inplace=True)``, and
  the hand-written step's ``W -= lr * dW``);
* ``copy back``: written into the gradient's buffer, then copied into ``W``;
* ``lend``: written into the gradient's buffer, which becomes the new ``W``
  (the functional step's lending, ``bpcore.dispatch.Workspace``).

With two BLAS threads on the 2-core machine of 2026-12-04 the first write
into ``W`` after the threaded read cost 3-4x what a write into the freshly
written gradient did; on one thread the three agree (see
``benchmarks/results/2026-12-04-inplace-after-threaded-gemm.md``).

    python benchmarks/inplace_after_threaded_gemm.py --threads 2 --sizes 16,64,256,1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import threadpoolctl


def measure(batch: int, hidden: int, rounds: int) -> dict[str, float]:
    """Median microseconds of each way of updating ``W`` at one batch size."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    dz = rng.standard_normal((batch, hidden)).astype(np.float32)
    box = {"W": rng.standard_normal((784, hidden)).astype(np.float32) * 0.01,
           "g": np.empty((784, hidden), np.float32)}
    z = np.empty((batch, hidden), np.float32)

    def gemms() -> None:
        np.matmul(x, box["W"], out=z)  # the forward product reads W
        np.matmul(x.T, dz, out=box["g"])

    def inplace() -> None:
        np.multiply(box["g"], 0.1, out=box["g"])
        np.subtract(box["W"], box["g"], out=box["W"])

    def copy_back() -> None:
        np.multiply(box["g"], 0.1, out=box["g"])
        np.subtract(box["W"], box["g"], out=box["g"])
        np.copyto(box["W"], box["g"])

    def lend() -> None:
        np.multiply(box["g"], 0.1, out=box["g"])
        np.subtract(box["W"], box["g"], out=box["g"])
        box["W"], box["g"] = box["g"], box["W"]

    ways = {"inplace": inplace, "copy back": copy_back, "lend": lend}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(rounds + 20):
        for name, update in ways.items():
            gemms()
            t0 = time.perf_counter_ns()
            update()
            if r >= 20:  # the first rounds settle
                times[name].append((time.perf_counter_ns() - t0) / 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="16,64,256,1024")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with threadpoolctl.threadpool_limits(args.threads, user_api="blas"):
        info = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        print(f"BLAS: {info[0]['internal_api']} {info[0]['version']} "
              f"({info[0]['architecture']}, {info[0]['num_threads']} threads); "
              f"W 784x{args.hidden} float32")
        print("| batch | inplace µs | copy back µs | lend µs |")
        print("|---:|---:|---:|---:|")
        for batch in (int(s) for s in args.sizes.split(",")):
            t = measure(batch, args.hidden, args.rounds)
            print(f"| {batch} | {t['inplace']:.1f} | {t['copy back']:.1f} | {t['lend']:.1f} |")


if __name__ == "__main__":
    main()
