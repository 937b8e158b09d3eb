"""Backends: the default, switching it, reporting what is usable, moving arrays.

Tests that change the default backend run inside a copied context
(``contextvars.copy_context().run``) or ``use_backend``, so nothing leaks into
the tests that follow.
"""

from __future__ import annotations

import contextvars
import importlib.util
import itertools
import threading
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import require_backend

import bpcore as bp
from bpcore.backend import BACKEND_NAMES, backend_name, resolve_dtype

CPU_BACKENDS = ["numpy", "torch", "jax", "array_api_strict"]


def _name_of(a: Any) -> str:
    return backend_name(bp.namespace(a))


def _leaves(tree: Any) -> list[Any]:
    out: list[Any] = []

    def keep(a: Any) -> Any:
        out.append(a)
        return a

    bp.tree.map_arrays(keep, tree)
    return out


# --------------------------------------------------------------------------
# the default backend


def test_numpy_is_the_default_in_a_fresh_context() -> None:
    net = bp.mlp([3, 2])

    def fresh() -> tuple[str, Any]:
        return bp.get_backend().name, net.init(0)

    name, params = contextvars.Context().run(fresh)
    assert name == "numpy"
    assert type(params[0]["W"]) is np.ndarray
    assert params[0]["W"].dtype == np.float32


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_set_backend_changes_where_init_creates_arrays(name: str) -> None:
    require_backend(name)
    net = bp.mlp([3, 4, 2], "tanh")

    def switched() -> tuple[str, Any]:
        backend = bp.set_backend(name)
        assert backend.name == name
        return bp.get_backend().name, net.init(0)

    current, params = contextvars.copy_context().run(switched)
    assert current == name
    assert all(_name_of(a) == name for a in _leaves(params))
    assert len(_leaves(params)) == 4


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_use_backend_switches_and_restores(name: str) -> None:
    require_backend(name)
    net = bp.dense(2, 3)
    with bp.use_backend("numpy"):
        with bp.use_backend(name) as backend:
            assert backend.name == name
            assert bp.get_backend().name == name
            assert _name_of(net.init(1)["W"]) == name
        assert bp.get_backend().name == "numpy"
        assert type(net.init(1)["W"]) is np.ndarray


def test_use_backend_restores_after_an_exception() -> None:
    require_backend("torch")
    with bp.use_backend("numpy"):
        with pytest.raises(RuntimeError, match="boom"), bp.use_backend("torch"):
            assert bp.get_backend().name == "torch"
            raise RuntimeError("boom")
        assert bp.get_backend().name == "numpy"


def test_use_backend_restores_when_nested_in_another_backend() -> None:
    require_backend("torch")
    require_backend("array_api_strict")
    with bp.use_backend("torch"):
        with bp.use_backend("array_api_strict"):
            assert bp.get_backend().name == "array_api_strict"
        assert bp.get_backend().name == "torch"


def test_default_is_per_context() -> None:
    require_backend("torch")
    with bp.use_backend("numpy"):
        seen: dict[str, str] = {}

        def inner() -> None:
            bp.set_backend("torch")
            seen["inner"] = bp.get_backend().name

        contextvars.copy_context().run(inner)
        assert seen["inner"] == "torch"
        assert bp.get_backend().name == "numpy"


def test_default_is_per_thread() -> None:
    require_backend("torch")
    require_backend("array_api_strict")
    started = threading.Barrier(2, timeout=30)
    seen: dict[str, str] = {}

    def worker(name: str) -> None:
        bp.set_backend(name)
        started.wait()  # both threads have set their own default
        seen[name] = bp.get_backend().name
        seen[name + "_array"] = _name_of(bp.dense(2, 2).init(0)["W"])

    with bp.use_backend("numpy"):
        threads = [
            threading.Thread(target=worker, args=(n,)) for n in ("torch", "array_api_strict")
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert bp.get_backend().name == "numpy"
    assert seen == {
        "torch": "torch",
        "torch_array": "torch",
        "array_api_strict": "array_api_strict",
        "array_api_strict_array": "array_api_strict",
    }


# --------------------------------------------------------------------------
# what backends() reports


def test_backends_reports_every_backend() -> None:
    report = bp.backends()
    assert list(report) == list(BACKEND_NAMES)
    for name, info in report.items():
        assert isinstance(info, bp.BackendInfo)
        assert info.name == name
        assert "pip install" in info.install
        if info.available:
            assert isinstance(info.version, str) and info.version
            assert info.devices and all(isinstance(d, str) for d in info.devices)
            assert info.reason is None
            assert name in str(info)
        else:
            assert isinstance(info.reason, str) and info.reason
            assert info.devices == ()
            assert "unavailable" in str(info) and info.install in str(info)


def test_backends_versions_and_devices_of_installed_ones() -> None:
    report = bp.backends()
    assert report["numpy"].available
    assert report["numpy"].version == np.__version__
    assert report["numpy"].devices == ("cpu",)
    if report["torch"].available:
        import torch

        assert report["torch"].version == str(torch.__version__)
        assert report["torch"].devices[0] == "cpu"
    if report["jax"].available:
        import jax

        assert report["jax"].version == jax.__version__
        assert report["jax"].devices == tuple(f"{d.platform}:{d.id}" for d in jax.devices())


def test_cupy_without_cupy_is_unavailable_with_a_reason() -> None:
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here; its report depends on the GPU")
    info = bp.backends()["cupy"]
    assert not info.available
    assert info.reason is not None and "not installed" in info.reason
    assert "cupy" in info.install and "pip install" in info.install
    with pytest.raises(bp.BackendError, match=r"'cupy' is not installed.*pip install"):
        bp.set_backend("cupy")


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(bp.BackendError, match=r"unknown backend 'tensorflow'.*numpy.*torch"):
        bp.set_backend("tensorflow")
    with pytest.raises(bp.BackendError, match="unknown backend 'Numpy'"):
        with bp.use_backend("Numpy"):
            pass  # pragma: no cover
    with pytest.raises(bp.BackendError, match="unknown backend"):
        bp.to_backend({"W": np.ones(2)}, "mxnet")
    assert issubclass(bp.BackendError, ValueError)


@pytest.mark.parametrize("name", ["torch", "jax", "array_api_strict"])
def test_uninstalled_backend_gives_the_install_command(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = {"torch": "torch", "jax": "jax", "array_api_strict": "array_api_strict"}[name]
    real = importlib.util.find_spec

    def find_spec(fullname: str, *args: Any, **kwargs: Any) -> Any:
        return None if fullname == module else real(fullname, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(bp.BackendError, match=rf"'{name}' is not installed.*pip install"):
        bp.set_backend(name)
    with pytest.raises(bp.BackendError, match="not installed"):
        with bp.use_backend(name):
            pass  # pragma: no cover
    with pytest.raises(bp.BackendError, match="pip install"):
        bp.to_backend({"W": np.ones(2)}, name)
    info = bp.backends()[name]
    assert not info.available
    assert info.reason == f"{module} is not installed"
    assert "pip install" in info.install
    assert bp.backends()["numpy"].available  # the others still report as before


def test_numpy_refuses_a_gpu_device() -> None:
    with pytest.raises(bp.BackendError, match="cpu"):
        bp.set_backend("numpy", device="cuda:0")


# --------------------------------------------------------------------------
# moving trees between backends


def _trained_tree(name: str) -> tuple[Any, Any, Any]:
    """Params, momentum state and Adam state after one step on backend ``name``."""
    net = bp.mlp([3, 4, 2], "tanh")
    rng = np.random.default_rng(7)
    with bp.use_backend(name) as b:
        params = net.init(3, dtype="float64")
        x = b.asarray(rng.normal(size=(5, 3)), dtype=b.xp.float64)
        t = b.asarray(np.array([0, 1, 1, 0, 1]))
        sgd = bp.sgd(0.1, momentum=0.9)
        adam = bp.adam(0.01)
        p1, s_sgd, _ = bp.train_step(net, "softmax_cross_entropy", sgd)(
            params, sgd.init(params), x, t
        )
        _, s_adam, _ = bp.train_step(net, "softmax_cross_entropy", adam)(
            params, adam.init(params), x, t
        )
    return p1, s_sgd, s_adam


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(CPU_BACKENDS, CPU_BACKENDS)))
def test_to_backend_moves_params_and_optimizer_state(src: str, dst: str) -> None:
    require_backend(src)
    require_backend(dst)
    tree = _trained_tree(src)
    before = [np.array(bp.to_numpy(a), copy=True) for a in _leaves(tree)]
    moved = bp.to_backend(tree, dst)

    params, s_sgd, s_adam = moved
    assert isinstance(params, tuple) and len(params) == 3 and params[1] == {}
    assert isinstance(s_sgd, bp.optim.SGDState)
    assert isinstance(s_adam, bp.optim.AdamState)
    assert s_adam.count == 1  # non-array leaves pass through
    leaves = _leaves(moved)
    assert len(leaves) == len(before) == 4 * 4
    for a, want in zip(leaves, before, strict=True):
        assert _name_of(a) == dst
        host = bp.to_numpy(a)
        assert host.dtype == np.float64
        np.testing.assert_array_equal(host, want)
    # the source is untouched
    for a, want in zip(_leaves(tree), before, strict=True):
        np.testing.assert_array_equal(bp.to_numpy(a), want)


@pytest.mark.parametrize("dst", CPU_BACKENDS)
def test_moved_params_train_like_the_original(dst: str) -> None:
    require_backend(dst)
    net = bp.mlp([3, 4, 1], "sigmoid", "sigmoid")
    opt = bp.sgd(0.5, momentum=0.9)
    step = bp.train_step(net, "half_sse", opt)
    rng = np.random.default_rng(0)
    x_host, t_host = rng.normal(size=(4, 3)), rng.uniform(size=(4, 1))
    with bp.use_backend("numpy"):
        params = net.init(0, dtype="float64")
    state = opt.init(params)
    ref = step(params, state, x_host, t_host)

    moved_params, moved_state, x, t = bp.to_backend((params, state, x_host, t_host), dst)
    out = step(moved_params, moved_state, x, t)
    assert float(out[2]) == pytest.approx(float(ref[2]), rel=1e-12)
    for a, b in zip(_leaves(out[:2]), _leaves(ref[:2]), strict=True):
        assert _name_of(a) == dst
        np.testing.assert_allclose(bp.to_numpy(a), b, rtol=1e-12, atol=1e-14)


def test_to_backend_without_a_name_uses_the_default(xp: ModuleType) -> None:
    tree = {"W": np.ones((2, 3)), "b": [np.zeros(3)]}
    moved = bp.to_backend(tree)
    assert bp.namespace(moved["W"]) is bp.namespace(bp.get_backend().asarray(np.ones(1)))
    assert isinstance(moved["b"], list)
    np.testing.assert_array_equal(bp.to_numpy(moved["W"]), np.ones((2, 3)))


def test_to_numpy_gives_host_arrays(xp: ModuleType) -> None:
    a = bp.get_backend().asarray(np.arange(6.0).reshape(2, 3))
    host = bp.to_numpy(a)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))


# --------------------------------------------------------------------------
# namespace() and resolve_dtype()


def test_namespace_follows_the_input(xp: ModuleType) -> None:
    a = bp.get_backend().asarray(np.ones((2, 2)))
    ns = bp.namespace(a)
    assert backend_name(ns) == bp.get_backend().name
    assert bp.namespace(a, 1.0, None, a) is ns  # scalars and None are ignored
    sentinel = object()
    assert bp.namespace(a, xp=sentinel) is sentinel  # type: ignore[arg-type]


def test_namespace_caches_by_type(xp: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    a = bp.get_backend().asarray(np.ones(3))
    first = bp.namespace(a)
    assert bp.backend._NAMESPACES[type(a)] is first

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("array_namespace called despite the cache")

    monkeypatch.setattr(bp.backend.array_api_compat, "array_namespace", fail)
    assert bp.namespace(a) is first
    assert bp.namespace(bp.get_backend().asarray(np.zeros(2))) is first


@pytest.mark.parametrize("other", CPU_BACKENDS)
def test_namespace_refuses_mixed_backends(xp: ModuleType, other: str) -> None:
    here = bp.get_backend().name
    require_backend(other)
    if other == here:
        pytest.skip("same backend: nothing to mix")
    a = bp.get_backend().asarray(np.ones(2))
    b = bp.to_backend(np.ones(2), other)
    with pytest.raises(bp.BackendMismatchError, match="two backends"):
        bp.namespace(a, b)
    assert issubclass(bp.BackendMismatchError, TypeError)


def test_namespace_refuses_non_arrays() -> None:
    with pytest.raises(bp.BackendMismatchError, match=r"list is not an array.*convert it"):
        bp.namespace([1.0, 2.0])
    with pytest.raises(TypeError, match="at least one array"):
        bp.namespace(1.0, None)


def test_resolve_dtype_accepts_float32_and_float64(xp: ModuleType) -> None:
    assert resolve_dtype(xp) == xp.float32
    assert resolve_dtype(xp, "float32") == xp.float32
    assert resolve_dtype(xp, "float64") == xp.float64
    assert resolve_dtype(xp, xp.float64) == xp.float64


@pytest.mark.parametrize("dtype", ["float16", "int32", "int64", "bool", "complex64"])
def test_resolve_dtype_refuses_other_dtypes(xp: ModuleType, dtype: str) -> None:
    with pytest.raises(bp.DTypeError, match=rf"dtype {dtype} is not supported.*float32.*float64"):
        resolve_dtype(xp, dtype)
    native = getattr(xp, dtype, None)
    if native is not None:
        with pytest.raises(bp.DTypeError, match=rf"{dtype} is not supported"):
            resolve_dtype(xp, native)
    with pytest.raises(bp.DTypeError, match="not supported"):
        bp.mlp([2, 1]).init(0, dtype=dtype)
    assert issubclass(bp.DTypeError, TypeError)
