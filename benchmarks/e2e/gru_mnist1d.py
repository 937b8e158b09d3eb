"""MNIST-1D with the paper's GRU baseline: bpcore against the paper's recipe in PyTorch.

For each seed this runs, as two fresh processes (which goes first alternates
from seed to seed, so neither always meets a busier machine):

* the PyTorch reference, benchmarks/e2e/mnist1d_gru_torch.py (the recipe of
  greydanus/mnist1d ``notebooks/models.py`` GRUBase and ``notebooks/train.py``);
* the same recipe in bpcore (``--worker``, below): ``bp.sequential(bp.reshape((40,
  1)), bidirectional(gru(1, 6)), bp.flatten(), bp.dense(480, 10))``,
  ``bp.adam(1e-2)``, softmax cross-entropy, batch 100, 8001 steps over the
  batches in order, evaluation every 250 steps; the step is
  ``bp.compile(net, loss, opt)`` (NumPy: the step driver's workspace, in
  place; JAX: one ``jax.jit`` program; PyTorch: ``--backend torch`` runs the
  eager bpcore step, torch.compile being slow to build here).

``--init torch`` (the default) draws the dense layer's weights as
``torch.nn.Linear`` does, U(-1/√480, 1/√480) for weights and biases, so the two
runs follow one recipe throughout (the GRU's initialization is torch's in
bpcore already); ``--init bpcore`` keeps bpcore's default (Glorot uniform,
zero bias); ``--init torch-weights`` starts from the reference's very weights
(``torch.manual_seed(seed)``, loaded with ``load_torch_state_dict``), so the
two runs differ only in rounding. The figures: the test accuracy at the last step per seed and its
median, the training time (the steps only) and the total (with evaluations).

    python benchmarks/e2e/gru_mnist1d.py --seeds 0 1 2 [--steps 8000] [--threads 2] \\
        [--backend numpy] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HIDDEN, TIME, CLASSES = 6, 40, 10


def bpcore_run(seed: int, steps: int, lr: float, batch: int, eval_every: int, backend: str,
               init: str) -> dict[str, Any]:
    import numpy as np

    import bpcore as bp
    from bpcore.layers.recurrent import bidirectional, gru

    sys.path.insert(0, str(HERE))
    from mnist1d_gru_torch import dataset

    data = dataset()
    net = bp.sequential(bp.reshape((TIME, 1)), bidirectional(gru(1, HIDDEN)), bp.flatten(),
                        bp.dense(2 * HIDDEN * TIME, CLASSES))
    opt = bp.adam(lr)
    loss = "softmax_cross_entropy"
    with bp.use_backend(backend) as b:
        params = net.init(seed, dtype="float32")
        if init == "torch-weights":  # the reference's very initial weights (same seed)
            import torch

            from bpcore.layers.recurrent import load_torch_state_dict

            torch.manual_seed(seed)
            gru_t = torch.nn.GRU(1, HIDDEN, batch_first=True, bidirectional=True)
            lin = torch.nn.Linear(2 * HIDDEN * TIME, CLASSES)
            params = bp.to_backend(
                ({}, load_torch_state_dict(gru_t, "gru"), {},
                 {"W": lin.weight.detach().numpy().T.copy(), "b": lin.bias.detach().numpy()}),
                backend)
        elif init == "torch":  # torch.nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            rng = np.random.default_rng(seed + 10_000)
            bound = 1.0 / np.sqrt(2 * HIDDEN * TIME)
            params[3]["W"] = b.asarray(rng.uniform(-bound, bound, (2 * HIDDEN * TIME, CLASSES))
                                       .astype("float32"))
            params[3]["b"] = b.asarray(rng.uniform(-bound, bound, CLASSES).astype("float32"))
        state = opt.init(params)
        step_fn = bp.compile(net, loss, opt) if backend != "torch" else \
            bp.train_step(net, loss, opt, validate=False)
        x_train, x_test = (b.asarray(np.asarray(data[k], dtype="float32"))
                           for k in ("x", "x_test"))
        y_train = b.asarray(np.asarray(data["y"], dtype="int64"))
        y_train_h, y_test_h = np.asarray(data["y"]), np.asarray(data["y_test"])
        n = x_train.shape[0]

        def logits(x: Any) -> np.ndarray:
            return np.asarray(bp.to_numpy(bp.predict(net, params, x, validate=False)),
                              dtype=np.float64)

        def evaluate(at: int) -> dict[str, Any]:
            z = logits(x_test)
            z = z - z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            test_loss = float(-log_p[np.arange(len(y_test_h)), y_test_h].mean())
            return {"step": at, "test_loss": test_loss,
                    "train_acc": 100.0 * float(np.mean(logits(x_train).argmax(1) == y_train_h)),
                    "test_acc": 100.0 * float(np.mean(z.argmax(1) == y_test_h))}

        curve = []
        train_seconds = 0.0
        t_start = time.perf_counter()
        for step in range(steps + 1):
            t0 = time.perf_counter()
            start = (step * batch) % n
            params, state, value = step_fn(params, state, x_train[start:start + batch, ...],
                                           y_train[start:start + batch])
            float(value)  # the loss reaches the host, as the reference's loss.item()
            train_seconds += time.perf_counter() - t0
            if eval_every > 0 and step % eval_every == 0:
                curve.append(evaluate(step))
        total = time.perf_counter() - t_start
        final = curve[-1] if curve and curve[-1]["step"] == steps else evaluate(steps)
    return {"impl": f"bpcore ({backend})", "seed": seed, "steps": steps + 1,
            "test_acc": final["test_acc"], "train_seconds": train_seconds,
            "total_seconds": total, "ms_per_step": 1e3 * train_seconds / (steps + 1),
            "curve": curve, "init": init}


def _child(cmd: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch", "jax"])
    parser.add_argument("--init", default="torch",
                        choices=["torch", "bpcore", "torch-weights"])
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--worker", action="store_true",
                        help="run bpcore once (--seeds' first) and print its JSON line")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.worker:
        if args.backend == "torch":
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(bpcore_run(args.seeds[0], args.steps, args.lr, args.batch,
                                    args.eval_every, args.backend, args.init)))
        return 0

    common = ["--steps", str(args.steps), "--lr", str(args.lr), "--batch", str(args.batch),
              "--eval-every", str(args.eval_every)]
    results: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds):
        ours = [sys.executable, __file__, "--worker", "--seeds", str(seed), "--backend",
                args.backend, "--init", args.init, "--threads", str(args.threads), *common]
        ref = [sys.executable, str(HERE / "mnist1d_gru_torch.py"), "--seed", str(seed),
               "--threads", str(args.threads), *common]
        order = [ours] if args.skip_reference else ([ours, ref] if i % 2 == 0 else [ref, ours])
        for cmd in order:
            r = _child(cmd, args.threads)
            results.append(r)
            print(f"seed {seed}  {r['impl']:<22} test accuracy {r['test_acc']:.1f}%  "
                  f"train {r['train_seconds']:.1f} s ({r['ms_per_step']:.2f} ms/step)  "
                  f"total {r['total_seconds']:.1f} s", flush=True)
    print()
    summary: dict[str, Any] = {}
    for impl in dict.fromkeys(r["impl"] for r in results):
        rs = [r for r in results if r["impl"] == impl]
        summary[impl] = {
            "test_acc": [r["test_acc"] for r in rs],
            "median_test_acc": statistics.median(r["test_acc"] for r in rs),
            "median_train_seconds": statistics.median(r["train_seconds"] for r in rs),
            "median_total_seconds": statistics.median(r["total_seconds"] for r in rs),
            "median_ms_per_step": statistics.median(r["ms_per_step"] for r in rs),
        }
        s = summary[impl]
        print(f"{impl:<22} accuracy {', '.join(f'{a:.1f}' for a in s['test_acc'])} "
              f"(median {s['median_test_acc']:.1f}%)  train {s['median_train_seconds']:.1f} s  "
              f"total {s['median_total_seconds']:.1f} s  {s['median_ms_per_step']:.2f} ms/step")
    if args.json:
        import platform

        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summary": summary, "runs": results,
                       "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                   "python": sys.version.split()[0]}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
