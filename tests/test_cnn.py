"""Networks of n-D inputs (convolutions, pooling, flatten/reshape) through
everything else: shape inference and the checks, the step driver on every
backend against PyTorch's autograd, predict, Model, from_config, checkpoints,
bp.compile and train_loop."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import host, put

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.checkpoint import load_checkpoint, save_checkpoint
from bpcore.layers import from_config, output_shape


def body1d() -> list[bp.Layer]:
    """Every new 1-D layer once: (batch, 40) -> (batch, 9)."""
    return [
        bp.reshape((1, 40)), bp.conv1d(1, 4, 5, stride=2, padding=1), bp.relu(),
        bp.max_pool1d(2, padding=1), bp.conv1d(4, 3, 3, dilation=2), bp.tanh(),
        bp.avg_pool1d(2), bp.flatten(),
    ]


def cnn1d(classes: int = 10) -> bp.Layer:
    return bp.sequential(*body1d(), bp.dense(9, classes))


def cnn2d() -> bp.Layer:
    """A small LeNet: (batch, 1, 8, 8) -> 10 logits."""
    return bp.sequential(
        bp.conv2d(1, 3, 3, padding=1), bp.relu(), bp.max_pool2d(2),
        bp.conv2d(3, 4, (2, 3), stride=(1, 2)), bp.relu(), bp.avg_pool2d(2, padding=1),
        bp.flatten(), bp.dense(8, 10),
    )


def torch_forward(torch: ModuleType, net: bp.Layer, params: Any, x: Any) -> Any:
    """The same network written with torch.nn.functional, from its configs."""
    F = torch.nn.functional
    for cfg, p in zip(net.config["layers"], params):
        name = cfg["name"]
        if name == "reshape":
            x = x.reshape(x.shape[0], *cfg["shape"])
        elif name == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif name == "dense":
            x = x @ p["W"] + p["b"]
        elif name in ("relu", "tanh"):
            x = getattr(torch, name)(x)
        elif name.startswith("conv"):
            f = F.conv1d if name == "conv1d" else F.conv2d
            x = f(x, p["W"], p["b"], stride=cfg["stride"], padding=cfg["padding"],
                  dilation=cfg["dilation"])
        elif name.startswith("max_pool"):
            f = F.max_pool1d if name.endswith("1d") else F.max_pool2d
            x = f(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"])
        else:
            f = F.avg_pool1d if name.endswith("1d") else F.avg_pool2d
            x = f(x, cfg["kernel_size"], cfg["stride"], cfg["padding"],
                  count_include_pad=cfg["count_include_pad"])
    return x


def test_shapes_are_inferred_when_the_network_is_built() -> None:
    net = cnn1d()
    assert (net.n_in, net.n_out, net.in_shape) == (None, 10, None)
    assert output_shape(net, (40,)) == (10,)
    assert output_shape(bp.conv1d(1, 25, 5, stride=2, padding=1), (1, 40)) == (25, 19)
    conv = bp.sequential(bp.conv1d(1, 25, 5, stride=2, padding=1), bp.relu(), bp.flatten())
    assert conv.in_shape == (1, None) and conv.n_in is None and conv.n_out is None
    assert output_shape(conv, (1, 40)) == (475,)
    assert bp.mlp([4, 3, 2]).in_shape == (4,)  # dense networks as before
    with pytest.raises(bp.SettingError, match=r"layer 8 \(dense\) takes 10 features but the "
                       r"layer before it gives 9; make the sizes agree"):
        bp.sequential(*body1d(), bp.dense(10, 2))
    with pytest.raises(bp.SettingError, match=r"layer 2 \(conv1d\) takes inputs of shape "
                       r"\(3, \?\) per sample but the layer before it gives \(4, \?\)"):
        bp.sequential(bp.conv1d(1, 4, 3), bp.relu(), bp.conv1d(3, 2, 3))
    with pytest.raises(bp.SettingError, match=r"layer 1 \(conv2d\) takes inputs of shape "
                       r"\(1, \?, \?\) per sample but the layer before it gives \(1, 40\)"):
        bp.sequential(bp.reshape((1, 40)), bp.conv2d(1, 2, 3))


@pytest.mark.parametrize(
    ("net", "x_shape", "message"),
    [
        (cnn1d, (3, 41), r"x of shape \(3, 41\) does not fit the network: layer 0 \(reshape\): "
         r"reshape to \(1, 40\) needs 40 values per sample, got 41"),
        (cnn2d, (3, 64), r"x must be 4-D \(batch, 1, \?, \?\) for this network, got shape "
         r"\(3, 64\); give each sample that shape"),
        (cnn2d, (3, 2, 8, 8), r"layer 0 \(conv2d\): conv2d takes inputs of shape \(1, height, "
         r"width\) per sample \(channels first\), got \(2, 8, 8\)"),
        (cnn2d, (3, 1, 3, 3), r"layer 3 \(conv2d\): input size 1 \(padded 1\) is smaller than "
         r"the kernel's span 2"),
        (cnn2d, (3, 1, 12, 12), r"layer 7 \(dense\): dense takes 8 features, got 24"),
    ],
)
def test_a_batch_that_does_not_fit_is_refused_naming_the_layer(
    net: Any, x_shape: tuple[int, ...], message: str
) -> None:
    net = net()
    params = net.init(0)
    x = np.zeros(x_shape, dtype=np.float32)
    t = np.zeros(x_shape[0], dtype=np.int64)
    step = bp.train_step(net, "softmax_cross_entropy", bp.sgd(0.1))
    with pytest.raises(bp.ShapeError, match=message):
        step(params, bp.sgd(0.1).init(params), x, t)
    with pytest.raises(bp.ShapeError, match=message):
        bp.predict(net, params, x)


@pytest.mark.parametrize("which", ["1d", "2d"])
def test_gradients_match_torch_autograd_on_every_backend(
    xp: ModuleType, torch: ModuleType, which: str
) -> None:
    net = cnn1d() if which == "1d" else cnn2d()
    shape = (5, 40) if which == "1d" else (5, 1, 8, 8)
    rng = np.random.default_rng(0)
    x_host, t_host = rng.standard_normal(shape), rng.integers(0, 10, 5)
    params = net.init(1, dtype="float64")
    jax = backend_name(xp) == "jax"  # eager JAX compiles each operation for each shape: jit

    def grad(p: Any, x: Any, t: Any) -> Any:
        return bp.value_and_grad(net, "softmax_cross_entropy", p, x, t, validate=not jax)

    if jax:
        import jax as jax_module

        grad = jax_module.jit(grad)
    value, grads = grad(params, put(xp, x_host), put(xp, t_host))
    tparams = [{k: torch.tensor(host(v), requires_grad=True) for k, v in p.items()}
               for p in params]
    logits = torch_forward(torch, net, tparams, torch.tensor(x_host))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(t_host))
    loss.backward()
    np.testing.assert_allclose(host(value), loss.item(), rtol=1e-12)
    for g, tp in zip(grads, tparams):
        for k in tp:
            assert tp[k].grad is not None
            np.testing.assert_allclose(host(g[k]), tp[k].grad.numpy(), rtol=1e-10, atol=1e-13)
    if jax:
        return  # the eager step on JAX: test_train_loop_and_compile_take_nd_batches (jitted)
    # a training step is that gradient through the optimizer
    opt = bp.sgd(0.5)
    new, _, loss_value = bp.train_step(net, "softmax_cross_entropy", opt)(
        params, opt.init(params), put(xp, x_host), put(xp, t_host))
    np.testing.assert_allclose(host(loss_value), loss.item(), rtol=1e-12)
    for p, g, q in zip(params, grads, new):
        for k in p:
            np.testing.assert_allclose(host(q[k]), host(p[k]) - 0.5 * host(g[k]), rtol=1e-12,
                                       atol=1e-14)
    y = bp.predict(net, new, put(xp, x_host))
    assert bp.namespace(y) is xp and tuple(y.shape) == (5, 10)


@pytest.mark.parametrize("which", ["1d", "2d"])
def test_numpy_fast_step_equals_the_portable_step(which: str) -> None:
    net = cnn1d() if which == "1d" else cnn2d()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 40) if which == "1d" else (6, 1, 8, 8))
    t = rng.integers(0, 10, 6)
    result = []
    for fast in (True, False):
        opt = bp.adam(1e-2)
        params = net.init(0, dtype="float64")
        state = opt.init(params)
        step = bp.train_step(net, "softmax_cross_entropy", opt, fast=fast, inplace=fast)
        for _ in range(4):
            params, state, value = step(params, state, x, t)
        result.append((params, float(value)))
    for a, b in zip(bp.tree.leaves(result[0]), bp.tree.leaves(result[1])):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_config_round_trips() -> None:
    for net, shape in ((cnn1d(), (2, 40)), (cnn2d(), (2, 1, 8, 8))):
        config = json.loads(json.dumps(net.config))  # as a checkpoint stores it
        again = from_config(config)
        assert again.config == net.config
        params = net.init(3, dtype="float64")
        x = np.random.default_rng(0).standard_normal(shape)
        np.testing.assert_array_equal(bp.predict(again, params, x), bp.predict(net, params, x))


def test_model_fits_predicts_and_reloads_a_cnn(tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 40))
    y = (X[:, :20].sum(axis=1) > 0).astype(int)  # a pattern in the first half
    model = bp.Model(cnn1d(classes=2), lr=1e-2, batch_size=20, seed=1)
    model.fit(X, y, epochs=15, verbose=0)
    assert model.evaluate(X, y)["accuracy"] > 0.8
    path = model.save(tmp_path / "cnn.npz")
    again = bp.Model.load(path)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), rtol=1e-6)
    ck = load_checkpoint(path)
    assert [tuple(p["W"].shape) for p in ck.params if p] == [(4, 1, 5), (3, 4, 3), (9, 2)]
    # n-D samples as they are: (n, 1, 40) into a network that begins with a convolution
    conv = bp.Model(bp.sequential(*body1d()[1:], bp.dense(9, 2)), lr=1e-2, batch_size=20,
                    seed=1)
    conv.fit(X[:, None, :], y, epochs=2, verbose=0)
    assert conv.predict(X[:5, None, :]).shape == (5,)
    with pytest.raises(bp.ShapeError, match=r"x must be 3-D \(batch, 1, \?\) for this network"):
        conv.predict(X[:5])


def test_checkpoints_refuse_conv_weights_of_another_shape(tmp_path: Any) -> None:
    net, opt = cnn1d(), bp.sgd(0.1)
    params = net.init(0)
    config = json.loads(json.dumps(net.config))
    config["layers"][4]["kernel_size"] = 2
    with pytest.raises(bp.CheckpointError, match=r"layer 4 \(conv1d\): W has shape \(3, 4, 3\) "
                       r"but the architecture needs \(3, 4, 2\)"):
        save_checkpoint(tmp_path / "a.npz", params=params, opt_state=opt.init(params),
                        model_config=config, optimizer_config=opt.config, epoch=0)
    config["layers"][4]["kernel_size"] = 3
    config["layers"][8]["n_in"] = 8  # the weights too: only the shape inference sees it
    wrong = (*params[:8], {"W": np.zeros((8, 10), np.float32), "b": np.zeros(10, np.float32)})
    with pytest.raises(bp.CheckpointError, match=r"layer 8 \(dense\) takes 8 features but the "
                       r"layer before it gives 9"):
        save_checkpoint(tmp_path / "b.npz", params=wrong, opt_state=opt.init(wrong),
                        model_config=config, optimizer_config=opt.config, epoch=0)


def test_train_loop_and_compile_take_nd_batches() -> None:
    """NumPy's eager train_loop is the reference; bp.compile on JAX (jax.jit, and one
    lax.scan with loop=True) gives its parameters. (JAX running eagerly compiles
    every operation of a convolution for every shape: slow, so not here; and
    torch.compile takes tens of seconds to compile.)"""
    from conftest import require_backend

    require_backend("jax")
    net, opt = cnn2d(), bp.adam(1e-2)
    rng = np.random.default_rng(4)
    xs, ts = rng.standard_normal((3, 4, 1, 8, 8)), rng.integers(0, 10, (3, 4))
    params = net.init(0, dtype="float64")
    loop = bp.train_loop(net, "softmax_cross_entropy", opt)
    want, _, values = loop(params, opt.init(params), xs, ts)
    with bp.use_backend("jax"):
        xp = bp.get_backend().xp
        p = bp.to_backend(params, "jax")
        s = opt.init(p)
        compiled = bp.compile(net, "softmax_cross_entropy", opt, donate=False)
        for i in range(3):
            p, s, v = compiled(p, s, put(xp, xs[i]), put(xp, ts[i]))
            np.testing.assert_allclose(host(v), values[i], rtol=1e-10)
        scan = bp.compile(net, "softmax_cross_entropy", opt, loop=True)
        q, _, vs = scan(bp.to_backend(params, "jax"), opt.init(bp.to_backend(params, "jax")),
                        put(xp, xs), put(xp, ts))
    np.testing.assert_allclose(host(vs), values, rtol=1e-10)
    for a, b, c in zip(bp.tree.leaves(p), bp.tree.leaves(q), bp.tree.leaves(want)):
        np.testing.assert_allclose(host(a), c, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(host(b), c, rtol=1e-9, atol=1e-12)
    assert compiled.methods["jax"].startswith("jax.jit")


@pytest.mark.parametrize("workload", ["mnist1d-cnn", "lenet"])
def test_benchmark_rows_start_from_the_same_network(torch: ModuleType, workload: str) -> None:
    """bpcore bench's convolutional workloads: the torch peers' modules hold bpcore's
    initial weights and compute bpcore's outputs; the floor counts the im2col GEMMs."""
    from bpcore.benchtools import rows, workloads

    work = workloads.WORKLOADS[workload]
    x, _ = workloads.host_batch(work, 3, "float64")
    params = workloads.host_tree(work, "float64")
    want = bp.predict(workloads.network(work), params, x)
    module = rows._torch_network(work, "float64", torch.device("cpu"))
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), want,
                               rtol=1e-10, atol=1e-12)
    products = workloads.gemm_products(work, 3)
    assert len(products) == 3 * sum(1 for p in params if p) - 1
    with pytest.raises(rows.Unavailable, match="MLP"):
        rows.build("jax-jit", work, 3, "float32", "cpu")
