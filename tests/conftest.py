"""Shared fixtures: one ``xp`` fixture runs a test on every backend.

A backend that is not usable here is *skipped with its reason*, never left
out. Under CI (``CI=true``) numpy, array_api_strict, torch and jax must all be
present: a missing one fails the run instead of skipping, so coverage cannot
quietly shrink. CuPy is marked ``gpu`` and skips without a CUDA device.
"""

from __future__ import annotations

import importlib.util
import os

# scikit-learn's array-API checks (tests/test_sklearn.py) need SciPy's array-API
# mode, which SciPy reads once, at its first import: set it before anything imports it.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
from collections.abc import Iterator
from types import ModuleType

import pytest

import bpcore as bp

if importlib.util.find_spec("jax") is not None:
    import jax

    # float64 gradient checks need JAX's 64-bit mode; set before any array exists.
    jax.config.update("jax_enable_x64", True)

BACKENDS = [
    "numpy",
    "array_api_strict",
    "torch",
    "jax",
    pytest.param("cupy", marks=pytest.mark.gpu),
]
REQUIRED_IN_CI = {"numpy", "array_api_strict", "torch", "jax"}

_INFO: dict[str, bp.BackendInfo] = {}


def backend_info(name: str) -> bp.BackendInfo:
    """Cached ``bp.backends()[name]``."""
    if not _INFO:
        _INFO.update(bp.backends())
    return _INFO[name]


def require_backend(name: str) -> None:
    """Skip (or, under CI, fail) when backend ``name`` is not usable here."""
    info = backend_info(name)
    if info.available:
        return
    message = f"backend {name} unavailable: {info.reason}; install: {info.install}"
    if os.environ.get("CI") == "true" and name in REQUIRED_IN_CI:
        pytest.fail(f"CI must cover every CPU backend, but {message}")
    pytest.skip(message)


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The backend's Array API namespace; it is also bpcore's default backend
    for the test, so ``net.init(seed)`` creates arrays on it."""
    name = request.param
    require_backend(name)
    with bp.use_backend(name) as backend:
        yield backend.xp


@pytest.fixture
def torch() -> ModuleType:
    """PyTorch, for comparisons with its autograd (skipped where absent)."""
    require_backend("torch")
    import torch as _torch

    return _torch
