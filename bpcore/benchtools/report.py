"""Tables, markdown and plots from pytest-benchmark's JSON of the suite.

Every number is computed from one run's JSON: a row's ratio to the
hand-written NumPy step and to PyTorch eager compares times measured in that
same run, in the same table (same workload, dtype, device and batch size).
A row's time is the minimum over its rounds and over the table's interleaved
passes, the least disturbed estimate on a shared machine; its fraction of the
GEMM floor is the floor's time (same minimum) divided by the row's.

A ratio is only as good as the two times in it. :func:`noise` marks a row
whose time is unreliable (its rounds spread widely, its passes disagree, the
thread running it waited for a CPU, it beats its own GEMM floor, or it is absurdly far
from the reference on its own library), and :func:`warnings` adds the
machine's load; the tables show the marks in their ``noise`` column.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Entry", "NoiseLimits", "entries", "format_skipped", "format_table", "load",
    "load_warnings", "markdown", "noise", "pass_entries", "plot", "stats_layout", "tables",
    "warnings",
]

HANDWRITTEN = "numpy-handwritten"
TORCH_EAGER = "torch-eager"


class NoiseLimits:
    """Beyond these, a row's time, and every ratio it is part of, is marked unreliable."""

    #: IQR / median of the rounds of the row's best pass (a quiet machine: a few %)
    spread = 0.25
    #: slowest pass's minimum / fastest pass's minimum
    passes = 1.5
    #: share of the timed span the thread running the step was runnable but waiting for
    #: a CPU (other work on the machine)
    cpu_wait = 0.25
    #: GEMM floor's time / the row's, for a row on the floor's own library: the floor is
    #: only the step's matrix products, so such a row cannot be faster (beyond rounding
    #: and cache effects). (JAX rows are measured against the NumPy floor and may beat
    #: it: XLA has its own GEMM.)
    floor = 1.10
    #: a row's time / its own library's reference step (the hand-written NumPy step for
    #: NumPy rows, PyTorch eager for torch rows), either way: the same arithmetic on the
    #: same library is not 10x apart
    same_library = 10.0
    #: other work's load average per core, at the start or the end of the run
    load_per_core = 0.5


#: The reference step of each library (same-library ratios).
_REFERENCE = {"numpy": (HANDWRITTEN, "vs_handwritten"), "torch": (TORCH_EAGER, "vs_torch_eager")}


class Entry(dict[str, Any]):
    """One benchmarked row: ``row``, ``workload``, ``dtype``, ``device``, ``batch``,
    ``seconds`` and the ``extra_info`` fields."""


def load(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON file."""
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def pass_entries(data: dict[str, Any]) -> list[Entry]:
    """Every benchmark of a pytest-benchmark JSON document: one per row and pass."""
    out = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        params = bench.get("params", {})
        if "row" not in info and "row" not in params:
            continue
        e = Entry(info)
        e.update({k: params.get(k, info.get(k)) for k in ("workload", "dtype", "device", "row")})
        e["batch"] = int(params.get("size", info.get("batch", 0)))
        stats = bench["stats"]
        e["seconds"] = float(stats["min"])
        e["median_seconds"] = float(stats["median"])
        e["rounds"] = int(stats["rounds"])
        e["pass_rounds"] = e["rounds"]
        e["iqr_seconds"] = None if stats.get("iqr") is None else float(stats["iqr"])
        out.append(e)
    return out


def entries(data: dict[str, Any]) -> list[Entry]:
    """One entry per row of each table: the best of its passes.

    ``seconds`` is the minimum over all rounds of all passes, ``rounds`` their
    total, ``passes`` how many, ``pass_seconds`` each pass's minimum and
    ``cpu_wait_fraction`` the largest of the passes'; ``median_seconds``,
    ``iqr_seconds`` and ``pass_rounds`` are the best pass's; ``samples_per_s``, ``gflop_s`` and
    ``gemm_floor_fraction`` are recomputed from ``seconds``.
    """
    best: dict[tuple[Any, ...], Entry] = {}
    for e in pass_entries(data):
        key = (e["workload"], e["dtype"], e["device"], e["batch"], e["row"])
        old = best.get(key)
        if old is None:
            e["passes"] = 1
            e["pass_seconds"] = [e["seconds"]]
            best[key] = e
            continue
        keep = e if e["seconds"] < old["seconds"] else old
        keep["passes"] = old["passes"] + 1
        keep["rounds"] = e["rounds"] + old["rounds"]
        keep["pass_seconds"] = [*old["pass_seconds"], e["seconds"]]
        waits = [x for x in (e.get("cpu_wait_fraction"), old.get("cpu_wait_fraction"))
                 if x is not None]
        keep["cpu_wait_fraction"] = max(waits) if waits else None
        best[key] = keep
    for e in best.values():
        e["samples_per_s"] = e["batch"] / e["seconds"]
        if e.get("step_flops"):
            e["gflop_s"] = e["step_flops"] / e["seconds"] / 1e9
        floor = best.get((e["workload"], e["dtype"], e["device"], e["batch"], e.get("gemm_floor")))
        e["gemm_floor_fraction"] = None if floor is None else floor["seconds"] / e["seconds"]
    return list(best.values())


def tables(data: dict[str, Any]) -> dict[tuple[str, str, str, int], list[Entry]]:
    """Rows grouped per (workload, dtype, device, batch), fastest first, each with
    ``vs_handwritten`` and ``vs_torch_eager`` time ratios (< 1 is faster)."""
    groups: dict[tuple[str, str, str, int], list[Entry]] = defaultdict(list)
    for e in entries(data):
        groups[(e["workload"], e["dtype"], e["device"], e["batch"])].append(e)
    order = {"seed": 0, "wide": 1, "deep": 2}
    result = {}
    for key in sorted(groups, key=lambda k: (order.get(k[0], 9), k[0], k[1], k[2], k[3])):
        rows = sorted(groups[key], key=lambda e: e["seconds"])
        ref = {e["row"]: e["seconds"] for e in rows}
        for e in rows:
            for name, field in ((HANDWRITTEN, "vs_handwritten"), (TORCH_EAGER, "vs_torch_eager")):
                e[field] = e["seconds"] / ref[name] if name in ref else None
        for e in rows:
            e["noise"] = noise(e)
        result[key] = rows
    return result


def noise(e: Entry, limits: type[NoiseLimits] = NoiseLimits) -> list[str]:
    """Why the time of the row ``e`` (an entry of :func:`tables`) is unreliable, if it is.

    Each reason names what was seen: ``"spread 41%"`` (IQR over median of its
    best pass), ``"passes 1.8x"`` (its passes' minima that far apart),
    ``"cpu wait 23%"`` (the thread running it waited for a CPU that share of
    the timed span), ``"beats floor 203x"`` (the GEMM floor of its own library took that
    multiple of the whole step: one of the two was disturbed), ``"172x hand"`` /
    ``"0.05x torch"`` (that far from its own library's reference step). An
    empty list when none applies.
    """
    reasons = []
    median, iqr = e.get("median_seconds"), e.get("iqr_seconds")
    rounds = e.get("pass_rounds", e.get("rounds", 0))
    if median and iqr is not None and rounds >= 3 and iqr / median > limits.spread:
        reasons.append(f"spread {100 * iqr / median:.0f}%")
    passes = e.get("pass_seconds") or []
    if len(passes) > 1 and min(passes) > 0 and max(passes) / min(passes) > limits.passes:
        reasons.append(f"passes {max(passes) / min(passes):.1f}x")
    wait = e.get("cpu_wait_fraction")
    if wait is not None and wait > limits.cpu_wait:
        reasons.append(f"cpu wait {100 * wait:.0f}%")
    floor = e.get("gemm_floor_fraction")
    same_floor = str(e.get("gemm_floor", "")).removeprefix("gemm-floor-") == e.get("backend")
    if e.get("kind") != "floor" and same_floor and floor is not None and floor > limits.floor:
        reasons.append(f"beats floor {floor:.0f}x" if floor >= 2 else f"beats floor {floor:.2f}x")
    reference = _REFERENCE.get(str(e.get("backend")))
    if reference is not None and e.get("kind") != "floor" and e["row"] != reference[0]:
        ratio = e.get(reference[1])
        if ratio is not None and not 1 / limits.same_library <= ratio <= limits.same_library:
            short = "hand" if reference[0] == HANDWRITTEN else "torch"
            reasons.append(f"{ratio:.0f}x {short}" if ratio >= 2 else f"{ratio:.2f}x {short}")
    return reasons


def load_warnings(env: dict[str, Any], limits: type[NoiseLimits] = NoiseLimits) -> list[str]:
    """A warning when other work loaded the machine at the start or the end of the run.

    The 1-minute load average at the start counts other work only; at the end
    it also counts the benchmark's own threads (``threads_requested``, else
    one per core), which are taken off. Warns when what is left exceeds
    ``limits.load_per_core`` per core.
    """
    cores = env.get("cores") or 1
    start, end = env.get("load_average_at_start"), env.get("load_average")
    try:
        own = min(int(env.get("threads_requested") or cores), cores)
    except (TypeError, ValueError):
        own = cores
    out = []
    for when, load, mine in (("start", start, 0), ("end", end, own)):
        if not load:
            continue
        other = float(load[0]) - mine
        if other > limits.load_per_core * cores:
            out.append(
                f"the machine was busy at the {when} of the run: 1-minute load average "
                f"{float(load[0]):.2f} on {cores} cores"
                + (f" (about {other:.1f} beyond this run's {mine} thread"
                   f"{'s' if mine != 1 else ''})" if mine else "")
                + "; rows timed while other work ran may have stalled, so their times and "
                "ratios are unreliable. Rerun on a quiet machine (with --threads 1 and more "
                "--passes if it stays shared)"
            )
    return out


def warnings(data: dict[str, Any]) -> list[str]:
    """Everything that makes this run's ratios unreliable: the machine's load, and how
    many rows :func:`noise` marks (each is marked in the tables)."""
    env = data.get("bpcore", {}).get("environment") or \
        data.get("machine_info", {}).get("bpcore_environment", {})
    out = load_warnings(env)
    rows = [e for table in tables(data).values() for e in table]
    marked = [e for e in rows if e.get("noise")]
    if marked:
        shown = ", ".join(f"{e['row']} ({e['workload']} {e['dtype']} {e['device']} "
                          f"batch {e['batch']}: {', '.join(e['noise'])})" for e in marked[:3])
        more = f" and {len(marked) - 3} more" if len(marked) > 3 else ""
        out.append(f"{len(marked)} of {len(rows)} rows have unreliable times, and so has any "
                   f"ratio they are part of: {shown}{more}")
    return out


def stats_layout(times: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` of one benchmark from its round times in seconds
    (``min``, ``max``, ``mean``, ``stddev``, ``median``, ``iqr``, ``q1``, ``q3``,
    ``rounds``, ``iterations``, ``ops``, ...), as ``pytest-benchmark compare`` reads
    them; computed by pytest-benchmark's own :class:`~pytest_benchmark.stats.Stats`."""
    if not times:
        raise ValueError("stats_layout: no times")
    from pytest_benchmark.stats import Stats

    st = Stats()
    for t in times:
        st.update(float(t))
    out: dict[str, Any] = st.as_dict()
    out["iterations"] = 1
    out["data"] = [float(t) for t in times]
    return out


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _fmt_fraction(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.0f}%"


def _mark() -> str:
    """The noise column's mark: a warning sign where the output can show it."""
    try:
        "\u26a0".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "!"
    return "\u26a0"


def _fmt_noise(e: Entry, mark: str) -> str:
    reasons = e.get("noise") or []
    return f"{mark} " + ", ".join(reasons) if reasons else "-"


def _cells(e: Entry, mark: str = "\u26a0") -> list[str]:
    return [
        e["row"],
        f"{e['seconds'] * 1e3:.3f}",
        _fmt_rate(e["batch"] / e["seconds"]),
        f"{e.get('gflop_s', 0.0):.1f}",
        _fmt_ratio(e.get("vs_handwritten")),
        _fmt_ratio(e.get("vs_torch_eager")),
        _fmt_fraction(e.get("gemm_floor_fraction")),
        "-" if e.get("compile_s") is None else f"{float(e['compile_s']):.2f}",
        _fmt_noise(e, mark),
    ]


HEADER = ["row", "ms/step", "samples/s", "GFLOP/s", "vs hand", "vs torch", "floor", "compile s",
          "noise"]

_L = NoiseLimits
NOISE_NOTE = (
    "'noise' marks a row whose time is unreliable, and with it every ratio it is part of: "
    f"its rounds spread (IQR/median > {_L.spread:.0%}), its passes disagree (> {_L.passes}x), "
    f"its thread waited for a CPU (> {_L.cpu_wait:.0%} of the time), it beats its GEMM floor, "
    f"or it is over {_L.same_library:.0f}x from its own library's reference step; rerun such "
    "rows on a quiet machine."
)


def format_table(data: dict[str, Any]) -> str:
    """The plain-text table ``bpcore bench`` prints."""
    lines = [
        "Times are the minimum over all rounds of all passes. 'vs hand' and 'vs torch' are "
        "this row's time divided by the",
        "hand-written NumPy step's and PyTorch eager's in the same run (< 1 = faster); "
        "'floor' is the",
        "GEMM floor's time divided by this row's (the share of the step at the matmul limit);",
        "'compile s' is what a compiled row spent compiling, apart from its ms/step.",
    ]
    preamble = len(lines)
    mark, marked = _mark(), False
    for (workload, dtype, device, batch), rows in tables(data).items():
        name = rows[0].get("device_name", device)
        lines.append("")
        lines.append(f"{workload}  {dtype}  {device} ({name})  batch {batch}")
        cells = [HEADER] + [_cells(e, mark) for e in rows]
        marked = marked or any(e.get("noise") for e in rows)
        widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
        for c in cells:
            lines.append(("  " + "  ".join(
                c[i].ljust(widths[i]) if i in (0, len(c) - 1) else c[i].rjust(widths[i])
                for i in range(len(c))
            )).rstrip())
    if len(lines) == preamble:
        lines.append("")
        lines.append("(no rows ran)")
    if marked:
        lines += ["", f"{mark} {NOISE_NOTE}"]
    return "\n".join(lines)


def format_skipped(skipped: list[dict[str, Any]]) -> str:
    """The skipped rows, one line per row and reason (with how many cases it covers)."""
    if not skipped:
        return ""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for s in skipped:
        counts[(s["row"], s["reason"])] += 1
    lines = ["Skipped:"]
    for (row, reason), n in sorted(counts.items()):
        lines.append(f"  {row} ({n} case{'s' if n != 1 else ''}): {reason}")
    return "\n".join(lines)


def markdown(data: dict[str, Any], skipped: list[dict[str, Any]] | None = None,
             notes: str = "") -> str:
    """The results as a markdown document: environment, then one table per
    workload, dtype, device and batch size."""
    env = data.get("bpcore", {}).get("environment") or \
        data.get("machine_info", {}).get("bpcore_environment", {})
    versions = env.get("versions", {})
    out = ["# bpcore benchmark results", ""]
    out.append(f"- date: {env.get('date', data.get('datetime', '?'))}")
    out.append(f"- CPU: {env.get('cpu', '?')}, {env.get('cores', '?')} cores")
    if env.get("gpu"):
        out.append(f"- GPU: {env['gpu']}")
    out.append("- machine load (1, 5, 15 min load averages, as `uptime`): at the start "
               f"{env.get('load_average_at_start')}, at the end {env.get('load_average')}")
    out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    blas = env.get("blas", {})
    if blas:
        out.append(f"- BLAS (numpy build): {blas.get('numpy_build')}")
        for pool in blas.get("runtime", []):
            out.append(f"- thread pool: {pool}")
    if env.get("torch_threads"):
        out.append(f"- torch threads: {env['torch_threads']}")
    if notes:
        out += ["", notes.strip()]
    alerts = warnings(data)
    if alerts:
        out += ["", "## Warnings", ""] + [f"- \u26a0 {w}" for w in alerts]
    out += [
        "",
        "Times are the minimum over all rounds of all passes (the rows of a table are timed in "
        "interleaved passes); `vs hand` and `vs torch` divide this row's time by "
        "the hand-written NumPy step's and PyTorch eager's in the same run (< 1 = faster); "
        "`floor` is the GEMM floor's time divided by this row's; `compile s` is what a "
        "compiled row spent compiling, apart from its ms/step. " + NOISE_NOTE.replace("'", "`"),
    ]
    for (workload, dtype, device, batch), rows in tables(data).items():
        out += ["", f"### {workload} {dtype} {device}, batch {batch}", ""]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(HEADER))) + "|")
        for e in rows:
            out.append("| " + " | ".join(_cells(e)) + " |")
    if skipped:
        out += ["", "## Skipped", "", "```", format_skipped(skipped), "```"]
    return "\n".join(out) + "\n"


#: Colour and line style of each row in the plot (others get the next free colour).
_STYLE = {
    "bpcore-numpy": ("tab:orange", "-", 2.8),
    "bpcore-numpy-functional": ("tab:orange", "--", 1.4),
    "bpcore-numpy-default": ("tab:orange", ":", 1.4),
    "numpy-handwritten": ("tab:blue", "-", 2.0),
    "torch-eager": ("tab:red", "-", 1.6),
    "torch-compile": ("tab:red", ":", 1.6),
    "jax-jit": ("tab:green", "-", 1.4),
    "bpcore-torch": ("tab:purple", "-", 1.2),
    "bpcore-jax": ("tab:olive", "-", 1.2),
    "bpcore-cupy": ("tab:cyan", "-", 1.2),
    "bpcore-array_api_strict": ("tab:gray", "-", 1.0),
    "bpcore-numpy-fused": ("gold", "-", 1.4),
    "bpcore-jax-compiled": ("tab:brown", "-", 1.4),
    "bpcore-torch-compiled": ("tab:pink", "-", 1.4),
    "gemm-floor-numpy": ("black", "--", 1.4),
    "gemm-floor-torch": ("black", ":", 1.4),
    "gemm-floor-cupy": ("black", "-.", 1.4),
}


def plot(data: dict[str, Any], path: str | Path) -> None:
    """Throughput (samples/s) against batch size, log-log: one panel per workload
    (columns) and dtype (rows), one line per row of the table (GPU rows with
    square markers), one legend for all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple[str, str, str, str], list[tuple[int, float]]] = defaultdict(list)
    for e in entries(data):
        lines[(e["workload"], e["dtype"], e["row"], e["device"])].append(
            (e["batch"], e["batch"] / e["seconds"])
        )
    order = {"seed": 0, "wide": 1, "deep": 2}
    workloads = sorted({k[0] for k in lines}, key=lambda w: (order.get(w, 9), w))
    dtypes = sorted({k[1] for k in lines})
    if not workloads:
        raise ValueError("nothing to plot: no benchmark ran")
    fig, axes = plt.subplots(len(dtypes), len(workloads), squeeze=False,
                             figsize=(5.2 * len(workloads) + 2.5, 4.2 * len(dtypes)))
    used = {style[0] for style in _STYLE.values()}
    spare = iter([c for c in ("navy", "teal", "darkred", "lime", "magenta", "salmon", "indigo",
                              "chocolate", "slategray", "crimson") if c not in used] * 5)
    styles: dict[str, tuple[Any, str, float]] = dict(_STYLE)
    handles: dict[str, Any] = {}
    for (workload, dtype, row, device), pts in sorted(lines.items()):
        ax = axes[dtypes.index(dtype)][workloads.index(workload)]
        if row not in styles:
            styles[row] = (next(spare), "-", 1.2)
        color, style, width = styles[row]
        pts.sort()
        label = row if device == "cpu" else f"{row} ({device})"
        (handle,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style,
                            color=color, linewidth=width, marker="o" if device == "cpu" else "s",
                            markersize=3.5, label=label)
        handles.setdefault(label, handle)
    for r, dtype in enumerate(dtypes):
        for c, workload in enumerate(workloads):
            ax = axes[r][c]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{workload}, {dtype}")
            ax.set_xlabel("batch size")
            ax.set_ylabel("samples/s (from the min time)")
            ax.grid(True, which="both", alpha=0.3)
    names = sorted(handles, key=lambda n: (list(_STYLE).index(n.split(" ")[0])
                                           if n.split(" ")[0] in _STYLE else 99, n))
    fig.legend([handles[n] for n in names], names, loc="center right", fontsize=8)
    env = data.get("bpcore", {}).get("environment", {})
    fig.suptitle(f"bpcore training step throughput, higher is better: {env.get('cpu', '')} "
                 f"({env.get('cores', '?')} cores)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
