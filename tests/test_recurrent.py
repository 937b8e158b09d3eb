"""Recurrent layers and BPTT (bpcore/layers/recurrent.py) on every backend, and
gradient clipping by the global norm (bpcore/optim.py), the guard recurrent
networks need against exploding gradients."""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import require_backend
from gradcheck import assert_like, assert_same_tree, check_gradient, host, put, snapshot

import bpcore as bp
from bpcore.backend import backend_name
from bpcore.errors import ArgumentError, SettingError, ShapeError
from bpcore.layers.recurrent import (
    GATES,
    bidirectional,
    bidirectional_backward,
    bidirectional_forward,
    gru,
    gru_backward,
    gru_forward,
    load_torch_state_dict,
    lstm,
    lstm_backward,
    lstm_forward,
    rnn,
    rnn_backward,
    rnn_forward,
)
from bpcore.optim import HyperParameterError, clip_by_global_norm, global_norm

BATCH, TIME, N_IN, HIDDEN = 3, 5, 4, 3
KINDS = ("rnn", "gru", "lstm")
KEYS = ("W_ih", "W_hh", "b_ih", "b_hh")
CELLS = {
    "rnn": (rnn_forward, rnn_backward),
    "gru": (gru_forward, gru_backward),
    "lstm": (lstm_forward, lstm_backward),
}
TORCH_NAMES = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0",
               "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}
RTOL_TORCH = 1e-10


def _host_inputs(kind: str, *, bi: bool = False, seq: bool = True, seed: int = 0) -> dict:
    """Random weights, input, initial state and cotangents on the host (float64).

    ``r`` is ``dL/dy``, ``q`` (``p``) is ``dL/dh_n`` (``dL/dc_n``); states are
    ``(batch, H)``, or torch's ``(2, batch, H)`` when ``bi``.
    """
    rng = np.random.default_rng(seed)
    G, D = GATES[kind], 2 if bi else 1
    h: dict[str, np.ndarray] = {}
    for suffix in ("", "_reverse")[:D]:
        h["W_ih" + suffix] = 0.6 * rng.standard_normal((G * HIDDEN, N_IN))
        h["W_hh" + suffix] = 0.6 * rng.standard_normal((G * HIDDEN, HIDDEN))
        h["b_ih" + suffix] = 0.3 * rng.standard_normal(G * HIDDEN)
        h["b_hh" + suffix] = 0.3 * rng.standard_normal(G * HIDDEN)
    state = (D, BATCH, HIDDEN) if bi else (BATCH, HIDDEN)
    h["x"] = rng.standard_normal((BATCH, TIME, N_IN))
    h["h0"] = 0.5 * rng.standard_normal(state)
    h["c0"] = 0.5 * rng.standard_normal(state)
    h["r"] = rng.standard_normal((BATCH, TIME, D * HIDDEN) if seq else (BATCH, D * HIDDEN))
    h["q"] = rng.standard_normal(state)
    h["p"] = rng.standard_normal(state)
    return h


def _param_keys(h: dict) -> list[str]:
    return [k for k in h if k.split("_reverse")[0] in KEYS]


def _run(
    xp: ModuleType, kind: str, h: dict, *, bi: bool = False, seq: bool = True,
    reverse: bool = False, state: bool = True, truncate: int | None = None,
    need_dx: bool = True, dtype: str | None = None,
) -> tuple[Any, Any, Any, dict]:
    """Forward then backward of one configuration on ``xp``: ``(y, cache, dx, grads)``.

    The backward gets ``dy = r`` and ``dh_last = q`` (for the LSTM ``(q, p)``).
    """
    params = {k: put(xp, h[k], dtype) for k in _param_keys(h)}
    x = put(xp, h["x"], dtype)
    s0: Any = None
    if state:
        s0 = put(xp, h["h0"], dtype)
        if kind == "lstm":
            s0 = (s0, put(xp, h["c0"], dtype))
    dy = put(xp, h["r"], dtype)
    dh_last: Any = put(xp, h["q"], dtype)
    if kind == "lstm":
        dh_last = (dh_last, put(xp, h["p"], dtype))
    if bi:
        y, cache = bidirectional_forward(params, x, s0, kind=kind, return_sequences=seq)
        dx, grads = bidirectional_backward(params, cache, dy, dh_last=dh_last,
                                           truncate=truncate, need_dx=need_dx)
    else:
        fwd, bwd = CELLS[kind]
        y, cache = fwd(params, x, s0, return_sequences=seq, reverse=reverse)
        dx, grads = bwd(params, cache, dy, dh_last=dh_last, truncate=truncate, need_dx=need_dx)
    return y, cache, dx, grads


def _loss(kind: str, h: dict, y: Any, cache: Any) -> float:
    """``Σ y r + Σ h_n q (+ Σ c_n p)``: what the backward's cotangents differentiate."""
    loss = np.sum(host(y) * h["r"]) + np.sum(host(cache.h_n) * h["q"])
    if kind == "lstm":
        loss += np.sum(host(cache.c_n) * h["p"])
    return float(loss)


# --------------------------------------------------------------------------
# gradients against central differences, on every backend

CONFIGS = {
    "sequences": {"seq": True},
    "last": {"seq": False},
    "reverse": {"seq": True, "reverse": True},
    "reverse_last_zero_state": {"seq": False, "reverse": True, "state": False},
    "bidirectional": {"seq": True, "bi": True},
    "bidirectional_last": {"seq": False, "bi": True},
}
#: What eager JAX checks (each new shape compiles there, ~1 s a configuration):
#: together both directions, sequences and final states, with and without a state.
JAX_CONFIGS = ("bidirectional", "reverse_last_zero_state")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_central_differences(xp: ModuleType, kind: str, config: str) -> None:
    """dx, every parameter's gradient and the initial state's, in float64."""
    if backend_name(xp) == "jax" and config not in JAX_CONFIGS:
        pytest.skip(f"eager JAX checks {JAX_CONFIGS} (they cover this one's code paths)")
    cfg = CONFIGS[config]
    h = _host_inputs(kind, bi=cfg.get("bi", False), seq=cfg["seq"], seed=1)
    _, _, dx, grads = _run(xp, kind, h, **cfg)
    wrt = ["x", *_param_keys(h)]
    if cfg.get("state", True):
        wrt += ["h0", "c0"] if kind == "lstm" else ["h0"]
    else:
        assert set(grads) == set(_param_keys(h))  # no state given, no state gradient
    fwd = CELLS[kind][0]

    def objective(key: str):
        def f(a: np.ndarray) -> float:
            v = {**h, key: a}
            params = {k: put(xp, v[k]) for k in _param_keys(h)}
            s0: Any = None
            if cfg.get("state", True):
                s0 = put(xp, v["h0"])
                if kind == "lstm":
                    s0 = (s0, put(xp, v["c0"]))
            if cfg.get("bi"):
                y, cache = bidirectional_forward(params, put(xp, v["x"]), s0, kind=kind,
                                                 return_sequences=cfg["seq"])
            else:
                y, cache = fwd(params, put(xp, v["x"]), s0, return_sequences=cfg["seq"],
                               reverse=cfg.get("reverse", False))
            return _loss(kind, h, y, cache)
        return f

    for key in wrt:  # one random direction per input keeps JAX's eager loop affordable
        g = dx if key == "x" else grads[key]
        check_gradient(objective(key), h[key], g, seed=2, n_directions=1)


def test_gradient_check_rejects_a_wrong_recurrent_gradient(xp: ModuleType) -> None:
    """The check is tight enough: a recurrent weight gradient 0.1% off fails."""
    h = _host_inputs("gru", seed=1)
    _, _, _, grads = _run(xp, "gru", h)
    bad = host(grads["W_hh"]) * 1.001

    def f(a: np.ndarray) -> float:
        params = {k: put(xp, h[k]) for k in KEYS}
        params["W_hh"] = put(xp, a)
        y, c = gru_forward(params, put(xp, h["x"]), put(xp, h["h0"]))
        return _loss("gru", h, y, c)

    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradient(f, h["W_hh"], bad, seed=2)


# --------------------------------------------------------------------------
# agreement with torch autograd


def _torch_module(torch: ModuleType, kind: str, h: dict, bi: bool) -> Any:
    """A float64 ``torch.nn.RNN/GRU/LSTM(batch_first=True)`` holding ``h``'s weights."""
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    m = cls(N_IN, HIDDEN, batch_first=True, bidirectional=bi).double()
    state = {TORCH_NAMES[k.split("_reverse")[0]] + ("_reverse" if "_reverse" in k else ""):
             torch.tensor(h[k]) for k in _param_keys(h)}
    m.load_state_dict(state)
    return m


def _torch_state(torch: ModuleType, kind: str, h: dict, bi: bool) -> tuple[Any, Any]:
    """Leaf tensors of ``h0`` (and ``c0``) in torch's ``(D, batch, H)`` layout."""
    def leaf(a: np.ndarray) -> Any:
        return torch.tensor(a if bi else a[None], requires_grad=True)
    return leaf(h["h0"]), (leaf(h["c0"]) if kind == "lstm" else None)


def _assert_close(ours: Any, theirs: Any) -> None:
    np.testing.assert_allclose(host(ours), theirs.detach().numpy(), rtol=RTOL_TORCH, atol=1e-13)


@pytest.mark.parametrize("seq", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("bi", [False, True], ids=["one_way", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_autograd(
    xp: ModuleType, torch: ModuleType, kind: str, bi: bool, seq: bool
) -> None:
    h = _host_inputs(kind, bi=bi, seq=seq, seed=3)
    m = _torch_module(torch, kind, h, bi)
    # torch's weights load unchanged
    loaded = load_torch_state_dict(m.state_dict(), kind)
    assert set(loaded) == set(_param_keys(h))
    for k, v in loaded.items():
        np.testing.assert_array_equal(v, h[k])
    y, cache, dx, grads = _run(xp, kind, {**h, **loaded}, bi=bi, seq=seq)

    tx = torch.tensor(h["x"], requires_grad=True)
    th0, tc0 = _torch_state(torch, kind, h, bi)
    out, state = m(tx, (th0, tc0) if kind == "lstm" else th0)
    h_n, c_n = state if kind == "lstm" else (state, None)
    ty = out if seq else torch.cat(list(h_n), dim=-1)
    loss = (ty * torch.tensor(h["r"])).sum()
    q, p = (h["q"], h["p"]) if bi else (h["q"][None], h["p"][None])
    loss = loss + (h_n * torch.tensor(q)).sum()
    if kind == "lstm":
        loss = loss + (c_n * torch.tensor(p)).sum()
    loss.backward()

    _assert_close(y, ty)
    _assert_close(cache.h_n, h_n if bi else h_n[0])
    if kind == "lstm":
        _assert_close(cache.c_n, c_n if bi else c_n[0])
    _assert_close(dx, tx.grad)
    named = dict(m.named_parameters())
    for k in _param_keys(h):
        name = TORCH_NAMES[k.split("_reverse")[0]] + ("_reverse" if "_reverse" in k else "")
        _assert_close(grads[k], named[name].grad)
    _assert_close(grads["h0"], th0.grad if bi else th0.grad[0])
    if kind == "lstm":
        _assert_close(grads["c0"], tc0.grad if bi else tc0.grad[0])


@pytest.mark.parametrize(("truncate", "reverse"), [(2, False), (2, True), (1, False)],
                         ids=["k2", "k2_reverse", "k1"])
@pytest.mark.parametrize("kind", KINDS)
def test_truncated_bptt_matches_torch_detaching_every_k_steps(
    xp: ModuleType, torch: ModuleType, kind: str, truncate: int, reverse: bool
) -> None:
    """``truncate=k`` is the gradient of torch run on chunks of k steps with the
    state detached between them (in reading order: flipped for ``reverse``)."""
    h = _host_inputs(kind, seed=4)
    y, _, dx, grads = _run(xp, kind, h, reverse=reverse, truncate=truncate)

    m = _torch_module(torch, kind, h, False)
    tx = torch.tensor(h["x"], requires_grad=True)
    th0, tc0 = _torch_state(torch, kind, h, False)
    xs = torch.flip(tx, dims=[1]) if reverse else tx
    state: Any = (th0, tc0) if kind == "lstm" else th0
    outs = []
    for start in range(0, TIME, truncate):
        if start > 0:
            state = tuple(s.detach() for s in state) if kind == "lstm" else state.detach()
        out, state = m(xs[:, start:start + truncate], state)
        outs.append(out)
    out = torch.cat(outs, dim=1)
    out = torch.flip(out, dims=[1]) if reverse else out
    h_n, c_n = state if kind == "lstm" else (state, None)
    loss = (out * torch.tensor(h["r"])).sum() + (h_n * torch.tensor(h["q"][None])).sum()
    if kind == "lstm":
        loss = loss + (c_n * torch.tensor(h["p"][None])).sum()
    loss.backward()

    _assert_close(y, out)
    _assert_close(dx, tx.grad)
    named = dict(m.named_parameters())
    for k in KEYS:
        _assert_close(grads[k], named[TORCH_NAMES[k]].grad)
    _assert_close(grads["h0"], th0.grad[0])
    if kind == "lstm":
        _assert_close(grads["c0"], tc0.grad[0])


@pytest.mark.parametrize("kind", KINDS)
def test_truncate_of_at_least_the_length_is_the_full_gradient(xp: ModuleType, kind: str) -> None:
    h = _host_inputs(kind, bi=True, seed=5)
    _, _, dx_full, full = _run(xp, kind, h, bi=True)
    for k in (TIME, TIME + 2):
        _, _, dx, grads = _run(xp, kind, h, bi=True, truncate=k)
        np.testing.assert_array_equal(host(dx), host(dx_full))
        for key in full:
            np.testing.assert_array_equal(host(grads[key]), host(full[key]))
    _, _, dx_cut, _ = _run(xp, kind, h, bi=True, truncate=TIME - 1)
    assert not np.allclose(host(dx_cut), host(dx_full))  # a real cut changes it


# --------------------------------------------------------------------------
# backends, dtypes, purity


@pytest.mark.parametrize(("dtype", "bi"), [("float32", False), ("float64", True)],
                         ids=["float32_one_way", "float64_bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_outputs_stay_on_the_input_backend(
    xp: ModuleType, kind: str, dtype: str, bi: bool
) -> None:
    if backend_name(xp) == "jax" and dtype == "float32" and kind != "gru":
        pytest.skip("eager JAX checks float32 on the GRU (each dtype compiles anew there)")
    h = _host_inputs(kind, bi=bi, seed=6)
    params = {k: put(xp, h[k], dtype) for k in _param_keys(h)}
    x, dy = put(xp, h["x"], dtype), put(xp, h["r"], dtype)
    s0: Any = put(xp, h["h0"], dtype)
    if kind == "lstm":
        s0 = (s0, put(xp, h["c0"], dtype))
    before = snapshot((params, x, s0, dy))
    D = 2 if bi else 1
    if bi:
        y, cache = bidirectional_forward(params, x, s0, kind=kind)
        cache_before = snapshot(tuple(cache))
        dx, grads = bidirectional_backward(params, cache, dy, truncate=2)
    else:
        fwd, bwd = CELLS[kind]
        y, cache = fwd(params, x, s0, reverse=True)
        cache_before = snapshot(tuple(cache))
        dx, grads = bwd(params, cache, dy, truncate=2)
    state_shape = (D, BATCH, HIDDEN) if bi else (BATCH, HIDDEN)
    assert_like(y, x, xp, (BATCH, TIME, D * HIDDEN))
    assert_like(cache.h_n, x, xp, state_shape)
    assert_like(dx, x, xp, (BATCH, TIME, N_IN))
    states = ("h0", "c0") if kind == "lstm" else ("h0",)
    assert set(grads) == set(params) | set(states)
    for k, p in params.items():
        assert_like(grads[k], x, xp, tuple(p.shape))
    for k in states:
        assert_like(grads[k], x, xp, state_shape)
    assert_same_tree((params, x, s0, dy), before)  # nothing passed in was written to
    assert_same_tree(tuple(cache), cache_before)  # nor the cache


@pytest.mark.parametrize("kind", KINDS)
def test_need_dx_false_and_missing_cotangents(xp: ModuleType, kind: str) -> None:
    """``need_dx=False`` skips only dx; ``dy=None`` / ``dh_last=None`` mean zeros."""
    h = _host_inputs(kind, seed=7)
    _, cache, dx_full, full = _run(xp, kind, h)
    _, _, dx, grads = _run(xp, kind, h, need_dx=False)
    assert dx is None and dx_full is not None
    for k in full:
        np.testing.assert_array_equal(host(grads[k]), host(full[k]))
    params = {k: put(xp, h[k]) for k in KEYS}
    bwd = CELLS[kind][1]
    dh_last: Any = put(xp, h["q"])
    zero = put(xp, np.zeros((BATCH, TIME, HIDDEN)))
    dx_none, g_none = bwd(params, cache, None, dh_last=dh_last)
    dx_zero, g_zero = bwd(params, cache, zero, dh_last=dh_last)
    np.testing.assert_allclose(host(dx_none), host(dx_zero), rtol=0, atol=0)
    for k in g_zero:
        np.testing.assert_allclose(host(g_none[k]), host(g_zero[k]), rtol=0, atol=0)
    if kind == "lstm":  # a bare array is dh_n alone, as the pair (dh_n, None)
        dx_pair, _ = bwd(params, cache, None, dh_last=(dh_last, None))
        np.testing.assert_array_equal(host(dx_pair), host(dx_none))
    dx_nothing, g_nothing = bwd(params, cache, None)
    np.testing.assert_array_equal(host(dx_nothing), np.zeros((BATCH, TIME, N_IN)))
    np.testing.assert_array_equal(host(g_nothing["W_hh"]), np.zeros(h["W_hh"].shape))


def test_invalid_arguments_are_named() -> None:
    h = _host_inputs("gru")
    params = {k: h[k] for k in KEYS}
    with pytest.raises(ShapeError, match=r"\(batch, time, features\).*x\[\.\.\., None\]"):
        gru_forward(params, h["x"][:, :, 0])
    with pytest.raises(ShapeError, match=r"params\['W_ih'\] must have shape \(12, 4\)"):
        lstm_forward(params, h["x"])  # GRU weights have 3 gates, not 4
    with pytest.raises(ShapeError, match=r"h0 must have shape \(3, 3\)"):
        gru_forward(params, h["x"], h["h0"][:2])
    with pytest.raises(ShapeError, match=r"h0 must have shape \(2, 3, 3\)"):
        bidirectional_forward({**params, **{k + "_reverse": v for k, v in params.items()}},
                              h["x"], h["h0"], kind="gru")  # torch's (2, batch, H)
    with pytest.raises(ShapeError, match="no 'W_ih_reverse'"):
        bidirectional_forward(params, h["x"], kind="gru")
    with pytest.raises(ArgumentError, match=r"pair \(h0, c0\)"):
        lstm_forward({k: h[k] for k in KEYS}, h["x"], h["h0"])
    _, cache = gru_forward(params, h["x"])
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(SettingError, match="truncate must be a positive int"):
            gru_backward(params, cache, h["r"], truncate=bad)
    with pytest.raises(ArgumentError, match="cache must be the one"):
        gru_backward(params, (cache.x,), h["r"])  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="unknown recurrent kind 'elman'"):
        bidirectional_forward(params, h["x"], kind="elman")


# --------------------------------------------------------------------------
# loading torch weights


@pytest.mark.parametrize("kind", KINDS)
def test_load_torch_state_dict(torch: ModuleType, kind: str) -> None:
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    m = cls(N_IN, HIDDEN, batch_first=True, bidirectional=True)
    params = load_torch_state_dict(m, kind)  # a module works too
    assert sorted(params) == sorted(k + s for k in KEYS for s in ("", "_reverse"))
    for name, t in m.state_dict().items():
        key = {v: k for k, v in TORCH_NAMES.items()}[name.removesuffix("_reverse")]
        key += "_reverse" if name.endswith("_reverse") else ""
        assert isinstance(params[key], np.ndarray) and params[key].dtype == np.float32
        np.testing.assert_array_equal(params[key], t.numpy())
    params["W_ih"][...] = 0.0  # a copy: the module is untouched
    assert float(m.weight_ih_l0.detach().abs().sum()) > 0.0

    no_bias = load_torch_state_dict(cls(N_IN, HIDDEN, bias=False).state_dict(), kind)
    np.testing.assert_array_equal(no_bias["b_hh"], np.zeros(GATES[kind] * HIDDEN))
    with pytest.raises(SettingError, match="unsupported keys"):
        load_torch_state_dict(cls(N_IN, HIDDEN, num_layers=2).state_dict(), kind)
    with pytest.raises(ShapeError, match="not those of"):
        load_torch_state_dict(m.state_dict(), "gru" if kind != "gru" else "lstm")
    with pytest.raises(SettingError, match="unknown recurrent kind"):
        load_torch_state_dict(m.state_dict(), "transformer")
    with pytest.raises(ArgumentError, match="a state dict or a torch module"):
        load_torch_state_dict([1, 2], kind)
    if kind == "lstm":
        with pytest.raises(SettingError, match="unsupported keys"):
            load_torch_state_dict(torch.nn.LSTM(N_IN, HIDDEN, proj_size=2).state_dict(), kind)


# --------------------------------------------------------------------------
# the layers


def _layer_params(xp: ModuleType, h: dict, layer: bp.Layer, dtype: str | None = None) -> dict:
    """``layer``'s parameters from the host inputs ``h`` (torch's layout, so the same keys)."""
    return {k: put(xp, h[k], dtype) for k in layer.shapes()}


@pytest.mark.parametrize("kind", KINDS)
def test_layers_are_the_kernels(xp: ModuleType, kind: str) -> None:
    """A layer's forward/backward are the kernels', for one and two directions,
    with the options it was built with (reverse, return_sequences, truncate)."""
    factory = {"rnn": rnn, "gru": gru, "lstm": lstm}[kind]
    fwd, bwd = CELLS[kind]
    h = _host_inputs(kind, bi=True, seed=9)
    x, dy = put(xp, h["x"]), put(xp, h["r"])
    one = factory(N_IN, HIDDEN, reverse=True, truncate=2)
    params = _layer_params(xp, h, one)
    y, cache = one.forward(params, x)
    dx, grads = one.backward(params, cache, dy[..., :HIDDEN])
    y_k, cache_k = fwd(params, x, reverse=True)
    dx_k, grads_k = bwd(params, cache_k, dy[..., :HIDDEN], truncate=2)
    np.testing.assert_array_equal(host(y), host(y_k))
    np.testing.assert_array_equal(host(dx), host(dx_k))
    assert set(grads) == set(params)
    for k in grads:
        np.testing.assert_array_equal(host(grads[k]), host(grads_k[k]))

    two = bidirectional(factory(N_IN, HIDDEN, return_sequences=False))
    params = _layer_params(xp, h, two)
    y, cache = two.forward(params, x)
    _, grads = two.backward(params, cache, dy[:, 0, :], need_dx=False)
    y_k, cache_k = bidirectional_forward(params, x, kind=kind, return_sequences=False)
    _, grads_k = bidirectional_backward(params, cache_k, dy[:, 0, :], need_dx=False)
    np.testing.assert_array_equal(host(y), host(y_k))
    assert set(grads) == set(params) and len(params) == 8
    for k in grads:
        np.testing.assert_array_equal(host(grads[k]), host(grads_k[k]))


def test_learned_initial_state_gradients(xp: ModuleType) -> None:
    """``initial_state="learned"``: ``h0``/``c0`` of shape (H,) per direction are
    parameters, broadcast over the batch; their gradient sums the batch's."""
    layer = bidirectional(lstm(N_IN, HIDDEN, initial_state="learned"))
    h = _host_inputs("lstm", bi=True, seed=10)
    rng = np.random.default_rng(11)
    for k in ("h0", "c0", "h0_reverse", "c0_reverse"):
        h[k] = 0.5 * rng.standard_normal(HIDDEN)
    assert layer.shapes() == {k: tuple(np.shape(h[k])) for k in layer.shapes()}
    params = _layer_params(xp, h, layer)
    _, cache = layer.forward(params, put(xp, h["x"]))
    _, grads = layer.backward(params, cache, put(xp, h["r"]))
    assert list(grads) == list(params)  # the same keys in the same order

    def objective(key: str):
        def f(a: np.ndarray) -> float:
            p = {**params, key: put(xp, a)}
            out, _ = layer.forward(p, put(xp, h["x"]))
            return float(np.sum(host(out) * h["r"]))
        return f

    for key in ("h0", "c0_reverse", "W_hh_reverse"):
        check_gradient(objective(key), h[key], grads[key], seed=12, n_directions=1)


def test_layer_config_init_and_shapes() -> None:
    layers = [rnn(2, 3), gru(1, 6, return_sequences=False, truncate=4),
              lstm(5, 2, reverse=True, initial_state="learned"), bidirectional(gru(1, 6)),
              bidirectional(lstm(3, 4, truncate=7, initial_state="learned"))]
    for layer in layers:
        again = bp.from_config(layer.config)
        assert again.config == layer.config and again.name == layer.name
        params = layer.init(0, xp=np, dtype="float64")
        assert {k: v.shape for k, v in params.items()} == layer.shapes()
        assert all(v.dtype == np.float64 for v in params.values())
    # torch's initialization: U(-1/√H, 1/√H) for every weight and bias; learned states at 0
    params = bidirectional(lstm(3, 4, initial_state="learned")).init(1, xp=np)
    bound = 1 / math.sqrt(4)
    assert all(float(np.max(np.abs(params[k]))) <= bound for k in params)
    assert float(np.max(np.abs(params["W_hh"]))) > 0.8 * bound
    assert not np.any(params["h0_reverse"]) and params["W_ih"].dtype == np.float32
    seq = bidirectional(gru(1, 6))
    assert (seq.n_in, seq.n_out, seq.in_shape) == (1, 12, (None, 1))
    assert seq.out_shape((40, 1)) == (40, 12)
    assert gru(1, 6, return_sequences=False).out_shape((40, 1)) == (6,)
    with pytest.raises(ShapeError, match=r"takes \(time, 1\) per sample"):
        seq.out_shape((40, 3))


def test_layer_arguments_are_checked() -> None:
    with pytest.raises(SettingError, match="n_in"):
        gru(0, 3)
    with pytest.raises(SettingError, match="hidden"):
        lstm(2, 2.5)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="truncate"):
        rnn(2, 3, truncate=0)
    with pytest.raises(SettingError, match="initial_state"):
        gru(2, 3, initial_state="random")
    with pytest.raises(SettingError, match="return_sequences must be True or False"):
        gru(2, 3, return_sequences="yes")  # type: ignore[arg-type]
    with pytest.raises(SettingError, match=r"wraps an rnn, gru or lstm layer.*'dense'"):
        bidirectional(bp.dense(2, 3))
    with pytest.raises(SettingError, match="forward layer"):
        bidirectional(gru(2, 3, reverse=True))
    with pytest.raises(SettingError, match="takes inputs of shape"):
        bp.sequential(bp.dense(3, 4), gru(4, 2))  # dense gives (4,), not (time, 4)


def test_network_shapes_are_checked_before_the_kernels() -> None:
    net = bp.sequential(bidirectional(gru(1, 6)), bp.flatten(), bp.dense(240, 10))
    assert net.n_out == 10 and net.in_shape == (None, 1)
    params = net.init(0, xp=np)
    with pytest.raises(ShapeError, match="3-D"):
        bp.predict(net, params, np.zeros((2, 20), dtype=np.float32))
    with pytest.raises(ShapeError, match="240"):
        bp.predict(net, params, np.zeros((2, 30, 1), dtype=np.float32))  # 30 steps, not 20
    assert bp.predict(net, params, np.zeros((2, 20, 1), dtype=np.float32)).shape == (2, 10)


# --------------------------------------------------------------------------
# a whole network: the MNIST-1D baseline's shape, trained against torch

NET_T, NET_H, NET_C, NET_B = 5, 3, 3, 4


def _paper_net() -> bp.Layer:
    """The MNIST-1D GRU baseline, small: (batch, time) -> bidirectional GRU -> linear."""
    return bp.sequential(bp.reshape((NET_T, 1)), bidirectional(gru(1, NET_H)), bp.flatten(),
                         bp.dense(NET_T * 2 * NET_H, NET_C))


@pytest.mark.parametrize("clip", [None, 0.05], ids=["adam", "adam_clipped"])
def test_training_matches_torch(xp: ModuleType, torch: ModuleType, clip: float | None) -> None:
    """Two Adam steps of (reshape, bidirectional GRU, flatten, dense) match torch's
    GRU + Linear + Adam (with ``clip_grad_norm_`` for ``clip_norm``) to 1e-10 in float64."""
    if backend_name(xp) == "jax":  # eager JAX: ~8 s of first-call compiles
        pytest.skip("JAX trains this network in test_compiled_on_jax_is_one_program, "
                    "against the NumPy step checked here")
    torch.manual_seed(0)
    gru_t = torch.nn.GRU(1, NET_H, batch_first=True, bidirectional=True).double()
    lin = torch.nn.Linear(NET_T * 2 * NET_H, NET_C).double()
    rng = np.random.default_rng(13)
    x_h = rng.standard_normal((NET_B, NET_T))
    t_h = rng.integers(0, NET_C, NET_B)

    net = _paper_net()
    dense_p = {"W": lin.weight.detach().numpy().T, "b": lin.bias.detach().numpy()}
    params = ({}, {k: put(xp, v) for k, v in load_torch_state_dict(gru_t, "gru").items()}, {},
              {k: put(xp, v) for k, v in dense_p.items()})
    opt = bp.adam(1e-2, clip_norm=clip)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    state = opt.init(params)

    modules = list(gru_t.parameters()) + list(lin.parameters())
    t_opt = torch.optim.Adam(modules, lr=1e-2)
    tx, tt = torch.tensor(x_h), torch.tensor(t_h)
    for _ in range(2):
        params, state, value = step(params, state, put(xp, x_h), put(xp, t_h))
        t_opt.zero_grad()
        out, _ = gru_t(tx[..., None])
        loss = torch.nn.functional.cross_entropy(lin(out.reshape(NET_B, -1)), tt)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(modules, clip)
        t_opt.step()
        np.testing.assert_allclose(float(value), loss.item(), rtol=RTOL_TORCH)
    for k, v in load_torch_state_dict(gru_t, "gru").items():
        np.testing.assert_allclose(host(params[1][k]), v, rtol=RTOL_TORCH, atol=1e-13)
    np.testing.assert_allclose(host(params[3]["W"]), lin.weight.detach().numpy().T,
                               rtol=RTOL_TORCH, atol=1e-13)


def test_compiled_on_jax_is_one_program() -> None:
    """``bp.compile`` traces the unrolled time loops (forward and backward) into one
    ``jax.jit`` program: no fallback warning, one compile, the eager step's parameters."""
    require_backend("jax")
    net, opt = _paper_net(), bp.adam(1e-2, clip_norm=1.0)
    rng = np.random.default_rng(14)
    x_h, t_h = rng.standard_normal((NET_B, NET_T)), rng.integers(0, NET_C, NET_B)
    with bp.use_backend("numpy"):
        want = net.init(0, dtype="float64")
        state = opt.init(want)
        step = bp.train_step(net, "softmax_cross_entropy", opt)
        for _ in range(3):
            want, state, _ = step(want, state, x_h, t_h)
    with bp.use_backend("jax") as backend:
        compiled = bp.compile(net, "softmax_cross_entropy", opt)
        params = net.init(0, dtype="float64")
        state = opt.init(params)
        x, t = backend.asarray(x_h), backend.asarray(t_h)
        for _ in range(3):
            params, state, _ = compiled(params, state, x, t)
    assert compiled.methods["jax"] == "jax.jit, params and state donated"
    assert compiled.compiles == {("jax", (NET_B, NET_T)): 1}
    for got, layer in zip(params, want, strict=True):  # (jit hands dicts back key-sorted)
        assert set(got) == set(layer)
        for k in layer:
            np.testing.assert_allclose(host(got[k]), host(layer[k]), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# exploding gradients: clipping by the global norm (bpcore/optim.py)


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "keeps"])
def test_clip_by_global_norm_matches_torch(
    xp: ModuleType, torch: ModuleType, max_norm: float
) -> None:
    rng = np.random.default_rng(8)
    shapes = [(4, 3), (3,), (3, 2)]
    hosts = [rng.standard_normal(s) for s in shapes]
    tree = ({"W": put(xp, hosts[0]), "b": put(xp, hosts[1])}, {"W": put(xp, hosts[2])}, {}, 3)
    before = snapshot(tree)
    clipped = clip_by_global_norm(tree, max_norm)

    tensors = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for t, a in zip(tensors, hosts):
        t.grad = torch.tensor(a)
    t_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)

    norm = global_norm(tree)
    _assert_close(norm, t_norm)
    assert_like(norm, tree[0]["W"], xp, ())
    ours = [clipped[0]["W"], clipped[0]["b"], clipped[1]["W"]]
    for a, t, like in zip(ours, tensors, [tree[0]["W"], tree[0]["b"], tree[1]["W"]]):
        assert_like(a, like, xp, tuple(like.shape))
        np.testing.assert_allclose(host(a), t.grad.numpy(), rtol=1e-12, atol=0)
    assert clipped[2] == {} and clipped[3] == 3  # the tree's structure is kept
    assert_same_tree(tree, before)  # nothing written in place


def test_clip_norm_tames_an_exploding_rnn() -> None:
    """An RNN whose recurrent weights amplify (gain 3 over 25 steps, in tanh's
    linear range) has a huge gradient of its learned initial state;
    ``sgd(lr, clip_norm=c)`` moves the parameters by exactly ``lr·c``, the
    driver's ``grad_transform`` does the same, and the optimizers' configs
    keep ``clip_norm`` (so a checkpoint rebuilds them)."""
    net = bp.sequential(rnn(1, 4, return_sequences=False, initial_state="learned"),
                        bp.dense(4, 1))
    params = net.init(0, xp=np, dtype="float64")
    params[0]["W_hh"][...] = 3.0 * np.eye(4)
    for k in ("W_ih", "b_ih", "b_hh"):
        params[0][k][...] = 0.0
    params[0]["h0"][...] = 1e-13  # 3**25 * 1e-13 = 0.08: tanh stays nearly linear
    x, t = np.zeros((8, 25, 1)), np.ones((8, 1))
    _, grads = bp.value_and_grad(net, "mse", params, x, t)
    assert float(global_norm(grads)) > 1e10  # exploded

    def moved(opt: bp.Optimizer, **kwargs: Any) -> float:
        step = bp.train_step(net, "mse", opt, **kwargs)
        new, _, _ = step(params, opt.init(params), x, t)
        return float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in
                                 zip(bp.tree.leaves(new), bp.tree.leaves(params)))))

    lr, c = 0.1, 1.0
    assert moved(bp.sgd(lr)) > 100 * lr * c
    assert moved(bp.sgd(lr, clip_norm=c)) == pytest.approx(lr * c, rel=1e-5)
    clip = functools.partial(clip_by_global_norm, max_norm=c)
    assert moved(bp.sgd(lr), grad_transform=clip) == pytest.approx(lr * c, rel=1e-5)
    for opt in (bp.sgd(lr, clip_norm=c), bp.momentum(clip_norm=2), bp.adamw(clip_norm=0.5)):
        rebuilt = bp.get_optimizer(opt.config["name"],
                                   **{k: tuple(v) if k == "betas" else v
                                      for k, v in opt.config.items() if k != "name"})
        assert rebuilt.config == opt.config and rebuilt.clip_norm == opt.clip_norm
    assert "clip_norm" not in bp.adam().config  # absent when off: older configs unchanged


def test_clip_norm_values_are_checked() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(HyperParameterError, match="clip_norm"):
            bp.adam(clip_norm=bad)  # type: ignore[arg-type]
    with pytest.raises(HyperParameterError, match="max_norm"):
        clip_by_global_norm({"W": np.ones(2)}, None)  # type: ignore[arg-type]
    with pytest.raises(HyperParameterError, match="clip_norm"):
        clip_by_global_norm({"W": np.ones(2)}, 0.0)
    assert clip_by_global_norm(({}, None), 1.0) == ({}, None)
    assert global_norm(({}, None)) == 0.0
    clipped = clip_by_global_norm({"W": np.ones(3, dtype=np.float32)}, 1.0)
    assert clipped["W"].dtype == np.float32
    np.testing.assert_allclose(float(np.linalg.norm(clipped["W"])), 1.0, rtol=1e-5)


def test_docstring_examples_run() -> None:
    import doctest

    import bpcore.layers.recurrent as recurrent

    failures, tried = doctest.testmod(recurrent)
    assert failures == 0 and tried >= 10
    for fn in (clip_by_global_norm, bp.adam):
        finder = doctest.DocTestFinder(recurse=False)
        runner = doctest.DocTestRunner()
        for test in finder.find(fn, globs={"clip_by_global_norm": clip_by_global_norm,
                                           "global_norm": global_norm}):
            runner.run(test)
        assert runner.failures == 0 and runner.tries >= 3


def test_recurrent_layers_are_top_level_and_a_model_round_trips_a_checkpoint(
    tmp_path: Any,
) -> None:
    assert (bp.rnn, bp.gru, bp.lstm, bp.bidirectional) == (
        bp.layers.rnn, bp.layers.gru, bp.layers.lstm, bp.layers.bidirectional)
    net = bp.sequential(bp.bidirectional(bp.gru(1, 3)), bp.flatten(), bp.dense(2 * 3 * 8, 4))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 8, 1)), rng.integers(0, 4, 20)
    model = bp.Model(net, optimizer="adam", lr=1e-2, batch_size=10, scaling="none",
                     dtype="float64")
    model.fit(X, y, epochs=2, verbose=0)
    model.save(tmp_path / "gru.npz")
    loaded = bp.Model.load(tmp_path / "gru.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.epoch == 2
