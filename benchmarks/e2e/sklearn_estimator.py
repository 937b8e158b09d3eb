"""bpcore.sklearn.MLPClassifier against scikit-learn's MLPClassifier on digits.

The scikit-learn script a user would write (``benchmarks/e2e/sklearn_mlp.py``:
an 80/20 stratified split, standard scaling, the MLP with its defaults), with
scikit-learn's estimator swapped for bpcore's and nothing else changed; then
the same on PyTorch and JAX inputs under ``array_api_dispatch``. The scaling
is done once per seed on NumPy (scikit-learn's ``StandardScaler`` cannot run
on JAX arrays: it assigns into them), so every row fits the MLP on the same
scaled numbers and the time is the MLP's ``fit``. Every row uses
scikit-learn's default parameters and ``random_state=seed``; the rows of one
seed are timed in
interleaved rounds (each right after a short warm-up fit of its own, so no
row is timed while another library's thread pool still spins), and a row's
fit time is its minimum over the rounds (the median is shown too). A JAX
row's first fit compiles (its time is shown apart); later fits of the same
configuration reuse the compiled program.

Prints a Markdown table. Usage::

    python benchmarks/e2e/sklearn_estimator.py [--rounds 3] [--seeds 0,1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys


def _threads(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# Before any library starts its thread pools; SciPy's array API switch before SciPy loads.
_N = _threads(sys.argv)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _N)
if _N == "1":
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                          "intra_op_parallelism_threads=1")
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import bpcore  # noqa: E402
from bpcore.benchtools.environment import load_average  # noqa: E402
from bpcore.sklearn import MLPClassifier as BpcoreMLP  # noqa: E402


class Row:
    """One way of running the script: which estimator, on which arrays."""

    def __init__(self, name: str, make: Callable[[int, int], Any],
                 convert: Callable[[np.ndarray], Any] | None = None) -> None:
        self.name, self.make, self.convert = name, make, convert

    def data(self, *arrays: np.ndarray) -> list[Any]:
        return [a if self.convert is None else self.convert(a) for a in arrays]

    def fit(self, seed: int, X: Any, y: Any, max_iter: int = 200) -> tuple[Any, float]:
        model = self.make(seed, max_iter)
        with sklearn.config_context(array_api_dispatch=self.convert is not None):
            start = time.perf_counter()
            model.fit(X, y)
            seconds = time.perf_counter() - start
        return model, seconds

    def accuracy(self, model: Any, X: Any, y: Any) -> float:
        with sklearn.config_context(array_api_dispatch=self.convert is not None):
            return float(model.score(X, y))


def rows() -> list[Row]:
    out = [
        Row("scikit-learn MLPClassifier", lambda s, m: SklearnMLP(random_state=s, max_iter=m)),
        Row("bpcore, NumPy (float64, as scikit-learn)",
            lambda s, m: BpcoreMLP(random_state=s, max_iter=m)),
        Row("bpcore, NumPy, dtype='float32'",
            lambda s, m: BpcoreMLP(random_state=s, max_iter=m, dtype="float32")),
    ]
    infos = bpcore.backends()
    if infos["torch"].available:
        import torch

        torch.set_num_threads(int(_N))
        out.append(Row("bpcore, torch float32 inputs, dispatch",
                       lambda s, m: BpcoreMLP(random_state=s, max_iter=m),
                       lambda a: torch.asarray(a.astype(np.float32) if a.dtype.kind == "f"
                                               else a)))
    else:
        print(f"torch row skipped: {infos['torch'].reason}", file=sys.stderr)
    if infos["jax"].available:
        import jax.numpy as jnp

        out.append(Row("bpcore, JAX float32 inputs, dispatch",
                       lambda s, m: BpcoreMLP(random_state=s, max_iter=m),
                       lambda a: jnp.asarray(a.astype(np.float32) if a.dtype.kind == "f"
                                             else a)))
    else:
        print(f"jax row skipped: {infos['jax'].reason}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    warnings.simplefilter("ignore", ConvergenceWarning)
    load_start = load_average()
    X_all, y_all = load_digits(return_X_y=True)
    table = rows()
    acc: dict[str, list[float]] = {r.name: [] for r in table}
    best: dict[str, list[float]] = {r.name: [] for r in table}
    median: dict[str, list[float]] = {r.name: [] for r in table}
    epochs: dict[str, list[int]] = {r.name: [] for r in table}
    first: dict[str, float] = {}
    for seed in seeds:
        X_train, X_test, y_train, y_test = train_test_split(
            X_all, y_all, test_size=0.2, stratify=y_all, random_state=seed)
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        data = {r.name: r.data(X_train, y_train, X_test, y_test) for r in table}
        times: dict[str, list[float]] = {r.name: [] for r in table}
        for k in range(args.rounds):
            for row in table[k % len(table):] + table[:k % len(table)]:
                Xtr, ytr, Xte, yte = data[row.name]
                if row.name not in first:  # the very first fit: JAX compiles here
                    first[row.name] = row.fit(seed, Xtr, ytr)[1]
                row.fit(seed, Xtr, ytr, max_iter=2)  # warm-up right before timing
                model, seconds = row.fit(seed, Xtr, ytr)
                times[row.name].append(seconds)
                if k == 0:
                    acc[row.name].append(row.accuracy(model, Xte, yte))
                    epochs[row.name].append(int(model.n_iter_))
        for row in table:
            best[row.name].append(min(times[row.name]))
            median[row.name].append(statistics.median(times[row.name]))
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    load_end = load_average()

    reference = table[0].name
    print("# bpcore.sklearn.MLPClassifier vs scikit-learn's MLPClassifier on digits\n")
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, {args.threads} thread(s) per "
          f"library; load {load_start[0] if load_start else '?'} at start, "
          f"{load_end[0] if load_end else '?'} at end; bpcore {bpcore.__version__}, "
          f"scikit-learn {sklearn.__version__}, numpy {np.__version__}.\n")
    print("80/20 stratified split, StandardScaler (fitted on the training split, on NumPy), "
          "MLPClassifier with scikit-learn's defaults (random_state=seed), seeds "
          f"{args.seeds}; the MLP's fit time, the minimum (and median) over {args.rounds} "
          "interleaved rounds per seed.\n")
    print("| row | test accuracy per seed | epochs | fit s per seed: min (median) "
          "| first fit s | time vs scikit-learn |")
    print("|---|---|---|---|---:|---:|")
    for row in table:
        name = row.name
        ratio = statistics.median(b / r for b, r in zip(best[name], best[reference]))
        print(f"| {name} | {', '.join(f'{100 * a:.2f}%' for a in acc[name])} | "
              f"{', '.join(str(e) for e in epochs[name])} | "
              f"{', '.join(f'{b:.3f} ({m:.3f})' for b, m in zip(best[name], median[name]))} | "
              f"{first[name]:.2f} | {ratio:.2f}x |")
    print("\n'time vs scikit-learn': the median over the seeds of the row's fit time divided "
          "by scikit-learn's (< 1: faster). 'first fit': the row's very first fit in this "
          "process (JAX compiles its epoch program there).")


if __name__ == "__main__":
    main()
