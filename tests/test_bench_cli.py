"""``bpcore bench`` on a tiny configuration: the table, the JSON, the plot, the
progress lines, comparing two runs, bad flags.

One run (seed workload, batch 16, float32, bpcore on NumPy and the
hand-written NumPy step, a few rounds) is shared by the tests of its
outputs, and a second one compares itself with it through pytest-benchmark's
``--benchmark-compare``; each takes a few seconds, most of it starting the
pytest subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
    "--max-time", "0.01", "--min-rounds", "2", "--warmup", "0", "--passes", "2", "--threads", "1",
]
TINY_ROWS = {"bpcore-numpy", "bpcore-numpy-functional", "bpcore-numpy-default",
             "numpy-handwritten"}
#: pytest-benchmark's warnings (a machine_info that differs from the compared run's) as
#: errors, as under this repository's ``filterwarnings = error``
STRICT = dict(os.environ, PYTEST_ADDOPTS="-W error::pytest.PytestWarning")


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
    assert set(lines) == TINY_ROWS
    assert lines["numpy-handwritten"][4] == "1.00x"  # its ratio to itself
    for row in lines.values():
        assert re.fullmatch(r"\d+\.\d\dx", row[4]), row  # a ratio in every row
        assert row[5] == "-"  # no torch-eager row in this run
        assert row[8] == "-" or row[8] in ("\u26a0", "!"), row  # the noise column: a mark or -
    header = next(i for i, line in enumerate(out.splitlines()) if "batch 16" in line) + 1
    assert out.splitlines()[header].split()[-1] == "noise"


def test_progress_lines_replace_the_dots(tiny_run: dict[str, Any]) -> None:
    proc = tiny_run["proc"]
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    # one line per row and pass, counted, with the elapsed time and what is left
    assert len(progress) == 2 * len(TINY_ROWS), proc.stderr
    for k, line in enumerate(progress, start=1):
        m = re.match(r"\[\s*(\d+)/(\d+)\] seed float32 cpu batch 16 (\S+) \(pass (\d)/2\): "
                     r"(\d+\.\d+ ms|skipped)(?: \(.*\))?; (\d+):(\d\d) elapsed, (.*)$", line)
        assert m, line
        assert (int(m[1]), int(m[2])) == (k, len(progress))
        assert m[3] in TINY_ROWS
        assert m[8] == ("done" if k == len(progress) else m[8])
        assert re.fullmatch(r"about \d+:\d\d left", m[8]) or k == len(progress), line
    assert not re.search(r"^\.+\s*$", proc.stdout, re.MULTILINE), proc.stdout  # no pytest dots


def test_json_is_pytest_benchmark_json(tiny_run: dict[str, Any]) -> None:
    data = json.loads(Path(tiny_run["json"]).read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    rows = {b["extra_info"]["row"]: b for b in data["benchmarks"]}
    assert set(rows) == TINY_ROWS
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
    assert data["bpcore"]["environment"]["threads_requested"] == "1"
    # what changes between runs is out of machine_info (which --benchmark-compare checks)
    stable = data["machine_info"]["bpcore_environment"]
    assert stable["cores"] >= 1 and stable["versions"]["numpy"]
    for volatile in ("date", "load_average", "load_average_at_start", "thread_pools",
                     "threads_requested"):
        assert volatile not in stable
        assert volatile in data["bpcore"]["environment"]
    assert "hz_actual" not in data["machine_info"].get("cpu", {})
    assert "cpu_wait_fraction" in info and "load_average" in info  # per row, in extra_info
    _pytest_benchmark_reads(tiny_run["json"], TINY_ROWS)


def _pytest_benchmark_reads(path: Path, rows: set[str]) -> None:
    """``pytest-benchmark compare PATH`` (its own command line) shows every row."""
    compare = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert compare.returncode == 0, compare.stderr
    assert "Failed to load" not in compare.stderr, compare.stderr  # (it exits 0 even then)
    for row in rows:
        assert f"-{row}-" in compare.stdout, (row, compare.stdout)


def test_benchmark_compare_across_runs(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    """A second run compared with the first through pytest-benchmark's --benchmark-compare,
    with its warnings as errors: machine_info is the same, so nothing warns. The first
    run's bpcore-numpy is made 1000x faster in the copy compared with, so --compare-fail
    finds exactly that row regressed."""
    first = json.loads(Path(tiny_run["json"]).read_text())
    baseline = tmp_path / "baseline.json"
    for bench in first["benchmarks"]:
        if bench["extra_info"]["row"] == "bpcore-numpy":
            for key in ("min", "max", "mean", "median"):
                bench["stats"][key] /= 1000
    baseline.write_text(json.dumps(first))
    second = tmp_path / "second.json"
    rows = ["bpcore-numpy", "numpy-handwritten"]
    argv = list(TINY)
    i = argv.index("--backends")
    del argv[i:i + 4]  # --backends numpy --peers handwritten: name the rows instead
    proc = subprocess.run(
        [sys.executable, "-m", "bpcore", *argv, "--rows", ",".join(rows), "--json", str(second),
         "--compare", str(baseline), "--compare-fail", "min:10000%"],
        capture_output=True, text=True, timeout=120, env=STRICT,
    )
    out = proc.stdout + proc.stderr
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    assert proc.returncode == 1, out  # the regression, and only that
    assert "bpcore bench: a row regressed beyond --compare-fail" in proc.stderr
    regressions = proc.stderr.split("Performance has regressed:")[1].split("----")[0]
    assert "cpu-bpcore-numpy-16-p0" in regressions and "cpu-bpcore-numpy-16-p1" in regressions
    assert "numpy-handwritten" not in regressions, regressions
    assert f"compared with {baseline}: 4 of 4 rows in both" in proc.stdout
    assert "same machine and software (machine_info identical)" in proc.stdout
    # pytest-benchmark's own comparison table: each row now and from the first run
    for row in rows:
        for p in (0, 1):
            name = f"test_train_step[seed-float32-cpu-{row}-16-p{p}]"
            assert f"{name} (NOW)" in proc.stdout, proc.stdout
            assert re.search(re.escape(name) + r" \(\S*baseline\)", proc.stdout), proc.stdout
    now = json.loads(second.read_text())  # written, regression or not
    assert json.dumps(first["machine_info"], sort_keys=True) == \
        json.dumps(now["machine_info"], sort_keys=True)
    assert {b["extra_info"]["row"] for b in now["benchmarks"]} == set(rows)


def _script(name: str) -> Any:
    """A script of the repository's benchmarks/ folder, imported as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if not path.is_file():
        pytest.skip("benchmarks/ is not here (an installed copy without the clone)")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_run_json_is_pytest_benchmark_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/compiled_interleaved.py's JSON: pytest-benchmark compare reads it, and so
    do compiled_table.py and the report (a tiny run: two rows, two rounds, in-process)."""
    out = tmp_path / "compiled.json"
    rows = {"numpy-handwritten", "bpcore-numpy-fused"}
    monkeypatch.setattr(sys, "argv", [
        "compiled_interleaved.py", "--json", str(out), "--workloads", "seed", "--sizes", "16",
        "--rows", ",".join(sorted(rows)), "--rounds", "2", "--calls", "2", "--warmup", "0"])
    _script("compiled_interleaved").main()
    data = json.loads(out.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    assert "hz_actual" not in data["machine_info"].get("cpu", {})
    assert "date" not in data["machine_info"]["bpcore_environment"]
    for bench in data["benchmarks"]:
        stats = bench["stats"]
        assert {"min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds",
                "iterations", "ops"} <= set(stats)
        assert stats["rounds"] == 4 and len(stats["data"]) == 4  # 2 rounds x 2 calls
        assert stats["min"] == min(stats["data"]) <= stats["median"] <= stats["max"]
        assert bench["extra_info"]["samples_per_s"] == pytest.approx(16 / stats["min"])
    _pytest_benchmark_reads(out, rows)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["compiled_table.py", str(out)])
    _script("compiled_table").main()
    assert "bpcore[numpy, fused] <= 1.0x hand-written NumPy: " in capsys.readouterr().out
    assert {e["row"] for e in report.entries(data)} == rows


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
        (["--rows", "bpcore-tensorflow"], "--rows"),
        (["--compare", "no-such-run.json"], "--compare"),
        (["--compare-fail", "min:5%"], "--compare-fail"),
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


def test_gru_workload_rows_start_from_the_same_network() -> None:
    """The recurrent workload: its torch peers run torch.nn.GRU holding bpcore's initial
    weights and compute bpcore's outputs; the floor counts the time loop's products."""
    torch = pytest.importorskip("torch", reason="pip install 'bpcore[torch]'")
    import numpy as np

    import bpcore as bp
    from bpcore.benchtools import rows, workloads

    work = WORKLOADS["gru"]
    assert work.arch == "bidirectional(gru(6)),flatten,dense(10)"
    x, _ = workloads.host_batch(work, 3, "float64")
    params = workloads.host_tree(work, "float64")
    want = bp.predict(workloads.network(work), params, x)
    module = rows._torch_network(work, "float64", torch.device("cpu"))
    assert any(isinstance(m, torch.nn.GRU) and m.bidirectional for m in module.modules())
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), want,
                               rtol=1e-10, atol=1e-12)
    # per direction: x W_ihᵀ, 40 steps of h W_hhᵀ, 40 of three backward products; dense: 3
    assert len(gemm_products(work, 3)) == 2 * (1 + 40 + 3 * 40) + 3
    for row in ("numpy-handwritten", "jax-jit"):
        with pytest.raises(rows.Unavailable, match="MLP"):
            rows.build(row, work, 3, "float32", "cpu")


def test_torch_recurrent_modules_match_bpcore() -> None:
    """torch_recurrent for each kind, one way and both, every step or the last state."""
    torch = pytest.importorskip("torch", reason="pip install 'bpcore[torch]'")
    import numpy as np

    import bpcore as bp
    from bpcore.benchtools.recurrent import torch_recurrent
    from bpcore.benchtools.rows import Unavailable

    x = np.random.default_rng(0).standard_normal((3, 5, 2))
    for kind in ("rnn", "gru", "lstm"):
        for seq in (True, False):
            for layer in (getattr(bp, kind)(2, 4, return_sequences=seq),
                          bp.bidirectional(getattr(bp, kind)(2, 4, return_sequences=seq))):
                params = layer.init(1, dtype="float64")
                want, _ = layer.forward(params, x)
                got = torch_recurrent(layer.config, params)(torch.from_numpy(x))
                np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10,
                                           atol=1e-12)
    with pytest.raises(Unavailable, match="truncate"):
        torch_recurrent(bp.gru(2, 4, truncate=2).config, {})


def test_gru_workload_through_the_command_line(tmp_path: Path) -> None:
    """``bpcore bench --workloads gru``: bpcore on NumPy beside torch.nn.GRU, tiny."""
    pytest.importorskip("torch", reason="pip install 'bpcore[torch]'")
    json_path = tmp_path / "gru.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bpcore", "bench", "--workloads", "gru", "--sizes", "4",
         "--dtype", "float32", "--device", "cpu", "--backends", "numpy-fused",
         "--peers", "torch-eager", "--max-time", "0.01", "--min-rounds", "2", "--warmup", "0",
         "--passes", "1", "--threads", "1", "--json", str(json_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "gru  float32  cpu" in proc.stdout and "batch 4" in proc.stdout
    data = json.loads(json_path.read_text())
    got = {b["extra_info"]["row"]: b["extra_info"] for b in data["benchmarks"]}
    assert set(got) == {"bpcore-numpy-fused", "torch-eager"}
    assert all(e["workload"] == "gru" and e["batch"] == 4 for e in got.values())
    assert got["bpcore-numpy-fused"]["step_flops"] == got["torch-eager"]["step_flops"] > 0
