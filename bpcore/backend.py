"""Backends: which array library holds the arrays, and on which device.

Kernels never consult anything here but :func:`namespace`: they follow the
namespace and device of their inputs. The rest of this module serves the
functions that *create* arrays (initializers, optimizer state, data loading):
a process-wide default backend held in a :class:`~contextvars.ContextVar`
(:func:`set_backend`, :func:`use_backend`), a report of what is usable here
(:func:`backends`), and one call to move a tree of arrays between backends
(:func:`to_backend`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat

from .errors import ArgumentError, BackendError, BackendMismatchError, DTypeError
from .tree import map_arrays

__all__ = [
    "Array",
    "Backend",
    "BackendInfo",
    "BACKEND_NAMES",
    "backend_info",
    "backend_name",
    "backends",
    "device_of",
    "get_backend",
    "namespace",
    "resolve_dtype",
    "set_backend",
    "to_backend",
    "is_mutable",
    "to_numpy",
    "use_backend",
]

#: Any array of a supported backend (NumPy, CuPy, PyTorch, JAX, array-api-strict).
Array = Any

BACKEND_NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")

_INSTALL = {
    "numpy": 'pip install numpy  (a required dependency of bpcore)',
    "cupy": 'pip install "bpcore[cuda]"  (cupy-cuda13x; use cupy-cuda12x for CUDA 12) '
    "and run on a machine with an NVIDIA GPU",
    "torch": 'pip install "bpcore[torch]"  (a CPU-only wheel: add --index-url '
             "https://download.pytorch.org/whl/cpu)",
    "jax": 'pip install "bpcore[jax]"  (jax[cpu])',
    "array_api_strict": "pip install array-api-strict",
}
_MODULE = {
    "numpy": "numpy",
    "cupy": "cupy",
    "torch": "torch",
    "jax": "jax",
    "array_api_strict": "array_api_strict",
}

SUPPORTED_DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------
# namespace look-up: the one thing kernels use


_NAMESPACES: dict[type, ModuleType] = {}


def namespace(*arrays: Array, xp: ModuleType | None = None) -> ModuleType:
    """Return the Array API namespace of ``arrays`` (or ``xp`` if given).

    The look-up is cached by array type, so it costs a dict access rather
    than the ~1.5 µs of ``array_api_compat.array_namespace``. Python scalars
    and ``None`` among ``arrays`` are ignored.

    Raises
    ------
    BackendMismatchError
        If the arrays come from two different libraries, or one is not an
        array of a supported backend.
    """
    if xp is not None:
        return xp
    found: ModuleType | None = None
    first: type | None = None
    for a in arrays:
        if a is None or type(a) in (int, float, bool, complex):
            continue
        ns = _NAMESPACES.get(type(a)) or _resolve(a)
        if found is None:
            found, first = ns, type(a)
        elif ns is not found:
            raise BackendMismatchError(
                f"arrays from two backends in one call ({_describe(first)} and "
                f"{_describe(type(a))}); move them to one backend first, e.g. "
                "bpcore.to_backend(x, 'numpy')"
            )
    if found is None:
        given = ", ".join(type(a).__name__ for a in arrays) or "nothing"
        raise ArgumentError(f"expected at least one array (NumPy, CuPy, PyTorch, JAX, "
                            f"array-api-strict), got {given}; pass the data as an array, e.g. "
                            "np.asarray(x)")
    return found


def _resolve(a: Any) -> ModuleType:
    try:
        ns = array_api_compat.array_namespace(a)
    except TypeError:
        raise BackendMismatchError(
            f"{_describe(type(a))} is not an array of a supported backend "
            f"({', '.join(BACKEND_NAMES)}); convert it first, e.g. with "
            "bpcore.get_backend().asarray(x)"
        ) from None
    _NAMESPACES[type(a)] = ns
    return ns


def _describe(t: type | None) -> str:
    return "?" if t is None else f"{t.__module__}.{t.__qualname__}"


def backend_name(xp: ModuleType) -> str:
    """The bpcore name ('numpy', 'torch', ...) of an Array API namespace."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", repr(xp))


def is_mutable(xp: ModuleType) -> bool:
    """Whether arrays of namespace ``xp`` can be written in place (all but JAX's)."""
    return not array_api_compat.is_jax_namespace(xp)


def device_of(x: Array) -> Any:
    """The device an array lives on (``array_api_compat.device``)."""
    return array_api_compat.device(x)


# --------------------------------------------------------------------------
# which backends are usable here


class BackendInfo(NamedTuple):
    """What :func:`backends` reports about one backend."""

    name: str
    available: bool
    version: str | None
    devices: tuple[str, ...]
    reason: str | None
    install: str

    def __str__(self) -> str:
        if self.available:
            return f"{self.name:<17} {self.version:<10} devices: {', '.join(self.devices)}"
        return f"{self.name:<17} unavailable: {self.reason}; install: {self.install}"


def backends() -> dict[str, BackendInfo]:
    """Report, for every backend bpcore knows, whether it is usable here.

    Returns
    -------
    dict
        ``name -> BackendInfo(name, available, version, devices, reason, install)``.
        For an unusable backend ``reason`` says why and ``install`` how to fix it.

    Examples
    --------
    >>> import bpcore
    >>> bpcore.backends()["numpy"].available
    True
    """
    return {name: _probe(name) for name in BACKEND_NAMES}


def backend_info(name: str) -> BackendInfo:
    """What :func:`backends` reports about one backend (importing only that one).

    Raises
    ------
    BackendError
        For a name bpcore does not know.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return _probe(name)


def _probe(name: str) -> BackendInfo:
    install = _INSTALL[name]
    if importlib.util.find_spec(_MODULE[name]) is None:
        return BackendInfo(name, False, None, (), f"{_MODULE[name]} is not installed", install)
    try:
        mod = importlib.import_module(_MODULE[name])
        version = str(getattr(mod, "__version__", "?"))
        devices = _devices(name, mod)
    except Exception as exc:  # a broken install must not break the report
        return BackendInfo(name, False, None, (), f"import failed: {exc}", install)
    if not devices:
        return BackendInfo(name, False, version, (), "no CUDA device is present", install)
    return BackendInfo(name, True, version, devices, None, install)


def _devices(name: str, mod: ModuleType) -> tuple[str, ...]:
    if name == "cupy":
        try:
            n = mod.cuda.runtime.getDeviceCount()
        except Exception:
            return ()
        return tuple(f"cuda:{i}" for i in range(n))
    if name == "torch":
        cuda = tuple(f"cuda:{i}" for i in range(mod.cuda.device_count()))
        return ("cpu", *cuda)
    if name == "jax":
        return tuple(f"{d.platform}:{d.id}" for d in mod.devices())
    return ("cpu",)


# --------------------------------------------------------------------------
# the default backend for functions that create arrays


@dataclass(frozen=True)
class Backend:
    """A namespace and a device: where new arrays are created."""

    name: str
    xp: ModuleType
    device: Any = None

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Move a host (NumPy) array or nested list onto this backend and device."""
        return self.xp.asarray(x, dtype=dtype, device=self.device)


def _load(name: str, device: Any = None) -> Backend:
    if name not in BACKEND_NAMES:
        raise BackendError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if importlib.util.find_spec(_MODULE[name]) is None:
        raise BackendError(f"backend {name!r} is not installed; install it with: {_INSTALL[name]}")
    if name == "numpy":
        xp = importlib.import_module("array_api_compat.numpy")
    elif name == "cupy":
        info = _probe("cupy")
        if not info.available:
            raise BackendError(f"backend 'cupy' is not usable here: {info.reason}; {info.install}")
        xp = importlib.import_module("array_api_compat.cupy")
    elif name == "torch":
        xp = importlib.import_module("array_api_compat.torch")
    elif name == "jax":
        xp = importlib.import_module("jax.numpy")
        if device is None:
            # Commit new arrays to the default device: uncommitted arrays become
            # committed after one step, and JAX would compile every op twice.
            device = importlib.import_module("jax").devices()[0]
    else:
        xp = importlib.import_module("array_api_strict")
    return Backend(name, xp, _resolve_device(name, device))


def _resolve_device(name: str, device: Any) -> Any:
    if device is None or not isinstance(device, (str, int)):
        return device
    text = str(device)
    if name == "numpy":
        if text != "cpu":
            raise BackendError(f"numpy arrays live on 'cpu' only, not {text!r}; drop --device")
        return "cpu"
    if name == "torch":
        import torch

        have = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
        try:
            dev = torch.device(device if isinstance(device, str) else f"cuda:{device}")
        except (RuntimeError, ValueError):
            raise BackendError(
                f"torch has no device {text!r}; available here: {', '.join(have)}"
            ) from None
        if dev.type == "cuda" and (not torch.cuda.is_available()
                                   or (dev.index or 0) >= torch.cuda.device_count()):
            why = ("this torch has no CUDA (a CPU build, or no GPU or driver here)"
                   if not torch.cuda.is_available() else "no such GPU index")
            raise BackendError(f"torch cannot use {text!r}: {why}; available here: "
                               f"{', '.join(have)}")
        if dev.type not in ("cpu", "cuda"):
            raise BackendError(f"bpcore runs torch on cpu or cuda devices, not {text!r}; "
                               f"available here: {', '.join(have)}")
        return dev
    if name == "cupy":
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        try:
            index = device if isinstance(device, int) else int(text.rpartition(":")[2] or 0)
        except ValueError:
            index = -1
        if not 0 <= index < count or (isinstance(device, str) and not text.startswith(
                ("cuda", "gpu")) and not text.isdigit()):
            raise BackendError(f"cupy has no device {text!r}; available here: "
                               f"{', '.join(f'cuda:{i}' for i in range(count)) or 'none'}")
        return cupy.cuda.Device(index)
    if name == "jax":
        import jax

        for d in jax.devices() + jax.devices("cpu"):
            if text in (f"{d.platform}:{d.id}", d.platform, str(d)):
                return d
        raise BackendError(
            f"jax has no device {text!r}; available: "
            + ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
        )
    raise BackendError(f"backend {name!r} does not take a device name ({text!r})")


_DEFAULT: ContextVar[Backend | None] = ContextVar("bpcore_backend", default=None)


def get_backend() -> Backend:
    """The backend new arrays are created on (NumPy on the CPU unless changed)."""
    b = _DEFAULT.get()
    if b is None:
        b = _load("numpy")
        _DEFAULT.set(b)
    return b


def set_backend(name: str, device: Any = None) -> Backend:
    """Make ``name`` (on ``device``) the default backend in the current context.

    Examples
    --------
    >>> import bpcore
    >>> bpcore.set_backend("numpy").name
    'numpy'
    """
    b = _load(name, device)
    _DEFAULT.set(b)
    return b


@contextmanager
def use_backend(name: str, device: Any = None) -> Iterator[Backend]:
    """Use ``name`` (on ``device``) as the default backend inside a ``with`` block.

    Examples
    --------
    >>> import bpcore
    >>> with bpcore.use_backend("numpy") as b:
    ...     b.name
    'numpy'
    """
    token = _DEFAULT.set(_load(name, device))
    try:
        yield get_backend()
    finally:
        _DEFAULT.reset(token)


def resolve_dtype(xp: ModuleType, dtype: Any = None) -> Any:
    """Return ``xp``'s dtype object for ``dtype`` (float32 when ``None``).

    Only float32 and float64 are supported; anything else raises
    :class:`DTypeError` naming the fix.
    """
    if dtype is None:
        return xp.float32
    name = dtype_name(dtype, xp)
    if name not in SUPPORTED_DTYPES:
        raise DTypeError(
            f"dtype {name} is not supported: bpcore computes in float32 (the default) or "
            "float64; pass dtype='float32' or dtype='float64'"
        )
    if name == "float64" and array_api_compat.is_jax_namespace(xp):
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise DTypeError(
                "float64 on jax needs 64-bit mode: call "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
    return getattr(xp, name)


def dtype_name(dtype: Any, xp: ModuleType | None = None) -> str:
    """A dtype's plain name ('float32'), for messages and comparisons."""
    if isinstance(dtype, str):
        return dtype
    if xp is not None:
        for name in ("float32", "float64"):
            if dtype == getattr(xp, name, None):
                return name
    if isinstance(dtype, type):  # NumPy/JAX scalar types: np.float16, jnp.int32
        return dtype.__name__
    text = str(dtype)
    for prefix in ("torch.", "array_api_strict.", "dtype('"):
        text = text.removeprefix(prefix)
    return text.rstrip("')")


# --------------------------------------------------------------------------
# moving trees of arrays between backends


def to_numpy(x: Array) -> Any:
    """Copy (or view) one array of any backend as a NumPy array on the host."""
    import numpy as np

    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_jax_array(x):
        return np.asarray(x)
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return np.asarray(x)


def to_backend(tree: Any, name: str | None = None, *, device: Any = None) -> Any:
    """Move every array in ``tree`` (dicts, lists, tuples) to backend ``name``.

    Uses DLPack (zero-copy where the two libraries share a device) and falls
    back to a copy through host memory. Non-array leaves are left as they are.
    The result may share memory with ``tree``; bpcore never writes into it.

    Parameters
    ----------
    tree : nest of arrays
        Parameters, gradients or optimizer state, e.g. ``model.init(...)``.
    name : str, optional
        Target backend; the current default (:func:`get_backend`) if omitted.
    device : optional
        Target device, e.g. ``"cuda:0"``; the backend's default if omitted.

    Examples
    --------
    >>> import numpy as np, bpcore
    >>> bpcore.to_backend({"W": np.ones((2, 2))}, "numpy")["W"].shape
    (2, 2)
    """
    target = get_backend() if name is None else _load(name, device)
    if name is None and device is not None:
        target = Backend(target.name, target.xp, _resolve_device(target.name, device))
    return map_arrays(lambda a: _move(a, target), tree)


def _move(a: Array, target: Backend) -> Array:
    xp = target.xp
    if backend_name(namespace(a)) == target.name and (
        target.device is None or device_of(a) == target.device
    ):
        return a
    try:
        out = xp.from_dlpack(a)
        if target.device is not None and device_of(out) != target.device:
            out = array_api_compat.to_device(out, target.device)
        return out
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError):
        return xp.asarray(to_numpy(a), device=target.device)
