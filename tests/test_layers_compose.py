"""residual, parallel, layer_norm and embedding (bpcore/layers/core.py, norm.py,
embedding.py): gradients against PyTorch's autograd on every backend in float64,
central differences, settings, configs and checkpoints."""

from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import check_gradient, host, put
from torch_ref import bp_grads, torch_grads

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.checkpoint import load_checkpoint, save_checkpoint
from bpcore.dispatch import specializations
from bpcore.layers import from_config, norm

embedding_mod = importlib.import_module("bpcore.layers.embedding")  # not the layer of that name


def mnist1d_mlp() -> bp.Layer:
    """The paper's MLP: ``h = relu(W1 x); h = h + relu(W2 h); W3 h``, in one line."""
    return bp.sequential(bp.dense(40, 100), bp.relu(),
                         bp.residual(bp.dense(100, 100), bp.relu()), bp.dense(100, 10))


NETS = {
    "residual": (mnist1d_mlp, (6, 40)),
    "parallel": (lambda: bp.sequential(
        bp.dense(5, 6), bp.tanh(),
        bp.parallel(bp.dense(6, 3), bp.sequential(bp.dense(6, 4), bp.relu()), combine="concat"),
        bp.parallel(bp.dense(7, 4), bp.residual(bp.dense(7, 7)), combine="concat"),
        bp.layer_norm(11), bp.parallel(bp.dense(11, 3), bp.dense(11, 3), combine="sum"),
    ), (6, 5)),
    "channels": (lambda: bp.sequential(
        bp.conv1d(2, 3, 3, padding=1),
        bp.parallel(bp.conv1d(3, 2, 3, padding=1), bp.conv1d(3, 4, 1)),
        bp.residual(bp.conv1d(6, 6, 3, padding=1), bp.relu()),
        bp.layer_norm((6, 8)), bp.flatten(), bp.dense(48, 3),
    ), (4, 2, 8)),
}


@pytest.mark.parametrize("which", list(NETS))
def test_gradients_match_torch_autograd(xp: ModuleType, torch: ModuleType, which: str) -> None:
    make, shape = NETS[which]
    net = make()
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal(shape), rng.integers(0, 3, shape[0])
    params = net.init(1, dtype="float64")
    if which == "channels":  # layer norm's gamma and beta away from 1 and 0
        params[3]["gamma"] = put(xp, rng.uniform(0.5, 1.5, (6, 8)))
        params[3]["beta"] = put(xp, rng.standard_normal((6, 8)))
    value, grads = bp_grads(xp, net, params, x, t)
    want, tgrads, _ = torch_grads(torch, net, params, x, t)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    want_grads = dict(bp.tree.paths(tgrads))  # by path: jax.jit returns dicts key-sorted
    got = dict(bp.tree.paths(grads))
    assert set(got) == set(want_grads)
    for path, g in got.items():
        np.testing.assert_allclose(host(g), want_grads[path], rtol=1e-10, atol=1e-13)


def test_residual_and_parallel_gradients_match_central_differences(xp: ModuleType) -> None:
    if backend_name(xp) == "jax":
        pytest.skip("JAX's gradients are checked against PyTorch's autograd (jitted) above; "
                    "central differences would run the network eagerly, recompiling each "
                    "operation")
    net = NETS["parallel"][0]()
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
    params = net.init(2, dtype="float64")
    _, grads = bp_grads(xp, net, params, x, t)
    flat, treedef = bp.tree.flatten(bp.tree.map_arrays(host, params))
    by_path = dict(bp.tree.paths(grads))  # in the parameters' order (jax.jit sorts keys)
    g = np.concatenate([host(by_path[path]).ravel() for path, _ in bp.tree.paths(params)])

    def f(v: np.ndarray) -> float:
        parts, start = [], 0
        for a in flat:
            parts.append(put(xp, v[start:start + a.size].reshape(a.shape)))
            start += a.size
        value, _ = bp_grads(xp, net, bp.tree.unflatten(treedef, parts), x, t)
        return value

    check_gradient(f, np.concatenate([a.ravel() for a in flat]), g, seed=3)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
def test_layer_norm_kernels_match_torch(xp: ModuleType, torch: ModuleType,
                                        shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 3 + 1
    k = len(shape) - 1  # normalized over every sample axis
    gamma, beta = rng.standard_normal(shape[1:]), rng.standard_normal(shape[1:])
    params = {"gamma": put(xp, gamma), "beta": put(xp, beta)}
    y, cache = norm.layer_norm_forward(params, put(xp, x))
    r = rng.standard_normal(shape)
    dx, grads = norm.layer_norm_backward(params, cache, put(xp, r))
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ty = torch.nn.functional.layer_norm(tx, shape[len(shape) - k:], tg, tb, 1e-5)
    ty.backward(torch.tensor(r))
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, t in ((dx, tx), (grads["gamma"], tg), (grads["beta"], tb)):
        np.testing.assert_allclose(host(got), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_embedding_matches_torch_and_numpy_specialization(xp: ModuleType,
                                                           torch: ModuleType) -> None:
    rng = np.random.default_rng(3)
    W = rng.standard_normal((7, 4))
    index = rng.integers(0, 7, (5, 3))  # (batch, time), repeats included
    y, cache = embedding_mod.embedding_forward({"W": put(xp, W)}, put(xp, index))
    r = rng.standard_normal((5, 3, 4))
    dx, grads = embedding_mod.embedding_backward({"W": put(xp, W)}, cache, put(xp, r))
    tW = torch.tensor(W, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(index), tW)
    ty.backward(torch.tensor(r))
    assert dx is None
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(host(grads["W"]), tW.grad.numpy(), rtol=1e-12, atol=1e-14)
    fast = specializations(embedding_mod.embedding_backward)["numpy"]
    _, got = fast({"W": W}, embedding_mod.EmbeddingCache(index.reshape(-1), index.shape), r)
    np.testing.assert_allclose(got["W"], tW.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_an_embedding_network_trains_on_integer_inputs() -> None:
    net = bp.sequential(bp.embedding(10, 4), bp.flatten(), bp.dense(12, 2))
    opt = bp.adam(0.05)
    params = net.init(0)
    state = opt.init(params)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    x = np.random.default_rng(0).integers(0, 10, (32, 3))
    t = (x[:, 0] < 5).astype(np.int64)
    for _ in range(60):
        params, state, value = step(params, state, x, t)
    assert float(value) < 0.1
    with pytest.raises(bp.LabelError, match=r"index 10 is out of range: the embedding has 10 "
                       r"rows, so indices must lie in \[0, 9\]"):
        step(params, state, x + 1, t)
    with pytest.raises(bp.DTypeError, match="takes integer indices"):
        bp.predict(net, params, x.astype(np.float32))
    with pytest.raises(bp.ShapeError, match=r"does not fit the network: layer 2 \(dense\)"):
        bp.predict(net, params, x[:, :2])


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: bp.residual(bp.dense(3, 4)), bp.SettingError,
         r"residual\(\): the block maps inputs of shape \(3,\) to \(4,\); y = x \+ f\(x\) needs"),
        (lambda: bp.residual(), bp.SettingError, r"residual\(\) needs at least one layer"),
        (lambda: bp.residual(bp.relu), bp.ArgumentError, "takes Layer objects"),
        (lambda: bp.parallel(bp.dense(3, 4)), bp.SettingError, "at least two branches"),
        (lambda: bp.parallel(bp.dense(3, 4), bp.dense(3, 2), combine="sum"), bp.SettingError,
         r"branch 1 gives \(2,\) but branch 0 gives \(4,\); the branches need the same shape"),
        (lambda: bp.parallel(bp.dense(3, 4), bp.dense(5, 2)), bp.SettingError,
         r"branch 1 \(dense\) takes inputs of shape \(5,\) but branch 0 takes \(3,\)"),
        (lambda: bp.parallel(bp.dense(3, 4), bp.dense(3, 2), combine="max"), bp.SettingError,
         "combine must be 'concat' or 'sum'"),
        (lambda: bp.layer_norm(0), bp.SettingError, "normalized_shape must be a positive int"),
        (lambda: bp.layer_norm(4, eps=0.0), bp.SettingError, "eps must be a finite number > 0"),
        (lambda: bp.sequential(bp.dense(3, 4), bp.layer_norm(5)), bp.SettingError,
         r"layer_norm over \(5,\) takes samples ending in that shape, got \(4,\)"),
        (lambda: bp.embedding(0, 3), bp.SettingError, "num_embeddings must be a positive int"),
    ],
)
def test_bad_compositions_are_refused(make: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_configs_and_checkpoints_round_trip(tmp_path: Any) -> None:
    rng = np.random.default_rng(4)
    for which, (make, shape) in NETS.items():
        net = make()
        again = from_config(json.loads(json.dumps(net.config)))
        assert again.config == net.config
        params = net.init(5)
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(bp.predict(again, params, x), bp.predict(net, params, x))
        opt = bp.adam()
        path = save_checkpoint(tmp_path / f"{which}.npz", params=params,
                               opt_state=opt.init(params), model_config=net.config,
                               optimizer_config=opt.config, epoch=1)
        ck = load_checkpoint(path, model_config=net.config)
        np.testing.assert_array_equal(bp.predict(net, ck.params, x), bp.predict(net, params, x))
    # a block's weights of another shape are refused, naming where
    net = mnist1d_mlp()
    params = net.init(0)
    wrong = (*params[:2], ({"W": np.zeros((100, 99), np.float32),
                            "b": np.zeros(100, np.float32)}, {}), params[3])
    with pytest.raises(bp.CheckpointError, match=r"layer 2's block, layer 0 \(dense 100->100\): "
                       r"W has shape \(100, 99\) but the architecture needs \(100, 100\)"):
        save_checkpoint(tmp_path / "bad.npz", params=wrong, opt_state=None,
                        model_config=net.config, optimizer_config={}, epoch=0)


def test_model_trains_the_paper_mlp() -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 40))
    y = np.argmax(X[:, :10], axis=1)
    model = bp.Model(mnist1d_mlp(), optimizer="adam", lr=1e-2, batch_size=50, seed=0)
    model.fit(X, y, epochs=30, verbose=0)
    assert model.evaluate(X, y)["accuracy"] > 0.9
