"""CUDA kernel sources for CuPy specializations, compiled on first use.

The CuPy specializations of bpcore's kernels (written beside their portable
kernels in :mod:`bpcore.layers.activations`, :mod:`bpcore.losses` and
:mod:`bpcore.optim`) each fuse a portable kernel's several elementwise
passes into one CUDA kernel. Their sources are declared here with
:func:`elementwise` or :func:`raw`, which record them in :data:`SOURCES`;
nothing is compiled, and CuPy is not imported, until a kernel first runs
(:func:`launch`), so every module imports on a machine without CUDA.

**Status: off by default** (:func:`bpcore.dispatch.cupy_kernels_enabled`).
The kernels' arithmetic is checked on the CPU by compiling their bodies with
a host C++ compiler and running each specialization against its portable
kernel with NumPy standing in for CuPy (``tests/test_cuda.py``); they have
not yet been compiled by NVRTC or run on a device (nor the raw kernel's
block-wide reductions with more than one thread): the ``gpu`` tests there do
that.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from .errors import ArgumentError

__all__ = ["SOURCES", "KernelSource", "compiled", "cupy", "elementwise", "launch", "raw", "real"]


class KernelSource(NamedTuple):
    """The source of one CUDA kernel.

    Attributes
    ----------
    kind : str
        ``"elementwise"`` (a ``cupy.ElementwiseKernel``) or ``"raw"`` (a
        ``cupy.RawKernel``, compiled once per floating type).
    name : str
        The kernel's name (raw: the function name, with ``REAL`` standing for
        ``float`` or ``double``).
    in_params, out_params : str
        Elementwise: CuPy's parameter lists (``"T x, T dy"``). Raw: empty.
    body : str
        Elementwise: the operation on one element. Raw: the whole CUDA C
        source, with ``REAL`` standing for the floating type.
    scalars : tuple of str
        Elementwise: the input parameters passed as numbers, not arrays.
    """

    kind: str
    name: str
    in_params: str
    out_params: str
    body: str
    scalars: tuple[str, ...] = ()


#: Every kernel source, by name.
SOURCES: dict[str, KernelSource] = {}


def elementwise(
    name: str, in_params: str, out_params: str, body: str, scalars: tuple[str, ...] = ()
) -> KernelSource:
    """Declare an elementwise kernel (``T`` is the arrays' floating type)."""
    src = SOURCES[name] = KernelSource("elementwise", f"bpcore_{name}", in_params, out_params,
                                       body.strip(), scalars)
    return src


def raw(name: str, function: str, body: str) -> KernelSource:
    """Declare a raw kernel ``function`` (with ``REAL`` in its name and body)."""
    src = SOURCES[name] = KernelSource("raw", function, "", "", body)
    return src


def cupy() -> Any:
    """The ``cupy`` module (imported on first use)."""
    import cupy as cp

    return cp


def real(dtype: Any) -> str:
    """The C type of a float32 or float64 dtype."""
    name = getattr(dtype, "name", str(dtype))
    if name == "float32":
        return "float"
    if name == "float64":
        return "double"
    raise ArgumentError(f"bpcore's CUDA kernels take float32 or float64, got {dtype}")


@functools.cache
def compiled(name: str, c_type: str = "float") -> Any:
    """The CuPy kernel object of source ``name`` (built once; raw kernels per type)."""
    src, cp = SOURCES[name], cupy()
    if src.kind == "elementwise":
        return cp.ElementwiseKernel(src.in_params, src.out_params, src.body, src.name)
    return cp.RawKernel(src.body.replace("REAL", c_type), src.name.replace("REAL", c_type))


def launch(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run kernel ``name``: elementwise ``launch(name, *inputs, *outputs)``; raw
    ``launch(name, grid, block, args, c_type=..., shared_mem=...)``."""
    c_type = kwargs.pop("c_type", "float")
    return compiled(name, c_type)(*args, **kwargs)
