"""What the benchmark ran on: CPU, cores, load, library versions, BLAS.

Two kinds of facts, kept apart so that two runs on one machine can be compared:

* :func:`machine`: what identifies the machine and its software (CPU model,
  cores, Python, platform, library versions, NumPy's BLAS build). It goes into
  pytest-benchmark's ``machine_info``, which ``--benchmark-compare`` checks
  for equality, so it holds nothing that changes from one run to the next.
* :func:`run_facts`: what changes from run to run (date, load averages,
  thread pools and their sizes, the CPU's momentary clock). It goes into the
  JSON's top-level ``bpcore`` key, which pytest-benchmark does not compare.

:func:`environment` is both together, as the results files print them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
import threading
from typing import Any

__all__ = [
    "VOLATILE_CPU_KEYS", "environment", "load_average", "machine", "run_facts",
    "run_queue_wait",
]

_PACKAGES = (
    "numpy", "array-api-compat", "array-api-strict", "torch", "jax", "jaxlib", "cupy",
    "pytest-benchmark",
)

#: Keys of pytest-benchmark's ``machine_info["cpu"]`` (py-cpuinfo) that change between
#: runs on one machine (the clock of one core at that moment; pytest-benchmark issue #255).
VOLATILE_CPU_KEYS = ("hz_actual", "hz_actual_friendly")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_queue_wait() -> float | None:
    """Seconds the calling thread has spent runnable but waiting for a CPU.

    From ``/proc/self/task/<thread>/schedstat`` (Linux; ``None`` elsewhere).
    Its growth over a timed region, divided by the region's wall time, says
    how much of that time the thread running the step was kept off the CPU by
    other work. (Only this thread: idle pool threads that spin and yield would
    count as waiting without delaying anything.)
    """
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat",
                  encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def _numpy_build() -> Any:
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration")
                if blas.get(k)}
    except Exception as exc:  # a report, not a requirement
        return f"unknown ({exc})"


def _thread_pools() -> list[dict[str, Any]]:
    """The BLAS/OpenMP pools loaded now and their sizes (which pools are loaded
    depends on which rows ran, their sizes on ``--threads``)."""
    try:
        import threadpoolctl

        return [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                                      "threading_layer")}
            for pool in threadpoolctl.threadpool_info()
        ]
    except Exception:
        return []


def machine() -> dict[str, Any]:
    """What identifies this machine and its software: the same in every run on it."""
    from .rows import cpu_name

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
    return {
        "machine": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "blas": {"numpy_build": _numpy_build()},
    }


def run_facts(load_at_start: list[float] | None = None) -> dict[str, Any]:
    """What changes from run to run: date, load at the start and now, thread pools,
    the thread counts asked for, torch's threads and the GPU (when torch is loaded)."""
    from .rows import device_name

    facts: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": load_at_start,
        "load_average": load_average(),
        "thread_pools": _thread_pools(),
        "threads_requested": os.environ.get("OMP_NUM_THREADS"),
    }
    torch = sys.modules.get("torch")  # only when a torch row ran: importing it costs seconds
    if torch is not None:
        try:
            facts["torch_threads"] = torch.get_num_threads()
            if torch.cuda.is_available():
                facts["gpu"] = device_name("gpu")
        except Exception:
            pass
    return facts


def environment(load_at_start: list[float] | None = None) -> dict[str, Any]:
    """A JSON-able description of this machine, its software and this run.

    :func:`machine` and :func:`run_facts` together; ``load_at_start`` is the
    load average when the run began, the one at the time of the call is
    recorded as ``load_average`` (the machine may be shared). The thread pools
    are also under ``blas["runtime"]``, where earlier results files have them.
    """
    env = machine()
    facts = run_facts(load_at_start)
    env.update(facts)
    env["blas"] = dict(env["blas"], runtime=facts["thread_pools"])
    return env
