"""Data-parallel throughput of ``Model.fit`` on the ``wide`` workload, 1 vs N ranks.

Run one configuration per launch and compare the printed samples/s::

    OMP_NUM_THREADS=1 python benchmarks/distributed_throughput.py --batch 64
    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/distributed_throughput.py --batch 64

``--batch`` is per rank (the global batch is ``batch * ranks``). The data are
synthetic (784 features, 10 classes, a fixed seed); the training throughput
is the ``samples_per_s`` that ``Model.fit`` records (training steps only, the
evaluation excluded), the median over the epochs after the first. It also
times the gradient all-reduce alone (the wide net's 1.86 M float32
gradients, 7.5 MB). Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

import bpcore as bp
from bpcore.benchtools.workloads import WORKLOADS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="rows per rank per step")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--workload", default="wide", choices=tuple(WORKLOADS))
    parser.add_argument("--no-mpi", action="store_true", help="a plain process, no MPI at all")
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    w = WORKLOADS[args.workload]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.samples, w.sizes[0])).astype(np.float32)
    y = rng.integers(0, w.sizes[-1], args.samples)
    model = bp.Model(list(w.sizes), activation=w.activation, optimizer=w.optimizer, lr=w.lr,
                     batch_size=args.batch, scaling="none")
    comm = None
    if not args.no_mpi:
        from bpcore.distributed import communicator

        comm = communicator()
        model.distribute(comm)
    history = model.fit(X, y, epochs=args.epochs, progress=False)
    rates = [h["samples_per_s"] for h in history[1:]]

    allreduce_ms = None
    if comm is not None:
        _, grads = bp.value_and_grad(model.net, model.loss, model.params,
                                     X[:args.batch], y[:args.batch])
        comm.allreduce(grads)
        times = []
        for _ in range(20):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce(grads)
            times.append(time.perf_counter() - t0)
        allreduce_ms = 1e3 * statistics.median(times)

    if comm is None or comm.rank == 0:
        print(json.dumps({
            "workload": w.name, "ranks": 1 if comm is None else comm.size,
            "mpi": comm is not None, "batch_per_rank": args.batch,
            "global_batch": args.batch * (1 if comm is None else comm.size),
            "threads_per_rank": args.threads, "samples": args.samples,
            "samples_per_s_median": statistics.median(rates),
            "samples_per_s_epochs": [round(r) for r in rates],
            "allreduce_ms_median": allreduce_ms,
            "loadavg": os.getloadavg(),
        }))


if __name__ == "__main__":
    main()
