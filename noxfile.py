"""Developer sessions: ``nox`` runs tests and lint; bench, tests_gpu and
fuzz_checkpoints on demand."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "venv"

#: The CPU torch wheel is pinned by .ci/constraints.txt, as in CI.
CONSTRAINTS = ("-c", ".ci/constraints.txt")
CPU_BACKENDS = ["torch", "jax[cpu]", *CONSTRAINTS]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on every CPU backend (numpy, array_api_strict, torch, jax),
    with MPI for the 2-rank data-parallel tests."""
    session.install(*CPU_BACKENDS)
    session.install("-e", ".[test,mpi]", *CONSTRAINTS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy on the package, and the import contract (import-linter: each
    layer of bpcore imports only the layers below it; see pyproject.toml)."""
    session.install("ruff", "mypy", "import-linter", "numpy", "array-api-compat")
    session.run("ruff", "check", "bpcore", "tests", "benchmarks", "examples")
    session.run("mypy")
    session.install("-e", ".", "--no-deps")  # import-linter reads the installed package
    session.run("lint-imports")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmark suite (pass e.g. ``-- --quick``)."""
    session.install(*CPU_BACKENDS)
    session.install("-e", ".[bench]")
    session.run("bpcore", "bench", *session.posargs)


@nox.session(default=False)
def tests_gpu(session: nox.Session) -> None:
    """The suite with CuPy on a CUDA machine (GPU tests must not skip)."""
    session.install("-e", ".[test,cuda]")
    # The fused CuPy kernels are opt-in until verified on a GPU: test them here.
    session.run(
        "python", "-m", "pytest", "-m", "gpu or not gpu", *session.posargs,
        env={"BPCORE_CUPY_FAST": "1"},
    )


@nox.session(default=False)
def fuzz_checkpoints(session: nox.Session) -> None:
    """The checkpoint fuzzer at full length: 10,000 mutated checkpoints (set
    ``BPCORE_FUZZ_CHECKPOINTS`` to change it), each a CheckpointError or a
    bit-identical load; then the zip-bomb and hostile-file reproducers."""
    session.install("-e", ".[test]")
    count = os.environ.get("BPCORE_FUZZ_CHECKPOINTS", "10000")
    session.run(
        "python", "-m", "pytest", "-s", "tests/test_checkpoint_fuzz.py",
        "tests/test_checkpoint_hostile.py", *session.posargs,
        env={"BPCORE_FUZZ_CHECKPOINTS": count},
    )
