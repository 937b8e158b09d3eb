"""The pytest plugin of bpcore's benchmark suite (on top of pytest-benchmark).

Load it with ``-p bpcore.benchtools.plugin`` (``bpcore bench`` does) or from
a ``conftest.py`` (the repository's ``benchmarks/conftest.py`` does). It adds
the ``--bp-*`` options that choose what runs, parametrizes the suite's test
over (workload, dtype, device, row, size) with one pytest-benchmark
``group`` per workload, dtype and device kind, so ``--benchmark-group-by
group,param:size`` (the default it sets) puts every backend and peer for one
workload and size in one table. It records the rows that were skipped, with
their reasons, and the machine in the JSON: what identifies it (CPU, cores,
versions, BLAS build) in pytest-benchmark's ``machine_info``, which
``--benchmark-compare`` checks, and what changes from run to run (date, load,
thread pools, the CPU's momentary clock) under the top-level ``bpcore`` key,
which it does not. With ``--bp-progress`` it writes one line per row to
stderr (rows done of all, elapsed time, an estimate of the time left) instead
of pytest's dots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from .rows import BACKEND_ROWS, FLOOR_OF, PEER_ROWS, ROWS
from .workloads import BATCH_SIZES, DTYPES, WORKLOADS

__all__ = [
    "parse_list",
    "progress_line",
    "pytest_addoption",
    "pytest_benchmark_update_json",
    "pytest_benchmark_update_machine_info",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "record_result",
    "stabilize_machine_info",
    "suite_machine_info",
    "time_left",
]

DEVICES = ("cpu", "gpu")


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """Split a comma-separated option, refusing names not in ``allowed``."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError(f"{what}: give at least one of {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise ValueError(f"{what}: unknown {item!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_sizes(text: str) -> list[int]:
    """Batch sizes from ``"16,64"``; each must be a positive integer."""
    sizes = []
    for s in str(text).split(","):
        s = s.strip()
        if not s:
            continue
        if not s.isdigit() or int(s) < 1:
            raise ValueError(
                f"--sizes: {s!r} is not a positive integer batch size, e.g. --sizes 16,256"
            )
        sizes.append(int(s))
    if not sizes:
        raise ValueError("--sizes: give at least one batch size, e.g. --sizes 16,256")
    return sorted(set(sizes))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bpcore", "bpcore benchmark suite")
    group.addoption("--bp-workloads", default=",".join(WORKLOADS),
                    help="comma-separated workloads: " + ", ".join(WORKLOADS))
    group.addoption("--bp-sizes", default=",".join(map(str, BATCH_SIZES)),
                    help="comma-separated batch sizes")
    group.addoption("--bp-dtypes", default=",".join(DTYPES), help="float32,float64")
    group.addoption("--bp-devices", default=",".join(DEVICES), help="cpu,gpu")
    group.addoption("--bp-backends", default=",".join(BACKEND_ROWS),
                    help="bpcore backends: " + ", ".join(BACKEND_ROWS))
    group.addoption("--bp-peers", default=",".join(PEER_ROWS),
                    help="peers: " + ", ".join(PEER_ROWS) + " (or 'none')")
    group.addoption("--bp-warmup", type=float, default=0.2,
                    help="seconds of warm-up run right before each row is timed")
    group.addoption("--bp-passes", type=int, default=3,
                    help="time every row of a table in this many interleaved passes "
                    "(A B C A B C ...); a row's time is its best over the passes")
    group.addoption("--bp-rows", default=None,
                    help="time only these rows, comma-separated names as in the table "
                    "(e.g. bpcore-numpy,numpy-handwritten), instead of --bp-backends/--bp-peers")
    group.addoption("--bp-report", default=None,
                    help="write the skipped rows and the environment to this JSON file")
    group.addoption("--bp-progress", action="store_true", default=False,
                    help="one line per row on stderr (done/total, elapsed, time left) "
                    "instead of pytest's dots")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # One table per workload, dtype, device and batch size (before pytest-benchmark reads it).
    if getattr(config.option, "benchmark_group_by", None) == "group":
        config.option.benchmark_group_by = "group,param:size"
    # float64 rows on JAX need 64-bit mode, set before any JAX array exists.
    if "float64" in str(config.getoption("--bp-dtypes")) and importlib.util.find_spec("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
    from .environment import load_average

    config.stash[_RUN] = _Run(load_average())
    if config.getoption("--bp-progress", False) and not config.pluginmanager.has_plugin(
            "bpcore-progress"):
        config.pluginmanager.register(_Progress(config), "bpcore-progress")


def _selection(config: pytest.Config) -> dict[str, Any]:
    peers_text = str(config.getoption("--bp-peers"))
    peers = [] if peers_text.strip() == "none" else parse_list(peers_text, PEER_ROWS, "--peers")
    rows_text = config.getoption("--bp-rows", None)
    return {
        "workloads": parse_list(
            config.getoption("--bp-workloads"), tuple(WORKLOADS), "--workloads"
        ),
        "sizes": parse_sizes(config.getoption("--bp-sizes")),
        "dtypes": parse_list(config.getoption("--bp-dtypes"), DTYPES, "--dtype"),
        "devices": parse_list(config.getoption("--bp-devices"), DEVICES, "--device"),
        "backends": parse_list(config.getoption("--bp-backends"), BACKEND_ROWS, "--backends"),
        "peers": peers,
        "rows": parse_list(rows_text, tuple(ROWS), "--rows") if rows_text else None,
        "passes": int(config.getoption("--bp-passes")),
    }


def cases(selection: dict[str, Any]) -> list[tuple[str, str, str, str, int, int]]:
    """``(workload, dtype, device, row, size, pass)`` in run order.

    Per table (workload, dtype, device, size) the rows are timed in
    ``passes`` interleaved passes, A B C A B C ..., each pass with the GEMM
    floors first. On a shared machine the speed available to one process
    drifts over seconds (other work on the sibling core, frequency), so rows
    timed one after the other in long blocks would compare different
    moments; interleaved, every row sees the whole span of the table.
    ``selection["rows"]``, when given, names the rows exactly and replaces
    ``backends`` and ``peers``.
    """
    passes = int(selection.get("passes", 1))
    if passes < 1:
        raise ValueError(f"--passes must be at least 1, got {passes}")
    if selection.get("rows"):
        named = set(selection["rows"])
        rows = [r for r in ROWS.values() if r.name in named]
    else:
        wanted = set(selection["backends"]) | set(selection["peers"])
        rows = [r for r in ROWS.values() if r.select in wanted]
    rows.sort(key=lambda r: r.kind != "floor")
    out = []
    for workload in selection["workloads"]:
        for dtype in selection["dtypes"]:
            for device in selection["devices"]:
                if device == "gpu" and dtype == "float64":
                    continue  # float64 is measured on the CPU only
                for size in selection["sizes"]:
                    for p in range(passes):
                        for row in rows:
                            if device in row.devices:
                                out.append((workload, dtype, device, row.name, size, p))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = ("workload", "dtype", "device", "row", "size", "bench_pass")
    if not all(n in metafunc.fixturenames for n in names):
        return
    try:
        selected = cases(_selection(metafunc.config))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize(
        ",".join(names), selected,
        ids=[f"{w}-{d}-{dev}-{r}-{s}-p{p}" for w, d, dev, r, s, p in selected],
    )


@dataclass
class _Run:
    """What the plugin keeps for one benchmark session."""

    load_at_start: Any
    floors: dict[tuple[Any, ...], float] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    runners: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: what changes from run to run in pytest-benchmark's machine_info, moved out of it
    volatile_cpu: dict[str, Any] = field(default_factory=dict)
    #: each row's time and CPU wait, by node id (for the progress lines)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


_RUN = pytest.StashKey[_Run]()


def _load_at_start(config: pytest.Config) -> Any:
    run = config.stash.get(_RUN, None)
    return None if run is None else run.load_at_start


def runner_cache(config: pytest.Config) -> dict[tuple[Any, ...], Any]:
    """Built rows (or the reason they are unavailable), kept from a row's first
    pass to its last so that it is built, compiled and placed only once."""
    return config.stash[_RUN].runners


def record_floor(config: pytest.Config, key: tuple[Any, ...], seconds: float) -> None:
    """Remember a GEMM floor's time (of the current pass) for the rows of its table."""
    config.stash[_RUN].floors[key] = seconds


def floor_time(config: pytest.Config, workload: str, dtype: str, device: str, size: int,
               library: str) -> tuple[str | None, float | None]:
    """The floor a row on ``library`` is compared with, and its time (if measured)."""
    floors = config.stash[_RUN].floors
    name = FLOOR_OF.get(library)
    if device == "gpu" and library in ("numpy", "jax", "array_api_strict"):
        name = "gemm-floor-torch" if (workload, dtype, device, size, "gemm-floor-torch") in floors \
            else "gemm-floor-cupy"
    if name is None:
        return None, None
    seconds = floors.get((workload, dtype, device, size, name))
    if seconds is None and device == "cpu":  # the numpy floor stands in for a missing one
        name = "gemm-floor-numpy"
        seconds = floors.get((workload, dtype, device, size, name))
    return name, seconds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if report.skipped and callspec is not None and "row" in callspec.params:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        entry = {k: callspec.params[k] for k in ("workload", "dtype", "device", "row", "size")}
        entry["reason"] = reason
        skipped = item.config.stash[_RUN].skipped
        if entry not in skipped:
            skipped.append(entry)


def record_result(config: pytest.Config, nodeid: str, result: dict[str, Any]) -> None:
    """What the progress line of the row ``nodeid`` shows (its time, its CPU wait)."""
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.results[nodeid] = result


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(done: int, total: int, elapsed: float, what: str, result: str,
                  left: float | None = None) -> str:
    """``[12/78] <what>: <result>; 0:14 elapsed, about 0:52 left``; ``left`` is the
    estimate of the time left (by default, the mean time of a row so far times the rows
    left)."""
    width = len(str(total))
    if left is None:
        left = elapsed / done * (total - done) if done else 0.0
    tail = "done" if done >= total else f"about {_clock(left)} left"
    return f"[{done:>{width}}/{total}] {what}: {result}; {_clock(elapsed)} elapsed, {tail}"


def time_left(rows: list[tuple[str, str]], seen: dict[tuple[str, str], list[float]],
              skipped: set[tuple[str, str]]) -> float:
    """An estimate of the seconds the ``rows`` still to run will take.

    A ``(row, device)`` that was skipped before costs nothing (no GPU, no
    library). The others cost the mean time of a row so far, leaving out each
    row's first run (where its library is imported and its step compiled, once
    per run), or, before any row ran twice, the median time of a row.
    """
    repeats = [t for times in seen.values() for t in times[1:]]
    firsts = [times[0] for times in seen.values() if times]
    if repeats:
        each = sum(repeats) / len(repeats)
    elif firsts:
        each = sorted(firsts)[len(firsts) // 2]
    else:
        return 0.0
    return each * sum(1 for key in rows if key not in skipped)


class _Progress:
    """``--bp-progress``: a line per row on stderr in place of pytest's dots."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.params: dict[str, dict[str, Any]] = {}
        self.order: list[tuple[str, str]] = []  # (row, device) of every row, in run order
        self.seen: dict[tuple[str, str], list[float]] = {}  # seconds of each timed run
        self.skipped: set[tuple[str, str]] = set()
        self.done = 0
        self.started = self.last = time.perf_counter()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "row" in callspec.params:
                self.params[item.nodeid] = dict(callspec.params)
                self.order.append((callspec.params["row"], callspec.params["device"]))
        self.started = self.last = time.perf_counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        params = self.params.get(report.nodeid)
        finished = report.when == "call" or (report.when == "setup" and not report.passed)
        if params is None or not finished:
            return
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.done += 1
        key = (params["row"], params["device"])
        passes = int(self.config.getoption("--bp-passes"))
        what = (f"{params['workload']} {params['dtype']} {params['device']} "
                f"batch {params['size']} {params['row']}")
        if passes > 1:
            what += f" (pass {int(params['bench_pass']) + 1}/{passes})"
        if report.skipped:
            result = "skipped"
            self.skipped.add(key)
        elif report.failed:
            result = "FAILED"
        else:
            self.seen.setdefault(key, []).append(seconds)
            r = self.config.stash[_RUN].results.get(report.nodeid, {})
            result = "timed" if r.get("seconds") is None else f"{r['seconds'] * 1e3:.3f} ms"
            wait = r.get("cpu_wait_fraction")
            if wait is not None and wait >= 0.05:
                result += f" (waited for a CPU {100 * wait:.0f}% of the time)"
        total = max(len(self.params), self.done)
        left = time_left(self.order[self.done:], self.seen, self.skipped)
        print(progress_line(self.done, total, now - self.started, what, result, left),
              file=sys.stderr, flush=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        # the progress lines stand for the dots and s's; failures and errors still show
        if report.nodeid not in self.params or report.failed:
            return None
        if report.when == "call" and report.passed:
            return "passed", "", ""
        if report.skipped:
            return "skipped", "", ""
        return None


def _report(config: pytest.Config) -> dict[str, Any]:
    from .environment import environment

    env = environment(_load_at_start(config))
    run = config.stash[_RUN]
    if run.volatile_cpu:
        env["cpu_clock"] = dict(run.volatile_cpu)
    return {
        "skipped": list(run.skipped),
        "environment": env,
        "statistic": "min",
    }


def stabilize_machine_info(machine_info: dict[str, Any]) -> dict[str, Any]:
    """Make pytest-benchmark's ``machine_info`` the same in every run on one machine.

    Removes what changes between runs (the CPU's momentary clock) and returns
    it; adds :func:`~bpcore.benchtools.environment.machine` as
    ``bpcore_environment``. ``--benchmark-compare`` warns when machine_info
    differs (an error under ``filterwarnings = error``), so nothing volatile
    may stay in it.
    """
    from .environment import VOLATILE_CPU_KEYS, machine

    moved: dict[str, Any] = {}
    cpu = machine_info.get("cpu")
    if isinstance(cpu, dict):
        for key in VOLATILE_CPU_KEYS:
            if key in cpu:
                moved[key] = cpu.pop(key)
    machine_info["bpcore_environment"] = machine()
    return moved


def suite_machine_info() -> tuple[dict[str, Any], dict[str, Any]]:
    """pytest-benchmark's ``machine_info`` as a run of the suite records it (for the
    scripts that write the same JSON layout), and the volatile facts taken out of it."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    info: dict[str, Any] = pytest_benchmark_generate_machine_info()
    moved = stabilize_machine_info(info)
    return info, moved


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    moved = stabilize_machine_info(machine_info)
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.volatile_cpu.update(moved)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]
) -> None:
    output_json["bpcore"] = _report(config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--bp-report", None)
    if path and _RUN in session.config.stash:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_report(session.config), f, indent=1)
