"""The rank side of tests/test_distributed.py: run as ``mpiexec -n 2 python mpi_worker.py``.

``python tests/mpi_worker.py OUTDIR SCENARIO [SCENARIO ...]`` runs each
scenario on every rank and writes what it saw to ``OUTDIR/SCENARIO-rank{r}.npz``
(or ``.json``); the test process then compares those files with a
single-process computation. Every scenario runs inside
``bpcore.distributed.abort_on_error``, so a failure on one rank ends the job
with a non-zero status instead of hanging.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import bpcore as bp
from bpcore.distributed import DistributedError, abort_on_error, communicator, shard_batches

#: The network, data and steps the equivalence scenarios share with the test.
SIZES = [6, 8, 3]
BATCH = 4  # rows per rank per step
STEPS = 5


def data(steps: int = STEPS, ranks: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` global batches of ``BATCH * ranks`` rows, the same on every rank."""
    rng = np.random.default_rng(42)
    n = steps * BATCH * ranks
    return rng.standard_normal((n, SIZES[0])), rng.integers(0, SIZES[-1], n)


def optimizer(name: str) -> bp.Optimizer:
    return {"sgd": bp.sgd(lr=0.1, momentum=0.9), "adam": bp.adam(lr=0.01)}[name]


def flat_params(params: Any) -> dict[str, np.ndarray]:
    return {f"{i}{k}": bp.to_numpy(v) for i, layer in enumerate(params) for k, v in layer.items()}


def save(out: Path, name: str, rank: int, arrays: dict[str, Any]) -> None:
    np.savez(out / f"{name}-rank{rank}.npz", **arrays)


# --------------------------------------------------------------------------
# scenarios


def scenario_broadcast(comm: Any, out: Path) -> None:
    """Each rank initializes with its own seed; after bcast all hold rank 0's."""
    net = bp.mlp(SIZES, "tanh")
    mine = net.init(seed=100 + comm.rank, dtype="float64")
    opt = bp.adam(lr=0.01)
    params, state = comm.bcast((mine, opt.init(mine)))
    save(out, "broadcast", comm.rank, {**flat_params(params), "count": state.count,
                                       **{f"own{k}": v for k, v in flat_params(mine).items()}})


def _equivalence(comm: Any, out: Path, opt_name: str, fused: bool) -> None:
    """Steps of rank-local value_and_grad + all-reduce + update (or a train_step
    with grad_transform, fused NumPy path) from rank 0's initial parameters."""
    net = bp.mlp(SIZES, "tanh")
    opt = optimizer(opt_name)
    params = comm.bcast(net.init(seed=7 + comm.rank, dtype="float64"))
    state = opt.init(params)
    X, y = data(ranks=comm.size)
    g = BATCH * comm.size
    if fused:
        step = bp.train_step(net, "softmax_cross_entropy", opt,
                             grad_transform=comm.grad_transform())
    for s in range(STEPS):
        rows = slice(s * g + comm.rank * BATCH, s * g + (comm.rank + 1) * BATCH)
        if fused:
            params, state, _ = step(params, state, X[rows], y[rows])
        else:
            _, grads = bp.value_and_grad(net, "softmax_cross_entropy", params, X[rows], y[rows])
            grads = comm.allreduce(grads)
            params, state = opt.update(grads, state, params)
    tag = f"equiv-{opt_name}-{'fused' if fused else 'portable'}"
    save(out, tag, comm.rank, flat_params(params))


def scenario_equiv_sgd(comm: Any, out: Path) -> None:
    _equivalence(comm, out, "sgd", fused=False)


def scenario_equiv_adam(comm: Any, out: Path) -> None:
    _equivalence(comm, out, "adam", fused=False)


def scenario_equiv_fused(comm: Any, out: Path) -> None:
    _equivalence(comm, out, "sgd", fused=True)
    _equivalence(comm, out, "adam", fused=True)


def scenario_backends(comm: Any, out: Path) -> None:
    """All-reduce and bcast of arrays of every CPU backend; rank r holds r + 1."""
    result: dict[str, Any] = {}
    for name in ("numpy", "torch", "jax", "array_api_strict"):
        if not bp.backends()[name].available:
            continue
        with bp.use_backend(name) as b:
            tree = ({"W": b.asarray(np.full((3, 2), comm.rank + 1.0), dtype=b.xp.float32),
                     "b": b.asarray(np.arange(2.0) * (comm.rank + 1), dtype=b.xp.float32)},
                    {}, 7)
            mean = comm.allreduce(tree)
            total = comm.allreduce(tree, op="sum")
            same = comm.bcast(tree, root=1)
            result[f"{name}-namespace"] = bp.backend.backend_name(bp.namespace(mean[0]["W"]))
            result[f"{name}-untouched"] = float(bp.to_numpy(tree[0]["W"])[0, 0])
            result[f"{name}-skeleton"] = [mean[1], mean[2], same[2]]
            for key, t in (("mean", mean), ("sum", total), ("bcast", same)):
                result[f"{name}-{key}-W"] = bp.to_numpy(t[0]["W"]).tolist()
                result[f"{name}-{key}-b"] = bp.to_numpy(t[0]["b"]).tolist()
                result[f"{name}-{key}-dtype"] = str(bp.to_numpy(t[0]["W"]).dtype)
    (out / f"backends-rank{comm.rank}.json").write_text(json.dumps(result))


def scenario_lowprec(comm: Any, out: Path) -> None:
    """float16 / bfloat16 all-reduce of values each rank draws with its own seed."""
    rng = np.random.default_rng(comm.rank)
    g = {"W": rng.standard_normal((50, 40)), "b": rng.standard_normal(40).astype(np.float32)}
    arrays = {"W": g["W"], "b": g["b"]}
    for dtype in ("float16", "bfloat16"):
        r = comm.allreduce(g, dtype=dtype)
        arrays[f"{dtype}-W"], arrays[f"{dtype}-b"] = r["W"], r["b"]
    exact = comm.allreduce(g)
    arrays["exact-W"], arrays["exact-b"] = exact["W"], exact["b"]
    save(out, "lowprec", comm.rank, arrays)


def scenario_buckets(comm: Any, out: Path) -> None:
    """Many small buckets (bucket_bytes=64) give the same result as one."""
    from bpcore.distributed import Communicator

    small = Communicator(bucket_bytes=64)
    rng = np.random.default_rng(comm.rank)
    tree = [{"W": rng.standard_normal((5, 7)), "b": rng.standard_normal(7)},
            {"W": rng.standard_normal((7, 2)).astype(np.float32), "b": rng.standard_normal(2)}]
    a, b = comm.allreduce(tree), small.allreduce(tree)
    one = np.concatenate([x.ravel() for x in flat_params(a).values()])
    many = np.concatenate([x.ravel() for x in flat_params(b).values()])
    save(out, "buckets", comm.rank,
         {"one": one, "many": many, "n_buckets": len(small._plan(_sig(tree)))})


def _sig(tree: Any) -> Any:
    from bpcore.distributed import _signature

    return _signature(bp.tree.arrays(tree))


def scenario_shards(comm: Any, out: Path) -> None:
    """This rank's shard of two epochs, with a ragged last global batch."""
    arrays = {}
    for epoch in (0, 1):
        parts = shard_batches(23, 4, rank=comm.rank, size=comm.size, seed=3, epoch=epoch)
        arrays[f"idx{epoch}"] = np.concatenate([p for p, _ in parts])
        arrays[f"len{epoch}"] = np.array([len(p) for p, _ in parts])
        arrays[f"share{epoch}"] = np.array([s for _, s in parts])
    metrics = comm.sum([comm.rank + 1.0, 10.0])
    save(out, "shards", comm.rank, {**arrays, "sum": metrics, "local_rank": comm.local_rank,
                                    "local_size": comm.local_size, "size": comm.size})


def scenario_mismatch(comm: Any, out: Path) -> None:
    """Ranks with different networks: every rank raises DistributedError, none hangs."""
    net = bp.mlp([4, 3 + comm.rank, 2])
    try:
        comm.bcast(net.init(0))
    except DistributedError as exc:
        (out / f"mismatch-rank{comm.rank}.json").write_text(json.dumps(str(exc)))
    else:
        raise AssertionError("bcast of mismatched trees did not raise")


def scenario_fail(comm: Any, out: Path) -> None:
    """Rank 1 raises while rank 0 waits in an all-reduce: the job must abort."""
    if comm.rank == 1:
        raise ValueError("rank 1 fails on purpose")
    comm.allreduce({"g": np.ones(3)})
    (out / "fail-reached.json").write_text("true")  # must never be written


def scenario_model(comm: Any, out: Path) -> None:
    """Model.fit data-parallel; rank 0 writes a checkpoint."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((44, SIZES[0])), rng.integers(0, SIZES[-1], 44)
    model = bp.Model(SIZES, activation="tanh", optimizer="adam", lr=0.01, batch_size=BATCH,
                     dtype="float64", seed=3 + comm.rank)
    model.distribute(comm)
    history = model.fit(X, y, epochs=3, validation_data=(X[:9], y[:9]), progress=False)
    scores = model.evaluate(X, y)
    if comm.rank == 0:
        model.save(out / "model.npz")
    (out / f"model-rank{comm.rank}.json").write_text(json.dumps(
        {"history": history.records, "scores": scores}))
    save(out, "model", comm.rank, flat_params(model.params))


def bn_net() -> bp.Layer:
    """Batch norm over (batch, C, L) after a convolution and over (batch, C) after a
    dense layer, and a dropout-free head: the network of the batch-norm scenarios."""
    return bp.sequential(bp.conv1d(2, 4, 3, padding=1), bp.batch_norm(4), bp.relu(),
                         bp.flatten(), bp.dense(32, 6), bp.batch_norm(6, momentum=0.3),
                         bp.tanh(), bp.dense(6, 3))


#: Rows per rank of each step of the batch-norm scenario: even shards, then a
#: ragged global batch of 7 rows (4 + 3, shares 4/7 and 3/7).
BN_ROWS = [(4, 4)] * 4 + [(4, 3)]


def bn_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    n = sum(a + b for a, b in BN_ROWS)
    return rng.standard_normal((n, 2, 8)) * 2.0 + 1.5, rng.integers(0, 3, n)


def bn_flat(params: Any, state: Any) -> dict[str, np.ndarray]:
    out = {path.replace("/", "."): bp.to_numpy(a) for path, a in bp.tree.paths(params)}
    out.update({"state." + path.replace("/", "."): bp.to_numpy(a)
                for path, a in bp.tree.paths(state.layers)})
    return out


def scenario_batch_norm(comm: Any, out: Path) -> None:
    """Synchronised batch norm: train_step with the gradient all-reduce, every
    rank its shard of each global batch (the last one uneven)."""
    from bpcore.distributed import sync_batch_norm

    opt = bp.adam(lr=0.05)
    allreduce = comm.grad_transform()
    net = sync_batch_norm(bn_net(), comm, allreduce)
    params = comm.bcast(net.init(seed=11 + comm.rank, dtype="float64"))
    state = bp.train_state(net, opt, params)
    step = bp.train_step(net, "softmax_cross_entropy", opt, grad_transform=allreduce)
    X, y = bn_data()
    start = 0
    for rows in BN_ROWS:
        mine = slice(start + sum(rows[:comm.rank]), start + sum(rows[:comm.rank + 1]))
        allreduce.scale = rows[comm.rank] / sum(rows)
        params, state, _ = step(params, state, X[mine], y[mine])
        start += sum(rows)
    save(out, "batch_norm", comm.rank, bn_flat(params, state))


def scenario_model_batch_norm(comm: Any, out: Path) -> None:
    """Model.distribute with batch norm (45 rows: the last global batch 3 + 2)."""
    X, y = bn_data()
    model = bp.Model(bn_net(), optimizer="adam", lr=0.02, batch_size=BATCH, dtype="float64",
                     seed=4 + comm.rank)
    model.distribute(comm)
    model.fit(X[:45], y[:45], epochs=2, progress=False)
    scores = model.evaluate(X, y)
    (out / f"model_bn-rank{comm.rank}.json").write_text(json.dumps({"scores": scores}))
    save(out, "model_bn", comm.rank, bn_flat(model.params, model.opt_state))


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items()
             if name.startswith("scenario_")}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    comm = communicator()
    with abort_on_error(comm, code=3):
        for name in argv[1:]:
            SCENARIOS[name](comm, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
