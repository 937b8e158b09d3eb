"""The main job end to end: ``bpcore train`` against the scikit-learn script a
user would write (benchmarks/e2e/sklearn_mlp.py), process start to printed result.

Both run as fresh processes (``python -m bpcore train --seed S`` and
``python sklearn_mlp.py S``), on the same 80/20 stratified split of digits
with standard scaling, for seeds 0..n-1, alternating which goes first; the
wall time is measured around each process, so it includes the interpreter,
the imports and loading the data, as a user sees it. The figure is the
median over the seeds, and the ratio the median of the per-seed ratios.

    python benchmarks/e2e/run.py --seeds 5 --out benchmarks/results/2026-12-02-e2e
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ACCURACY = re.compile(r"test accuracy[^\d]*(\d+(?:\.\d+)?)%")


def _run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """``(seconds, test accuracy %, last line)`` of one process."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    m = ACCURACY.search(done.stdout)
    if m is None:
        raise SystemExit(f"no test accuracy in the output of {' '.join(cmd)}:\n{done.stdout}")
    return seconds, float(m.group(1)), done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    import tempfile

    import numpy
    import sklearn

    import bpcore

    cmds = {
        "bpcore train": lambda s: [sys.executable, "-m", "bpcore", "train", "--seed", str(s)],
        "scikit-learn MLPClassifier": lambda s: [sys.executable, str(HERE / "sklearn_mlp.py"),
                                                 str(s)],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:  # bpcore train writes nothing; run it apart
        for seed in range(args.seeds):
            order = list(cmds) if seed % 2 == 0 else list(reversed(cmds))
            for name in order:
                seconds, accuracy, line = _run(cmds[name](seed), Path(tmp))
                runs[name].append({"seed": seed, "seconds": seconds, "accuracy": accuracy,
                                   "output": line})
                print(f"seed {seed} {name:28s} {seconds:6.2f} s  {accuracy:.1f}%", flush=True)
    ours, theirs = runs["bpcore train"], runs["scikit-learn MLPClassifier"]
    summary = {
        name: {"median_seconds": statistics.median(r["seconds"] for r in rs),
               "median_accuracy": statistics.median(r["accuracy"] for r in rs),
               "accuracies": [r["accuracy"] for r in rs]}
        for name, rs in runs.items()
    }
    ratio = statistics.median(b["seconds"] / a["seconds"] for a, b in zip(ours, theirs))
    facts = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "bpcore": bpcore.__version__, "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_at_start": load_start, "load_at_end": os.getloadavg(),
    }
    print(f"scikit-learn / bpcore wall time, median of per-seed ratios: {ratio:.2f}x")
    if args.out:
        result = {"facts": facts, "runs": runs, "summary": summary,
                  "sklearn_over_bpcore": ratio}
        Path(args.out + ".json").write_text(json.dumps(result, indent=1))
        lines = [
            "# The main job end to end: `bpcore train` vs the scikit-learn script", "",
            f"{facts['cpus']} CPUs, {facts['platform']}, {facts['date']}; load "
            f"{load_start[0]:.2f} at start, {facts['load_at_end'][0]:.2f} at end; bpcore "
            f"{facts['bpcore']}, numpy {facts['numpy']}, scikit-learn {facts['scikit-learn']}.",
            "", "Process start to printed result, seeds 0.." + str(args.seeds - 1) + ".", "",
            "| | median wall time | median test accuracy | accuracies |", "|---|---:|---:|---|",
        ]
        for name, s in summary.items():
            lines.append(f"| {name} | {s['median_seconds']:.2f} s | {s['median_accuracy']:.1f}% "
                         f"| {', '.join(f'{a:.1f}' for a in s['accuracies'])} |")
        lines += ["", f"scikit-learn's time over bpcore's (median of the per-seed ratios): "
                  f"**{ratio:.2f}×**."]
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
