"""``bpcore bench``: time bpcore's training step against its peers.

Runs the benchmark suite that ships inside the package
(:mod:`bpcore.benchtools`) under pytest + pytest-benchmark in a subprocess
(``python -m pytest <bpcore/benchtools/suite.py> -p bpcore.benchtools.plugin``
with a throw-away ``pytest.ini``, so neither the current directory's pytest
configuration nor a clone of the repository is needed), then prints one
table per workload, dtype, device and batch size from pytest-benchmark's
JSON: each row's samples/s and its time relative to the hand-written NumPy
step and to PyTorch eager measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BpcoreError

HELP = "time bpcore's training step against hand-written NumPy, PyTorch and JAX"

QUICK_SIZES = "16,256"
QUICK_PEERS = "handwritten,torch-eager,jax-jit,floor"
#: Left out of --quick unless asked for: Inductor compiles for 5-20 s per table here.
QUICK_SKIP_BACKENDS = ("torch-compiled",)


class BenchError(BpcoreError, ValueError):
    """A bad ``bpcore bench`` option, or a run that produced nothing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bpcore bench``."""
    from ..benchtools.rows import BACKEND_ROWS, PEER_ROWS
    from ..benchtools.workloads import BATCH_SIZES, WORKLOADS

    parser.add_argument("--quick", action="store_true",
                        help=f"a short run (under a minute): batch sizes {QUICK_SIZES}, float32, "
                        "fewer rounds, no torch.compile")
    parser.add_argument("--backends", metavar="LIST",
                        help="bpcore backends to time, comma-separated (default: all of "
                        f"{','.join(BACKEND_ROWS)}; missing ones are reported as skipped)")
    parser.add_argument("--peers", metavar="LIST",
                        help=f"peers to time: {','.join(PEER_ROWS)} or 'none' (default: all)")
    parser.add_argument("--workloads", metavar="LIST",
                        help=f"workloads: {','.join(WORKLOADS)} (default: all)")
    parser.add_argument("--sizes", metavar="LIST",
                        help="batch sizes, comma-separated (default: "
                        f"{','.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--dtype", metavar="LIST",
                        help="float32, float64 or both, comma-separated (default: both; "
                        "float64 on the CPU only)")
    parser.add_argument("--device", metavar="LIST",
                        help="cpu, gpu or both (default: both; gpu rows skip without a GPU)")
    parser.add_argument("--json", metavar="PATH",
                        help="write pytest-benchmark's JSON here (for pytest-benchmark compare)")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw samples/s against batch size, one panel per workload")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the tables and the machine description as markdown")
    parser.add_argument("--max-time", metavar="SECONDS",
                        help="time spent timing each row, over all its passes "
                        "(default 0.5; --quick 0.05)")
    parser.add_argument("--min-rounds", metavar="N",
                        help="least number of timed steps per row, over all its passes "
                        "(default 6; --quick 3)")
    parser.add_argument("--passes", metavar="N",
                        help="time the rows of each table in N interleaved passes (A B C A B C; "
                        "a row's time is its best) so that all rows see the same spells of "
                        "a shared machine (default 3; --quick 1)")
    parser.add_argument("--warmup", metavar="SECONDS",
                        help="warm-up right before each row is timed (default 0.2; --quick 0.05)")
    parser.add_argument("--threads", metavar="N",
                        help="threads of every library in the run: OMP_NUM_THREADS, "
                        "OPENBLAS_NUM_THREADS, MKL_NUM_THREADS (torch follows OMP) and XLA_FLAGS "
                        "for JAX (default: the libraries' own defaults). On a machine whose "
                        "cores are busy with other work, --threads 1 avoids the stalls of "
                        "thread pools waiting for a descheduled thread")
    parser.add_argument("--verbose", action="store_true",
                        help="show pytest's and pytest-benchmark's own output")
    _one_line_errors(parser)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make the subcommand's parse errors a single line, unknown options included
    (which argparse would otherwise hand up to the top-level parser's usage)."""

    def error(message: str) -> None:  # argparse's error() never returns
        print(f"bpcore bench: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parse_known_args = parser.parse_known_args

    def strict_parse(args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = parse_known_args(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}; see bpcore bench --help")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign,assignment]
    parser.parse_known_args = strict_parse  # type: ignore[method-assign]


def _number(text: str | None, default: float, what: str, integer: bool = False) -> float:
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise BenchError(f"{what} must be {kind}, got {text!r}") from None
    if value <= 0 and not (what == "--warmup" and value == 0):
        raise BenchError(f"{what} must be positive, got {text!r}")
    return value


def pytest_command(args: argparse.Namespace, workdir: Path, json_path: Path,
                   report_path: Path) -> list[str]:
    """The ``python -m pytest ...`` command line that runs the suite for ``args``."""
    from ..benchtools import suite
    from ..benchtools.plugin import DEVICES, parse_list, parse_sizes
    from ..benchtools.rows import BACKEND_ROWS, PEER_ROWS
    from ..benchtools.workloads import BATCH_SIZES, DTYPES, WORKLOADS

    quick = args.quick
    workloads = parse_list(args.workloads or ",".join(WORKLOADS), tuple(WORKLOADS), "--workloads")
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if quick else ",".join(map(str, BATCH_SIZES))))
    dtype_text = args.dtype or ("float32" if quick else ",".join(DTYPES))
    dtypes = list(DTYPES) if dtype_text == "all" else parse_list(dtype_text, DTYPES, "--dtype")
    device_text = args.device or ",".join(DEVICES)
    devices = (list(DEVICES) if device_text == "all"
               else parse_list(device_text, DEVICES, "--device"))
    default_backends = [b for b in BACKEND_ROWS if not (quick and b in QUICK_SKIP_BACKENDS)]
    backends = parse_list(args.backends or ",".join(default_backends), BACKEND_ROWS, "--backends")
    peers_text = args.peers or (QUICK_PEERS if quick else ",".join(PEER_ROWS))
    peers = "none" if peers_text.strip() == "none" else \
        ",".join(parse_list(peers_text, PEER_ROWS, "--peers"))
    max_time = _number(args.max_time, 0.05 if quick else 0.5, "--max-time")
    min_rounds = int(_number(args.min_rounds, 3 if quick else 6, "--min-rounds", integer=True))
    passes = int(_number(args.passes, 1 if quick else 3, "--passes", integer=True))
    warmup = _number(args.warmup, 0.05 if quick else 0.2, "--warmup")
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    return [
        sys.executable, "-m", "pytest", str(Path(suite.__file__).resolve()),
        "-p", "bpcore.benchtools.plugin", "-p", "no:cacheprovider",
        "-c", str(ini), "--rootdir", str(workdir),
        "-v" if args.verbose else "-q", "--disable-warnings",
        "--benchmark-only", "--benchmark-group-by=group,param:size",
        f"--benchmark-json={json_path}",
        f"--benchmark-max-time={max_time / passes}",
        f"--benchmark-min-rounds={-(-min_rounds // passes)}",
        *([] if args.verbose else ["--benchmark-quiet"]),
        f"--bp-workloads={','.join(workloads)}",
        f"--bp-sizes={','.join(map(str, sizes))}",
        f"--bp-dtypes={','.join(dtypes)}",
        f"--bp-devices={','.join(devices)}",
        f"--bp-backends={','.join(backends)}",
        f"--bp-peers={peers}",
        f"--bp-warmup={warmup}",
        f"--bp-passes={passes}",
        f"--bp-report={report_path}",
    ]


def run(args: argparse.Namespace) -> int:
    """Run the suite, print the table, write the JSON / plot / markdown asked for."""
    for module, package in (("pytest", "pytest"), ("pytest_benchmark", "pytest-benchmark")):
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"{package} is not installed; install the benchmark extras with "
                             "pip install \"bpcore[bench]\"")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("--plot needs matplotlib; pip install matplotlib")
    from ..benchtools import report

    with tempfile.TemporaryDirectory(prefix="bpcore-bench-") as tmp:
        workdir = Path(tmp)
        json_path = Path(args.json).resolve() if args.json else workdir / "bench.json"
        report_path = workdir / "report.json"
        if args.json:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            if json_path.exists():
                json_path.unlink()  # so a failed run cannot leave an old file looking new
        command = pytest_command(args, workdir, json_path, report_path)
        if args.quick and not args.peers:
            print("bpcore bench --quick: torch.compile left out (compiling takes minutes); "
                  "run without --quick or with --peers to include it")
        sys.stdout.flush()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if args.threads is not None:
            threads = str(int(_number(args.threads, 1, "--threads", integer=True)))
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = threads
            xla = f"--xla_cpu_multi_thread_eigen={'false' if threads == '1' else 'true'} " \
                f"intra_op_parallelism_threads={threads}"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla}".strip()
        status = subprocess.call(command, env=env)
        skipped = report.load(report_path).get("skipped", []) if report_path.exists() else []
        if status not in (0, 5) or not report_path.exists():
            raise BenchError(f"the benchmark run failed (pytest exit status {status}); "
                             "rerun with --verbose to see why")
        data = report.load(json_path) if json_path.exists() else {"benchmarks": []}
        env = data.get("bpcore", {}).get("environment", {})
        print()
        print(report.format_table(data))
        if env:
            print(f"\nmachine: {env.get('cpu')}, {env.get('cores')} cores; load average "
                  f"(1, 5, 15 min) at the start {env.get('load_average_at_start')}, "
                  f"at the end {env.get('load_average')}")
        if skipped:
            print()
            print(report.format_skipped(skipped))
        if args.plot:
            if not data["benchmarks"]:
                raise BenchError("--plot: no row ran, nothing to plot")
            report.plot(data, args.plot)
            print(f"\nplot written to {args.plot}")
        if args.markdown:
            Path(args.markdown).write_text(report.markdown(data, skipped), encoding="utf-8")
            print(f"markdown written to {args.markdown}")
        if args.json:
            print(f"pytest-benchmark JSON written to {json_path}")
        if not data["benchmarks"]:
            raise BenchError("no row ran (every one was skipped; see above)")
    return 0

