"""bpcore's benchmark suite, shipped inside the package so ``bpcore bench`` works
from an installed copy as well as from a clone.

* :mod:`~bpcore.benchtools.workloads`: the networks (``seed``, ``wide``,
  ``deep``), batch sizes, data and FLOP counts;
* :mod:`~bpcore.benchtools.rows`: bpcore on each backend, the peers
  (hand-written NumPy, PyTorch eager and compiled, ``jax.jit``) and the
  GEMM floor, each built into a timed ``step()``;
* :mod:`~bpcore.benchtools.plugin` and :mod:`~bpcore.benchtools.suite`: the
  pytest-benchmark plugin and test that time them;
* :mod:`~bpcore.benchtools.report`: the table, the markdown and the plot
  made from pytest-benchmark's JSON.
"""

from __future__ import annotations

__all__: list[str] = []
