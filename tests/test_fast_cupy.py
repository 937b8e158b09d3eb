"""The CuPy fast path (bpcore.fast.cupy): dispatch, CPU checks of its CUDA
sources, and GPU tests against the portable kernels.

Without a GPU three things are checked here:

* the dispatch never picks the CuPy module for the CPU backends, and the
  portable path then runs (and picks it for a CuPy namespace);
* the module imports without CuPy, and every kernel source is well formed;
* the kernels' arithmetic: each elementwise body, and the softmax
  cross-entropy kernel run with one thread per block, is compiled with the
  host C++ compiler (CUDA C's device subset is C++) and compared with the
  portable kernel on the same inputs. This checks the formulas and the
  operation order, not NVRTC, the launch configuration or the block-wide
  reductions of the raw kernel: the ``gpu`` tests do that on a device.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np
import pytest

import bpcore as bp
from bpcore import fast
from bpcore.backend import tree_map
from bpcore.fast import cupy as fcp
from bpcore.layers import activations as act

TOL: dict[str, dict[str, Any]] = {
    "float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14),
}
ACTS = ["sigmoid", "tanh", "relu"]
PORTABLE: dict[str, tuple[Any, Any]] = {
    "sigmoid": (act.sigmoid_forward, act.sigmoid_backward),
    "tanh": (act.tanh_forward, act.tanh_backward),
    "relu": (act.relu_forward, act.relu_backward),
    "identity": (act.identity_forward, act.identity_backward),
}


def _rand(shape: tuple[int, ...], dtype: str, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------
# dispatch and import


def test_dispatch_never_picks_cupy_on_cpu_backends(xp: ModuleType) -> None:
    module = fast.fast_module(xp)
    if array_api_compat.is_numpy_namespace(xp):
        assert module is not None and module.__name__ == "bpcore.fast.numpy"
    elif array_api_compat.is_cupy_namespace(xp):
        assert module is (fcp if fast.cupy_fast_enabled() else None)
    else:
        assert module is None
        net = bp.mlp([4, 5, 3], "relu")
        opt = bp.adam(1e-2)
        assert fast.fused_step(xp, net, bp.softmax_cross_entropy, opt, inplace=False) is None


def test_cpu_backends_run_the_portable_step(xp: ModuleType) -> None:
    if array_api_compat.is_cupy_namespace(xp) and fast.cupy_fast_enabled():
        pytest.skip("CuPy runs the fused step (see the gpu tests)")
    net = bp.mlp([4, 5, 3], "tanh")
    opt = bp.momentum(0.1)
    params = net.init(0)
    x = xp.asarray(_rand((6, 4), "float32"))
    t = xp.asarray(np.array([0, 1, 2, 0, 1, 2]))
    fast_on = bp.train_step(net, "softmax_cross_entropy", opt, fast=True)
    fast_off = bp.train_step(net, "softmax_cross_entropy", opt, fast=False)
    p1, _, v1 = fast_on(params, opt.init(params), x, t)
    p2, _, v2 = fast_off(params, opt.init(params), x, t)
    np.testing.assert_allclose(bp.to_numpy(v1), bp.to_numpy(v2), **TOL["float32"])
    for a, b in zip(p1, p2):
        for key in a:
            np.testing.assert_allclose(bp.to_numpy(a[key]), bp.to_numpy(b[key]), **TOL["float32"])


def test_dispatch_picks_cupy_module_for_cupy_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = ModuleType("fake_cupy_namespace")
    monkeypatch.setattr(
        array_api_compat, "is_cupy_namespace", lambda xp: xp is sentinel
    )
    monkeypatch.delenv("BPCORE_CUPY_FAST", raising=False)
    assert fast.fast_module(sentinel) is None  # unverified on a GPU: opt-in only
    monkeypatch.setenv("BPCORE_CUPY_FAST", "1")
    assert fast.fast_module(sentinel) is fcp
    for name in ("sgd_leaf", "adam_leaf", "build_step"):  # what bpcore.fast and optim call
        assert callable(getattr(fcp, name))


def test_module_imports_without_cupy() -> None:
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import bpcore.fast.cupy as m\n"
        "assert len(m.KERNELS) == 11\n"
        "try:\n"
        "    m.get_kernel('sgd')\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "lazy"


# --------------------------------------------------------------------------
# kernel sources


def _params(spec: str) -> list[tuple[str, str]]:
    return [tuple(p.split()) for p in spec.split(",") if p.strip()]  # type: ignore[misc]


def _balanced(text: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


@pytest.mark.parametrize("name", sorted(fcp.KERNELS))
def test_kernel_source_is_well_formed(name: str) -> None:
    src = fcp.KERNELS[name]
    assert _balanced(src.body)
    if src.kind == "raw":
        assert f'extern "C" __global__ void {src.name}(' in src.body
        assert "REAL" in src.name
        return
    assert src.kind == "elementwise"
    ins, outs = _params(src.in_params), _params(src.out_params)
    names = [n for _, n in ins + outs]
    assert len(set(names)) == len(names)
    for typ, n in ins + outs:
        assert typ in ("T", "int32")
        assert re.search(rf"\b{n}\b", src.body), f"{n} unused in {name}"
    for _, n in outs:
        assert re.search(rf"\b{n} = ", src.body), f"output {n} never written in {name}"
    assert set(src.scalars) <= {n for _, n in ins}
    for statement in src.body.strip().splitlines():
        assert statement.rstrip().endswith((";", "}")), statement


# --------------------------------------------------------------------------
# the kernels' arithmetic, compiled for the host

_CTYPE = {"float": ctypes.c_float, "double": ctypes.c_double}
_NP = {"float": "float32", "double": "float64"}

_SHIM = """
#include <cmath>
#include <cstddef>
using namespace std;
struct bp_dim3 { unsigned x, y, z; };
static bp_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __shared__
#define __syncthreads() ((void)0)
unsigned char smem_raw[64];
"""


def _elementwise_cpp(key: str, src: Any) -> str:
    ins, outs = _params(src.in_params), _params(src.out_params)
    ctype = {"T": "T", "int32": "int"}
    args, loads, call = [], [], []
    for typ, n in ins:
        if n in src.scalars:
            args.append(f"{ctype[typ]} {n}")
            call.append(n)
        else:
            args.append(f"const T* {n}_arr, long {n}_n")
            loads.append(f"const T {n} = {n}_arr[i % {n}_n];")
            call += [f"{n}_arr", f"{n}_n"]
    for _, n in outs:
        args.append(f"T* {n}_arr, long {n}_n")
        loads.append(f"T& {n} = {n}_arr[i % {n}_n];")
        call += [f"{n}_arr", f"{n}_n"]
    sig = ", ".join(args)
    text = (
        f"template <typename T> static void {key}_impl(long n, {sig}) {{\n"
        f"  for (long i = 0; i < n; ++i) {{\n    " + "\n    ".join(loads) + "\n"
        f"    {src.body}\n  }}\n}}\n"
    )
    for real in ("float", "double"):
        s = sig.replace("T*", f"{real}*").replace("T ", f"{real} ")
        text += (
            f'extern "C" void {key}_{real}(long n, {s}) '
            f"{{ {key}_impl<{real}>(n, {', '.join(call)}); }}\n"
        )
    return text


def _raw_cpp() -> str:
    body = fcp.KERNELS["softmax_ce_labels"].body
    text = ""
    for real in ("float", "double"):
        text += body.replace("REAL", real)
        text += (
            f'extern "C" void run_softmax_ce_{real}(const {real}* z, const long long* labels, '
            f"{real}* dz, {real}* row_loss, int batch, int k) {{\n"
            "  blockDim.x = 1; threadIdx.x = 0;\n"
            "  for (int r = 0; r < batch; ++r) { blockIdx.x = r; "
            f"softmax_ce_labels_{real}(z, labels, dz, row_loss, batch, k); }}\n}}\n"
        )
    return text


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """Every kernel compiled with the host C++ compiler into one shared library."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to check the kernel bodies with")
    parts = [_SHIM]
    for key, src in fcp.KERNELS.items():
        if src.kind == "elementwise":
            parts.append(_elementwise_cpp(key, src))
    parts.append(_raw_cpp())
    where = tmp_path_factory.mktemp("cupy_kernels")
    cpp, lib = where / "kernels.cpp", where / "kernels.so"
    cpp.write_text("\n".join(parts))
    subprocess.run(
        [cxx, "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(lib), str(cpp)],
        check=True, capture_output=True, timeout=120,
    )
    return ctypes.CDLL(str(Path(lib)))


def _call(lib: ctypes.CDLL, key: str, real: str, n: int, *values: Any) -> None:
    """Call ``key_real(n, ...)``: arrays go as (pointer, size), numbers as scalars."""
    src = fcp.KERNELS[key]
    names = [n_ for _, n_ in _params(src.in_params) + _params(src.out_params)]
    kinds = dict((n_, t) for t, n_ in _params(src.in_params) + _params(src.out_params))
    args: list[Any] = [ctypes.c_long(n)]
    for name, v in zip(names, values, strict=True):
        if name in src.scalars:
            args.append(ctypes.c_int(int(v)) if kinds[name] == "int32" else _CTYPE[real](v))
        else:
            assert isinstance(v, np.ndarray) and v.dtype == _NP[real] and v.flags.c_contiguous
            args += [ctypes.c_void_p(v.ctypes.data), ctypes.c_long(v.size)]
    getattr(lib, f"{key}_{real}")(*args)


@pytest.mark.parametrize("real", ["float", "double"])
@pytest.mark.parametrize("name", [*ACTS, "identity"])
def test_host_bias_activation_matches_portable(
    host_kernels: ctypes.CDLL, name: str, real: str
) -> None:
    dtype = _NP[real]
    z = _rand((7, 5), dtype)
    z[0, :3] = [0.0, 30.0, -100.0]
    b = _rand((5,), dtype, seed=2, scale=0.5)
    ref, _ = PORTABLE[name][0](z + b)
    y = np.empty_like(z)
    _call(host_kernels, f"bias_{name}", real, z.size, z, b, y)
    np.testing.assert_allclose(y, ref, **TOL[dtype])
    inplace = z.copy()  # y may be z itself
    _call(host_kernels, f"bias_{name}", real, z.size, inplace, b, inplace)
    np.testing.assert_array_equal(inplace, y)


@pytest.mark.parametrize("real", ["float", "double"])
@pytest.mark.parametrize("name", ACTS)
def test_host_activation_backward_matches_portable(
    host_kernels: ctypes.CDLL, name: str, real: str
) -> None:
    dtype = _NP[real]
    x = _rand((6, 4), dtype)
    x[0, 0] = 0.0
    dy = _rand((6, 4), dtype, seed=1)
    fwd, bwd = PORTABLE[name]
    y, cache = fwd(x)
    ref = bwd(cache, dy)
    got = dy.copy()
    _call(host_kernels, f"{name}_backward", real, x.size, np.ascontiguousarray(cache), got)
    np.testing.assert_allclose(got, ref, **TOL[dtype])
    if name == "relu":  # the fused step passes relu's output, not its input
        got_y = dy.copy()
        _call(host_kernels, "relu_backward", real, x.size, np.ascontiguousarray(y), got_y)
        np.testing.assert_array_equal(got_y, got)


def _tree(a: np.ndarray) -> tuple[dict[str, np.ndarray]]:
    return ({"W": a},)


@pytest.mark.parametrize("real", ["float", "double"])
@pytest.mark.parametrize(
    "config",
    [dict(momentum=0.0), dict(momentum=0.0, weight_decay=0.1), dict(momentum=0.9),
     dict(momentum=0.9, nesterov=True, weight_decay=0.05)],
    ids=["plain", "plain-wd", "momentum", "nesterov-wd"],
)
def test_host_sgd_matches_portable(host_kernels: ctypes.CDLL, config: Any, real: str) -> None:
    dtype = _NP[real]
    opt = bp.sgd(0.1, **config)
    p, g = _rand((4, 3), dtype), _rand((4, 3), dtype, seed=1)
    state = opt.init(_tree(p))
    mu, wd = config["momentum"], config.get("weight_decay", 0.0)
    nesterov = config.get("nesterov", False)
    pk = p.copy()
    vk = None if not mu else np.zeros_like(p)
    new: Any = _tree(p)
    for _ in range(3):  # a few steps, so the velocity matters
        new, state = opt.update(_tree(g), state, new)
        if vk is None:
            _call(host_kernels, "sgd", real, p.size, g, 0.1, wd, int(bool(wd)), pk)
        else:
            _call(host_kernels, "sgd_momentum", real, p.size, g, 0.1, mu, wd, int(bool(wd)),
                  int(nesterov), pk, vk)
    np.testing.assert_allclose(pk, new[0]["W"], **TOL[dtype])
    if vk is not None:
        np.testing.assert_allclose(vk, state.velocity[0]["W"], **TOL[dtype])


@pytest.mark.parametrize("real", ["float", "double"])
@pytest.mark.parametrize(
    "opt_name,wd", [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1)],
    ids=["adam", "adam-l2", "adamw"],
)
def test_host_adam_matches_portable(
    host_kernels: ctypes.CDLL, opt_name: str, wd: float, real: str
) -> None:
    dtype = _NP[real]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = bp.get_optimizer(opt_name, lr=lr, weight_decay=wd)
    p = _rand((4, 3), dtype)
    state = opt.init(_tree(p))
    params = _tree(p)
    pk, mk, vk = p.copy(), np.zeros_like(p), np.zeros_like(p)
    mode = 0 if not wd else (1 if opt_name == "adamw" else 2)
    for t in range(1, 4):
        g = _rand((4, 3), dtype, seed=t)
        params, state = opt.update(_tree(g), state, params)
        step_size, root_bc2 = lr / (1.0 - b1**t), (1.0 - b2**t) ** 0.5
        _call(host_kernels, "adam", real, p.size, g, 1.0 - lr * wd, wd, b1, b2, 1.0 - b1,
              1.0 - b2, eps, step_size, root_bc2, mode, pk, mk, vk)
    np.testing.assert_allclose(pk, params[0]["W"], **TOL[dtype])
    np.testing.assert_allclose(mk, state.m[0]["W"], **TOL[dtype])
    np.testing.assert_allclose(vk, state.v[0]["W"], **TOL[dtype])


@pytest.mark.parametrize("real", ["float", "double"])
def test_host_softmax_ce_matches_portable(host_kernels: ctypes.CDLL, real: str) -> None:
    dtype = _NP[real]
    z = _rand((5, 7), dtype, scale=5.0)
    z[0, 0] = 80.0  # exp would overflow without the max shift
    labels = np.array([0, 3, 6, 2, 0], dtype=np.int64)
    ref_value, ref_grad = bp.softmax_cross_entropy(z, labels)
    fn = getattr(host_kernels, f"run_softmax_ce_{real}")
    dz, rows = np.empty_like(z), np.empty(5, dtype=dtype)

    def run(src: np.ndarray, out: np.ndarray) -> None:
        fn(ctypes.c_void_p(src.ctypes.data), ctypes.c_void_p(labels.ctypes.data),
           ctypes.c_void_p(out.ctypes.data), ctypes.c_void_p(rows.ctypes.data),
           ctypes.c_int(5), ctypes.c_int(7))

    run(z, dz)
    np.testing.assert_allclose(np.sum(rows) / 5, ref_value, **TOL[dtype])
    np.testing.assert_allclose(dz, ref_grad, **TOL[dtype])
    alias = z.copy()  # dz may be z itself
    run(alias, alias)
    np.testing.assert_array_equal(alias, dz)
    labels[1] = 7  # out of range: NaN for that row, no read outside it
    run(z, dz)
    assert np.isnan(rows[1]) and np.isfinite(np.delete(rows, 1)).all()


# --------------------------------------------------------------------------
# the fused CuPy step's control flow, on the CPU: NumPy stands in for CuPy and
# the host-compiled kernel bodies for the CUDA kernels


class _HostKernel:
    """Called as CuPy calls a kernel: elementwise ``k(*ins, *outs)`` (returns
    the output(s)); raw ``k(grid, block, args, shared_mem=...)``."""

    def __init__(self, lib: ctypes.CDLL, name: str, real: str) -> None:
        self.lib, self.name, self.real = lib, name, real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        src = fcp.KERNELS[self.name]
        if src.kind == "raw":
            (grid,), (threads,), (z, labels, out, rows, b, k) = args
            assert grid == int(b) and threads & (threads - 1) == 0  # one block per row
            assert labels.dtype == np.int64 and kwargs["shared_mem"] > 0
            getattr(self.lib, f"run_softmax_ce_{self.real}")(
                *(ctypes.c_void_p(a.ctypes.data) for a in (z, labels, out, rows)),
                ctypes.c_int(int(b)), ctypes.c_int(int(k)),
            )
            return None
        arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
        real = "float" if arrays[0].dtype == np.float32 else "double"
        outs = args[len(_params(src.in_params)):]
        size = max(a.size for a in outs)
        _call(self.lib, self.name, real, size, *args)
        return outs[0] if len(outs) == 1 else outs


@pytest.fixture
def emulated(host_kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch) -> None:
    import array_api_compat.numpy as np_xp

    monkeypatch.setattr(fcp, "_cupy", lambda: np)
    monkeypatch.setattr(fcp, "_array_api", lambda: np_xp)
    monkeypatch.setattr(
        fcp, "get_kernel", lambda name, real="float": _HostKernel(host_kernels, name, real)
    )


def _batch(labels: bool) -> tuple[np.ndarray, np.ndarray]:
    x = _rand((10, 6), "float32")
    if labels:
        return x, np.arange(10) % 4
    return x, _rand((10, 4), "float32", seed=5, scale=0.5)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize(
    "net_spec,loss_name,opt",
    [
        ("sigmoid", "softmax_cross_entropy", bp.adam(0.01)),
        ("tanh", "softmax_cross_entropy", bp.sgd(0.1, 0.9, nesterov=True, weight_decay=0.01)),
        ("relu", "softmax_cross_entropy", bp.adamw(0.01)),
        ("relu", "mse", bp.sgd(0.1)),
        ("lone-tanh", "half_sse", bp.momentum(0.05)),
    ],
    ids=["sigmoid-ce-adam", "tanh-ce-nesterov", "relu-ce-adamw", "relu-mse-sgd", "lone-act"],
)
def test_emulated_fused_step_matches_portable(
    emulated: None, net_spec: str, loss_name: str, opt: Any, inplace: bool
) -> None:
    if net_spec == "lone-tanh":  # an activation that follows no dense layer
        net = bp.sequential(bp.tanh(), bp.dense(6, 9), bp.relu(), bp.dense(9, 4), bp.sigmoid())
    else:
        net = bp.mlp([6, 9, 4], net_spec)
    loss = bp.get_loss(loss_name)
    step = fcp.build_step(net, loss, opt, inplace=inplace)
    assert step is not None
    portable = bp.train_step(net, loss, opt, fast=False)
    x, t = _batch(loss_name == "softmax_cross_entropy")
    x_before = x.copy()
    params = net.init(0)
    ref_p, ref_s = params, opt.init(params)
    own = tree_map(lambda a: a.copy(), params)
    got_p, got_s = own, opt.init(own)
    snapshot = tree_map(lambda a: a.copy(), own)
    for _ in range(3):
        ref_p, ref_s, ref_v = portable(ref_p, ref_s, x, t)
        got_p, got_s, got_v = step(got_p, got_s, x, t)
        np.testing.assert_allclose(float(got_v), float(ref_v), **TOL["float32"])
    np.testing.assert_array_equal(x, x_before)
    for a, b in zip(got_p, ref_p):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], **TOL["float32"])
    if not inplace:  # nothing passed in was modified
        for a, b in zip(own, snapshot):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


# --------------------------------------------------------------------------
# on a GPU: the compiled kernels against the portable ones


@pytest.fixture
def cp() -> ModuleType:
    from conftest import require_backend

    require_backend("cupy")
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [*ACTS, "identity"])
def test_gpu_bias_activation(cp: ModuleType, name: str, dtype: str) -> None:
    z, b = _rand((33, 17), dtype), _rand((17,), dtype, seed=2)
    ref, _ = PORTABLE[name][0](z + b)
    got = fcp.bias_activation_(cp.asarray(z), cp.asarray(b), name)
    np.testing.assert_allclose(cp.asnumpy(got), ref, **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTS)
def test_gpu_activation_backward(cp: ModuleType, name: str, dtype: str) -> None:
    x, dy = _rand((33, 17), dtype), _rand((33, 17), dtype, seed=1)
    fwd, bwd = PORTABLE[name]
    _, cache = fwd(x)
    got = fcp.activation_backward_(cp.asarray(cache), cp.asarray(dy), name)
    np.testing.assert_allclose(cp.asnumpy(got), bwd(cache, dy), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [3, 10, 300])  # fewer, about as many and more classes than threads
def test_gpu_softmax_ce(cp: ModuleType, k: int, dtype: str) -> None:
    z = _rand((64, k), dtype, scale=5.0)
    labels = np.random.default_rng(3).integers(0, k, size=64)
    ref_value, ref_grad = bp.softmax_cross_entropy(z, labels)
    value, grad = fcp.softmax_cross_entropy_labels_(cp.asarray(z), cp.asarray(labels))
    np.testing.assert_allclose(float(value), ref_value, **TOL[dtype])
    np.testing.assert_allclose(cp.asnumpy(grad), ref_grad, **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize(
    "opt",
    [bp.sgd(0.1), bp.sgd(0.1, 0.9, nesterov=True, weight_decay=0.01), bp.adam(0.01),
     bp.adamw(0.01)],
    ids=["sgd", "nesterov", "adam", "adamw"],
)
def test_gpu_inplace_update_matches_functional(cp: ModuleType, opt: Any) -> None:
    p = {"W": _rand((8, 5), "float32"), "b": _rand((5,), "float32", seed=1)}
    g = {"W": _rand((8, 5), "float32", seed=2), "b": _rand((5,), "float32", seed=3)}
    ref, _ = opt.update((g,), opt.init((p,)), (p,))
    pc = ({k: cp.asarray(v) for k, v in p.items()},)
    gc = ({k: cp.asarray(v) for k, v in g.items()},)
    got, _ = opt.update(gc, opt.init(pc), pc, inplace=True)  # runs fcp's leaf kernels
    for key in p:
        np.testing.assert_allclose(cp.asnumpy(got[0][key]), ref[0][key], **TOL["float32"])


@pytest.mark.gpu
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("activation", ACTS)
def test_gpu_fused_step_matches_portable(cp: ModuleType, activation: str, inplace: bool) -> None:
    with bp.use_backend("cupy"):
        net = bp.mlp([6, 9, 4], activation)
        opt = bp.adam(0.01)
        params = net.init(0)
        x = cp.asarray(_rand((10, 6), "float32"))
        t = cp.asarray(np.arange(10) % 4)
        fused = bp.train_step(net, "softmax_cross_entropy", opt, fast=True, inplace=inplace)
        portable = bp.train_step(net, "softmax_cross_entropy", opt, fast=False)
        ref_p, _, ref_v = portable(params, opt.init(params), x, t)
        own = tree_map(lambda a: a.copy(), params) if inplace else params
        got_p, _, got_v = fused(own, opt.init(own), x, t)
        np.testing.assert_allclose(float(got_v), float(ref_v), **TOL["float32"])
        for a, b in zip(got_p, ref_p):
            for key in a:
                np.testing.assert_allclose(cp.asnumpy(a[key]), cp.asnumpy(b[key]),
                                           **TOL["float32"])
