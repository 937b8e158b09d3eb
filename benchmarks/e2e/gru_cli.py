"""MNIST-1D with the paper's GRU through ``bpcore train``: its default recipe, seeds 0-2.

Each seed is one fresh process, exactly what a user types::

    bpcore train --data mnist1d --arch "bidirectional(gru(6)),flatten,dense(10)" --seed S

(the recipe is bpcore train's default for a recurrent network on mnist1d,
``RECURRENT_DEFAULTS`` over ``DATA_DEFAULTS`` in bpcore/commands/train.py). The
figures: the test accuracy each run prints, its wall time from start to printed
result, and the training time (``--verbose``'s phases), with the machine, the
load and the versions.

    python benchmarks/e2e/gru_cli.py --seeds 0 1 2 [--backend numpy] [--json OUT.json]
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
from importlib import metadata
from pathlib import Path
from typing import Any

ARCH = "bidirectional(gru(6)),flatten,dense(10)"
ROOT = Path(__file__).resolve().parents[2]


def run_seed(seed: int, backend: str, extra: list[str]) -> dict[str, Any]:
    """One ``bpcore train`` process; its printed accuracy and its phases."""
    cmd = [sys.executable, "-m", "bpcore", "train", "--data", "mnist1d", "--arch", ARCH,
           "--seed", str(seed), "--backend", backend, "--quiet", "--verbose", *extra]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    found = re.search(r"test accuracy ([0-9.]+)% \((\d+)/(\d+)\)", done.stdout)
    assert found, done.stdout + done.stderr
    phases = dict(re.findall(r"(start-up|data|training|evaluation) ([0-9.]+) s", done.stderr))
    return {
        "seed": seed, "backend": backend, "test_acc": float(found.group(1)),
        "correct": int(found.group(2)), "n_test": int(found.group(3)),
        "wall_seconds": round(wall, 2),
        "train_seconds": float(phases["training"]) if "training" in phases else None,
        "load_1min_start": round(load, 2), "load_1min_end": round(os.getloadavg()[0], 2),
        "stdout": done.stdout.strip(), "command": " ".join(cmd[1:]),
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for pkg in ("bpcore", "numpy", "mnist1d", "torch", "jax"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    commit = commit or os.environ.get("GIT_COMMIT", "")  # a `git archive` export has no .git
    return {"cpu": cpu, "cores": os.cpu_count(), "source": str(ROOT),
            "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "git_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="more bpcore train flags (after --)")
    args = parser.parse_args()
    from bpcore.commands.train import DATA_DEFAULTS, RECURRENT_DEFAULTS

    recipe = {**DATA_DEFAULTS["mnist1d"], **RECURRENT_DEFAULTS["mnist1d"]}
    recipe.pop("arch", None)
    runs = []
    for seed in args.seeds:
        r = run_seed(seed, args.backend, args.extra)
        print(f"seed {seed}: {r['test_acc']}% in {r['wall_seconds']} s "
              f"(training {r['train_seconds']} s; load {r['load_1min_start']} -> "
              f"{r['load_1min_end']})", flush=True)
        runs.append(r)
    accs = [r["test_acc"] for r in runs]
    summary = {"test_acc": accs, "median_test_acc": statistics.median(accs),
               "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
               "median_train_seconds": statistics.median(
                   r["train_seconds"] for r in runs if r["train_seconds"] is not None)}
    print(f"median {summary['median_test_acc']}%; wall {summary['median_wall_seconds']} s, "
          f"training {summary['median_train_seconds']} s (medians)")
    if args.json:
        args.json.write_text(json.dumps({"arch": ARCH, "recipe": recipe, "extra_flags": args.extra,
                                         "machine": machine(), "runs": runs,
                                         "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
