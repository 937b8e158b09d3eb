"""Tests for bpcore.distributed: data-parallel training over MPI.

Two kinds of test. The CPU-side logic (launch detection, buckets, tree
flattening, bfloat16 rounding, the reduced-precision MPI ops, sharding, the
NCCL set-up against a stand-in ``cupy.cuda.nccl``) runs in this process
without MPI. The collectives run for real: ``mpiexec -n 2 python
tests/mpi_worker.py ...`` in a subprocess with a timeout (a hang fails the
test instead of hanging the suite), and the ranks' results are compared here
with one process computing the same thing on the concatenated batches. Those
tests skip, with the reason, where mpi4py or mpiexec is missing (under CI they
fail instead: ``pip install -e ".[test,mpi]"`` provides both).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import bpcore as bp
from bpcore import distributed as dist
from bpcore.distributed import (
    DistributedError,
    GradientAllReduce,
    bf16_decode,
    bf16_encode,
    bucket_plan,
    mpi_world_size,
    shard_batches,
    shard_range,
)

HERE = Path(__file__).parent
WORKER = HERE / "mpi_worker.py"
sys.path.insert(0, str(HERE))
import mpi_worker  # noqa: E402  (the rank side: shared sizes and data)

TIMEOUT = 120  # seconds for one mpiexec run; a hang fails instead of blocking the suite


# --------------------------------------------------------------------------
# running mpiexec


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel installs it here
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _mpi_missing() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install -e ".[mpi]")'
    if _mpiexec() is None:
        return 'no mpiexec on PATH (pip install -e ".[mpi]" installs the mpich wheel\'s)'
    return None


def require_mpi() -> str:
    """The mpiexec to use; skip (fail under CI) without mpi4py and mpiexec."""
    reason = _mpi_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the distributed tests, but {reason}")
        pytest.skip(reason)
    return str(_mpiexec())


_FLAGS: list[list[str]] = []


def _launcher_flags() -> list[str]:
    """Open MPI's mpiexec wants leave to oversubscribe cores (and to run as root)."""
    if not _FLAGS:
        version = subprocess.run([require_mpi(), "--version"], capture_output=True,
                                 text=True, timeout=30)
        flags = []
        if "open mpi" in (version.stdout + version.stderr).lower():
            flags.append("--oversubscribe")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                flags.append("--allow-run-as-root")
        _FLAGS.append(flags)
    return _FLAGS[0]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in dist.MPI_SIZE_VARIABLES and not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    # one BLAS thread per rank: the ranks share this machine's cores
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    return env


def mpirun(args: list[str], n: int = 2, timeout: float = TIMEOUT,
           check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n {n} ARGS``, with a timeout; on failure the ranks' output is shown."""
    cmd = [require_mpi(), "-n", str(n), *_launcher_flags(), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_env(), cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {done.returncode}:\n"
                    f"{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-rank run of the worker's collective scenarios; their output folder."""
    out = tmp_path_factory.mktemp("mpi")
    mpirun([sys.executable, str(WORKER), str(out), "broadcast", "equiv_sgd", "equiv_adam",
            "equiv_fused", "lowprec", "buckets", "shards", "mismatch", "backends",
            "batch_norm"])
    return out


def both(out: Path, name: str) -> tuple[Any, Any]:
    """Rank 0's and rank 1's results of a scenario."""
    files = [out / f"{name}-rank{r}.npz" for r in (0, 1)]
    if files[0].exists():
        return tuple(dict(np.load(f)) for f in files)  # type: ignore[return-value]
    return tuple(json.loads((out / f"{name}-rank{r}.json").read_text()) for r in (0, 1))  # type: ignore[return-value]


def single_process(opt_name: str) -> dict[str, np.ndarray]:
    """What one process computes on the concatenated (2 x BATCH) batches."""
    net = bp.mlp(mpi_worker.SIZES, "tanh")
    opt = mpi_worker.optimizer(opt_name)
    params = net.init(seed=7, dtype="float64")  # rank 0's seed, which bcast spreads
    state = opt.init(params)
    X, y = mpi_worker.data()
    g = 2 * mpi_worker.BATCH
    for s in range(mpi_worker.STEPS):
        _, grads = bp.value_and_grad(net, "softmax_cross_entropy", params,
                                     X[s * g:(s + 1) * g], y[s * g:(s + 1) * g])
        params, state = opt.update(grads, state, params)
    return mpi_worker.flat_params(params)


# --------------------------------------------------------------------------
# 2 ranks x batch b == one process on 2b


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("path", ["portable", "fused"])
def test_two_ranks_match_one_process_on_the_concatenated_batch(
    ranks: Path, opt_name: str, path: str
) -> None:
    r0, r1 = both(ranks, f"equiv-{opt_name}-{path}")
    ref = single_process(opt_name)
    assert set(r0) == set(ref)
    for key in ref:
        np.testing.assert_array_equal(r0[key], r1[key])  # the ranks never drift apart
        np.testing.assert_allclose(r0[key], ref[key], rtol=1e-10, atol=1e-12)
        assert not np.allclose(r0[key], mpi_worker.flat_params(
            bp.mlp(mpi_worker.SIZES, "tanh").init(seed=7, dtype="float64"))[key])


def _bn_atol(key: str) -> float:
    """A bias right before a batch norm has gradient zero but for rounding, which
    Adam turns into steps of up to lr * 1e-17 / eps: those biases (and the running
    means they enter) stay ~1e-10 apart; every other value agrees to ~1e-15."""
    return 1e-8 if key in ("0.b", "4.b", "state.1.mean", "state.5.mean") else 1e-12


def test_synchronised_batch_norm_on_two_ranks_matches_one_process(ranks: Path) -> None:
    """Parameters and running statistics of 2 ranks (their shards of each global
    batch, the last one uneven) are those of one process on the whole batches."""
    r0, r1 = both(ranks, "batch_norm")
    net, opt = mpi_worker.bn_net(), bp.adam(lr=0.05)
    params = net.init(seed=11, dtype="float64")
    state = bp.train_state(net, opt, params)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    X, y = mpi_worker.bn_data()
    start = 0
    for rows in mpi_worker.BN_ROWS:
        batch = slice(start, start + sum(rows))
        params, state, _ = step(params, state, X[batch], y[batch])
        start += sum(rows)
    ref = mpi_worker.bn_flat(params, state)
    assert set(r0) == set(ref) and "state.1.mean" in ref and "state.5.var" in ref
    for key in ref:
        np.testing.assert_array_equal(r0[key], r1[key])  # the ranks never drift apart
        np.testing.assert_allclose(r0[key], ref[key], rtol=1e-9, atol=_bn_atol(key))
    # per-rank statistics would differ: the shards' means are not the batch's
    assert not np.allclose(ref["state.1.mean"], 0.0)


def test_model_distribute_synchronises_batch_norm(tmp_path: Path) -> None:
    mpirun([sys.executable, str(WORKER), str(tmp_path), "model_batch_norm"])
    r0, r1 = both(tmp_path, "model_bn")
    X, y = mpi_worker.bn_data()
    single = bp.Model(mpi_worker.bn_net(), optimizer="adam", lr=0.02,
                      batch_size=2 * mpi_worker.BATCH, dtype="float64", seed=4)
    single.fit(X[:45], y[:45], epochs=2, progress=False)
    ref = mpi_worker.bn_flat(single.params, single.opt_state)
    for key in ref:
        np.testing.assert_array_equal(r0[key], r1[key])
        np.testing.assert_allclose(r0[key], ref[key], rtol=1e-9, atol=_bn_atol(key))
    scores = json.loads((tmp_path / "model_bn-rank0.json").read_text())["scores"]
    assert scores["loss"] == pytest.approx(single.evaluate(X, y)["loss"], rel=1e-9)


def test_broadcast_makes_ranks_identical_despite_different_seeds(ranks: Path) -> None:
    r0, r1 = both(ranks, "broadcast")
    keys = [k for k in r0 if not k.startswith("own") and k != "count"]
    assert keys
    assert any(not np.array_equal(r0[f"own{k}"], r1[f"own{k}"]) for k in keys)
    for k in keys:
        np.testing.assert_array_equal(r0[k], r1[k])
        np.testing.assert_array_equal(r1[k], r0[f"own{k}"])  # rank 0's values
    assert int(r0["count"]) == int(r1["count"]) == 0  # Adam's count travels by pickle


def test_allreduce_and_bcast_on_every_cpu_backend(ranks: Path) -> None:
    r0, r1 = both(ranks, "backends")
    assert all(r0[k] == r1[k] for k in r0 if "untouched" not in k)
    names = [k.removesuffix("-namespace") for k in r0 if k.endswith("-namespace")]
    assert "numpy" in names
    for name in names:
        assert r0[f"{name}-namespace"] == name  # results stay on the backend
        assert r0[f"{name}-mean-W"] == [[1.5, 1.5]] * 3  # (1 + 2) / 2
        assert r0[f"{name}-mean-b"] == [0.0, 1.5]
        assert r0[f"{name}-sum-W"] == [[3.0, 3.0]] * 3
        assert r0[f"{name}-bcast-W"] == [[2.0, 2.0]] * 3  # root=1 holds 2
        assert r0[f"{name}-mean-dtype"] == "float32"
        assert r0[f"{name}-skeleton"] == [{}, 7, 7]
        assert (r0[f"{name}-untouched"], r1[f"{name}-untouched"]) == (1.0, 2.0)


@pytest.mark.parametrize(("dtype", "rtol"), [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_reduced_precision_allreduce(ranks: Path, dtype: str, rtol: float) -> None:
    r0, r1 = both(ranks, "lowprec")
    exact = (r0["W"] + r1["W"]) / 2
    np.testing.assert_allclose(r0["exact-W"], exact, rtol=1e-15)
    for key in ("W", "b"):
        low, want = r0[f"{dtype}-{key}"], r0[f"exact-{key}"]
        assert low.dtype == r0[key].dtype  # widened back to the gradients' dtype
        np.testing.assert_array_equal(low, r1[f"{dtype}-{key}"])
        np.testing.assert_allclose(low, want, rtol=rtol, atol=rtol * np.abs(want).max())
        assert not np.array_equal(low, want)  # it really went through the low precision


def test_many_small_buckets_give_the_same_sums(ranks: Path) -> None:
    r0, r1 = both(ranks, "buckets")
    assert int(r0["n_buckets"]) >= 4
    np.testing.assert_array_equal(r0["one"], r0["many"])
    np.testing.assert_array_equal(r0["many"], r1["many"])


def test_shards_are_disjoint_and_cover_the_epoch(ranks: Path) -> None:
    r0, r1 = both(ranks, "shards")
    assert int(r0["size"]) == 2 and int(r0["local_size"]) == 2
    assert {int(r0["local_rank"]), int(r1["local_rank"])} == {0, 1}
    np.testing.assert_array_equal(r0["sum"], [3.0, 20.0])
    for e in (0, 1):
        a, b = r0[f"idx{e}"], r1[f"idx{e}"]
        assert len(r0[f"len{e}"]) == len(r1[f"len{e}"])  # same number of steps
        assert not set(a.tolist()) & set(b.tolist())
        assert sorted([*a.tolist(), *b.tolist()]) == list(range(23))  # 23 = 2*(2*4)+7
        np.testing.assert_allclose(r0[f"share{e}"] + r1[f"share{e}"], 1.0)
    assert not np.array_equal(r0["idx0"], r0["idx1"])  # reshuffled each epoch


def test_mismatched_networks_raise_on_every_rank(ranks: Path) -> None:
    r0, r1 = both(ranks, "mismatch")
    for message in (r0, r1):
        assert "different parameter shapes" in message and "same model" in message


def test_a_failing_rank_aborts_the_job_instead_of_hanging(tmp_path: Path) -> None:
    done = mpirun([sys.executable, str(WORKER), str(tmp_path), "fail"], timeout=60, check=False)
    assert done.returncode != 0
    assert "error on rank 1 of 2: rank 1 fails on purpose" in done.stderr
    assert "aborting all 2 ranks" in done.stderr
    assert not (tmp_path / "fail-reached.json").exists()


def test_one_process_without_mpiexec_is_a_one_rank_job(tmp_path: Path) -> None:
    require_mpi()
    done = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), "equiv_sgd", "broadcast"],
        capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
    )
    assert done.returncode == 0, done.stderr
    (params,) = (dict(np.load(tmp_path / "equiv-sgd-portable-rank0.npz")),)
    net = bp.mlp(mpi_worker.SIZES, "tanh")
    opt = mpi_worker.optimizer("sgd")
    ref_params = net.init(seed=7, dtype="float64")
    state = opt.init(ref_params)
    X, y = mpi_worker.data(ranks=1)
    b = mpi_worker.BATCH
    for s in range(mpi_worker.STEPS):
        _, grads = bp.value_and_grad(net, "softmax_cross_entropy", ref_params,
                                     X[s * b:(s + 1) * b], y[s * b:(s + 1) * b])
        ref_params, state = opt.update(grads, state, ref_params)
    ref = mpi_worker.flat_params(ref_params)
    for key in ref:
        np.testing.assert_array_equal(params[key], ref[key])  # size 1: exactly the plain loop


# --------------------------------------------------------------------------
# CPU-side logic, in this process


def test_mpi_world_size_reads_the_launchers_variables() -> None:
    assert mpi_world_size({}) == 0
    assert mpi_world_size({"PMI_SIZE": "4"}) == 4
    assert mpi_world_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert mpi_world_size({"PMI_SIZE": "oops"}) == 0


def test_missing_mpi4py_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "mpi_available", lambda: "mpi4py is not installed; install it "
                        f"with: {dist._INSTALL}")
    with pytest.raises(DistributedError, match=r"bpcore\[mpi\]"):
        dist.Communicator()
    assert isinstance(DistributedError("x"), bp.BpcoreError)


def test_bucket_plan_groups_by_dtype_and_caps_the_size() -> None:
    sig = (((4, 4), "float32"), ((4,), "float32"), ((2, 2), "float64"), ((100,), "float32"),
           ((3,), "float64"))
    plan = bucket_plan(sig)
    assert [b.leaves for b in plan] == [(0, 1, 3), (2, 4)]
    assert [b.dtype for b in plan] == ["float32", "float64"]
    assert plan[0].sizes == (16, 4, 100) and plan[0].shapes == ((4, 4), (4,), (100,))
    capped = bucket_plan(sig, bucket_bytes=80)  # 20 float32 or 10 float64
    assert [b.leaves for b in capped] == [(0, 1), (2, 4), (3,)]  # (100,) alone: too big
    assert sorted(i for b in capped for i in b.leaves) == list(range(len(sig)))
    assert bucket_plan(()) == []


def test_pack_and_unpack_on_every_backend(xp: Any) -> None:
    net = bp.mlp([3, 4, 2])
    params = net.init(0)
    leaves, _ = bp.tree.flatten(params, only_arrays=True)
    before = [bp.to_numpy(a).copy() for a in leaves]
    (bucket,) = bucket_plan(dist._signature(leaves))
    flat = dist._pack(xp, leaves, bucket)
    assert flat.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    assert bp.namespace(flat) is bp.namespace(leaves[0])
    out: list[Any] = [None] * len(leaves)
    dist._unpack(xp, flat, bucket, out)
    for a, b, orig in zip(out, leaves, before):
        assert a.shape == b.shape
        np.testing.assert_array_equal(bp.to_numpy(a), orig)
    scaled = dist._scale_owned(xp, dist._pack(xp, leaves, bucket), 0.5)
    np.testing.assert_allclose(bp.to_numpy(scaled), bp.to_numpy(flat) * 0.5)
    for a, orig in zip(leaves, before):  # packing copies: the leaves never change
        np.testing.assert_array_equal(bp.to_numpy(a), orig)


def test_pack_of_one_leaf_is_a_copy() -> None:
    W = np.arange(6.0).reshape(2, 3)
    (bucket,) = bucket_plan(dist._signature([W]))
    flat = dist._pack(bp.get_backend().xp, [W], bucket)
    flat[0] = 99.0
    assert W[0, 0] == 0.0


def test_bf16_rounds_to_nearest_even_like_torch(torch: Any) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 1000),
        np.array([0.0, -0.0, 1.0, np.inf, -np.inf, 3.4e38, 1e-40, 1.00390625, 1.01171875],
                 dtype=np.float32),
    ]).astype(np.float32)
    ours = bf16_encode(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(bf16_decode(ours),
                                  torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    nan = bf16_decode(bf16_encode(np.array([np.nan, -np.nan], dtype=np.float32)))
    assert np.isnan(nan).all()


def test_reduced_precision_mpi_ops_add_in_place() -> None:
    a = np.array([1.5, -2.0, 3.25], dtype=np.float16)
    b = np.array([0.25, 4.0, 1.0], dtype=np.float16)
    inout = b.view(np.uint16).copy()
    dist._f16_sum(memoryview(a.view(np.uint16)), memoryview(inout), None)
    np.testing.assert_array_equal(inout.view(np.float16), a + b)
    x = bf16_encode(np.array([1.5, -2.0, 3.25], dtype=np.float32))
    y = bf16_encode(np.array([0.25, 4.0, 1.0], dtype=np.float32))
    dist._bf16_sum(memoryview(x), memoryview(y), None)
    np.testing.assert_array_equal(bf16_decode(y), [1.75, 2.0, 4.25])


def test_low_precision_names_and_errors() -> None:
    assert dist._low_precision(None) is None
    assert dist._low_precision("float32") is None
    assert dist._low_precision("bf16") == "bfloat16"
    assert dist._low_precision(np.float16) == "float16"
    with pytest.raises(ValueError, match="float16"):
        dist._low_precision("int8")
    with pytest.raises(ValueError, match="op must be"):
        GradientAllReduce(None, op="max")  # type: ignore[arg-type]


def test_gradient_allreduce_passes_scale_op_and_dtype() -> None:
    calls: list[Any] = []

    class Comm:
        def allreduce(self, tree: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return tree

    g = GradientAllReduce(Comm(), dtype="bfloat16")  # type: ignore[arg-type]
    assert g({"W": 1}) == {"W": 1}
    g.scale = 0.25
    g({})
    total = GradientAllReduce(Comm(), op="sum")  # type: ignore[arg-type]
    total.scale = 0.25  # a sum-loss gradient is summed whatever the batch shares
    total({})
    assert calls == [{"op": "mean", "scale": None, "dtype": "bfloat16"},
                     {"op": "mean", "scale": 0.25, "dtype": "bfloat16"},
                     {"op": "sum", "scale": 1.0, "dtype": None}]


def test_train_step_grad_transform_runs_between_backward_and_update(xp: Any) -> None:
    net, opt = bp.mlp([3, 4, 2], "tanh"), bp.sgd(lr=0.1)
    params = net.init(0)
    x = bp.get_backend().asarray(np.random.default_rng(1).random((5, 3)), dtype=xp.float32)
    t = bp.get_backend().asarray(np.array([0, 1, 1, 0, 1]))
    seen: list[Any] = []

    def halve(grads: Any) -> Any:
        seen.append(grads)
        return bp.tree.map_arrays(lambda g: g * 0.5, grads)

    for fast in (True, False):
        step = bp.train_step(net, "softmax_cross_entropy", opt, grad_transform=halve, fast=fast)
        got, _, _ = step(params, opt.init(params), x, t)
        want, _, _ = bp.train_step(net, "softmax_cross_entropy", bp.sgd(lr=0.05), fast=fast)(
            params, opt.init(params), x, t)
        for a, b in zip(got, want):
            for k in a:
                np.testing.assert_allclose(bp.to_numpy(a[k]), bp.to_numpy(b[k]), rtol=1e-6)
    assert len(seen) == 2 and isinstance(seen[0], tuple) and set(seen[0][0]) == {"W", "b"}


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shard_batches_match_one_process_with_the_global_batch(size: int) -> None:
    n, b = 37, 3
    for epoch in (0, 1):
        shards = [shard_batches(n, b, rank=r, size=size, seed=1, epoch=epoch)
                  for r in range(size)]
        steps = {len(s) for s in shards}
        assert len(steps) == 1  # every rank runs the same number of all-reduces
        whole = list(bp.data.batch_indices(n, b * size, seed=1, epoch=epoch))
        kept = [c for c in whole if len(c) >= size]
        for k, chunk in enumerate(kept):
            parts = [shards[r][k][0] for r in range(size)]
            np.testing.assert_array_equal(np.concatenate(parts), chunk)
            assert sum(shards[r][k][1] for r in range(size)) == pytest.approx(1.0)
            if len(chunk) == b * size:
                assert all(len(p) == b for p in parts)
        seen = np.concatenate([p for s in shards for p, _ in s])
        assert len(set(seen.tolist())) == len(seen) >= n - (size - 1)


def test_shard_batches_and_shard_range_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        shard_batches(10, 2, rank=2, size=2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="size"):
        shard_batches(10, 2, rank=0, size=0, seed=0, epoch=0)
    assert [shard_range(7, rank=r, size=3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert shard_range(1, rank=1, size=2) == (1, 1)


class _FakeNccl:
    """A stand-in for ``cupy.cuda.nccl``: records what the NCCL path asks of it."""

    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 6, 7, 8, 0
    made: ClassVar[list[Any]] = []

    @staticmethod
    def get_unique_id() -> tuple[int, ...]:
        return (1, 2, 3)

    class NcclCommunicator:
        def __init__(self, ndev: int, uid: Any, rank: int) -> None:
            _FakeNccl.made.append(("init", ndev, uid, rank))

        def allReduce(self, *args: Any) -> None:  # cupy's name
            _FakeNccl.made.append(("allReduce", *args))

        def bcast(self, *args: Any) -> None:
            _FakeNccl.made.append(("bcast", *args))


class _FakeMPIComm:
    def __init__(self, uid: Any) -> None:
        self.uid = uid

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.uid if obj is None else obj


def test_nccl_setup_shares_the_unique_id_over_mpi_and_maps_dtypes() -> None:
    _FakeNccl.made = []
    root = dist._Nccl(_FakeMPIComm(None), 0, 4, _FakeNccl)
    other = dist._Nccl(_FakeMPIComm((1, 2, 3)), 2, 4, _FakeNccl)
    assert _FakeNccl.made == [("init", 4, (1, 2, 3), 0), ("init", 4, (1, 2, 3), 2)]
    root.allreduce_(1234, 10, "float32", 99)
    other.bcast_(1234, 10, "float16", 0, 99)
    assert _FakeNccl.made[2:] == [("allReduce", 1234, 1234, 10, 7, 0, 99),
                                  ("bcast", 1234, 10, 6, 0, 99)]
    with pytest.raises(DistributedError, match="NCCL_BFLOAT16"):
        root.datatype("bfloat16")


def test_abort_on_error_reraises_in_one_process() -> None:
    with pytest.raises(ValueError, match="boom"), dist.abort_on_error():
        raise ValueError("boom")


# --------------------------------------------------------------------------
# Model.distribute: fit on 2 ranks, checkpoint from rank 0


def test_model_fit_on_two_ranks_matches_one_process_and_its_checkpoint_loads(
    tmp_path: Path,
) -> None:
    mpirun([sys.executable, str(WORKER), str(tmp_path), "model"])
    r0, r1 = both(tmp_path, "model")
    for key in r0:
        np.testing.assert_array_equal(r0[key], r1[key])
    h0, h1 = (json.loads((tmp_path / f"model-rank{r}.json").read_text()) for r in (0, 1))
    assert h0["scores"] == h1["scores"]  # gathered from both ranks
    # one process, same data, the 2-rank job's global batch (2 x 4 rows)
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((44, mpi_worker.SIZES[0])), rng.integers(0, 3, 44)
    single = bp.Model(mpi_worker.SIZES, activation="tanh", optimizer="adam", lr=0.01,
                      batch_size=2 * mpi_worker.BATCH, dtype="float64", seed=3)
    history = single.fit(X, y, epochs=3, validation_data=(X[:9], y[:9]), progress=False)
    ref = mpi_worker.flat_params(single.params)
    for key in ref:
        np.testing.assert_allclose(r0[key], ref[key], rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(h0["history"], history):
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert mine[k] == pytest.approx(theirs[k], rel=1e-9)
    scores = single.evaluate(X, y)
    assert h0["scores"]["loss"] == pytest.approx(scores["loss"], rel=1e-9)
    assert h0["scores"]["accuracy"] == scores["accuracy"]
    # the checkpoint rank 0 wrote is an ordinary single-process checkpoint
    loaded = bp.Model.load(tmp_path / "model.npz")
    assert loaded.comm is None and loaded.epoch == 3
    for key, value in mpi_worker.flat_params(loaded.params).items():
        np.testing.assert_array_equal(value, r0[key])
    assert loaded.evaluate(X, y)["loss"] == pytest.approx(scores["loss"], rel=1e-9)
    loaded.fit(X, y, epochs=1, progress=False)
    assert loaded.epoch == 4


# --------------------------------------------------------------------------
# bpcore train under mpiexec


def test_mpiexec_bpcore_train_is_data_parallel_and_rank_0_saves(tmp_path: Path) -> None:
    ck, metrics = tmp_path / "run.npz", tmp_path / "run.csv"
    done = mpirun([sys.executable, "-m", "bpcore", "train", "--epochs", "2", "--layers",
                   "64,32,10", "--save", str(ck), "--metrics", str(metrics)], cwd=tmp_path)
    results = [line for line in done.stdout.splitlines() if "accuracy" in line]
    assert len(results) == 1, done.stdout  # printed by rank 0 only
    assert "2 ranks" in results[0]
    assert done.stderr.count("data-parallel on 2 MPI ranks") == 1  # logged by rank 0 only
    assert done.stderr.count("epoch 2/2") == 1
    assert metrics.exists()
    model = bp.Model.load(ck)  # a single-process run loads the 2-rank checkpoint
    assert model.epoch == 2 and model.extra["run"]["ranks"] == 2
    single = subprocess.run(
        [sys.executable, "-m", "bpcore", "train", "--resume", str(ck), "--save", str(ck),
         "--overwrite", "--epochs", "3", "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr
    assert "test accuracy" in single.stdout and "ranks" not in single.stdout
    assert bp.Model.load(ck).epoch == 3


def test_mpiexec_bpcore_train_error_exits_nonzero_with_the_message(tmp_path: Path) -> None:
    done = mpirun([sys.executable, "-m", "bpcore", "train", "--layers", "5,8,10"],
                  timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert "error on rank" in done.stderr and "--layers starts with 5" in done.stderr


def test_launched_under_mpi_without_mpi4py_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bpcore.cli import main

    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(dist, "mpi_available", lambda: "mpi4py is not installed; install "
                        f"it with: {dist._INSTALL}")
    assert main(["train", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "launched by MPI with 2 ranks" in err and "bpcore[mpi]" in err
    assert "--no-distributed" in err
