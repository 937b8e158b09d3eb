"""Benchmarks people can trust: unreliable rows marked, a busy machine warned about,
a machine_info that stays the same from run to run, pytest-benchmark's stats layout,
the progress line. All on hand-made JSON documents (no timing, no subprocess)."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import pytest

from bpcore.benchtools import report
from bpcore.benchtools.environment import environment, machine, run_facts
from bpcore.benchtools.plugin import progress_line, stabilize_machine_info, time_left
from bpcore.commands import bench

pytest.importorskip("pytest_benchmark", reason="pip install 'bpcore[bench]'")


def bench_entry(row: str, seconds: float, *, backend: str = "numpy", kind: str = "bpcore",
                floor: str | None = "gemm-floor-numpy", median: float | None = None,
                iqr: float | None = None, rounds: int = 20, wait: float | None = 0.0,
                bench_pass: int = 0) -> dict[str, Any]:
    """One benchmark of a pytest-benchmark JSON document, as the suite writes it."""
    median = seconds * 1.02 if median is None else median
    return {
        "params": {"size": 16},
        "stats": {"min": seconds, "median": median, "rounds": rounds,
                  "iqr": 0.02 * seconds if iqr is None else iqr},
        "extra_info": {"row": row, "workload": "seed", "dtype": "float32", "device": "cpu",
                       "backend": backend, "kind": kind, "step_flops": 1e6, "gemm_floor": floor,
                       "cpu_wait_fraction": wait, "pass": bench_pass},
    }


def quiet_env(**over: Any) -> dict[str, Any]:
    env = {"cores": 4, "load_average_at_start": [0.1, 0.1, 0.1],
           "load_average": [1.1, 0.5, 0.2], "threads_requested": "1"}
    env.update(over)
    return env


def document(*benchmarks: dict[str, Any], env: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"benchmarks": list(benchmarks), "bpcore": {"environment": env or quiet_env()}}


def clean_run() -> list[dict[str, Any]]:
    return [
        bench_entry("gemm-floor-numpy", 0.05e-3, kind="floor", floor=None),
        bench_entry("numpy-handwritten", 0.17e-3, kind="peer"),
        bench_entry("bpcore-numpy", 0.19e-3),
        bench_entry("torch-eager", 0.36e-3, backend="torch", kind="peer",
                    floor="gemm-floor-torch"),
        bench_entry("bpcore-torch", 0.26e-3, backend="torch", floor="gemm-floor-torch"),
        # JAX rows are measured against the NumPy floor and may beat it (XLA's own GEMM)
        bench_entry("bpcore-jax-compiled", 0.04e-3, backend="jax"),
        # eager JAX is far slower than NumPy, legitimately: not its library's reference
        bench_entry("bpcore-jax", 2.2e-3, backend="jax"),
    ]


def by_row(data: dict[str, Any]) -> dict[str, report.Entry]:
    (rows,) = report.tables(data).values()
    return {e["row"]: e for e in rows}


def test_a_quiet_run_marks_nothing_and_warns_of_nothing() -> None:
    data = document(*clean_run())
    assert all(e["noise"] == [] for e in by_row(data).values())
    assert report.warnings(data) == []
    table = report.format_table(data)
    assert "noise" in table.splitlines()[6]  # the header of the one table has the column
    assert report.NOISE_NOTE not in table  # the footnote only when a row is marked


def test_the_issues_busy_run_is_marked_and_warned_about() -> None:
    """A bpcore row 172x the hand-written step, a floor of 20333% of the step, on a
    machine loaded beyond its cores: the case of the issue, which printed no warning."""
    hand = 0.37e-3
    data = document(
        bench_entry("gemm-floor-numpy", 203.33 * 0.30e-3, kind="floor", floor=None),
        bench_entry("numpy-handwritten", hand, kind="peer"),
        bench_entry("bpcore-numpy", 0.30e-3),
        bench_entry("bpcore-numpy-default", 172 * hand),
        env=quiet_env(cores=2, load_average_at_start=[2.9, 1.9, 1.3],
                      load_average=[3.8, 2.3, 1.5]),
    )
    rows = by_row(data)
    # the disturbed floor: every NumPy row "beats" it; the disturbed row: far from its peer
    assert rows["bpcore-numpy"]["noise"] == ["beats floor 203x"]
    assert rows["numpy-handwritten"]["noise"] == ["beats floor 165x"]
    assert rows["bpcore-numpy-default"]["noise"] == ["172x hand"]
    alerts = report.warnings(data)
    assert any("busy at the start" in a and "2.90 on 2 cores" in a for a in alerts), alerts
    assert any("busy at the end" in a and "about 2.8 beyond this run's 1 thread" in a
               for a in alerts), alerts
    assert any(a.startswith("3 of 4 rows have unreliable times") for a in alerts), alerts
    table = report.format_table(data)
    marked = [line for line in table.splitlines()
              if line.strip().startswith(("bpcore-numpy", "numpy-handwritten"))]
    assert all(("\u26a0" in line or "! " in line) for line in marked), marked
    assert report.NOISE_NOTE in table
    md = report.markdown(data)
    assert "## Warnings" in md and "| \u26a0 172x hand |" in md


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (bench_entry("bpcore-numpy", 1e-3, median=1e-3, iqr=0.4e-3), "spread 40%"),
        (bench_entry("bpcore-numpy", 1e-3, wait=0.3), "cpu wait 30%"),
        (bench_entry("bpcore-torch", 30e-3, backend="torch", floor="gemm-floor-torch"),
         "83x torch"),
        (bench_entry("bpcore-numpy", 0.01e-3), "0.06x hand"),  # absurdly fast: the peer stalled
    ],
)
def test_each_reason_marks_a_row(entry: dict[str, Any], reason: str) -> None:
    runs = {b["extra_info"]["row"]: b for b in clean_run()}
    runs[entry["extra_info"]["row"]] = entry  # one row disturbed in an otherwise clean run
    data = document(*runs.values())
    row = by_row(data)[entry["extra_info"]["row"]]
    assert reason in row["noise"], row["noise"]
    others = [e for e in by_row(data).values() if e["row"] != row["row"]]
    assert all(e["noise"] == [] for e in others), [(e["row"], e["noise"]) for e in others]


def test_passes_that_disagree_mark_the_row_and_the_best_pass_counts() -> None:
    runs = clean_run()
    data = document(*runs, bench_entry("bpcore-numpy", 0.5e-3, bench_pass=1),
                    bench_entry("numpy-handwritten", 0.18e-3, kind="peer", bench_pass=1))
    rows = by_row(data)
    assert rows["bpcore-numpy"]["seconds"] == pytest.approx(0.19e-3)
    assert rows["bpcore-numpy"]["noise"] == ["passes 2.6x"]
    assert rows["numpy-handwritten"]["noise"] == []


def test_few_rounds_do_not_count_as_spread() -> None:
    data = document(bench_entry("bpcore-numpy", 1e-3, median=2e-3, iqr=1e-3, rounds=2))
    assert by_row(data)["bpcore-numpy"]["noise"] == []


def test_load_warnings_count_other_work_only() -> None:
    # at the end, the run's own threads are part of the load average: taken off
    assert report.load_warnings(quiet_env(cores=2, load_average=[1.9, 1.0, 0.5])) == []
    assert report.load_warnings(quiet_env(cores=2, load_average=[2.2, 1.0, 0.5]))
    assert report.load_warnings(quiet_env(cores=2, threads_requested=None,
                                          load_average=[2.9, 1.0, 0.5])) == []
    assert report.load_warnings(quiet_env(cores=16, load_average_at_start=[8.5, 1, 1]))
    assert report.load_warnings(quiet_env(load_average=None, load_average_at_start=None)) == []


def test_stats_layout_is_pytest_benchmarks() -> None:
    times = [3e-3, 1e-3, 2e-3, 5e-3, 4e-3]
    stats = report.stats_layout(times)
    assert stats["min"] == 1e-3 and stats["max"] == 5e-3
    assert stats["mean"] == pytest.approx(3e-3)
    assert stats["median"] == pytest.approx(3e-3)
    assert stats["stddev"] == pytest.approx(statistics.stdev(times))
    assert stats["rounds"] == 5 and stats["iterations"] == 1
    assert stats["ops"] == pytest.approx(1 / 3e-3)
    assert stats["q1"] <= stats["median"] <= stats["q3"]
    assert stats["iqr"] == pytest.approx(stats["q3"] - stats["q1"])
    from pytest_benchmark.stats import normalize_stats

    normalize_stats(dict(stats))  # what pytest-benchmark compare runs on every file it loads
    with pytest.raises(ValueError, match="no times"):
        report.stats_layout([])


def test_machine_info_keeps_only_what_identifies_the_machine() -> None:
    info = {"node": "vm", "cpu": {"brand_raw": "AMD EPYC", "hz_actual": [2596140000, 0],
                                  "hz_actual_friendly": "2.5961 GHz", "count": 2}}
    moved = stabilize_machine_info(info)
    assert moved == {"hz_actual": [2596140000, 0], "hz_actual_friendly": "2.5961 GHz"}
    assert info["cpu"] == {"brand_raw": "AMD EPYC", "count": 2}
    stable = info["bpcore_environment"]
    assert stable == machine()  # the same in every call: nothing volatile
    assert not {"date", "load_average", "load_average_at_start", "thread_pools",
                "torch_threads"} & set(stable)
    assert {"date", "load_average", "load_average_at_start", "thread_pools"} <= set(run_facts())
    env = environment([1.0, 1.0, 1.0])  # the two together, as the results files print them
    assert env["cores"] == stable["cores"] and env["load_average_at_start"] == [1.0, 1.0, 1.0]
    assert env["blas"]["numpy_build"] == stable["blas"]["numpy_build"]


def test_progress_line() -> None:
    assert progress_line(3, 12, 30.0, "seed float32 cpu batch 16 bpcore-numpy", "0.198 ms") == (
        "[ 3/12] seed float32 cpu batch 16 bpcore-numpy: 0.198 ms; 0:30 elapsed, "
        "about 1:30 left")
    assert progress_line(12, 12, 125.4, "x", "skipped") == "[12/12] x: skipped; 2:05 elapsed, done"
    assert progress_line(1, 3, 2.0, "x", "1 ms", left=61.0).endswith("about 1:01 left")


def test_time_left_skips_what_skipped_and_the_first_runs_imports() -> None:
    a, b, g = ("bpcore-numpy", "cpu"), ("bpcore-torch", "cpu"), ("bpcore-cupy", "gpu")
    # before any row ran twice: the median of the first runs (torch's import is one of them)
    assert time_left([a, b, g], {a: [0.2], b: [3.0]}, set()) == pytest.approx(3 * 3.0)
    assert time_left([a, b, g], {a: [0.2], b: [3.0], (a[0], "x"): [0.1]}, {g}) == \
        pytest.approx(2 * 0.2)
    # then the mean of the repeated runs; the skipped GPU row costs nothing
    assert time_left([a, b, g], {a: [0.2, 0.3], b: [3.0, 0.5]}, {g}) == pytest.approx(2 * 0.4)
    assert time_left([a], {}, set()) == 0.0


def test_quick_is_single_threaded_unless_asked() -> None:
    def threads(**kw: Any) -> int | None:
        return bench._threads(argparse.Namespace(**{"quick": False, "threads": None, **kw}))

    assert threads(quick=True) == bench.QUICK_THREADS == 1
    assert threads() is None  # the full run: the libraries' own defaults, as documented
    assert threads(quick=True, threads="auto") is None
    assert threads(quick=True, threads="3") == 3


def test_machine_info_differences_are_named() -> None:
    a = {"cpu": {"brand_raw": "A"}, "bpcore_environment": {"versions": {"numpy": "2.4"}}}
    b = {"cpu": {"brand_raw": "B"}, "bpcore_environment": {"versions": {"numpy": "2.4"}},
         "extra": 1}
    assert bench._differences(a, b) == ["cpu.brand_raw", "extra"]
    assert bench._differences(a, a) == []
