"""Time the compiled rows and their peers in interleaved rounds (a shared machine).

``bpcore bench`` times one row after another; on a machine whose cores other
people's jobs come and go on, a row can be timed in a quiet minute and its
peer in a busy one. Here every round runs each row in turn (a warm-up of at
least ``--warmup`` seconds right before each, so the thread pools another
library left spinning have gone back to sleep), and a row's time is its
minimum over all rounds: the rows are compared under the same conditions.
The rows are built by :func:`bpcore.benchtools.rows.build`, exactly as the
suite builds them (compilation happens there, outside the timing). The JSON
has pytest-benchmark's layout (each row's ``stats`` from every timed call,
computed by pytest-benchmark itself; ``machine_info`` and ``commit_info`` as a
run of the suite records them), so ``pytest-benchmark compare``,
``benchmarks/compiled_table.py`` and ``bpcore.benchtools.report`` read it. Usage::

    python benchmarks/compiled_interleaved.py --json OUT.json [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

from bpcore.benchtools.environment import environment, load_average, run_queue_wait
from bpcore.benchtools.plugin import suite_machine_info
from bpcore.benchtools.report import stats_layout
from bpcore.benchtools.rows import ROWS, Unavailable, build
from bpcore.benchtools.workloads import WORKLOADS, step_flops

ROW_NAMES = ("numpy-handwritten", "jax-jit", "bpcore-numpy-fused", "bpcore-jax-compiled",
             "bpcore-torch-compiled")


def measure(rows: list[str], workload: str, batch: int, rounds: int, warmup: float,
            calls: int) -> list[dict[str, Any]]:
    """Build every row for one table, then time them in ``rounds`` interleaved rounds."""
    work = WORKLOADS[workload]
    runners, out = {}, []
    for row in rows:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runners[row] = build(row, work, batch, "float32", "cpu")
        except Unavailable as exc:
            print(f"  {row}: skipped ({exc})", flush=True)
    times: dict[str, list[float]] = {r: [] for r in runners}  # each round's best call
    calls_seen: dict[str, list[float]] = {r: [] for r in runners}  # every timed call
    waited = {r: 0.0 for r in runners}
    timed = {r: 0.0 for r in runners}
    order = list(runners)
    for k in range(rounds):
        for row in order[k % len(order):] + order[:k % len(order)]:  # rotate who goes first
            step = runners[row].step
            start = time.perf_counter()
            n = 0
            while n < 2 or time.perf_counter() - start < warmup:
                step()
                n += 1
            best = float("inf")
            wait0, wall0 = run_queue_wait(), time.perf_counter()
            for _ in range(calls):
                t0 = time.perf_counter()
                step()
                dt = time.perf_counter() - t0
                calls_seen[row].append(dt)
                best = min(best, dt)
            wait1 = run_queue_wait()
            timed[row] += time.perf_counter() - wall0
            if wait0 is not None and wait1 is not None:
                waited[row] += wait1 - wait0
            times[row].append(best)
    flops = step_flops(work, batch)
    for row, ts in times.items():
        seconds = min(ts)
        param = f"{workload}-float32-cpu-{row}-{batch}"
        info = dict(runners[row].extra)
        info.update({"row": row, "kind": ROWS[row].kind, "backend": ROWS[row].library,
                     "workload": workload, "device": "cpu",
                     "device_name": runners[row].device_name, "dtype": "float32",
                     "batch": batch, "step_flops": flops, "statistic": "min",
                     "samples_per_s": batch / seconds, "gflop_s": flops / seconds / 1e9,
                     "timing": f"interleaved: {rounds} rounds x {calls} calls",
                     "median_of_round_minima": statistics.median(ts),
                     "cpu_wait_fraction": round(waited[row] / timed[row], 4)
                     if timed[row] > 0 and run_queue_wait() is not None else None,
                     "load_average": load_average()})
        out.append({
            "group": f"{workload} float32 cpu",
            "name": f"test_train_step[{param}]",
            "fullname": f"compiled_interleaved.py::test_train_step[{param}]",
            "params": {"workload": workload, "dtype": "float32", "device": "cpu", "row": row,
                       "size": batch},
            "param": param,
            "extra_info": info,
            "options": {"timer": "perf_counter", "disable_gc": False, "warmup": warmup,
                        "rounds": rounds, "calls_per_round": calls},
            "stats": stats_layout(calls_seen[row]),
        })
        print(f"  {row:<24} {seconds * 1e3:9.3f} ms  (median of rounds "
              f"{statistics.median(ts) * 1e3:.3f})", flush=True)
    return out


def document(benchmarks: list[dict[str, Any]], start_load: list[float] | None) -> dict[str, Any]:
    """The JSON file: pytest-benchmark's top-level layout (``machine_info``,
    ``commit_info``, ``benchmarks``, ``datetime``, ``version``) and bpcore's
    ``bpcore`` key with the run's environment (what changes from run to run)."""
    import pytest_benchmark
    from pytest_benchmark.utils import get_commit_info

    info, moved = suite_machine_info()
    env = environment(start_load)
    if moved:
        env["cpu_clock"] = moved
    return {"machine_info": info, "commit_info": get_commit_info(), "benchmarks": benchmarks,
            "datetime": env.get("date"), "version": pytest_benchmark.__version__,
            "bpcore": {"environment": env, "skipped": [], "statistic": "min"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--workloads", default="seed,wide")
    parser.add_argument("--sizes", default="16,64,256,1024,4096")
    parser.add_argument("--rows", default=",".join(ROW_NAMES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=0.15)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per row per round")
    args = parser.parse_args()
    start_load = load_average()
    benchmarks = []
    for workload in args.workloads.split(","):
        for batch in (int(s) for s in args.sizes.split(",")):
            print(f"{workload} batch {batch}", flush=True)
            # big steps: fewer calls per round, the same number of rounds
            calls = args.calls if batch <= 1024 else 1
            benchmarks += measure(args.rows.split(","), workload, batch, args.rounds,
                                  args.warmup, calls)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(document(benchmarks, start_load), f, indent=1)


if __name__ == "__main__":
    main()
