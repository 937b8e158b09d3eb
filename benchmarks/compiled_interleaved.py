"""Time the compiled rows and their peers in interleaved rounds (a shared machine).

``bpcore bench`` times one row after another; on a machine whose cores other
people's jobs come and go on, a row can be timed in a quiet minute and its
peer in a busy one. Here every round runs each row in turn (a warm-up of at
least ``--warmup`` seconds right before each, so the thread pools another
library left spinning have gone back to sleep), and a row's time is its
minimum over all rounds: the rows are compared under the same conditions.
The rows are built by :func:`bpcore.benchtools.rows.build`, exactly as the
suite builds them (compilation happens there, outside the timing). The JSON
has pytest-benchmark's layout, so ``benchmarks/compiled_table.py`` and
``bpcore.benchtools.report`` read it. Usage::

    python benchmarks/compiled_interleaved.py --json OUT.json [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

from bpcore.benchtools.environment import environment, load_average
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
    times: dict[str, list[float]] = {r: [] for r in runners}
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
            for _ in range(calls):
                t0 = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - t0)
            times[row].append(best)
    flops = step_flops(work, batch)
    for row, ts in times.items():
        seconds = min(ts)
        info = dict(runners[row].extra)
        info.update({"row": row, "kind": ROWS[row].kind, "backend": ROWS[row].library,
                     "workload": workload, "device": "cpu",
                     "device_name": runners[row].device_name, "dtype": "float32",
                     "batch": batch, "step_flops": flops, "statistic": "min",
                     "samples_per_s": batch / seconds, "gflop_s": flops / seconds / 1e9,
                     "timing": f"interleaved: {rounds} rounds x {calls} calls"})
        out.append({
            "name": f"test_train_step[{workload}-float32-cpu-{row}-{batch}]",
            "group": f"{workload} float32 cpu",
            "params": {"workload": workload, "dtype": "float32", "device": "cpu", "row": row,
                       "size": batch},
            "extra_info": info,
            "stats": {"min": seconds, "median": statistics.median(ts), "rounds": len(ts)},
        })
        print(f"  {row:<24} {seconds * 1e3:9.3f} ms  (median of rounds "
              f"{statistics.median(ts) * 1e3:.3f})", flush=True)
    return out


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
    env = environment(start_load)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"benchmarks": benchmarks, "bpcore": {"environment": env, "skipped": []},
                   "datetime": env.get("date")}, f, indent=1)


if __name__ == "__main__":
    main()
