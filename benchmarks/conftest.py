"""``pytest benchmarks/`` runs bpcore's benchmark suite with pytest-benchmark.

The suite lives in the package (:mod:`bpcore.benchtools`) so that
``bpcore bench`` also works from an installed copy; this conftest loads its
plugin (options ``--bp-*``, parametrization, group-by ``group,param:size``).
Example::

    pytest benchmarks --bp-workloads seed --bp-sizes 64 --bp-dtypes float32
"""

from bpcore.benchtools.plugin import (  # noqa: F401  (pytest finds the hooks here)
    pytest_addoption,
    pytest_benchmark_update_json,
    pytest_benchmark_update_machine_info,
    pytest_configure,
    pytest_generate_tests,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)
