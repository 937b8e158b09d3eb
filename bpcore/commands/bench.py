"""``bpcore bench``: time bpcore's training step against its peers.

Runs the benchmark suite that ships inside the package
(:mod:`bpcore.benchtools`) under pytest + pytest-benchmark in a subprocess
(``python -m pytest <bpcore/benchtools/suite.py> -p bpcore.benchtools.plugin``
with a throw-away ``pytest.ini``, so neither the current directory's pytest
configuration nor a clone of the repository is needed), then prints one
table per workload, dtype, device and batch size from pytest-benchmark's
JSON: each row's samples/s and its time relative to the hand-written NumPy
step and to PyTorch eager measured in the same run. While it runs, a line per
row on stderr says how far it is and about how long is left; afterwards a
warning names what makes a ratio unreliable (a busy machine, rows whose times
spread), and the tables mark such rows. ``--compare OLD.json`` hands an
earlier run to pytest-benchmark's ``--benchmark-compare``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BpcoreError

HELP = "time bpcore's training step against hand-written NumPy, PyTorch and JAX"

#: What --quick runs (measured here: 40-59 s on the shared 2-core machine, load 4-6.5); a
#: workload added to the suite joins --quick only when listed here (and re-timed).
QUICK_WORKLOADS = ("seed", "wide", "deep")
QUICK_SIZES = "16,256"
QUICK_PEERS = "handwritten,torch-eager,jax-jit,floor"
#: Left out of --quick unless asked for: Inductor compiles for 5-20 s per table here, and
#: eager JAX compiles every operation on first use (13 of --quick's 46 s here; the
#: compiled JAX step, which stays in, is the one to look at).
QUICK_SKIP_BACKENDS = ("torch-compiled", "jax")
#: --quick's threads per library: one, so that other work on a shared machine cannot
#: stall a thread pool waiting for a descheduled thread (measured here on a busy 2-core
#: machine: the seed step at batch 16 took 20 ms with the libraries' own 2 threads, 0.18 ms
#: with one).
QUICK_THREADS = 1


class BenchError(BpcoreError, ValueError):
    """A bad ``bpcore bench`` option, or a run that produced nothing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bpcore bench``."""
    from ..benchtools.rows import BACKEND_ROWS, PEER_ROWS
    from ..benchtools.workloads import BATCH_SIZES, WORKLOADS

    parser.add_argument("--quick", action="store_true",
                        help="a short run (under a minute on 2 busy cores): workloads "
                        f"{','.join(QUICK_WORKLOADS)}, batch sizes {QUICK_SIZES}, float32, "
                        "one pass of fewer rounds, no torch.compile nor eager JAX, every "
                        f"library on {QUICK_THREADS} thread")
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
    parser.add_argument("--rows", metavar="LIST",
                        help="time exactly these rows, by their names in the table (e.g. "
                        "bpcore-numpy,numpy-handwritten); replaces --backends and --peers")
    parser.add_argument("--json", metavar="PATH",
                        help="write pytest-benchmark's JSON here (for pytest-benchmark compare "
                        "and --compare)")
    parser.add_argument("--compare", metavar="OLD_JSON",
                        help="compare with an earlier run's --json file through "
                        "pytest-benchmark's --benchmark-compare (its table follows bpcore's; "
                        "rows are matched by name, so use the same selection)")
    parser.add_argument("--compare-fail", metavar="EXPR", action="append",
                        help="with --compare: fail (exit status 1) when a row regressed, as "
                        "pytest-benchmark's --benchmark-compare-fail, e.g. min:25%% or "
                        "mean:0.001; may be repeated")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw samples/s against batch size, one panel per workload")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the tables and the machine description as markdown")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --json, --plot and --markdown replace existing files (never "
                        "the --compare file)")
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
                        "for JAX, or 'auto' for the libraries' own defaults (default: auto; "
                        f"--quick {QUICK_THREADS}). On a machine whose cores are busy with "
                        "other work, --threads 1 avoids the stalls of thread pools waiting for "
                        "a descheduled thread")
    parser.add_argument("--verbose", action="store_true",
                        help="show pytest's and pytest-benchmark's own output (in place of "
                        "the progress lines)")
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
    if not math.isfinite(value) or (value <= 0 and not (what == "--warmup" and value == 0)):
        raise BenchError(f"{what} must be positive, got {text!r}")
    return value


def _check_outputs(args: argparse.Namespace) -> None:
    """--json, --plot and --markdown are file paths bpcore may write: not a directory, in
    a directory that exists, distinct, never the --compare file, and not existing without
    --overwrite; checked before the run, so a long run never ends in a failed write or
    a lost file."""
    compare = Path(args.compare).expanduser().resolve() if args.compare else None
    seen: dict[Path, str] = {}
    for flag in ("--json", "--plot", "--markdown"):
        given = getattr(args, flag[2:])
        if not given:
            continue
        path = Path(given).expanduser()
        name = f"{flag} {given}"
        if path.is_dir():
            suffix = {"--json": ".json", "--plot": ".png"}.get(flag, ".md")
            raise BenchError(f"{name}: is a directory; give a file path, e.g. "
                             f"{path / ('run' + suffix)}")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise BenchError(f"{name}: the directory {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK):
            raise BenchError(f"{name}: cannot write in {parent}")
        resolved = path.resolve()
        if resolved == compare:
            raise BenchError(f"{name}: that is the --compare file; writing it would destroy "
                             "the run to compare with: choose another path")
        if resolved in seen:
            raise BenchError(f"{name}: {seen[resolved]} writes the same file; give each its own")
        seen[resolved] = flag
        if path.exists() and not getattr(args, "overwrite", False):
            raise BenchError(f"{name}: the file exists; pass --overwrite to replace it, or "
                             "choose another path")


def pytest_command(args: argparse.Namespace, workdir: Path, json_path: Path,
                   report_path: Path) -> list[str]:
    """The ``python -m pytest ...`` command line that runs the suite for ``args``."""
    from ..benchtools import suite
    from ..benchtools.plugin import DEVICES, parse_list, parse_sizes
    from ..benchtools.rows import BACKEND_ROWS, PEER_ROWS, ROWS
    from ..benchtools.workloads import BATCH_SIZES, DTYPES, WORKLOADS

    quick = args.quick
    default_workloads = [w for w in WORKLOADS if not quick or w in QUICK_WORKLOADS]
    workloads = parse_list(args.workloads or ",".join(default_workloads), tuple(WORKLOADS),
                           "--workloads")
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
    rows = parse_list(args.rows, tuple(ROWS), "--rows") if args.rows else None
    max_time = _number(args.max_time, 0.05 if quick else 0.5, "--max-time")
    min_rounds = int(_number(args.min_rounds, 3 if quick else 6, "--min-rounds", integer=True))
    passes = int(_number(args.passes, 1 if quick else 3, "--passes", integer=True))
    warmup = _number(args.warmup, 0.05 if quick else 0.2, "--warmup")
    compare: list[str] = []
    if args.compare:
        old = Path(args.compare)
        if not old.is_file():
            raise BenchError(f"--compare: no file {args.compare!r}; give the --json file of an "
                             "earlier bpcore bench run")
        compare.append(f"--benchmark-compare={old.resolve()}")
        if args.compare_fail:  # one option with every expression (a second would replace it)
            compare += ["--benchmark-compare-fail", *args.compare_fail]
    elif args.compare_fail:
        raise BenchError("--compare-fail needs --compare OLD_JSON (the run to compare with)")
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\nconsole_output_style = classic\n", encoding="utf-8")
    return [
        sys.executable, "-m", "pytest", str(Path(suite.__file__).resolve()),
        "-p", "bpcore.benchtools.plugin", "-p", "no:cacheprovider",
        "-c", str(ini), "--rootdir", str(workdir),
        "-v" if args.verbose else "-q", "--disable-warnings",
        "--benchmark-only", "--benchmark-group-by=group,param:size",
        f"--benchmark-json={json_path}",
        f"--benchmark-max-time={max_time / passes}",
        f"--benchmark-min-rounds={-(-min_rounds // passes)}",
        *([] if args.verbose or compare else ["--benchmark-quiet"]),
        *compare,
        *([] if args.verbose else ["--bp-progress"]),
        *([f"--bp-rows={','.join(rows)}"] if rows else []),
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
    _check_outputs(args)
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
        threads = _threads(args)
        if args.quick and not (args.peers and args.backends) and not args.rows:
            print("bpcore bench --quick: torch.compile and eager JAX left out (they compile "
                  "for seconds per table); run without --quick, or name them with --backends "
                  "and --peers, to include them")
        if args.quick and args.threads is None:
            print(f"bpcore bench --quick: every library on {QUICK_THREADS} thread "
                  "(--threads auto for their own defaults)")
        sys.stdout.flush()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if threads is not None:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(threads)
            xla = f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} " \
                f"intra_op_parallelism_threads={threads}"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla}".strip()
        # In the temporary folder, so that pytest-benchmark's storage (.benchmarks) is made
        # there and not in the user's folder; with this bpcore first on the path.
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name not in ("site-packages", "dist-packages"):  # a clone
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
        status, regressed = _run_suite(command, env, workdir, verbose=args.verbose)
        skipped = report.load(report_path).get("skipped", []) if report_path.exists() else []
        regressed = regressed and status == 1 and json_path.exists()
        if (status not in (0, 5) and not regressed) or not report_path.exists():
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
        if args.compare:
            print()
            print(_compare_note(Path(args.compare), data))
        sys.stdout.flush()
        for warning in report.warnings(data):
            print(f"bpcore bench: warning: {warning}", file=sys.stderr)
        sys.stderr.flush()
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
        if regressed:
            print("bpcore bench: a row regressed beyond --compare-fail (pytest-benchmark's "
                  "report above)", file=sys.stderr)
            return 1
    return 0


def _run_suite(command: list[str], env: dict[str, str], cwd: Path,
               verbose: bool) -> tuple[int, bool]:
    """Run pytest; pass its stderr through (the progress lines) and say whether
    pytest-benchmark found a regression (--compare-fail), whose traceback it prints
    only with ``verbose``."""
    regressed, in_traceback = False, False
    with subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True,
                          errors="replace", bufsize=1) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Performance has regressed" in line:
                regressed = True
            if regressed and line.startswith("Traceback (most recent call last)"):
                in_traceback = True
            if not in_traceback or verbose:
                sys.stderr.write(line)
                sys.stderr.flush()
            if in_traceback and line.startswith("pytest_benchmark.session.PerformanceRegression"):
                in_traceback = False
        status = proc.wait()
    return status, regressed


def _threads(args: argparse.Namespace) -> int | None:
    """The thread count to set for every library, or None for their own defaults."""
    text = args.threads
    if text is None:
        return QUICK_THREADS if args.quick else None
    if str(text).strip().lower() == "auto":
        return None
    return int(_number(text, 1, "--threads", integer=True))


def _compare_note(old_path: Path, data: dict[str, Any]) -> str:
    """Whether the run compared with was on the same machine and software, and how
    many rows the two have in common (pytest-benchmark matches them by name)."""
    from ..benchtools import report

    old = report.load(old_path)
    names = {b.get("fullname") for b in old.get("benchmarks", [])}
    common = sum(b.get("fullname") in names for b in data.get("benchmarks", []))
    lines = [f"compared with {old_path}: {common} of {len(data.get('benchmarks', []))} rows "
             "in both (pytest-benchmark's table above)"]
    differ = _differences(old.get("machine_info", {}), data.get("machine_info", {}))
    if differ:
        lines.append("  machine_info differs (another machine or other software, or a file "
                     "written before run-to-run facts left machine_info): "
                     + ", ".join(differ[:8]) + (" ..." if len(differ) > 8 else ""))
    else:
        lines.append("  same machine and software (machine_info identical)")
    return "\n".join(lines)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two machine_info documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]

