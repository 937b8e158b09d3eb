"""Optimizers (bpcore/optim.py) against torch.optim, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from gradcheck import assert_like, assert_same_tree, put, snapshot

import bpcore as bp
from bpcore.tree import map_arrays as tree_map

N_STEPS = 5
#: A network's parameter tree: one dict per layer, ``{}`` for an activation.
SHAPES: tuple[dict[str, tuple[int, ...]], ...] = (
    {"W": (3, 4), "b": (4,)},
    {},
    {"W": (4, 2), "b": (2,)},
)

TorchFactory = Callable[[Any, list[Any]], Any]

#: name -> (bpcore optimizer factory, torch optimizer factory with the same rule)
CONFIGS: dict[str, tuple[Callable[[], bp.Optimizer], TorchFactory]] = {
    "sgd": (
        lambda: bp.sgd(lr=0.1),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.1),
    ),
    "sgd_weight_decay": (
        lambda: bp.sgd(lr=0.1, weight_decay=0.05),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05),
    ),
    "momentum": (
        lambda: bp.sgd(lr=0.1, momentum=0.9),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    ),
    "momentum_factory": (
        lambda: bp.momentum(lr=0.05),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    ),
    "momentum_weight_decay": (
        lambda: bp.sgd(lr=0.05, momentum=0.8, weight_decay=0.1),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, weight_decay=0.1),
    ),
    "nesterov": (
        lambda: bp.sgd(lr=0.1, momentum=0.9, nesterov=True),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "nesterov_weight_decay": (
        lambda: bp.sgd(lr=0.1, momentum=0.7, nesterov=True, weight_decay=0.02),
        lambda torch, ps: torch.optim.SGD(
            ps, lr=0.1, momentum=0.7, nesterov=True, weight_decay=0.02
        ),
    ),
    "adam_defaults": (
        lambda: bp.adam(),
        lambda torch, ps: torch.optim.Adam(ps),
    ),
    "adam": (
        lambda: bp.adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        lambda torch, ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adam_weight_decay": (
        lambda: bp.adam(lr=0.01, weight_decay=0.1),
        lambda torch, ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1),
    ),
    "adamw_defaults": (
        lambda: bp.adamw(),
        lambda torch, ps: torch.optim.AdamW(ps),
    ),
    "adamw": (
        lambda: bp.adamw(lr=0.01, betas=(0.85, 0.995), weight_decay=0.2),
        lambda torch, ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.85, 0.995), weight_decay=0.2),
    ),
    "adamw_no_decay": (
        lambda: bp.adamw(lr=0.01, weight_decay=0.0),
        lambda torch, ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.0),
    ),
}
NAMES = list(CONFIGS)


def _host_tree(seed: int) -> tuple[dict[str, np.ndarray], ...]:
    rng = np.random.default_rng(seed)
    return tuple({k: rng.standard_normal(s) for k, s in layer.items()} for layer in SHAPES)


def _leaves(tree: Any) -> list[Any]:
    out: list[Any] = []
    tree_map(out.append, tree)
    return out


def _structure(tree: Any) -> Any:
    """The tree with each array replaced by its shape (types and keys kept)."""
    return tree_map(lambda a: tuple(a.shape), tree)


def _on(xp: ModuleType, tree: Any, dtype: str = "float64") -> Any:
    return tree_map(lambda a: put(xp, a, dtype), tree)


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_matches_torch_optim(xp: ModuleType, torch: ModuleType, name: str) -> None:
    make, make_torch = CONFIGS[name]
    params0 = _host_tree(0)
    grad_seq = [_host_tree(1 + i) for i in range(N_STEPS)]

    opt = make()
    params = _on(xp, params0)
    state = opt.init(params)

    tparams = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _leaves(params0)]
    topt = make_torch(torch, tparams)

    for grads in grad_seq:
        params, state = opt.update(_on(xp, grads), state, params)
        for tp, g in zip(tparams, _leaves(grads), strict=True):
            tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        ours = [bp.to_numpy(a) for a in _leaves(params)]
        for a, tp in zip(ours, tparams, strict=True):
            np.testing.assert_allclose(a, tp.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert _structure(params) == _structure(params0)


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_state_has_the_params_structure(xp: ModuleType, name: str) -> None:
    opt = CONFIGS[name][0]()
    params = _on(xp, _host_tree(0))
    state = opt.init(params)
    for _ in range(2):
        if isinstance(state, bp.optim.AdamState):
            buffers = [state.m, state.v]
        elif state.velocity is None:
            assert opt.config["momentum"] == 0.0
            buffers = []
        else:
            buffers = [state.velocity]
        assert buffers or opt.name == "sgd"
        for tree in buffers:
            assert _structure(tree) == _structure(params)
            for leaf, ref in zip(_leaves(tree), _leaves(params), strict=True):
                assert_like(leaf, ref, xp)
        params, state = opt.update(_on(xp, _host_tree(1)), state, params)
    if isinstance(state, bp.optim.AdamState):
        assert state.count == 2


def test_adam_and_momentum_state_start_at_zero(xp: ModuleType) -> None:
    params = _on(xp, _host_tree(0))
    for tree in (*bp.adam().init(params)[1:], bp.momentum().init(params).velocity):
        for leaf in _leaves(tree):
            np.testing.assert_array_equal(bp.to_numpy(leaf), np.zeros(tuple(leaf.shape)))
    assert bp.adam().init(params).count == 0


@pytest.mark.parametrize("name", NAMES)
def test_update_does_not_modify_its_arguments(xp: ModuleType, name: str) -> None:
    opt = CONFIGS[name][0]()
    params = _on(xp, _host_tree(0))
    state = opt.init(params)
    for seed in (1, 2):  # the second step meets non-zero momentum/moment buffers
        grads = _on(xp, _host_tree(seed))
        before = snapshot((grads, state, params))
        new_params, new_state = opt.update(grads, state, params)
        assert_same_tree((grads, state, params), before)
        assert not np.array_equal(
            bp.to_numpy(_leaves(new_params)[0]), bp.to_numpy(_leaves(params)[0])
        )
        params, state = new_params, new_state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_update_keeps_backend_and_dtype(xp: ModuleType, name: str, dtype: str) -> None:
    opt = CONFIGS[name][0]()
    params = _on(xp, _host_tree(0), dtype)
    state = opt.init(params)
    for seed in (1, 2):
        params, state = opt.update(_on(xp, _host_tree(seed), dtype), state, params)
    ref = _leaves(_on(xp, _host_tree(0), dtype))
    for leaf, like in zip(_leaves(params), ref, strict=True):
        assert_like(leaf, like, xp)
    for leaf in _leaves(state):
        if not isinstance(leaf, int):
            assert_like(leaf, ref[0], xp)


# --------------------------------------------------------------------------
# hyper-parameters


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: bp.sgd(lr=-0.1), r"sgd: lr must be a finite number >= 0, got -0\.1"),
        (lambda: bp.sgd(lr=float("nan")), r"lr .*nan"),
        (lambda: bp.sgd(lr=float("inf")), r"lr .*inf"),
        (lambda: bp.sgd(lr=0.1, momentum=-0.9), r"momentum .*-0\.9"),
        (lambda: bp.sgd(lr=0.1, weight_decay=-1e-4), r"weight_decay .*-0\.0001"),
        (lambda: bp.sgd(lr=0.1, nesterov=True), r"nesterov=True needs momentum > 0"),
        (lambda: bp.momentum(lr=-1.0), r"lr .*-1\.0"),
        (lambda: bp.adam(lr=-1e-3), r"adam: lr .*-0\.001"),
        (lambda: bp.adam(eps=-1e-8), r"eps .*-1e-08"),
        (lambda: bp.adam(weight_decay=-0.1), r"weight_decay .*-0\.1"),
        (lambda: bp.adam(betas=(1.0, 0.999)), r"adam: betas must lie in \[0, 1\)"),
        (lambda: bp.adam(betas=(0.9, 1.5)), r"betas must lie in \[0, 1\), got \(0\.9, 1\.5\)"),
        (lambda: bp.adam(betas=(-0.1, 0.999)), r"betas must lie in \[0, 1\)"),
        (lambda: bp.adamw(lr=-0.01), r"adamw: lr .*-0\.01"),
        (lambda: bp.adamw(betas=(0.9, 1.0)), r"adamw: betas must lie in \[0, 1\)"),
        (lambda: bp.adam(betas=(0.9,)), r"adam: betas must be two numbers in \[0, 1\)"),
        (lambda: bp.adamw(betas=(0.9, 0.99, 0.5)), r"adamw: betas must be two numbers"),
        (lambda: bp.adam(betas=0.9), r"betas must be two numbers .*got 0\.9"),  # type: ignore[arg-type]
        (lambda: bp.adam(betas=(float("nan"), 0.9)), r"betas must lie in \[0, 1\)"),
        (lambda: bp.get_optimizer("rmsprop"), r"unknown optimizer 'rmsprop'; choose one of sgd"),
    ],
)
def test_bad_hyper_parameters_raise_helpful_value_errors(
    make: Callable[[], bp.Optimizer], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_optimizers_by_name() -> None:
    opt = bp.get_optimizer("adam", lr=0.5)
    assert opt.name == "adam"
    assert opt.config["lr"] == 0.5
    assert bp.get_optimizer("momentum").config["momentum"] == 0.9
    assert bp.get_optimizer("sgd", lr=0.1, momentum=0.9, nesterov=True).name == "nesterov"


# --------------------------------------------------------------------------
# gradients and state are paired with the parameters by path


def _reversed_keys(tree: Any) -> Any:
    """The tree with every dict's keys in reverse insertion order."""
    if isinstance(tree, dict):
        return {k: _reversed_keys(tree[k]) for k in reversed(list(tree))}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_reversed_keys(v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_reversed_keys(v) for v in tree)
    return tree


def _update_how(opt: bp.Optimizer, xp: ModuleType, how: str) -> Callable[..., Any]:
    if how == "functional":
        return opt.update
    if how == "inplace":
        return lambda g, s, p: opt.update(g, s, p, inplace=True)
    if how == "bound":  # the step driver's: in place, the gradients as scratch space
        return opt.bind(xp, inplace=True, own_grads=True)
    return opt.bind(xp, fast=False)  # portable kernels, functional


@pytest.mark.parametrize("how", ["functional", "inplace", "bound", "portable"])
@pytest.mark.parametrize("name", [*NAMES, "adam_clipped"])
def test_gradients_and_state_pair_with_parameters_by_path_not_by_order(
    xp: ModuleType, name: str, how: str
) -> None:
    make = (lambda: bp.adam(lr=0.05, clip_norm=0.5)) if name == "adam_clipped" \
        else CONFIGS[name][0]
    ref_opt, opt = make(), make()
    ref_update, update = _update_how(ref_opt, xp, how), _update_how(opt, xp, how)
    ref_params = _on(xp, _host_tree(0))
    ref_state = ref_opt.init(ref_params)
    params = _on(xp, _host_tree(0))
    state = _reversed_keys(opt.init(params))  # e.g. a checkpoint's order
    for step in range(3):
        grads = _host_tree(1 + step)
        ref_params, ref_state = ref_update(_on(xp, grads), ref_state, ref_params)
        # the gradients' dicts in the other order: {"b": ..., "W": ...}
        params, state = update(_on(xp, _reversed_keys(grads)), state, params)
        assert list(params[0]) == ["W", "b"]  # the parameters keep their own order
        for key in ("W", "b"):
            for layer in (0, 2):
                # equal but for the clipping's global norm, summed in another order
                np.testing.assert_allclose(bp.to_numpy(params[layer][key]),
                                           bp.to_numpy(ref_params[layer][key]), rtol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_gradients_or_state_raise_a_structure_error(
    xp: ModuleType, name: str
) -> None:
    opt = CONFIGS[name][0]()
    params = _on(xp, _host_tree(0))
    state = opt.init(params)
    grads = _on(xp, _host_tree(1))
    missing = (grads[0], grads[1], {"W": grads[2]["W"]})
    renamed = (grads[0], grads[1], {"W": grads[2]["W"], "bias": grads[2]["b"]})
    short = grads[:2]
    for bad, match in ((missing, r"at '2', the parameters have keys \['W', 'b'\], the "
                                 r"gradients \['W'\]"),
                       (renamed, r"the gradients \['W', 'bias'\]"),
                       (short, r"at the top, the parameters have a tuple of 3, the "
                               r"gradients a tuple of 2")):
        for update in (opt.update, opt.bind(xp, inplace=True, own_grads=True)):
            with pytest.raises(bp.errors.StructureError, match=match) as info:
                update(bad, state, params)
            assert isinstance(info.value, bp.BpcoreError)
    if isinstance(state, bp.optim.AdamState):
        bad_state = bp.optim.AdamState(state.count, state.m[:2], state.v)
        with pytest.raises(bp.errors.StructureError, match=r"first moments \(state\.m\)"):
            opt.update(grads, bad_state, params)
    elif state.velocity is not None:
        bad_state = bp.optim.SGDState({"W": state.velocity[0]["W"]})
        with pytest.raises(bp.errors.StructureError, match=r"momentum buffers"):
            opt.update(grads, bad_state, params)
