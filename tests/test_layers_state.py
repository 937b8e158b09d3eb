"""Layer state and modes (bpcore/layers/random.py, dropout.py, norm.py's batch_norm,
the step driver's TrainState): the same random bits and dropout masks on every
backend (and JAX's own Threefry bits), batch norm against PyTorch in both modes,
running statistics outside the optimizer, checkpoints, and the step counter as
an input of the compiled step."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import host, put
from torch_ref import torch_forward

import bpcore as bp
from bpcore.checkpoint import load_checkpoint, save_checkpoint
from bpcore.layers import Context, norm
from bpcore.layers.random import random_bits

dropout_mod = importlib.import_module("bpcore.layers.dropout")  # not the layer of that name


def test_threefry_gives_jaxs_bits() -> None:
    from conftest import require_backend

    require_backend("jax")
    import jax.numpy as jnp
    from jax.extend.random import threefry_2x32

    for seed, stream, step in ((0, 0, 0), (42, 7, 3), (2**32 - 1, 12345, 2**31 + 5)):
        ours = random_bits(10, seed=seed, stream=stream, step=step, xp=bp.namespace(np.zeros(1)))
        count = jnp.concatenate([jnp.full(5, step, jnp.uint32), jnp.arange(5, dtype=jnp.uint32)])
        theirs = threefry_2x32((jnp.uint32(seed), jnp.uint32(stream)), count)
        np.testing.assert_array_equal(np.asarray(ours, dtype=np.int64),
                                      np.asarray(theirs, dtype=np.int64))


def test_the_same_seed_gives_the_same_mask_on_every_backend(xp: ModuleType) -> None:
    want = dropout_mod.dropout_mask((40, 25), 0.3, seed=9, stream=4, step=17,
                                    xp=bp.namespace(np.zeros(1)))
    seed = xp.asarray(9)  # counters as the TrainState holds them: 0-D integer arrays
    got = dropout_mod.dropout_mask((40, 25), 0.3, seed=seed, stream=4, step=xp.asarray(17),
                                   xp=xp)
    np.testing.assert_array_equal(bp.to_numpy(got), want)
    assert 0.27 < 1 - np.mean(want) < 0.33  # the rate (1000 units)
    other_step = dropout_mod.dropout_mask((40, 25), 0.3, seed=9, stream=4, step=18, xp=xp)
    other_stream = dropout_mod.dropout_mask((40, 25), 0.3, seed=9, stream=5, step=17, xp=xp)
    assert not np.array_equal(bp.to_numpy(other_step), want)
    assert not np.array_equal(bp.to_numpy(other_stream), want)


def test_dropout_layer_in_both_modes(xp: ModuleType) -> None:
    layer = bp.dropout(0.25)
    x = put(xp, np.random.default_rng(0).standard_normal((6, 50)))
    y, keep, state = layer.forward({}, x, ctx=Context(train=True, state={}, seed=1, step=2))
    k = bp.to_numpy(keep)
    np.testing.assert_allclose(host(y), np.where(k, host(x) / 0.75, 0.0), rtol=1e-15)
    dy = put(xp, np.random.default_rng(1).standard_normal((6, 50)))
    dx, _ = layer.backward({}, keep, dy)
    np.testing.assert_allclose(host(dx), np.where(k, host(dy) / 0.75, 0.0), rtol=1e-15)
    y_eval, cache, _ = layer.forward({}, x, ctx=Context(train=False, state={}))
    assert cache is None and y_eval is x
    assert state == {}


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_batch_norm_matches_torch_in_both_modes(
    xp: ModuleType, torch: ModuleType, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    params = {"gamma": put(xp, gamma), "beta": put(xp, beta)}
    r = rng.standard_normal(shape)
    for train in (True, False):
        state = {"mean": put(xp, mean), "var": put(xp, var)}
        y, cache, new = norm.batch_norm_forward(params, put(xp, x), state=state, train=train,
                                                momentum=0.2)
        dx, grads = norm.batch_norm_backward(params, cache, put(xp, r))
        tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        tm, tv = torch.tensor(mean), torch.tensor(var)
        ty = torch.nn.functional.batch_norm(tx, tm, tv, tg, tb, training=train, momentum=0.2)
        ty.backward(torch.tensor(r))
        np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        for got, t in ((dx, tx), (grads["gamma"], tg), (grads["beta"], tb)):
            np.testing.assert_allclose(host(got), t.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(host(new["mean"]), tm.numpy(), rtol=1e-12)
        np.testing.assert_allclose(host(new["var"]), tv.numpy(), rtol=1e-12)


class ThreadSync:
    """Two "ranks" as two threads of this process: a stand-in for
    :class:`bpcore.distributed.BatchStatSync` (sums over the ranks; ``grad_sum``
    weighted by each rank's share of the global batch)."""

    def __init__(self, shares: list[float]) -> None:
        import threading

        self.shares = shares
        self.barrier = threading.Barrier(len(shares))
        self.slots: list[Any] = [None] * len(shares)
        self.local = threading.local()

    def _all(self, parts: list[Any], weight: float) -> list[Any]:
        rank = self.local.rank
        self.slots[rank] = [p * weight for p in parts]
        self.barrier.wait()
        total = [sum(col[1:], col[0]) for col in zip(*self.slots)]
        self.barrier.wait()  # every rank has read the slots before the next call
        return total

    def sum(self, parts: list[Any]) -> list[Any]:
        return self._all(parts, 1.0)

    def grad_sum(self, parts: list[Any]) -> list[Any]:
        w = self.shares[self.local.rank]
        return [t / w for t in self._all(parts, w)]


@pytest.mark.parametrize("shape", [(7, 3), (7, 3, 5)])
def test_synchronised_batch_norm_on_shards_is_batch_norm_on_the_whole_batch(
    xp: ModuleType, shape: tuple[int, ...]
) -> None:
    """Two shards (4 + 3 rows) through a synchronised batch norm give the whole
    batch's outputs, input gradients (in each shard's units: dy / share), parameter
    gradients (their share-weighted sum) and running statistics."""
    import threading

    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal(shape) * 3 + 2, rng.standard_normal(shape)
    params = {"gamma": put(xp, rng.uniform(0.5, 1.5, 3)), "beta": put(xp, rng.normal(size=3))}
    state = {"mean": put(xp, rng.normal(size=3)), "var": put(xp, rng.uniform(0.5, 2, 3))}
    y, cache, new = norm.batch_norm_forward(params, put(xp, x), state=state, train=True,
                                            momentum=0.3)
    dx, grads = norm.batch_norm_backward(params, cache, put(xp, dy))
    rows = [slice(0, 4), slice(4, 7)]
    shares = [4 / 7, 3 / 7]
    sync = ThreadSync(shares)
    results: list[Any] = [None, None]

    def rank(r: int) -> None:
        sync.local.rank = r
        yr, cr, nr = norm.batch_norm_forward(params, put(xp, x[rows[r]]), state=state,
                                             train=True, momentum=0.3, sync=sync)
        results[r] = (yr, *norm.batch_norm_backward(params, cr, put(xp, dy[rows[r]] / shares[r])),
                      nr)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(res is not None for res in results)
    for r, (yr, dxr, _, nr) in enumerate(results):
        np.testing.assert_allclose(host(yr), host(y)[rows[r]], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(host(dxr) * shares[r], host(dx)[rows[r]], rtol=1e-10,
                                   atol=1e-12)
        for key in ("mean", "var"):  # identical on both ranks, and the whole batch's
            np.testing.assert_allclose(host(nr[key]), host(new[key]), rtol=1e-12)
            assert bp.namespace(nr[key]) is bp.namespace(new[key])
    for key in ("gamma", "beta"):
        total = sum(host(res[2][key]) * w for res, w in zip(results, shares))
        np.testing.assert_allclose(total, host(grads[key]), rtol=1e-10, atol=1e-12)


def test_synchronised_batch_norm_sums_float16_in_float32(xp: ModuleType) -> None:
    """float16 values (a mixed-precision step's) whose sum of squares overflows
    float16: the statistics are summed in float32, the outputs stay float16, the
    running statistics keep their dtype."""
    import threading

    if not hasattr(xp, "float16"):
        pytest.skip(f"{bp.backend.backend_name(xp)} has no float16")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3, 6)) * 5 + 60  # Σ x² per channel ~ 10⁵ > 65504
    params = {"gamma": put(xp, np.ones(3), "float16"), "beta": put(xp, np.zeros(3), "float16")}
    state = {"mean": put(xp, np.zeros(3), "float32"), "var": put(xp, np.ones(3), "float32")}
    y, _, new = norm.batch_norm_forward(
        {k: put(xp, np.ones(3) if k == "gamma" else np.zeros(3)) for k in params},
        put(xp, x), state={k: put(xp, host(v)) for k, v in state.items()}, train=True)
    sync = ThreadSync([0.5, 0.5])
    results: list[Any] = [None, None]

    def rank(r: int) -> None:
        sync.local.rank = r
        part = put(xp, x[4 * r:4 * r + 4], "float16")
        yr, cr, nr = norm.batch_norm_forward(params, part, state=state, train=True, sync=sync)
        dxr, _ = norm.batch_norm_backward(params, cr, xp.ones_like(yr))
        results[r] = (yr, dxr, nr)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r, (yr, dxr, nr) in enumerate(results):
        assert yr.dtype == xp.float16 and dxr.dtype == xp.float16
        assert nr["mean"].dtype == xp.float32 and nr["var"].dtype == xp.float32
        np.testing.assert_allclose(host(yr), host(y)[4 * r:4 * r + 4], atol=0.03)
        np.testing.assert_allclose(host(dxr), 0.0, atol=0.03)  # dy = 1: no gradient to x
        for key in ("mean", "var"):
            np.testing.assert_allclose(host(nr[key]), host(new[key]), rtol=2e-3)


def test_sync_batch_norm_rebuilds_a_network_with_the_same_config() -> None:
    from bpcore.distributed import BatchStatSync, sync_batch_norm

    net = bn_net()
    sync = BatchStatSync(None)  # type: ignore[arg-type]  # no collective is called here
    synced = sync_batch_norm(net, sync)
    assert synced is not net and synced.config == net.config
    plain = bp.mlp([4, 3])
    assert sync_batch_norm(plain, sync) is plain  # nothing to synchronise
    # a layer of one's own, which from_config cannot rebuild, holding a batch norm
    mine = net._replace(config={"name": "mine", "layers": [bp.batch_norm(3).config]})
    with pytest.raises(bp.SettingError, match="cannot synchronise this network's batch norm"):
        sync_batch_norm(mine, sync)


def bn_net(p: float = 0.0) -> bp.Layer:
    return bp.sequential(bp.conv1d(1, 3, 3, padding=1), bp.batch_norm(3), bp.relu(),
                         bp.flatten(), bp.dropout(p), bp.dense(24, 2))


def test_running_statistics_live_beside_the_parameters(torch: ModuleType) -> None:
    net, opt = bn_net(), bp.adamw(1e-2, weight_decay=0.5)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((10, 1, 8)) * 3 + 2, rng.integers(0, 2, 10)
    params = net.init(0, dtype="float64")
    state = bp.train_state(net, opt, params, seed=0)
    assert isinstance(state, bp.TrainState) and int(state.step) == 0
    assert [tuple(a.shape) for a in bp.tree.leaves(state.opt.m)] == \
        [tuple(a.shape) for a in bp.tree.leaves(params)]  # the optimizer sees parameters only
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    tstate = bp.tree.map_arrays(lambda a: torch.tensor(host(a)), state.layers)
    for _ in range(3):
        tparams = bp.tree.map_arrays(lambda a: torch.tensor(host(a)), params)
        torch_forward(torch, net.config, tparams, torch.tensor(x), tstate, train=True)
        params, state, _ = step(params, state, x, t)
    assert int(state.step) == 3
    for path, a in bp.tree.paths(state.layers):  # torch's running statistics, step by step
        np.testing.assert_allclose(host(a), dict(bp.tree.paths(tstate))[path].numpy(),
                                   rtol=1e-12)
    # evaluation: the running statistics, deterministic; as torch's eval mode
    y1 = bp.predict(net, params, x, state=state)
    y2 = bp.predict(net, params, x, state=state.layers)
    tparams = bp.tree.map_arrays(lambda a: torch.tensor(host(a)), params)
    ty = torch_forward(torch, net.config, tparams, torch.tensor(x), tstate, train=False)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(y1, ty.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(bp.ArgumentError, match=r"keeps layer state .*pass it to predict"):
        bp.predict(net, params, x)
    with pytest.raises(bp.ArgumentError, match=r"takes the state made by bp.train_state\(net, "
                       r"opt, params\), not a AdamState"):
        step(params, opt.init(params), x, t)


def test_train_state_in_checkpoints(tmp_path: Any) -> None:
    net, opt = bn_net(0.5), bp.adam(1e-2)
    params = net.init(0)
    state = bp.train_state(net, opt, params, seed=4)
    x, t = np.random.default_rng(4).standard_normal((6, 1, 8)).astype(np.float32), np.arange(6) % 2
    params, state, _ = bp.train_step(net, "softmax_cross_entropy", opt)(params, state, x, t)
    path = save_checkpoint(tmp_path / "bn.npz", params=params, opt_state=state,
                           model_config=net.config, optimizer_config=opt.config, epoch=1)
    ck = load_checkpoint(path)
    assert isinstance(ck.opt_state, bp.TrainState)
    assert int(ck.opt_state.step) == 1 and int(ck.opt_state.seed) == 4
    for a, b in zip(bp.tree.leaves(ck.opt_state.layers), bp.tree.leaves(state.layers)):
        np.testing.assert_array_equal(a, b)
    bad = state._replace(layers=(state.layers[0], {"mean": np.zeros(4, np.float32),
                                                   "var": np.ones(4, np.float32)},
                                 *state.layers[2:]))
    with pytest.raises(bp.CheckpointError, match=r"opt_state.layers: does not have the "
                       r"structure and shapes of the network's layer state"):
        save_checkpoint(tmp_path / "bad.npz", params=params, opt_state=bad,
                        model_config=net.config, optimizer_config=opt.config, epoch=1)


def test_compiled_jax_step_draws_each_steps_masks() -> None:
    """Under jax.jit the step counter is an input of the traced step: one
    compilation, and after 4 steps the parameters of NumPy's eager steps
    (whose masks come from the same seed and counters)."""
    from conftest import require_backend

    require_backend("jax")
    net, opt = bn_net(0.5), bp.sgd(0.2)
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((8, 1, 8)), rng.integers(0, 2, 8)
    params = net.init(0, dtype="float64")
    state = bp.train_state(net, opt, params, seed=7)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    eager = []
    for _ in range(4):
        params_next, state, value = step(params if not eager else eager[-1][0], state, x, t)
        eager.append((params_next, float(value)))
    assert len({v for _, v in eager}) == 4  # new masks every step
    with bp.use_backend("jax"):
        p = bp.to_backend(net.init(0, dtype="float64"), "jax")
        s = bp.train_state(net, opt, p, seed=7)
        compiled = bp.compile(net, "softmax_cross_entropy", opt, donate=False)
        X, T = bp.to_backend(x), bp.to_backend(t)
        for i in range(4):
            p, s, v = compiled(p, s, X, T)
            np.testing.assert_allclose(float(v), eager[i][1], rtol=1e-10)
    want = dict(bp.tree.paths(eager[-1][0]))  # by path: jax.jit gives dicts key-sorted
    for path, a in bp.tree.paths(p):
        np.testing.assert_allclose(host(a), want[path], rtol=1e-9, atol=1e-12)
    assert list(compiled.compiles.values()) == [1]


def test_model_runs_train_and_eval_modes(tmp_path: Any) -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((120, 1, 8))
    y = (X[:, 0, :4].sum(axis=1) > 0).astype(int)
    model = bp.Model(bn_net(0.2), lr=1e-2, batch_size=20, seed=3)
    model.fit(X, y, epochs=15, verbose=0)
    assert isinstance(model.opt_state, bp.TrainState) and int(model.opt_state.step) == 90
    p1, p2 = model.predict_proba(X), model.predict_proba(X)
    np.testing.assert_array_equal(p1, p2)  # evaluation: no dropout, running statistics
    assert model.evaluate(X, y)["accuracy"] > 0.8
    again = bp.Model.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(again.predict_proba(X), p1)


def test_bad_settings() -> None:
    for make, message in ((lambda: bp.dropout(1.0), r"dropout\(\): p must lie in \[0, 1\)"),
                          (lambda: bp.batch_norm(3, momentum=2), "momentum must lie in"),
                          (lambda: bp.batch_norm(0), "num_features must be a positive int")):
        with pytest.raises(bp.SettingError, match=message):
            make()
    with pytest.raises(bp.ArgumentError, match="call its forward with ctx"):
        bn_net().forward(bn_net().init(0), np.zeros((2, 1, 8), np.float32))
