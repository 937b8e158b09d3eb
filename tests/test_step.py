"""Whole training steps against a PyTorch autograd + ``torch.optim`` reference.

The reference is written here with ``torch.nn.functional`` in float64 and
starts from bpcore's own initial weights (copied through NumPy), so after a
few steps the two must agree to rounding on every backend.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import require_backend
from gradcheck import flat_snapshot

import bpcore as bp
from bpcore.backend import backend_name, dtype_name

N_STEPS = 4


class Case(NamedTuple):
    sizes: tuple[int, ...]
    hidden: str
    output: str
    loss: str
    opt: str  # "momentum", "nesterov", "sgd", "adam", "adam_wd"
    targets: str  # "labels", "probs", "binary", "values"


#: Every architecture, activation, loss and optimizer family at least once; these
#: run on every backend.
CASES = [
    Case((2, 1), "sigmoid", "sigmoid", "half_sse", "momentum", "values"),
    Case((3, 4, 1), "tanh", "identity", "binary_cross_entropy", "adam", "binary"),
    Case((8, 16, 8, 4), "relu", "identity", "mse", "nesterov", "values"),
    Case((64, 32, 10), "gelu", "identity", "softmax_cross_entropy", "adam_wd", "labels"),
]
#: More combinations (probability targets, plain SGD, sigmoid output on a wide
#: net, ...). JAX eager compiles every operation for every new shape, which
#: costs seconds per network, so these run on the backends without that cost.
MORE_CASES = [
    Case((2, 1), "sigmoid", "identity", "binary_cross_entropy", "adam", "binary"),
    Case((3, 4, 1), "sigmoid", "sigmoid", "mse", "adam", "values"),
    Case((3, 4, 1), "relu", "identity", "mse", "sgd", "values"),
    Case((8, 16, 8, 4), "relu", "identity", "softmax_cross_entropy", "adam", "labels"),
    Case((8, 16, 8, 4), "sigmoid", "identity", "binary_cross_entropy", "sgd", "binary"),
    Case((8, 16, 8, 4), "gelu", "identity", "softmax_cross_entropy", "momentum", "probs"),
    Case((64, 32, 10), "tanh", "identity", "softmax_cross_entropy", "momentum", "labels"),
    Case((64, 32, 10), "gelu", "identity", "softmax_cross_entropy", "adam_wd", "probs"),
    Case((64, 32, 10), "relu", "sigmoid", "half_sse", "adam", "values"),
]
NO_COMPILE_BACKENDS = ["numpy", "array_api_strict", "torch"]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded in these tests: for their tiny products its
    OpenMP pool only adds barrier waits, ~25 ms a matmul when the 2-core test
    machine is busy (measured), where one thread takes microseconds."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _case_id(c: Case) -> str:
    return f"{'-'.join(map(str, c.sizes))}-{c.hidden}-{c.output}-{c.loss}-{c.opt}"


def _optimizer(kind: str) -> bp.Optimizer:
    return {
        "sgd": lambda: bp.sgd(lr=0.3),
        "momentum": lambda: bp.sgd(lr=0.1, momentum=0.9),
        "nesterov": lambda: bp.sgd(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
        "adam": lambda: bp.adam(lr=0.01),
        "adam_wd": lambda: bp.adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    }[kind]()


def _torch_optimizer(torch: ModuleType, kind: str, params: list[Any]) -> Any:
    optim = torch.optim
    if kind == "sgd":
        return optim.SGD(params, lr=0.3)
    if kind == "momentum":
        return optim.SGD(params, lr=0.1, momentum=0.9)
    if kind == "nesterov":
        return optim.SGD(params, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)
    if kind == "adam":
        return optim.Adam(params, lr=0.01)
    return optim.Adam(params, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)


def _host_data(case: Case, batch: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_in, n_out = case.sizes[0], case.sizes[-1]
    x = rng.normal(size=(batch, n_in))
    t: np.ndarray
    if case.targets == "labels":
        t = rng.integers(0, n_out, size=batch)
    elif case.targets == "probs":
        t = rng.dirichlet(np.ones(n_out), size=batch)
    elif case.targets == "binary":
        t = rng.uniform(size=(batch, n_out))
        t[: batch // 2] = np.round(t[: batch // 2])  # hard and soft targets
    else:
        t = rng.uniform(-0.5, 1.5, size=(batch, n_out))
        if case.output == "sigmoid":
            t = rng.uniform(size=(batch, n_out))
    return x, t


def _on_backend(host: np.ndarray, dtype: str = "float64") -> Any:
    b = bp.get_backend()
    if host.dtype.kind == "i":
        return b.asarray(host)
    return b.asarray(host, dtype=getattr(b.xp, dtype))


def _net(case: Case) -> bp.Layer:
    return bp.mlp(list(case.sizes), case.hidden, case.output)


def _host_params(params: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (np.array(bp.to_numpy(p["W"]), copy=True), np.array(bp.to_numpy(p["b"]), copy=True))
        for p in params
        if p
    ]


# --------------------------------------------------------------------------
# the PyTorch reference


def _torch_act(torch: ModuleType, name: str) -> Callable[[Any], Any]:
    F = torch.nn.functional
    return {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": F.relu,
        "gelu": lambda z: F.gelu(z, approximate="tanh"),
        "identity": lambda z: z,
    }[name]


def _torch_forward(torch: ModuleType, case: Case, weights: list[Any], x: Any) -> Any:
    hidden, output = _torch_act(torch, case.hidden), _torch_act(torch, case.output)
    a = x
    for i, (W, b) in enumerate(weights):
        z = a @ W + b
        a = output(z) if i == len(weights) - 1 else hidden(z)
    return a


def _torch_loss(torch: ModuleType, name: str, y: Any, t: Any) -> Any:
    F = torch.nn.functional
    if name == "half_sse":
        return 0.5 * ((y - t) ** 2).sum()
    if name == "mse":
        return F.mse_loss(y, t)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(y, t)
    return F.cross_entropy(y, t)  # labels (int64) or probability rows


def _torch_train(
    torch: ModuleType, case: Case, init: list[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray, t: np.ndarray, n_steps: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    weights = [
        (torch.tensor(W, dtype=torch.float64, requires_grad=True),
         torch.tensor(b, dtype=torch.float64, requires_grad=True))
        for W, b in init
    ]
    opt = _torch_optimizer(torch, case.opt, [p for wb in weights for p in wb])
    xt = torch.tensor(x, dtype=torch.float64)
    tt = torch.tensor(t) if t.dtype.kind == "i" else torch.tensor(t, dtype=torch.float64)
    values = []
    for _ in range(n_steps):
        opt.zero_grad()
        value = _torch_loss(torch, case.loss, _torch_forward(torch, case, weights, xt), tt)
        value.backward()
        opt.step()
        values.append(float(value.detach()))
    return [(W.detach().numpy(), b.detach().numpy()) for W, b in weights], values


def _torch_value_and_grad(
    torch: ModuleType, case: Case, init: list[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray, t: np.ndarray,
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    weights = [
        (torch.tensor(W, dtype=torch.float64, requires_grad=True),
         torch.tensor(b, dtype=torch.float64, requires_grad=True))
        for W, b in init
    ]
    xt = torch.tensor(x, dtype=torch.float64)
    tt = torch.tensor(t) if t.dtype.kind == "i" else torch.tensor(t, dtype=torch.float64)
    value = _torch_loss(torch, case.loss, _torch_forward(torch, case, weights, xt), tt)
    value.backward()
    return float(value.detach()), [(W.grad.numpy(), b.grad.numpy()) for W, b in weights]


def _run_bpcore(
    case: Case, x_host: np.ndarray, t_host: np.ndarray, n_steps: int, dtype: str = "float64",
    seed: int = 0,
) -> tuple[Any, Any, list[Any]]:
    net, opt = _net(case), _optimizer(case.opt)
    step = bp.train_step(net, case.loss, opt)
    params = net.init(seed, dtype=dtype)
    state = opt.init(params)
    x, t = _on_backend(x_host, dtype), _on_backend(t_host, dtype)
    values = []
    for _ in range(n_steps):
        params, state, value = step(params, state, x, t)
        values.append(value)
    return params, state, values


# --------------------------------------------------------------------------
# tests


def _check_against_torch(torch: ModuleType, case: Case) -> None:
    x, t = _host_data(case)
    init = _host_params(_net(case).init(0, dtype="float64"))
    want_params, want_values = _torch_train(torch, case, init, x, t, N_STEPS)

    params, _, values = _run_bpcore(case, x, t, N_STEPS)
    here = bp.get_backend().name
    for value in values:
        assert tuple(value.shape) == ()
    np.testing.assert_allclose([float(v) for v in values], want_values, rtol=1e-10, atol=1e-12)
    got = [p for p in params if p]
    assert len(got) == len(want_params)
    for p, (W, b) in zip(got, want_params, strict=True):
        assert backend_name(bp.namespace(p["W"])) == here
        np.testing.assert_allclose(bp.to_numpy(p["W"]), W, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(bp.to_numpy(p["b"]), b, rtol=1e-9, atol=1e-11)
    # the loss went down over the steps: the reference is not trivially static
    assert want_values[-1] < want_values[0]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_train_steps_match_torch(xp: ModuleType, torch: ModuleType, case: Case) -> None:
    _check_against_torch(torch, case)


@pytest.mark.parametrize("case", MORE_CASES, ids=_case_id)
@pytest.mark.parametrize("name", NO_COMPILE_BACKENDS)
def test_more_train_steps_match_torch(name: str, torch: ModuleType, case: Case) -> None:
    require_backend(name)
    with bp.use_backend(name):
        _check_against_torch(torch, case)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_value_and_grad_matches_torch(xp: ModuleType, torch: ModuleType, case: Case) -> None:
    x_host, t_host = _host_data(case, seed=1)
    net = _net(case)
    params = net.init(2, dtype="float64")
    host_params = _host_params(params)
    want_value, want_grads = _torch_value_and_grad(torch, case, host_params, x_host, t_host)

    x, t = _on_backend(x_host), _on_backend(t_host)
    value, grads = bp.value_and_grad(net, case.loss, params, x, t)
    assert float(value) == pytest.approx(want_value, rel=1e-12)
    assert len(grads) == len(params)
    for g, p in zip(grads, params, strict=True):
        assert g.keys() == p.keys()
    got = [g for g in grads if g]
    for g, (dW, db) in zip(got, want_grads, strict=True):
        np.testing.assert_allclose(bp.to_numpy(g["W"]), dW, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(bp.to_numpy(g["b"]), db, rtol=1e-10, atol=1e-13)


def test_value_and_grad_agrees_with_an_sgd_step(xp: ModuleType) -> None:
    case = CASES[2]
    x_host, t_host = _host_data(case)
    net, lr = _net(case), 0.25
    params = net.init(5, dtype="float64")
    x, t = _on_backend(x_host), _on_backend(t_host)
    value, grads = bp.value_and_grad(net, case.loss, params, x, t)
    opt = bp.sgd(lr)
    new, _, step_value = bp.train_step(net, case.loss, opt)(params, opt.init(params), x, t)
    assert float(step_value) == pytest.approx(float(value), rel=1e-14)
    for p, g, q in zip(params, grads, new, strict=True):
        for key in p:
            np.testing.assert_allclose(
                bp.to_numpy(q[key]),
                bp.to_numpy(p[key]) - lr * bp.to_numpy(g[key]),
                rtol=1e-13, atol=1e-15,
            )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=_case_id)
def test_same_seed_same_weights_on_every_backend(xp: ModuleType, case: Case, dtype: str) -> None:
    x, t = _host_data(case, seed=3)
    params, _, values = _run_bpcore(case, x, t, N_STEPS, dtype=dtype, seed=11)
    with bp.use_backend("numpy"):
        ref_params, _, ref_values = _run_bpcore(case, x, t, N_STEPS, dtype=dtype, seed=11)
        first = _host_params(_net(case).init(11, dtype=dtype))
    # the initial weights are bit-identical; after N steps they agree to rounding
    np.testing.assert_array_equal(_host_params(_net(case).init(11, dtype=dtype))[0][0], first[0][0])
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (2e-5, 2e-6)
    for (W, b), (W0, b0) in zip(_host_params(params), _host_params(ref_params), strict=True):
        assert W.dtype == W0.dtype == np.dtype(dtype)
        np.testing.assert_allclose(W, W0, rtol=rtol, atol=atol)
        np.testing.assert_allclose(b, b0, rtol=rtol, atol=atol)
    np.testing.assert_allclose(
        [float(v) for v in values], [float(v) for v in ref_values], rtol=rtol, atol=atol
    )


def _assert_same(tree: Any, snapshot: list[np.ndarray]) -> None:
    now = flat_snapshot(tree)
    assert len(now) == len(snapshot)
    for a, b in zip(now, snapshot, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt_kind", ["sgd", "momentum", "adam"])
def test_nothing_passed_in_is_mutated(xp: ModuleType, opt_kind: str) -> None:
    case = CASES[2]
    x_host, t_host = _host_data(case)
    net, opt = _net(case), _optimizer(opt_kind)
    step = bp.train_step(net, case.loss, opt)
    params = net.init(0, dtype="float64")
    x, t = _on_backend(x_host), _on_backend(t_host)
    # one step first, so the optimizer state holds non-zero buffers
    params, state, _ = step(params, opt.init(params), x, t)
    count = getattr(state, "count", None)
    before = flat_snapshot((params, state, x, t))

    new_params, new_state, _ = step(params, state, x, t)
    _assert_same((params, state, x, t), before)
    assert getattr(state, "count", None) == count
    for p, q in zip(params, new_params, strict=True):
        for key in p:
            assert q[key] is not p[key]
    assert not np.array_equal(flat_snapshot(new_params)[0], before[0])  # but it did train
    if opt_kind != "sgd":
        assert not np.array_equal(flat_snapshot(new_state)[0], flat_snapshot(state)[0])

    bp.value_and_grad(net, case.loss, params, x, t)
    bp.predict(net, params, x)
    _assert_same((params, state, x, t), before)


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=_case_id)
def test_float32_runs_and_stays_float32(xp: ModuleType, case: Case) -> None:
    x_host, t_host = _host_data(case)
    params, state, values = _run_bpcore(case, x_host, t_host, N_STEPS, dtype="float32")
    with bp.use_backend("numpy"):
        params64, _, values64 = _run_bpcore(case, x_host, t_host, N_STEPS, dtype="float64")
    xp_ = bp.namespace(params[0]["W"])
    for p in params:
        for a in p.values():
            assert dtype_name(a.dtype, xp_) == "float32"
    for buffers in state[1:] if hasattr(state, "count") else state:
        for p in buffers:
            for a in p.values():
                assert dtype_name(a.dtype, xp_) == "float32"
    for v in values:
        assert dtype_name(v.dtype, xp_) == "float32"
    pred = bp.predict(_net(case), params, _on_backend(x_host, "float32"))
    assert dtype_name(pred.dtype, xp_) == "float32"
    # and it computes the same thing as float64, to float32 precision
    np.testing.assert_allclose(
        [float(v) for v in values], [float(v) for v in values64], rtol=1e-4, atol=1e-5
    )
    if not case.opt.startswith("adam"):  # Adam's g/√v magnifies rounding in tiny gradients
        for (W, _), (W64, _) in zip(_host_params(params), _host_params(params64), strict=True):
            np.testing.assert_allclose(W, W64, rtol=1e-4, atol=1e-5)


def test_predict_matches_torch_forward(xp: ModuleType, torch: ModuleType) -> None:
    case = CASES[2]
    x_host, _ = _host_data(case)
    net = _net(case)
    params = net.init(4, dtype="float64")
    weights = [(torch.tensor(W), torch.tensor(b)) for W, b in _host_params(params)]
    want = _torch_forward(torch, case, weights, torch.tensor(x_host)).numpy()
    got = bp.predict(net, params, _on_backend(x_host))
    assert backend_name(bp.namespace(got)) == bp.get_backend().name
    np.testing.assert_allclose(bp.to_numpy(got), want, rtol=1e-12, atol=1e-14)
