"""The bad-input census (``benchmarks/bad_input_census.py``) as tests: each of its
distinct bad inputs gives a clear BpcoreError (from the CLI, run in-process
through ``bpcore.cli.main``: exit status 2 and one ``bpcore: error:`` line),
or is a documented valid input, and no user file is changed.

The slow cases (a diverging training run) are left to the script; it also runs
the CLI cases as real subprocesses (``--cli subprocess``, the default).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "bad_input_census", ROOT / "benchmarks" / "bad_input_census.py")
assert _spec is not None and _spec.loader is not None
census = importlib.util.module_from_spec(_spec)
sys.modules["bad_input_census"] = census
_spec.loader.exec_module(census)

CASES = census.build_cases()
FAST = [c for c in CASES if not c.slow]


def _gpu_present() -> bool:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    return importlib.util.find_spec("cupy") is not None


GPU = _gpu_present()


def test_the_census_is_large_and_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 300
    assert sum(c.issue for c in CASES) >= 60  # the issue's reproducers are in it
    assert {c.area for c in CASES} >= {"layers", "arch", "optim", "step", "model",
                                       "checkpoint", "data", "cli"}


@pytest.mark.parametrize("case", FAST, ids=[c.id for c in FAST])
def test_bad_input_is_refused_clearly(case: census.Case) -> None:
    if case.no_gpu and GPU:
        pytest.skip("a GPU is present: the device asked for exists here")
    outcome = census.run_case(case, mode="inprocess")
    assert outcome.cls in ("clear", "valid"), f"{outcome.cls}: {outcome.detail}"
