"""What the benchmark ran on: CPU, cores, load, library versions, BLAS."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from typing import Any

__all__ = ["environment", "load_average"]

_PACKAGES = (
    "numpy", "array-api-compat", "array-api-strict", "torch", "jax", "jaxlib", "cupy",
    "pytest-benchmark",
)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _blas() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["numpy_build"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")
                               if blas.get(k)}
    except Exception as exc:  # a report, not a requirement
        info["numpy_build"] = f"unknown ({exc})"
    try:
        import threadpoolctl

        info["runtime"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                                      "threading_layer")}
            for pool in threadpoolctl.threadpool_info()
        ]
    except Exception:
        pass
    return info


def environment(load_at_start: list[float] | None = None) -> dict[str, Any]:
    """A JSON-able description of this machine and software, for the results files.

    ``load_at_start`` is the load average when the run began; the one at the
    time of the call is recorded as ``load_average`` (the machine may be shared).
    """
    from .rows import cpu_name, device_name

    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        from .._version import __version__

        versions["bpcore"] = __version__
    except ImportError:
        pass
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "blas": _blas(),
    }
    torch = sys.modules.get("torch")  # only when a torch row ran: importing it costs seconds
    if torch is not None:
        try:
            env["torch_threads"] = torch.get_num_threads()
            if torch.cuda.is_available():
                env["gpu"] = device_name("gpu")
        except Exception:
            pass
    return env
