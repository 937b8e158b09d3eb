"""Mixed precision (bpcore.mixed): bf16/fp16 compute, float32 master weights,
dynamic loss scaling, the digits accuracy check, and the TF32 opt-in.

Every backend that has the compute dtype runs the tests (torch and jax: both;
numpy: float16 only); the others are checked to refuse it clearly.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import bpcore as bp
from bpcore.backend import backend_name, to_numpy
from bpcore.errors import DTypeError
from bpcore.mixed import (
    MixedState,
    ScalerState,
    allow_tf32,
    compute_dtype_of,
    mixed_precision_step,
    tf32,
)
from bpcore.optim import Optimizer

# max |g_low - g32| <= REL * max |g32|: bf16 keeps 8 significant bits, fp16 11.
REL = {"bfloat16": 3e-2, "float16": 5e-3}


def _has(xp: ModuleType, name: str) -> bool:
    try:
        compute_dtype_of(xp, name)
    except DTypeError:
        return False
    return True


def _need(xp: ModuleType, name: str) -> None:
    if not _has(xp, name):
        pytest.skip(f"the {backend_name(xp)} backend has no {name} (refusal tested separately)")


def _batch(xp: ModuleType, n: int = 16, d: int = 6, k: int = 3) -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((n, d)).astype(np.float32))
    t = xp.asarray(rng.integers(0, k, size=n))
    return x, t


def _recording(record: list[Any]) -> Optimizer:
    """An optimizer that keeps the gradients it is given and changes nothing."""

    def update(grads: Any, state: Any, params: Any, **_: Any) -> tuple[Any, Any]:
        record.append(grads)
        return params, state

    return Optimizer(lambda params: None, update, "record", {"name": "record"})


def _flat(tree: Any) -> list[np.ndarray]:
    return [to_numpy(layer[k]) for layer in tree for k in sorted(layer)]


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float16"])
def test_grads_match_float32(xp: ModuleType, compute_dtype: str) -> None:
    _need(xp, compute_dtype)
    net = bp.mlp([6, 16, 3], "tanh")
    params = net.init(0)
    x, t = _batch(xp)
    record: list[Any] = []
    mp = mixed_precision_step(
        net, "softmax_cross_entropy", _recording(record), compute_dtype=compute_dtype
    )
    _, _, value = mp(params, mp.init(params), x, t)
    ref_value, ref = bp.value_and_grad(net, "softmax_cross_entropy", params, x, t)
    got = record[0]
    for g, r in zip(_flat(got), _flat(ref)):
        assert g.dtype == np.float32
        scale = float(np.max(np.abs(r)))
        assert float(np.max(np.abs(g - r))) <= REL[compute_dtype] * scale
    assert to_numpy(value).dtype == np.float32
    assert abs(float(value) - float(ref_value)) <= REL[compute_dtype] * abs(float(ref_value))


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float16"])
def test_master_weights_and_state_stay_float32(xp: ModuleType, compute_dtype: str) -> None:
    _need(xp, compute_dtype)
    net = bp.mlp([6, 8, 3], "relu")
    opt = bp.adam(1e-2)
    params = net.init(0)
    before = _flat(params)
    mp = mixed_precision_step(net, "softmax_cross_entropy", opt, compute_dtype=compute_dtype)
    state = mp.init(params)
    x, t = _batch(xp)
    new, state, _ = mp(params, state, x, t)
    for a in _flat(new) + _flat(state.opt.m) + _flat(state.opt.v):
        assert a.dtype == np.float32
    for a, b in zip(_flat(params), before):  # nothing passed in was modified
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_flat(new), before))


def test_refuses_missing_dtypes_clearly(xp: ModuleType) -> None:
    net = bp.mlp([6, 4, 3], "tanh")
    params = net.init(0)
    x, t = _batch(xp)
    missing = [name for name in ("bfloat16", "float16") if not _has(xp, name)]
    if not missing:
        pytest.skip(f"the {backend_name(xp)} backend has both compute dtypes")
    for name in missing:
        mp = mixed_precision_step(net, "softmax_cross_entropy", bp.sgd(), compute_dtype=name)
        with pytest.raises(DTypeError, match=f"has no {name}"):
            mp(params, mp.init(params), x, t)


def test_refuses_bad_arguments() -> None:
    net = bp.mlp([2, 2], "tanh")
    with pytest.raises(DTypeError, match="compute_dtype must be one of"):
        mixed_precision_step(net, "mse", bp.sgd(), compute_dtype="float8")
    with pytest.raises(ValueError, match="loss_scale"):
        mixed_precision_step(net, "mse", bp.sgd(), compute_dtype="float16", loss_scale=-1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        mixed_precision_step(net, "mse", bp.sgd(), compute_dtype="float16", backoff_factor=2.0)
    mp = mixed_precision_step(net, "mse", bp.sgd(), compute_dtype="float16")
    with pytest.raises(DTypeError, match="float32 master weights"):
        mp.init(net.init(0, dtype="float64"))


def test_dynamic_scaling_skips_overflow_and_backs_off(xp: ModuleType) -> None:
    _need(xp, "float16")
    net = bp.mlp([6, 8, 3], "tanh")
    params = net.init(0)
    opt = bp.sgd(lr=0.1)
    x, t = _batch(xp)
    # A scale this large overflows float16 (max 65504) in the first gradient.
    mp = mixed_precision_step(
        net, "softmax_cross_entropy", opt, compute_dtype="float16", init_scale=1e30
    )
    state = mp.init(params)
    assert state.scaler == ScalerState(1e30, 0, 0)
    new, state, value = mp(params, state, x, t)
    assert state.scaler == ScalerState(5e29, 0, 1)
    assert np.isfinite(float(value))
    for a, b in zip(_flat(new), _flat(params)):  # the update was skipped
        np.testing.assert_array_equal(a, b)


def test_dynamic_scaling_grows_after_interval(xp: ModuleType) -> None:
    _need(xp, "float16")
    net = bp.mlp([6, 8, 3], "tanh")
    params = net.init(0)
    x, t = _batch(xp)
    mp = mixed_precision_step(
        net, "softmax_cross_entropy", bp.sgd(lr=0.1), compute_dtype="float16",
        init_scale=4.0, growth_interval=2, growth_factor=3.0,
    )
    state = mp.init(params)
    scales = []
    for _ in range(3):
        params, state, _ = mp(params, state, x, t)
        assert isinstance(state, MixedState) and state.scaler is not None
        scales.append((state.scaler.scale, state.scaler.good_steps))
    assert scales == [(4.0, 1), (12.0, 0), (12.0, 1)]


def test_fixed_scale_and_bfloat16_default(torch: ModuleType) -> None:
    with bp.use_backend("torch") as backend:
        xp = backend.xp
        net = bp.mlp([6, 8, 3], "tanh")
        params = net.init(0)
        x, t = _batch(xp)
        mp = mixed_precision_step(net, "softmax_cross_entropy", bp.sgd(), compute_dtype="bfloat16")
        assert mp.config["loss_scale"] is None and mp.init(params).scaler is None
        record: list[Any] = []
        fixed = mixed_precision_step(
            net, "softmax_cross_entropy", _recording(record), compute_dtype="float16",
            loss_scale=1024.0,
        )
        _, state, _ = fixed(params, fixed.init(params), x, t)
        assert state.scaler is None
        _, ref = bp.value_and_grad(net, "softmax_cross_entropy", params, x, t)
        for g, r in zip(_flat(record[0]), _flat(ref)):  # unscaled before the update
            assert float(np.max(np.abs(g - r))) <= REL["float16"] * float(np.max(np.abs(r)))


# --------------------------------------------------------------------------
# accuracy check against float32 training (a CPU stand-in for the GPU check)


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    from bpcore.data import load_dataset

    data = load_dataset("digits")
    X = (data.X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    test, train = order[:360], order[360:]
    return X[train], data.y[train], X[test], data.y[test]


@functools.cache
def _train_digits(backend: str, compute_dtype: str | None) -> float:
    """Test accuracy in percent (cached: the float32 run is shared by two tests)."""
    Xtr, ytr, Xte, yte = _digits_split()
    with bp.use_backend(backend) as b:
        xp = b.xp
        net = bp.mlp([64, 128, 10], "relu")
        opt = bp.adam(1e-3)
        params = net.init(0)
        if compute_dtype is None:
            step: Any = bp.train_step(net, "softmax_cross_entropy", opt, validate=False)
            state = opt.init(params)
        else:
            step = mixed_precision_step(
                net, "softmax_cross_entropy", opt, compute_dtype=compute_dtype, validate=False
            )
            state = step.init(params)
        rng = np.random.default_rng(0)
        for _ in range(4):
            order = rng.permutation(len(Xtr))
            for i in range(0, len(order), 32):
                idx = order[i:i + 32]
                params, state, _ = step(params, state, xp.asarray(Xtr[idx]), xp.asarray(ytr[idx]))
        logits = to_numpy(bp.predict(net, params, xp.asarray(Xte)))
    return float(np.mean(np.argmax(logits, axis=1) == yte)) * 100.0


@pytest.mark.parametrize(
    ("backend", "compute_dtype"),
    [("torch", "bfloat16"), ("torch", "float16"), ("numpy", "float16")],
)
def test_digits_accuracy_close_to_float32(backend: str, compute_dtype: str) -> None:
    """Test accuracy (percent) of the digits MLP 64-128-10 relu, adam, 4 epochs:
    mixed precision within 1.5 points of float32 on the same seed and batches."""
    from conftest import require_backend

    require_backend(backend)
    full = _train_digits(backend, None)
    mixed = _train_digits(backend, compute_dtype)
    print(f"digits {backend}: float32 {full:.2f}%  {compute_dtype} {mixed:.2f}%")
    assert full > 90.0
    assert abs(mixed - full) <= 1.5


# --------------------------------------------------------------------------
# TF32


def test_allow_tf32_toggles_torch_and_restores(
    torch: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUPY_TF32", raising=False)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        with tf32(True) as setting:
            assert torch.backends.cuda.matmul.allow_tf32 is True
            assert torch.backends.cudnn.allow_tf32 is True
            assert os.environ["CUPY_TF32"] == "1"
            assert setting.previous["torch_matmul"] == matmul
            if not setting.effective:
                assert "no CUDA device" in setting.message
            with tf32(False):
                assert torch.backends.cuda.matmul.allow_tf32 is False
                assert os.environ["CUPY_TF32"] == "0"
            assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.backends.cuda.matmul.allow_tf32 == matmul
        assert torch.backends.cudnn.allow_tf32 == cudnn
        assert "CUPY_TF32" not in os.environ
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def test_allow_tf32_returns_previous_setting(
    torch: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUPY_TF32", "0")
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        first = allow_tf32(True)
        second = allow_tf32(False)
        assert first.enabled and not second.enabled
        assert second.previous["torch_matmul"] is True
        assert second.previous["CUPY_TF32"] == "1"
        assert first.previous["CUPY_TF32"] == "0"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


# --------------------------------------------------------------------------
# n-D inputs, layer state, integer inputs


def _conv_net(state: bool) -> bp.Layer:
    """A 1-D CNN over (batch, 2, 8); with batch norm and dropout when ``state``
    (average pooling without: in bfloat16 a max over close tanh values can pick
    another element, which moves that gradient elsewhere, legitimately)."""
    if state:
        extra = [bp.batch_norm(4), bp.relu(), bp.dropout(0.25), bp.max_pool1d(2)]
    else:
        extra = [bp.tanh(), bp.avg_pool1d(2)]
    return bp.sequential(bp.conv1d(2, 4, 3, padding=1), *extra, bp.flatten(), bp.dense(16, 3))


def _images(xp: ModuleType, n: int = 16) -> tuple[Any, Any]:
    rng = np.random.default_rng(2)
    return (xp.asarray(rng.standard_normal((n, 2, 8)).astype(np.float32)),
            xp.asarray(rng.integers(0, 3, size=n)))


def _close(got: Any, ref: Any, compute_dtype: str) -> None:
    """Each leaf within REL of the largest value in the tree (a conv bias before
    batch norm has a gradient that is zero but for rounding)."""
    pairs = [(to_numpy(g), to_numpy(r))
             for g, r in zip(bp.tree.arrays(got), bp.tree.arrays(ref), strict=True)]
    scale = max(float(np.max(np.abs(r))) for _, r in pairs)
    for g, r in pairs:
        assert g.dtype == np.float32 and g.shape == r.shape
        assert float(np.max(np.abs(g - r))) <= REL[compute_dtype] * scale


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("state", [False, True])
def test_nd_and_stateful_nets_match_float32(
    xp: ModuleType, compute_dtype: str, state: bool
) -> None:
    _need(xp, compute_dtype)
    net = _conv_net(state)
    params = net.init(0)
    x, t = _images(xp)
    record: list[Any] = []
    mp = mixed_precision_step(net, "softmax_cross_entropy", _recording(record),
                              compute_dtype=compute_dtype)
    mstate = mp.init(params, seed=5)
    ref_state = bp.train_state(net, None, params, seed=5)
    _, new, value = mp(params, mstate, x, t)
    ref_value, ref = bp.value_and_grad(net, "softmax_cross_entropy", params, x, t,
                                       state=ref_state if state else None)
    _close(record[0], ref, compute_dtype)  # the same dropout masks, or these would differ
    assert abs(float(value) - float(ref_value)) <= REL[compute_dtype] * abs(float(ref_value))
    if not state:
        return
    assert isinstance(new.opt, bp.TrainState) and int(new.opt.step) == 1
    # the running statistics: moved from the batch's, kept in float32
    step = bp.train_step(net, "softmax_cross_entropy", bp.sgd(0.0))
    _, ref_new, _ = step(params, bp.train_state(net, bp.sgd(0.0), params, seed=5), x, t)
    _close(new.opt.layers, ref_new.layers, compute_dtype)
    assert not np.allclose(to_numpy(new.opt.layers[1]["mean"]), 0.0)
    # and training goes on, every state leaf float32
    opt = bp.adam(1e-2)
    mp = mixed_precision_step(net, "softmax_cross_entropy", opt, compute_dtype=compute_dtype)
    mstate = mp.init(params)
    for _ in range(3):
        params, mstate, value = mp(params, mstate, x, t)
    assert int(mstate.opt.step) == 3 and np.isfinite(float(value))
    for a in bp.tree.arrays((params, mstate.opt.opt, mstate.opt.layers)):
        assert to_numpy(a).dtype == np.float32
    y = bp.predict(net, params, x, state=mstate.opt)  # evaluation mode, running statistics
    assert tuple(y.shape) == (16, 3)


def test_skipped_step_keeps_the_layer_state(xp: ModuleType) -> None:
    _need(xp, "float16")
    net = _conv_net(True)
    params = net.init(0)
    x, t = _images(xp)
    mp = mixed_precision_step(net, "softmax_cross_entropy", bp.sgd(0.1),
                              compute_dtype="float16", init_scale=1e30)
    state = mp.init(params)
    new, after, _ = mp(params, state, x, t)
    for a, b in zip(bp.tree.arrays(new), bp.tree.arrays(params)):  # no update
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert after.scaler is not None and after.scaler.skipped == 1
    assert int(after.opt.step) == 1  # the next step draws new dropout masks
    for a, b in zip(bp.tree.arrays(after.opt.layers), bp.tree.arrays(state.opt.layers)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_embedding_inputs_are_not_cast(xp: ModuleType) -> None:
    name = "float16" if _has(xp, "float16") else "bfloat16"
    _need(xp, name)
    net = bp.sequential(bp.embedding(10, 4), bp.flatten(), bp.dense(12, 3))
    params = net.init(0)
    rng = np.random.default_rng(3)
    x, t = xp.asarray(rng.integers(0, 10, size=(8, 3))), xp.asarray(rng.integers(0, 3, 8))
    record: list[Any] = []
    mp = mixed_precision_step(net, "softmax_cross_entropy", _recording(record),
                              compute_dtype=name)
    mp(params, mp.init(params), x, t)
    _, ref = bp.value_and_grad(net, "softmax_cross_entropy", params, x, t)
    _close(record[0], ref, name)
    with pytest.raises(bp.LabelError, match="out of range"):
        mp(params, mp.init(params), xp.asarray(np.full((8, 3), 10)), t)
