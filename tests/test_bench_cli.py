"""``bpcore bench`` on a tiny configuration: the table, the JSON, the plot, bad flags.

One run (seed workload, batch 16, float32, bpcore on NumPy and the
hand-written NumPy step, a few rounds) is shared by the tests of its
outputs; it takes a few seconds, most of it starting the pytest subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bpcore.benchtools import report
from bpcore.benchtools.plugin import cases, parse_list, parse_sizes
from bpcore.benchtools.workloads import WORKLOADS, gemm_products, step_flops
from bpcore.cli import main

pytest.importorskip("pytest_benchmark", reason="pip install 'bpcore[bench]'")

TINY = [
    "bench", "--workloads", "seed", "--sizes", "16", "--dtype", "float32", "--device", "cpu",
    "--backends", "numpy", "--peers", "handwritten",
    "--max-time", "0.01", "--min-rounds", "2", "--warmup", "0", "--passes", "2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the tiny configuration once, through the real command line in a subprocess."""
    out = tmp_path_factory.mktemp("bench")
    json_path, png, md = out / "run.json", out / "run.png", out / "run.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bpcore", *TINY, "--json", str(json_path), "--plot", str(png),
         "--markdown", str(md)],
        capture_output=True, text=True, timeout=120,
    )
    return {"proc": proc, "json": json_path, "png": png, "md": md}


def test_prints_the_table_with_ratios(tiny_run: dict[str, Any]) -> None:
    proc = tiny_run["proc"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "seed  float32  cpu" in out and "batch 16" in out
    assert "vs hand" in out and "samples/s" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()
             if line.strip().startswith(("bpcore-numpy", "numpy-handwritten"))}
    assert set(lines) == {"bpcore-numpy", "bpcore-numpy-functional", "bpcore-numpy-default",
                          "numpy-handwritten"}
    assert lines["numpy-handwritten"][4] == "1.00x"  # its ratio to itself
    for row in lines.values():
        assert re.fullmatch(r"\d+\.\d\dx", row[4]), row  # a ratio in every row
        assert row[5] == "-"  # no torch-eager row in this run


def test_json_is_pytest_benchmark_json(tiny_run: dict[str, Any]) -> None:
    data = json.loads(Path(tiny_run["json"]).read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    rows = {b["extra_info"]["row"]: b for b in data["benchmarks"]}
    assert set(rows) == {"bpcore-numpy", "bpcore-numpy-functional", "bpcore-numpy-default",
                          "numpy-handwritten"}
    # every row timed in two interleaved passes: A B C A B C
    order = [(b["extra_info"]["pass"], b["extra_info"]["row"]) for b in data["benchmarks"]]
    assert sorted(order) == sorted((p, r) for p in (0, 1) for r in rows)
    bench = rows["bpcore-numpy"]
    assert bench["group"] == "seed float32 cpu"
    assert bench["params"]["size"] == 16
    assert bench["stats"]["min"] > 0 and bench["stats"]["rounds"] >= 1
    info = bench["extra_info"]
    assert info["backend"] == "numpy" and info["dtype"] == "float32" and info["batch"] == 16
    assert info["samples_per_s"] == pytest.approx(16 / bench["stats"]["min"])
    assert info["gflop_s"] == pytest.approx(step_flops(WORKLOADS["seed"], 16)
                                            / bench["stats"]["min"] / 1e9)
    assert data["bpcore"]["environment"]["cores"] >= 1
    # pytest-benchmark's own tool reads it
    compare = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(tiny_run["json"])],
        capture_output=True, text=True, timeout=60,
    )
    assert compare.returncode == 0, compare.stderr
    assert "bpcore-numpy" in compare.stdout


def test_plot_and_markdown_are_written(tiny_run: dict[str, Any]) -> None:
    png = Path(tiny_run["png"]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    md = Path(tiny_run["md"]).read_text()
    assert "| bpcore-numpy |" in md and "CPU:" in md and "numpy 2" in md


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sizes", "16,abc"], "--sizes"),
        (["--sizes", "0"], "--sizes"),
        (["--workloads", "huge"], "--workloads"),
        (["--backends", "tensorflow"], "--backends"),
        (["--peers", "keras"], "--peers"),
        (["--dtype", "float16"], "--dtype"),
        (["--max-time", "soon"], "--max-time"),
        (["--threads", "two"], "--threads"),
        (["--passes", "0"], "--passes"),
        (["--bogus"], "--bogus"),
        (["--sizes"], "--sizes"),  # argparse: expected one argument
    ],
)
def test_bad_flags_give_one_line(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(["bench", *flags])
    except SystemExit as exc:  # argparse's own errors exit
        status = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "error" in err and expected in err


def test_cases_put_the_floor_first_and_filter() -> None:
    selected = cases({
        "workloads": ["seed"], "sizes": [16], "dtypes": ["float32", "float64"],
        "devices": ["cpu", "gpu"], "backends": ["numpy"], "peers": ["handwritten", "floor"],
        "passes": 2,
    })
    table = [(c[5], c[3]) for c in selected if c[1] == "float32" and c[2] == "cpu"]
    rows = [r for p, r in table if p == 0]
    assert rows[0] == "gemm-floor-numpy"
    assert "numpy-handwritten" in rows and "bpcore-torch" not in rows
    assert table == [(0, r) for r in rows] + [(1, r) for r in rows]  # interleaved passes
    assert not any(c[1] == "float64" and c[2] == "gpu" for c in selected)


def test_parsers_and_flop_count() -> None:
    assert parse_sizes("64,16,64") == [16, 64]
    assert parse_list("seed,seed", ("seed", "wide"), "--workloads") == ["seed"]
    seed = WORKLOADS["seed"]
    # 3 products per layer but 2 for the first
    assert len(gemm_products(seed, 8)) == 3 * 3 - 1
    assert step_flops(seed, 8) == 2 * 8 * (2 * 784 * 128 + 3 * 128 * 64 + 3 * 64 * 10)


def test_table_ratios_from_one_run() -> None:
    def bench(row: str, seconds: float, floor: str = "gemm-floor-numpy") -> dict[str, Any]:
        return {"params": {"size": 4}, "stats": {"min": seconds, "median": seconds, "rounds": 3},
                "extra_info": {"row": row, "workload": "seed", "dtype": "float32",
                               "device": "cpu", "step_flops": 8e9, "gemm_floor": floor}}

    data = {"benchmarks": [
        bench("gemm-floor-numpy", 0.5), bench("bpcore-numpy", 1.5), bench("numpy-handwritten", 2.0),
        bench("torch-eager", 4.0),
        # second pass: the best of the passes counts
        bench("gemm-floor-numpy", 0.6), bench("bpcore-numpy", 1.0), bench("numpy-handwritten", 2.5),
    ]}
    (rows,) = report.tables(data).values()
    by_row = {e["row"]: e for e in rows}
    ours = by_row["bpcore-numpy"]
    assert ours["seconds"] == 1.0 and ours["rounds"] == 6 and ours["passes"] == 2
    assert ours["vs_handwritten"] == pytest.approx(0.5)
    assert ours["vs_torch_eager"] == pytest.approx(0.25)
    assert ours["gemm_floor_fraction"] == pytest.approx(0.5)
    assert ours["gflop_s"] == pytest.approx(8.0) and ours["samples_per_s"] == pytest.approx(4.0)
    assert [e["row"] for e in rows] == [
        "gemm-floor-numpy", "bpcore-numpy", "numpy-handwritten", "torch-eager"]
