"""bpcore.compile: compiled steps give the eager step's parameters on every backend.

JAX compiles with ``jax.jit`` (about a second per step here), PyTorch with
``torch.compile`` (Inductor: 10-20 s per step on this 2-core machine, so
PyTorch runs one case), NumPy runs its fused in-place step, and the backends
without a compiler run eagerly after one warning that says why.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import require_backend

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.cli import main
from bpcore.compile import NO_COMPILER, CompiledStep
from bpcore.errors import LabelError

STEPS = 3
LOSS = "softmax_cross_entropy"


def relu_momentum() -> tuple[bp.Layer, bp.Optimizer]:
    return bp.mlp([5, 7, 3], "relu"), bp.sgd(0.1, momentum=0.9)


def tanh_sigmoid_adam() -> tuple[bp.Layer, bp.Optimizer]:
    net = bp.sequential(
        bp.dense(5, 6), bp.tanh(), bp.dense(6, 4), bp.sigmoid(), bp.dense(4, 3)
    )
    return net, bp.adam(0.01)


CASES: dict[str, Callable[[], tuple[bp.Layer, bp.Optimizer]]] = {
    "relu-momentum": relu_momentum,
    "tanh-sigmoid-adam": tanh_sigmoid_adam,
}
#: The one case PyTorch compiles (Inductor is slow here); Adam also exercises
#: the recompilation when the step count first changes.
TORCH_CASE = "tanh-sigmoid-adam"


def batch(n: int = 8, n_in: int = 5, n_out: int = 3, dtype: str = "float64",
          seed: int = 0) -> tuple[Any, Any]:
    """Inputs and integer labels on the current default backend."""
    rng = np.random.default_rng(seed)
    backend = bp.get_backend()
    x = backend.asarray(rng.standard_normal((n, n_in)).astype(dtype))
    t = backend.asarray(rng.integers(0, n_out, n))
    return x, t


def leaves(params: Any) -> list[np.ndarray]:
    """Host copies of every parameter array (not views: the step may write in place)."""
    return [np.array(bp.to_numpy(layer[k])) for layer in params for k in sorted(layer)]


def assert_same(a: Any, b: Any, rtol: float, atol: float) -> None:
    for u, v in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@contextlib.contextmanager
def fallback_warning(name: str) -> Iterator[None]:
    """Expect the one warning of a backend without a compiler (nothing elsewhere)."""
    if name in NO_COMPILER:
        with pytest.warns(UserWarning, match=f"bpcore.compile: {name}: .*eager") as record:
            yield
        assert len(record) == 1
    else:
        yield


def run(step: Callable[..., Any], params: Any, state: Any, x: Any, t: Any,
        n: int = STEPS) -> tuple[Any, Any, Any]:
    value = None
    for _ in range(n):
        params, state, value = step(params, state, x, t)
    return params, state, value


# --------------------------------------------------------------------------
# compiled == eager, every backend


@pytest.mark.parametrize("case", list(CASES))
def test_same_parameters_as_eager(xp: ModuleType, case: str) -> None:
    name = backend_name(xp)
    if name == "torch" and case != TORCH_CASE:
        pytest.skip(f"torch.compile takes 10-20 s per step here; torch runs {TORCH_CASE}")
    net, opt = CASES[case]()
    x, t = batch()
    eager = bp.train_step(net, LOSS, opt)
    want_p, want_s, want_v = run(eager, net.init(0, dtype="float64"),
                                 opt.init(net.init(0, dtype="float64")), x, t)

    step = bp.compile(net, LOSS, opt)
    params = net.init(0, dtype="float64")
    state = opt.init(params)
    with fallback_warning(name):
        params, state, value = step(params, state, x, t)
    params, state, value = run(step, params, state, x, t, STEPS - 1)

    assert_same(params, want_p, rtol=1e-9, atol=1e-12)
    assert float(value) == pytest.approx(float(want_v), rel=1e-9)
    assert bp.namespace(params[0]["W"]) is xp
    if isinstance(want_s, bp.optim.AdamState):
        assert int(state.count) == STEPS
    else:
        assert_same(state.velocity, want_s.velocity, rtol=1e-9, atol=1e-12)
    assert step.methods[name] == {
        "jax": "jax.jit, params and state donated",
        "torch": "torch.compile",
        "numpy": "numpy: the step driver's workspace, in place",
    }.get(name, f"eager: {NO_COMPILER.get(name)}")


def test_jax_float32_compiles_once_and_donates() -> None:
    require_backend("jax")
    net, opt = tanh_sigmoid_adam()
    with bp.use_backend("numpy"):  # the reference: eager NumPy (eager JAX is slow)
        params = net.init(0)
        want, _, _ = run(bp.train_step(net, LOSS, opt), params, opt.init(params),
                         *batch(dtype="float32"), 4)
    with bp.use_backend("jax"):
        x, t = batch(dtype="float32")
        step = bp.compile(net, LOSS, opt)
        first = net.init(0)
        params, state, _ = step(first, opt.init(first), x, t)
        assert first[0]["W"].is_deleted()  # donated: consumed by the call
        params, state, _ = run(step, params, state, x, t, 3)
    assert_same(params, want, rtol=1e-5, atol=1e-6)
    assert int(state.count) == 4  # a 0-D integer array under jax.jit
    assert step.compiles == {("jax", (8, 5)): 1}  # the int step count did not recompile
    assert step.compile_seconds[("jax", (8, 5))] > 0


def test_new_batch_shape_compiles_again_and_validates() -> None:
    require_backend("jax")
    with bp.use_backend("jax"):
        net, opt = relu_momentum()
        step = bp.compile(net, LOSS, opt)
        params = net.init(0, dtype="float64")
        state = opt.init(params)
        for n in (8, 8, 3, 3, 8):
            params, state, _ = step(params, state, *batch(n))
        assert step.compiles == {("jax", (8, 5)): 1, ("jax", (3, 5)): 1}
        x, _ = batch(5)
        bad = bp.get_backend().asarray(np.array([0, 1, 3, 0, 1]))  # 3 is out of range
        with pytest.raises(LabelError):  # the first batch of a new shape is checked
            step(params, state, x, bad)


# --------------------------------------------------------------------------
# donation / in place


def test_donate_false_leaves_the_inputs_alone_on_jax() -> None:
    require_backend("jax")
    with bp.use_backend("jax"):
        net, opt = relu_momentum()
        x, t = batch()
        step = bp.compile(net, LOSS, opt, donate=False)
        params = net.init(0, dtype="float64")
        before = leaves(params)
        new, _, _ = step(params, opt.init(params), x, t)
    assert not params[0]["W"].is_deleted()
    for u, v in zip(leaves(params), before):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(leaves(new)[0], before[0])


@pytest.mark.parametrize("donate", [True, False])
def test_numpy_updates_in_place_only_when_donating(donate: bool) -> None:
    with bp.use_backend("numpy"):
        net, opt = relu_momentum()
        x, t = batch()
        params = net.init(0, dtype="float64")
        before = leaves(params)
        step = bp.compile(net, LOSS, opt, donate=donate)
        new, _, _ = step(params, opt.init(params), x, t)
    assert (new[0]["W"] is params[0]["W"]) is donate
    changed = not np.array_equal(leaves(params)[0], before[0])
    assert changed is donate
    assert step.methods["numpy"] == "numpy: the step driver's workspace" + (
        ", in place" if donate else "")


# --------------------------------------------------------------------------
# validation and fallbacks


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_first_batch_is_validated_before_anything_runs(backend: str) -> None:
    require_backend(backend)
    with bp.use_backend(backend) as b:
        net, opt = relu_momentum()
        x, _ = batch()
        labels = b.asarray(np.array([0, 1, 2, 3, 0, 1, 2, 0]))  # 3 is out of range
        params = net.init(0, dtype="float64")
        before = leaves(params)
        step = bp.compile(net, LOSS, opt)
        with pytest.raises(LabelError, match="label"):
            step(params, opt.init(params), x, labels)
    for u, v in zip(leaves(params), before):  # nothing consumed or changed
        np.testing.assert_array_equal(u, v)


def test_no_compiler_warns_once_and_says_why() -> None:
    require_backend("array_api_strict")
    with bp.use_backend("array_api_strict"):
        net, opt = relu_momentum()
        x, t = batch()
        step = bp.compile(net, LOSS, opt)
        params = net.init(0, dtype="float64")
        state = opt.init(params)
        with pytest.warns(UserWarning, match="reference backend with no compiler") as record:
            params, state, _ = run(step, params, state, x, t)
            params, state, _ = step(params, state, *batch(4))  # a new shape: no new warning
    assert len(record) == 1
    assert record[0].filename == __file__  # points at the caller's line


def test_numpy_network_without_specializations_runs_the_driver_silently() -> None:
    net = bp.mlp([5, 7, 3], "gelu")  # gelu has no NumPy specialization
    opt = bp.sgd(0.1)
    with bp.use_backend("numpy"):
        x, t = batch()
        params = net.init(0, dtype="float64")
        want, _, _ = run(bp.train_step(net, LOSS, opt), params, opt.init(params), x, t)
        step = bp.compile(net, LOSS, opt, donate=False)
        got, _, _ = run(step, params, opt.init(params), x, t)  # warnings are errors here
    assert_same(got, want, rtol=0, atol=0)


def test_untraceable_step_falls_back_to_eager_on_jax() -> None:
    require_backend("jax")
    with bp.use_backend("jax"):
        net, opt = relu_momentum()
        x, t = batch()
        validating = bp.train_step(net, LOSS, opt)  # validate=True: host syncs, not traceable
        want, _, _ = run(validating, net.init(0, dtype="float64"),
                         opt.init(net.init(0, dtype="float64")), x, t)
        step = bp.compile(validating)
        params = net.init(0, dtype="float64")
        with pytest.warns(UserWarning, match=r"jax\.jit failed .*validate=False") as record:
            params, _, _ = run(step, params, opt.init(params), x, t)
    assert len(record) == 1
    assert step.methods["jax"].startswith("eager: jax.jit failed")
    assert_same(params, want, rtol=0, atol=0)


def test_ready_step_form() -> None:
    net, opt = relu_momentum()
    with bp.use_backend("numpy"):
        x, t = batch()
        inner = bp.train_step(net, LOSS, opt, validate=False)
        step = bp.compile(inner)
        assert isinstance(step, CompiledStep)
        params = net.init(0, dtype="float64")
        got, _, _ = run(step, params, opt.init(params), x, t)
        want, _, _ = run(inner, params, opt.init(params), x, t)
    assert_same(got, want, rtol=0, atol=0)
    assert step.methods == {"numpy": "numpy: the step as built (no compiler)"}
    assert "numpy" in repr(step)


def test_bad_arguments_say_what_to_pass() -> None:
    net, opt = relu_momentum()
    with pytest.raises(TypeError, match="needs the loss and the optimizer"):
        bp.compile(net)
    with pytest.raises(TypeError, match="takes a ready step alone"):
        bp.compile(bp.train_step(net, LOSS, opt), LOSS, opt)
    with pytest.raises(TypeError, match="a step function or a network"):
        bp.compile(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Model(compile=True) and bpcore train --compile


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_model_fit_compiled_matches_eager(backend: str, tmp_path: Path) -> None:
    require_backend(backend)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((24, 5))
    y = rng.integers(0, 3, 24)
    kwargs: dict[str, Any] = {"activation": "tanh", "batch_size": 16, "backend": backend,
                              "dtype": "float64", "optimizer": "adam", "lr": 0.01}
    eager = bp.Model([5, 8, 3], **{**kwargs, "backend": "numpy"})  # same seeds, same batches
    eager.fit(X, y, epochs=2, progress=False)
    model = bp.Model([5, 8, 3], compile=True, **kwargs)
    model.fit(X, y, epochs=1, progress=False)
    model.fit(X, y, epochs=1, progress=False)  # again: the model holds live arrays
    assert_same(model.params, eager.params, rtol=1e-9, atol=1e-12)
    assert model.history[-1]["loss"] == pytest.approx(eager.history[-1]["loss"], rel=1e-9)
    np.testing.assert_array_equal(model.predict(X), eager.predict(X))
    assert not model._loops[False].methods[backend].startswith("eager")
    # the compiled JAX step's count is a 0-D array: it must save and resume as one
    model.save(tmp_path / "m.npz")
    resumed = bp.Model.load(tmp_path / "m.npz", backend=backend, compile=True)
    assert np.ndim(resumed.opt_state.count) == 0 and int(resumed.opt_state.count) == 4
    resumed.fit(X, y, epochs=1, progress=False)
    eager.fit(X, y, epochs=1, progress=False)
    assert_same(resumed.params, eager.params, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_cli_train_compile(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    require_backend(backend)
    args = ["train", "--layers", "64,16,10", "--epochs", "1", "--batch-size", "128",
            "--backend", backend, "--quiet"]
    assert main([*args, "--compile"]) == 0
    compiled = capsys.readouterr().out
    assert re.match(rf"^test accuracy \d+\.\d% \(\d+/359\) on digits — {backend}, ", compiled)
    if backend == "numpy":  # eager JAX is slow; the Model test compares JAX with eager
        assert main(args) == 0
        assert compiled.split(" on digits")[0] == capsys.readouterr().out.split(" on digits")[0]


def test_docstring_example_runs() -> None:
    import doctest
    import sys

    failures, tried = doctest.testmod(sys.modules["bpcore.compile"])
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------
# many steps per call: bp.train_loop and bp.compile(..., loop=True)


def stacked(k: int = 4, n: int = 6, dtype: str = "float64") -> tuple[Any, Any]:
    """``k`` batches stacked, (k, n, 5) inputs and (k, n) labels, on the default backend."""
    rng = np.random.default_rng(7)
    backend = bp.get_backend()
    xs = backend.asarray(rng.standard_normal((k, n, 5)).astype(dtype))
    ts = backend.asarray(rng.integers(0, 3, (k, n)))
    return xs, ts


def single_steps(net: bp.Layer, opt: bp.Optimizer, xs: Any, ts: Any) -> tuple[Any, Any, list[Any]]:
    step = bp.train_step(net, LOSS, opt)
    params = net.init(0, dtype="float64")
    state = opt.init(params)
    values = []
    for i in range(xs.shape[0]):
        params, state, value = step(params, state, xs[i, ...], ts[i, ...])
        values.append(float(value))
    return params, state, values


def test_train_loop_is_k_single_steps(xp: ModuleType) -> None:
    net, opt = relu_momentum()
    xs, ts = stacked()
    want_p, want_s, want_v = single_steps(net, opt, xs, ts)
    loop = bp.train_loop(net, LOSS, opt)
    params = net.init(0, dtype="float64")
    params, state, values = loop(params, opt.init(params), xs, ts)
    assert tuple(values.shape) == (4,)
    assert_same(params, want_p, rtol=1e-12, atol=1e-14)
    assert_same(state.velocity, want_s.velocity, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bp.to_numpy(values), want_v, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_compiled_loop_is_k_single_steps(backend: str) -> None:
    require_backend(backend)
    with bp.use_backend(backend):
        net, opt = bp.mlp([5, 7, 3], "relu"), bp.adam(0.01)  # relu: clip under Dynamo
        xs, ts = stacked()
        want_p, _, want_v = single_steps(net, opt, xs, ts)
        loop = bp.compile(net, LOSS, opt, loop=True)
        params = net.init(0, dtype="float64")
        params, state, values = loop(params, opt.init(params), xs, ts)
        assert_same(params, want_p, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bp.to_numpy(values), want_v, rtol=1e-9)
        assert int(state.count) == 4
        params, state, _ = loop(params, state, xs, ts)  # a second call: compiled already
        assert int(state.count) == 8
    assert not loop.methods[backend].startswith("eager"), loop.methods
    if backend == "jax":
        assert "lax.scan" in loop.methods["jax"]
        assert loop.compiles[("jax", (4, 6, 5))] == 1


def test_loop_checks_the_stacked_batches() -> None:
    with bp.use_backend("numpy"):
        net, opt = relu_momentum()
        xs, ts = stacked()
        params = net.init(0, dtype="float64")
        loop = bp.train_loop(net, LOSS, opt)
        with pytest.raises(bp.ShapeError, match="stacked"):
            loop(params, opt.init(params), xs[0], ts[0])
        bad = np.array(ts, copy=True)
        bad[2, 3] = 3  # one label out of range in the third batch
        with pytest.raises(LabelError, match="label 3"):
            loop(params, opt.init(params), xs, bad)
        with pytest.raises(LabelError, match="label 3"):
            bp.compile(net, LOSS, opt, loop=True)(params, opt.init(params), xs, bad)
