"""Weight initializers (bpcore/init.py): distributions, seeds, dtypes, backends."""

from __future__ import annotations

import math
from types import ModuleType

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from gradcheck import host

import bpcore as bp
from bpcore.backend import device_of
from bpcore.init import INITIALIZERS, as_generator

FAN_IN, FAN_OUT = 300, 500  # unequal, so a fan_in/fan_out mix-up changes the scale
BIG = (FAN_IN, FAN_OUT)  # 150 000 draws: the std is known to about 0.2 %
NAMES = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal"]

#: name -> (uniform bound a, or normal std s) for BIG
SCALE = {
    "glorot_uniform": math.sqrt(6.0 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(6.0 / FAN_IN),
    "glorot_normal": math.sqrt(2.0 / (FAN_IN + FAN_OUT)),
    "he_normal": math.sqrt(2.0 / FAN_IN),
}


def _draw(xp: ModuleType, name: str, shape: tuple[int, int] = BIG, seed: int = 0,
          dtype: str | None = "float64") -> np.ndarray:
    w = INITIALIZERS[name](np.random.default_rng(seed), shape, xp=xp, dtype=dtype)
    assert bp.namespace(w) is xp
    assert tuple(w.shape) == shape
    return host(w)


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform"])
def test_uniform_initializers_have_the_right_bound(xp: ModuleType, name: str) -> None:
    a = SCALE[name]
    w = _draw(xp, name)
    assert np.max(np.abs(w)) <= a
    assert np.max(np.abs(w)) >= 0.999 * a  # the bound is reached, not a smaller one
    assert abs(np.std(w) / (a / math.sqrt(3.0)) - 1.0) < 0.01
    assert abs(np.mean(w)) < 5.0 * a / math.sqrt(3.0 * w.size)


@pytest.mark.parametrize("name", ["glorot_normal", "he_normal"])
def test_normal_initializers_have_the_right_std(xp: ModuleType, name: str) -> None:
    s = SCALE[name]
    w = _draw(xp, name)
    assert abs(np.std(w) / s - 1.0) < 0.015
    assert abs(np.mean(w)) < 5.0 * s / math.sqrt(w.size)
    # normal, not uniform: 68.3 % within one std, and tails far beyond sqrt(3) std
    assert abs(np.mean(np.abs(w) < s) - 0.6827) < 0.01
    assert np.max(np.abs(w)) > 3.5 * s


def test_initializers_use_fan_in_and_fan_out_as_documented(xp: ModuleType) -> None:
    """Transposing the shape changes He (fan_in only) but not Glorot."""
    for name in NAMES:
        w = _draw(xp, name, (FAN_OUT, FAN_IN))
        expected = {
            "glorot_uniform": SCALE["glorot_uniform"] / math.sqrt(3.0),
            "glorot_normal": SCALE["glorot_normal"],
            "he_uniform": math.sqrt(6.0 / FAN_OUT) / math.sqrt(3.0),
            "he_normal": math.sqrt(2.0 / FAN_OUT),
        }[name]
        assert abs(np.std(w) / expected - 1.0) < 0.015, name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [*NAMES, "zeros"])
def test_one_seed_gives_bit_identical_weights_on_every_backend(
    xp: ModuleType, name: str, dtype: str
) -> None:
    init = INITIALIZERS[name]
    ours = bp.to_numpy(init(np.random.default_rng(42), (5, 3), xp=xp, dtype=dtype))
    ref = init(np.random.default_rng(42), (5, 3), xp=np_xp, dtype=dtype)
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ours, ref, strict=True)


def test_float32_weights_are_the_float64_draw_rounded(xp: ModuleType) -> None:
    """Draw in float64 on the host, then cast: the recipe that makes seeds portable."""
    a = math.sqrt(6.0 / 8.0)
    expected = np.random.default_rng(7).uniform(-a, a, size=(5, 3))
    w32 = bp.init.glorot_uniform(np.random.default_rng(7), (5, 3), xp=xp)
    w64 = bp.init.glorot_uniform(np.random.default_rng(7), (5, 3), xp=xp, dtype="float64")
    np.testing.assert_array_equal(bp.to_numpy(w64), expected, strict=True)
    np.testing.assert_array_equal(bp.to_numpy(w32), expected.astype(np.float32), strict=True)


def test_a_network_seed_gives_identical_params_on_every_backend(xp: ModuleType) -> None:
    net = bp.mlp([4, 6, 5, 3], "relu")
    ours = net.init(123)  # the fixture made xp the default backend
    with bp.use_backend("numpy"):
        ref = net.init(123)
    assert len(ours) == len(ref)
    for layer, layer_ref in zip(ours, ref, strict=True):
        assert set(layer) == set(layer_ref)
        for k in layer:
            assert bp.namespace(layer[k]) is xp
            np.testing.assert_array_equal(bp.to_numpy(layer[k]), layer_ref[k], strict=True)
    again = net.init(123)
    other = net.init(124)
    np.testing.assert_array_equal(bp.to_numpy(again[0]["W"]), bp.to_numpy(ours[0]["W"]))
    assert not np.array_equal(bp.to_numpy(other[0]["W"]), bp.to_numpy(ours[0]["W"]))


@pytest.mark.parametrize("name", [*NAMES, "zeros"])
def test_float32_by_default_float64_on_request(xp: ModuleType, name: str) -> None:
    init = INITIALIZERS[name]
    device = device_of(xp.asarray(np.zeros(1)))
    rng = np.random.default_rng(0)
    assert init(rng, (3, 2), xp=xp).dtype == xp.float32
    assert init(rng, (3, 2)).dtype == xp.float32  # xp from the default backend
    assert bp.namespace(init(rng, (3, 2))) is xp
    assert init(rng, (3, 2), xp=xp, dtype="float64").dtype == xp.float64
    w = init(rng, (3, 2), xp=xp, dtype=xp.float64, device=device)
    assert w.dtype == xp.float64
    assert device_of(w) == device


def test_layers_init_in_the_requested_dtype(xp: ModuleType) -> None:
    for dtype, expected in ((None, xp.float32), ("float32", xp.float32), ("float64", xp.float64)):
        params = bp.mlp([3, 4, 2]).init(0, dtype=dtype)
        for layer in params:
            for a in layer.values():
                assert a.dtype == expected


def test_zeros_are_zero(xp: ModuleType) -> None:
    z = bp.init.zeros(None, (4,), xp=xp)
    np.testing.assert_array_equal(bp.to_numpy(z), np.zeros(4, dtype=np.float32), strict=True)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int32", "int64", "uint8", "bool"])
def test_unsupported_dtypes_raise_dtype_error_naming_the_fix(xp: ModuleType, dtype: str) -> None:
    with pytest.raises(bp.DTypeError, match=r"float32.*float64"):
        bp.init.glorot_uniform(np.random.default_rng(0), (2, 2), xp=xp, dtype=dtype)
    with pytest.raises(bp.DTypeError, match=rf"{dtype} is not supported"):
        bp.dense(2, 2).init(0, dtype=dtype)


def test_unsupported_dtype_objects_raise_dtype_error(xp: ModuleType) -> None:
    bad = [xp.int32, xp.int64, *([xp.float16] if hasattr(xp, "float16") else [])]
    for dtype in bad:
        with pytest.raises(bp.DTypeError, match=r"float32.*float64"):
            bp.init.he_normal(np.random.default_rng(0), (2, 2), xp=xp, dtype=dtype)


def test_generators_and_seeds() -> None:
    gen = np.random.default_rng(3)
    assert as_generator(gen) is gen
    assert as_generator(5).integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    assert isinstance(as_generator(None), np.random.Generator)


def test_initializer_lookup() -> None:
    assert bp.init.initializer("xavier_uniform") is bp.init.glorot_uniform
    assert bp.init.initializer(bp.init.he_normal) is bp.init.he_normal
    with pytest.raises(ValueError, match=r"unknown initializer 'lecun'; choose one of"):
        bp.init.initializer("lecun")
