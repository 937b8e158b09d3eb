"""The scripts in examples/: each runs (small and fast) and prints what it should."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    """Run ``examples/<name>`` with this Python; its stdout (it must exit 0)."""
    env = dict(os.environ)
    # tiny matmuls: one BLAS/OpenMP thread is fastest, and much faster on a busy machine
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
        timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_neuron_prints_the_hand_computed_step() -> None:
    out = run_example("single_neuron.py")
    # the same step by hand: x = (1, 0.5), w = (0.3, -0.2), b = 0.1, t = 1, eta = 0.5
    z = 0.3 * 1.0 - 0.2 * 0.5 + 0.1
    y = 1.0 / (1.0 + math.exp(-z))
    error = 0.5 * (1.0 - y) ** 2
    delta = (y - 1.0) * y * (1.0 - y)
    w1, w2, b = 0.3 - 0.5 * delta * 1.0, -0.2 - 0.5 * delta * 0.5, 0.1 - 0.5 * delta
    assert f"sigmoid(z)         = {y:.6f}" in out
    assert f"(t - y)^2      = {error:.6f}" in out
    assert f"y (1 - y)  = {delta:.6f}" in out
    assert f"[{delta:.6f}, {delta * 0.5:.6f}]" in out
    assert f"w - eta dE/dw      = [{w1:.6f}, {w2:.6f}]" in out
    assert f"b - eta dE/db      = {b:.6f}" in out
    for line in out.splitlines():  # every kernel value matches its hand formula
        match = re.search(r"= (\[?[-\d., ]+\]?)  \(by hand (\[?[-\d., ]+\]?)", line)
        if match:
            assert match.group(1) == match.group(2), line
    after = float(re.search(r"error (\d\.\d+)$", out.strip()).group(1))  # type: ignore[union-attr]
    assert after < error  # one step of gradient descent lowered the error


def test_single_neuron_many_steps_lowers_the_error() -> None:
    out = run_example("single_neuron.py", "--steps", "10")
    errors = [float(e) for e in re.findall(r"error (\d\.\d+)", out)]
    assert errors == sorted(errors, reverse=True) and len(errors) >= 5


def test_patterns_341_learns_its_four_patterns() -> None:
    out = run_example("patterns_341.py", "--epochs", "800")
    assert "3-4-1 network on numpy after 800 epochs" in out
    assert "[0, 0, 1] -> 0.0" in out and "[1, 1, 1] -> 0.9" in out
    assert out.strip().endswith("patterns learned: yes")


def test_xor_is_learned() -> None:
    out = run_example("xor.py", "--epochs", "200")
    assert re.search(r"2-4-1 network, 200 epochs on numpy: loss 0\.\d+ -> 0\.0\d+", out)
    assert out.strip().endswith("XOR learned: yes")


def test_mnist_784_runs_small() -> None:
    out = run_example("mnist_784.py", "--limit", "300", "--epochs", "2")
    assert "784-128-64-10 sigmoid network, SGD lr 0.1, batch 10" in out
    assert "digits as 28x28: 300 training / 359 test images" in out
    assert re.search(r"^test accuracy \d+\.\d% \(loss \d\.\d{4}\) after 2 epochs", out, re.M)


def test_mnist_784_reads_real_mnist_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)  # a tiny stand-in in the Keras mnist.npz layout
    np.savez(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        y_train=np.arange(40) % 10,
        x_test=rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    out = run_example("mnist_784.py", "--data", f"mnist:{tmp_path}", "--epochs", "1")
    assert "on mnist: 40 training / 20 test images" in out
    assert re.search(r"^test accuracy \d+\.\d% ", out, re.M)


def test_mnist_784_upsamples_digits_to_784_pixels() -> None:
    pytest.importorskip("sklearn")
    module = load_example("mnist_784.py")
    from bpcore.data import load_dataset

    ds = load_dataset("digits")
    big = module.digits_as_mnist(ds)
    assert big.X.shape == (1797, 784)
    images = big.X.reshape(-1, 28, 28)
    assert images.max() == pytest.approx(255.0) and images.min() == 0.0
    assert np.all(images[:, :2, :] == 0) and np.all(images[:, :, -2:] == 0)  # the border
    # every 3x3 block is one original pixel, scaled from 0..16 to 0..255
    np.testing.assert_allclose(images[:, 2:26:3, 2:26:3], ds.X.reshape(-1, 8, 8) * 255 / 16)
    np.testing.assert_array_equal(images[:, 3:26:3, 4:26:3], images[:, 2:26:3, 2:26:3])


def test_switch_backend_gives_the_same_loss_everywhere() -> None:
    out = run_example("switch_backend.py", "--epochs", "1", "--n", "64", "--batch", "32")
    losses = {name: float(loss) for name, loss in
              re.findall(r"^(\w+)\s+final loss (\d\.\d+)", out, re.M)}
    assert "numpy" in losses and len(losses) >= 2, out
    for name, loss in losses.items():
        assert loss == pytest.approx(losses["numpy"], rel=1e-4), name


def test_own_training_loop_trains() -> None:
    out = run_example("own_training_loop.py", "--epochs", "10", "--n", "150")
    losses = [float(v) for v in re.findall(r"loss (\d\.\d+)", out)]
    assert losses[-1] < losses[0]
    assert re.search(r"^training accuracy on the spirals: \d+\.\d%$", out, re.M)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_help(name: str) -> None:
    out = run_example(name, "--help")
    assert out.startswith("usage:")
    assert "(default: " in out  # every option shows its default


def test_torch_optim_steps_with_bpcore_gradients() -> None:
    pytest.importorskip("torch", reason='pip install "bpcore[torch]"')
    out = run_example("torch_optim.py", "--epochs", "5")
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 2 and losses[-1] < 0.5 * losses[0]
    accuracy = float(re.search(r"^test accuracy (\d+\.\d)%$", out, re.M).group(1))  # type: ignore[union-attr]
    assert accuracy > 90.0
