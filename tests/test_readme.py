"""The README's Python code runs as written.

Each ```python block runs in a fresh interpreter, after the tour's first block
(which defines ``net``, ``opt``, ``params``, ``x``, ...), in a temporary
directory. The data-parallel block needs ``mpiexec`` and is run by
tests/test_distributed.py in its own form.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
TOUR = BLOCKS[0]


def _runnable() -> list[tuple[str, str]]:
    out = []
    for i, block in enumerate(BLOCKS):
        if "bpcore.distributed" in block:
            continue
        out.append((f"block{i}-{block.strip().splitlines()[0][:30]}", block))
    return out


def test_the_readme_has_the_tour_and_the_kernels() -> None:
    assert "bp.train_step(" in TOUR
    assert any("dense_forward(" in b for b in BLOCKS)


@pytest.mark.parametrize(("name", "block"), _runnable(), ids=[n for n, _ in _runnable()])
def test_readme_block_runs(name: str, block: str, tmp_path: Path) -> None:
    if "torch" in block:
        pytest.importorskip("torch")
    if "jax" in block:
        pytest.importorskip("jax")
    code = block if block is TOUR else TOUR + "\n" + block
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
