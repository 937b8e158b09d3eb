"""The table of bpcore's compiled rows from one benchmark run (pytest-benchmark JSON).

For every workload and batch size: the hand-written NumPy and ``jax.jit``
steps, and bpcore's ``numpy-fused``, ``jax-compiled`` and ``torch-compiled``
rows with their time ratios to those two peers (< 1 = faster) and their
compile times; then the issue's three targets, each with its measured ratios.
Every ratio compares two rows of the same run. Usage::

    python benchmarks/compiled_table.py RESULTS.json [--out RESULTS.md] [--notes TEXT]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from bpcore.benchtools.report import entries, load, warnings

HAND, JIT = "numpy-handwritten", "jax-jit"
OURS = ("bpcore-numpy-fused", "bpcore-jax-compiled", "bpcore-torch-compiled")
LABEL = {
    "bpcore-numpy-fused": "bpcore[numpy, fused]",
    "bpcore-jax-compiled": "bpcore[jax, compiled]",
    "bpcore-torch-compiled": "bpcore[torch, compiled]",
}


def _ms(e: dict[str, Any] | None) -> str:
    return "-" if e is None else f"{e['seconds'] * 1e3:.3f}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return None if a is None or b is None else a["seconds"] / b["seconds"]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(data: dict[str, Any]) -> tuple[str, dict[str, list[tuple[str, int, Any]]]]:
    """The markdown tables and, per target, ``(workload, batch, value)`` rows."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for e in entries(data):
        if e["dtype"] == "float32" and e["device"] == "cpu":
            cells[(e["workload"], e["batch"])][e["row"]] = e
    targets: dict[str, list[tuple[str, int, Any]]] = defaultdict(list)
    out = []
    for workload in sorted({w for w, _ in cells}, key=lambda w: ({"seed": 0, "wide": 1}.get(w, 9),
                                                                   w)):
        out += ["", f"#### {workload} (float32, CPU)", ""]
        head = ["batch", "hand-written NumPy ms", "jax.jit ms (compile s)"]
        for r in OURS:
            head.append(f"{LABEL[r]} ms: vs hand, vs jax.jit")
        head += ["best bpcore vs jax.jit", "compile s: jax, torch"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---:" for _ in head) + "|")
        for batch in sorted(b for w, b in cells if w == workload):
            row = cells[(workload, batch)]
            hand, jit = row.get(HAND), row.get(JIT)
            line = [str(batch), _ms(hand),
                    f"{_ms(jit)} ({jit.get('compile_s', '-')})" if jit else "-"]
            best: tuple[float, str] | None = None
            for r in OURS:
                e = row.get(r)
                line.append("-" if e is None else
                            f"{_ms(e)}: {_fmt(_ratio(e, hand))}, {_fmt(_ratio(e, jit))}")
                if e is not None and (best is None or e["seconds"] < best[0]):
                    best = (e["seconds"], r)
            best_ratio = None if best is None or jit is None else best[0] / jit["seconds"]
            line.append("-" if best is None else f"{_fmt(best_ratio)} ({LABEL[best[1]]})")
            compile_s = [row[r].get("compile_s", "-") if r in row else "-"
                         for r in ("bpcore-jax-compiled", "bpcore-torch-compiled")]
            line.append(", ".join(str(c) for c in compile_s))
            out.append("| " + " | ".join(line) + " |")
            if best_ratio is not None and best is not None:
                targets["best"].append((workload, batch, (best_ratio, LABEL[best[1]])))
            fused = _ratio(row.get("bpcore-numpy-fused"), hand)
            if fused is not None:
                targets["fused"].append((workload, batch, fused))
            for r in ("bpcore-jax-compiled", "bpcore-torch-compiled"):
                if r in row and "compile_s" in row[r]:
                    targets["compile_" + r].append((workload, batch, row[r]["compile_s"]))
    return "\n".join(out), targets


def summary(targets: dict[str, list[tuple[str, int, Any]]]) -> str:
    """Each target with its measured values and how many cases meet it."""
    lines = []
    best = targets.get("best", [])
    ok = sum(r <= 1.0 for _, _, (r, _) in best)
    lines.append(f"- best bpcore CPU path <= hand-written jax.jit step: {ok}/{len(best)} cases "
                 "(" + "; ".join(f"{w} {b}: {r:.2f}x {name}" for w, b, (r, name) in best) + ")")
    fused = targets.get("fused", [])
    ok = sum(r <= 1.0 for _, _, r in fused)
    lines.append(f"- bpcore[numpy, fused] <= 1.0x hand-written NumPy: {ok}/{len(fused)} cases "
                 "(" + "; ".join(f"{w} {b}: {r:.2f}x" for w, b, r in fused) + ")")
    for r, name in (("bpcore-jax-compiled", "jax"), ("bpcore-torch-compiled", "torch")):
        times = targets.get("compile_" + r, [])
        if times:
            ok = sum(s < 2.0 for _, _, s in times)
            lines.append(f"- compile < 2 s per (workload, batch), {name}: {ok}/{len(times)} "
                         "cases (" + "; ".join(f"{w} {b}: {s} s" for w, b, s in times) + ")")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--out")
    parser.add_argument("--notes", default="")
    args = parser.parse_args()
    data = load(args.json)
    env = data.get("bpcore", {}).get("environment", {})
    tables, targets = table(data)
    text = "\n".join([
        "# bpcore compiled steps: benchmark results",
        "",
        f"- date: {env.get('date', data.get('datetime', '?'))}",
        f"- CPU: {env.get('cpu', '?')}, {env.get('cores', '?')} cores",
        "- machine load (1, 5, 15 min load averages): at the start "
        f"{env.get('load_average_at_start')}, at the end {env.get('load_average')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v),
        *([args.notes] if args.notes else []),
        *(["", "## Warnings", ""] + [f"- \u26a0 {w}" for w in warnings(data)]
          if warnings(data) else []),
        "",
        "Times are the minimum over rounds of one training step; ratios divide a row's time "
        "by the peer's in the same run (< 1 = faster). Compile times are the seconds of the "
        "calls that compiled, each including that one step (as the jax.jit peer's).",
        "",
        "## Targets",
        "",
        summary(targets),
        "",
        "## Tables",
        tables,
        "",
    ])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
