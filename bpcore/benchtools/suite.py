"""The benchmark: one full training step per row, workload, dtype, device and size.

Collected by pytest with :mod:`bpcore.benchtools.plugin` loaded, which
parametrizes :func:`test_train_step`; ``bpcore bench`` runs it, and so does
``pytest benchmarks/`` in the repository (whose ``test_train_step.py``
imports this function).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .environment import load_average, run_queue_wait
from .plugin import floor_time, record_floor, record_result, runner_cache
from .rows import ROWS, Unavailable, build
from .workloads import WORKLOADS, step_flops

__all__ = ["test_train_step", "warm_up"]


def warm_up(step: Callable[[], None], seconds: float, calls: int = 2) -> None:
    """Run ``step`` at least ``calls`` times and for at least ``seconds``.

    Done right before each row is timed: caches and allocator are warm, lazy
    compilation is done, and the BLAS threads another library left spinning
    (OpenBLAS spins about 0.1 s after a matmul) have gone back to sleep.
    """
    start = time.perf_counter()
    n = 0
    while n < calls or time.perf_counter() - start < seconds:
        step()
        n += 1


def test_train_step(
    benchmark: Any, request: pytest.FixtureRequest,
    workload: str, dtype: str, device: str, row: str, size: int, bench_pass: int,
) -> None:
    """Time one training step (forward, loss, backward, update) of ``row``, in
    pass ``bench_pass`` of its table (the row is built in its first pass and
    kept, training on, until its last)."""
    config = request.config
    spec, work = ROWS[row], WORKLOADS[workload]
    benchmark.group = f"{workload} {dtype} {device}"
    key = (workload, dtype, device, row, size)
    cache = runner_cache(config)
    last = bench_pass + 1 >= int(config.getoption("--bp-passes"))
    runner = cache.pop(key, None) if last else cache.get(key)
    if runner is None:
        try:
            runner = build(row, work, size, dtype, device)
        except Unavailable as exc:
            runner = exc
        if not last:
            cache[key] = runner
    if isinstance(runner, Unavailable):
        pytest.skip(str(runner))
        return  # (skip raises)
    seconds = float(config.getoption("--bp-warmup"))
    warm_up(runner.step, seconds, calls=2 if bench_pass == 0 else 1)
    wait0, wall0 = run_queue_wait(), time.perf_counter()
    benchmark(runner.step)
    wait1, wall = run_queue_wait(), time.perf_counter() - wall0
    # the share of the timed span the thread running the step spent runnable but off the CPU
    # (other work on the machine); the report marks rows where it is large
    wait = None if wait0 is None or wait1 is None or wall <= 0 else (wait1 - wait0) / wall
    flops = step_flops(work, size)
    info = benchmark.extra_info
    info.update(runner.extra)
    info.update({
        "row": row,
        "kind": spec.kind,
        "backend": spec.library,
        "workload": workload,
        "device": device,
        "device_name": runner.device_name,
        "dtype": dtype,
        "batch": size,
        "pass": bench_pass,
        "step_flops": flops,
        "statistic": "min",
        "cpu_wait_fraction": None if wait is None else round(wait, 4),
        "load_average": load_average(),
    })
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    seconds = float(stats.stats.min)
    record_result(config, request.node.nodeid, {"seconds": seconds, "cpu_wait_fraction": wait})
    info["samples_per_s"] = size / seconds
    info["gflop_s"] = flops / seconds / 1e9
    if spec.kind == "floor":
        record_floor(config, (workload, dtype, device, size, row), seconds)
        info["gemm_floor"] = row
        info["gemm_floor_fraction"] = 1.0
        return
    # this pass's floor (timed just before, in the same pass) over this pass's time;
    # the report recomputes it from the best of all passes
    floor_name, floor_seconds = floor_time(config, workload, dtype, device, size, spec.library)
    info["gemm_floor"] = floor_name
    info["gemm_floor_fraction"] = None if floor_seconds is None else floor_seconds / seconds
