"""What `pip install` gives: extras that never pull GPU packages unasked and do
not pin torch, a licence, an sdist that carries what its tests read."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ (tomllib)")


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]


def _closure(extras: dict[str, list[str]], name: str) -> set[str]:
    """Every requirement ``bpcore[name]`` pulls in, self-references expanded."""
    out: set[str] = set()
    for req in extras[name]:
        m = re.fullmatch(r"bpcore\[(.+)\]", req)
        if m:
            for inner in m.group(1).split(","):
                out |= _closure(extras, inner.strip())
        else:
            out.add(req)
    return out


def test_no_extra_but_cuda_pulls_a_gpu_package_and_torch_is_not_pinned() -> None:
    extras = _extras()
    for name in extras:
        reqs = _closure(extras, name)
        if name != "cuda":
            assert not any(r.startswith("cupy") for r in reqs), (name, reqs)
        assert not any(re.match(r"torch\s*==", r) for r in reqs), (name, reqs)
    assert "dev" in extras and {"nox", "ruff", "mypy"} <= _closure(extras, "dev")


def test_ci_pins_the_cpu_torch_wheel_through_a_constraints_file() -> None:
    assert "torch==2.13.0" in (ROOT / ".ci" / "constraints.txt").read_text().split()
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- ci:test-command")[1].splitlines()[2]
    assert "-c .ci/constraints.txt" in command and "torch" in command


def test_the_licence_is_the_one_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.slow
def test_the_sdist_ships_what_its_tests_read(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="pip install build")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (sdist,) = tmp_path.glob("bpcore-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "tests/conftest.py", "tests/test_examples.py",
                   "examples/xor.py", "bpcore/__init__.py"):
        assert needed in names, f"{needed} missing from the sdist"
