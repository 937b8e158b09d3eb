"""bpcore's CUDA kernels for CuPy (bpcore.cuda and the CuPy specializations
beside the portable kernels): CPU checks of their sources, and GPU tests.

Without a GPU three things are checked here:

* every module imports without CuPy, and every kernel source is well formed;
* each kernel's arithmetic: its body (the softmax cross-entropy kernel with one
  thread per block) is compiled with the host C++ compiler (CUDA C's device
  subset is C++) into a library, and every CuPy specialization is run with
  NumPy standing in for CuPy and that library for the CUDA kernels, against
  its portable kernel on the same inputs, alone and inside the step driver.
  This checks the formulas, the operation order and the specializations'
  control flow, not NVRTC, the launch configuration or the block-wide
  reductions of the raw kernel: the ``gpu`` tests do that on a device;
* the CuPy specializations are off unless ``BPCORE_CUPY_FAST=1``.
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

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from test_dispatch import IN_PLACE, SCRATCH, STEP_CASES, _copy, _data, _equal, _same, cases

import bpcore as bp
from bpcore import cuda, dispatch
from bpcore.dispatch import specializations

TOL: dict[str, dict[str, Any]] = {
    "float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14),
}


def cupy_registered() -> list[tuple[str, Any]]:
    """(portable kernel name, portable kernel) of every CuPy specialization."""
    from test_dispatch import registered

    return [(name, fn) for name, fn, backend in registered() if backend == "cupy"]


def test_modules_import_without_cupy() -> None:
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import bpcore, bpcore.cuda as c\n"
        "assert len(c.SOURCES) == 8, sorted(c.SOURCES)\n"
        "try:\n"
        "    c.launch('sgd')\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "lazy"


def test_cupy_specializations_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "backend_name", lambda xp: "cupy")
    monkeypatch.delenv("BPCORE_CUPY_FAST", raising=False)
    for _, portable in cupy_registered():
        assert dispatch.specialization(portable, np_xp) is None
    monkeypatch.setenv("BPCORE_CUPY_FAST", "1")
    for _, portable in cupy_registered():
        assert dispatch.specialization(portable, np_xp) is specializations(portable)["cupy"]


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


@pytest.mark.parametrize("name", sorted(cuda.SOURCES))
def test_kernel_source_is_well_formed(name: str) -> None:
    src = cuda.SOURCES[name]
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
        code = statement.split("//")[0].rstrip()
        assert code.endswith((";", "{", "}")), statement


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


def _raw_cpp(key: str) -> str:
    src = cuda.SOURCES[key]
    body = src.body
    text = ""
    for real in ("float", "double"):
        function = src.name.replace("REAL", real)
        text += body.replace("REAL", real)
        text += (
            f'extern "C" void run_{key}_{real}(const {real}* z, const long long* labels, '
            f"{real}* dz, {real}* row_loss, int batch, int k) {{\n"
            "  blockDim.x = 1; threadIdx.x = 0;\n"
            "  for (int r = 0; r < batch; ++r) { blockIdx.x = r; "
            f"{function}(z, labels, dz, row_loss, batch, k); }}\n}}\n"
        )
    return text


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """Every kernel compiled with the host C++ compiler into one shared library."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to check the kernel bodies with")
    parts = [_SHIM]
    for key, src in cuda.SOURCES.items():
        parts.append(_elementwise_cpp(key, src) if src.kind == "elementwise" else _raw_cpp(key))
    where = tmp_path_factory.mktemp("cuda_kernels")
    cpp, lib = where / "kernels.cpp", where / "kernels.so"
    cpp.write_text("\n".join(parts))
    subprocess.run(
        [cxx, "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(lib), str(cpp)],
        check=True, capture_output=True, timeout=120,
    )
    return ctypes.CDLL(str(Path(lib)))


def _call(lib: ctypes.CDLL, key: str, real: str, n: int, *values: Any) -> None:
    """Call ``key_real(n, ...)``: arrays go as (pointer, size), numbers as scalars."""
    src = cuda.SOURCES[key]
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


class _HostLaunch:
    """Runs kernels as :func:`bpcore.cuda.launch` does: elementwise
    ``launch(name, *ins, *outs)``; raw ``launch(name, grid, block, args, ...)``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.calls: list[str] = []

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(name)
        src = cuda.SOURCES[name]
        if src.kind == "raw":
            (grid,), (threads,), (z, labels, out, rows, b, k) = args
            assert grid == int(b) and threads & (threads - 1) == 0  # one block per row
            assert labels.dtype == np.int64 and kwargs["shared_mem"] > 0
            getattr(self.lib, f"run_{name}_{kwargs['c_type']}")(
                *(ctypes.c_void_p(np.ascontiguousarray(a).ctypes.data)
                  for a in (z, labels, out, rows)),
                ctypes.c_int(int(b)), ctypes.c_int(int(k)),
            )
            return None
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        real = "float" if arrays[0].dtype == np.float32 else "double"
        outs = args[len(_params(src.in_params)):]
        ins = [np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a
               for a in args[:len(_params(src.in_params))]]
        for o in outs:
            assert o.flags.c_contiguous  # outputs are written through their pointer
        _call(self.lib, name, real, max(a.size for a in outs), *ins, *outs)
        return outs[0] if len(outs) == 1 else outs


@pytest.fixture
def emulated(host_kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch) -> _HostLaunch:
    """NumPy stands in for CuPy, the host-compiled bodies for the CUDA kernels."""
    launch = _HostLaunch(host_kernels)
    monkeypatch.setattr(cuda, "cupy", lambda: np)
    monkeypatch.setattr(cuda, "launch", launch)
    return launch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "portable"), cupy_registered(),
                         ids=[n for n, _ in cupy_registered()])
def test_emulated_specialization_matches_portable(
    emulated: _HostLaunch, name: str, portable: Any, dtype: str
) -> None:
    special = specializations(portable)["cupy"]
    in_place = IN_PLACE.get(name, ())
    for args, kwargs in cases(name, dtype):
        args = tuple(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a
                     for a in args)
        kept = _copy(args)
        want = portable(*args, xp=np_xp, **kwargs)
        mine = tuple(_copy(a) if i in in_place else a for i, a in enumerate(args))
        extra = {"scratch": False} if name in SCRATCH else {"ws": None}
        got = special(*mine, xp=np_xp, **kwargs, **extra)
        _same(got, want, dtype)
        if name in IN_PLACE:
            for out, i in zip(got, in_place):
                assert out is None or out is mine[i]
        else:
            _equal(args, kept)
    assert emulated.calls  # the kernels ran (one-hot targets fall back to portable)


def test_emulated_softmax_ce_with_a_bad_label_gives_nan(emulated: _HostLaunch) -> None:
    special = specializations(bp.losses.softmax_cross_entropy)["cupy"]
    z = np.random.default_rng(0).standard_normal((4, 3))
    value, _ = special(z, np.array([0, 1, 3, 2]), ws=None)
    assert np.isnan(value)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[1]}-{c[3]}-{c[4].name}")
def test_emulated_step_matches_portable(
    emulated: _HostLaunch, monkeypatch: pytest.MonkeyPatch, case: tuple[Any, ...], inplace: bool
) -> None:
    # the step driver chooses the CuPy specializations, as on a CuPy namespace
    monkeypatch.setattr(dispatch, "backend_name", lambda xp: "cupy")
    monkeypatch.setenv("BPCORE_CUPY_FAST", "1")
    sizes, hidden, output, loss, opt = case
    net = bp.mlp(sizes, hidden, output)
    x, t = _data(net, loss, "float32")
    ref_p = net.init(0, xp=np_xp)
    ref_s = opt.init(ref_p)
    got_p = _copy(ref_p)
    got_s = opt.init(got_p)
    kept = _copy(got_p)
    portable = bp.train_step(net, loss, opt, fast=False)
    special = bp.train_step(net, loss, opt, inplace=inplace)
    for _ in range(3):
        ref_p, ref_s, ref_v = portable(ref_p, ref_s, x, t)
        new_p, got_s, got_v = special(got_p, got_s, x, t)
        if not inplace:
            _equal(got_p, kept)
        got_p = kept = new_p
        kept = _copy(new_p)
        _same(got_v, ref_v, "float32")
    _same(got_p, ref_p, "float32")
    _same(got_s, ref_s, "float32")
    assert emulated.calls


# --------------------------------------------------------------------------
# on a GPU: the compiled kernels against the portable ones


@pytest.fixture
def cp(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    from conftest import require_backend

    require_backend("cupy")
    import cupy

    monkeypatch.setenv("BPCORE_CUPY_FAST", "1")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "portable"), cupy_registered(),
                         ids=[n for n, _ in cupy_registered()])
def test_gpu_specialization_matches_portable(
    cp: ModuleType, name: str, portable: Any, dtype: str
) -> None:
    import array_api_compat.cupy as cp_xp

    special = dispatch.specialization(portable, cp_xp)
    assert special is specializations(portable)["cupy"]
    in_place = IN_PLACE.get(name, ())
    for args, kwargs in cases(name, dtype):
        want = portable(*args, xp=np_xp, **kwargs)
        dev = bp.tree.map_arrays(cp.asarray, args)
        extra = {"scratch": False} if name in SCRATCH else {"ws": dispatch.Workspace(cp_xp)}
        got = special(*dev, xp=cp_xp, **kwargs, **extra)
        _same(got, want, dtype)
        for out, i in zip(got if in_place else (), in_place):
            assert out is None or out is dev[i]


@pytest.mark.gpu
@pytest.mark.parametrize("k", [3, 10, 300])  # fewer, about as many and more classes than threads
def test_gpu_softmax_ce_block_reductions(cp: ModuleType, k: int) -> None:
    import array_api_compat.cupy as cp_xp

    z = (5 * np.random.default_rng(2).standard_normal((64, k)))
    labels = np.random.default_rng(3).integers(0, k, size=64)
    ref_value, ref_grad = bp.softmax_cross_entropy(z, labels)
    special = dispatch.specialization(bp.losses.softmax_cross_entropy, cp_xp)
    value, grad = special(cp.asarray(z), cp.asarray(labels), ws=None)  # type: ignore[misc]
    np.testing.assert_allclose(float(value), ref_value, **TOL["float64"])
    np.testing.assert_allclose(cp.asnumpy(grad), ref_grad, **TOL["float64"])


@pytest.mark.gpu
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[1]}-{c[3]}-{c[4].name}")
def test_gpu_step_matches_portable(cp: ModuleType, case: tuple[Any, ...], inplace: bool) -> None:
    sizes, hidden, output, loss, opt = case
    with bp.use_backend("cupy"):
        net = bp.mlp(sizes, hidden, output)
        x, t = (cp.asarray(a) for a in _data(net, loss, "float32"))
        params = net.init(0)
        ref_p, _, ref_v = bp.train_step(net, loss, opt, fast=False)(params, opt.init(params), x, t)
        own = bp.tree.map_arrays(lambda a: a.copy(), params)
        got_p, _, got_v = bp.train_step(net, loss, opt, inplace=inplace)(own, opt.init(own), x, t)
    _same(got_v, ref_v, "float32")
    _same(got_p, ref_p, "float32")
