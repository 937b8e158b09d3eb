"""bpcore.tree: the one walker of parameters, gradients and optimizer state."""

from __future__ import annotations

import pickle
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import pytest

import bpcore as bp
from bpcore import tree


class Pair(NamedTuple):
    a: Any
    b: Any


def _sample() -> Any:
    return ({"W": np.ones((2, 3)), "b": np.zeros(3)}, {}, [np.arange(2.0), (None, 5)],
            Pair(np.full(1, 7.0), {"x": "text"}))


def test_leaves_and_paths_walk_depth_first_and_skip_none() -> None:
    t = _sample()
    found = tree.leaves(t)
    assert [getattr(v, "shape", v) for v in found] == [(2, 3), (3,), (2,), 5, (1,), "text"]
    assert [p for p, _ in tree.paths(t)] == ["0/W", "0/b", "2/0", "2/1/1", "3/a", "3/b/x"]
    assert all(a is b for a, b in zip(found, (leaf for _, leaf in tree.paths(t))))
    assert [a.shape for a in tree.arrays(t)] == [(2, 3), (3,), (2,), (1,)]
    assert tree.first_array(t) is t[0]["W"]
    assert tree.first_array(({}, [None, 3])) is None
    assert tree.leaves(None) == []


def test_map_keeps_structure_and_types() -> None:
    t = _sample()
    out = tree.map_arrays(lambda a: a + 1, t)
    assert isinstance(out, tuple) and isinstance(out[2], list) and isinstance(out[3], Pair)
    assert out[2][1] == (None, 5) and out[3].b == {"x": "text"}
    np.testing.assert_array_equal(out[0]["W"], np.full((2, 3), 2.0))
    summed = tree.map(lambda x, y: x + y, {"a": 1, "b": (2, 3)}, {"a": 10, "b": (20, 30)})
    assert summed == {"a": 11, "b": (22, 33)}


def test_flatten_round_trips_named_tuples_none_and_scalars() -> None:
    net, opt = bp.mlp([3, 4, 2]), bp.adam()
    params = net.init(0)
    t = (params, opt.init(params), None, 5)
    values, treedef = tree.flatten(t, only_arrays=True)
    assert len(values) == 4 * 3  # W and b of two layers, in params, m and v
    back = tree.unflatten(pickle.loads(pickle.dumps(treedef)), values)  # the treedef travels
    assert isinstance(back[1], bp.optim.AdamState) and back[1].count == 0
    assert back[2] is None and back[3] == 5 and back[0][1] == {}
    assert back[0][0]["W"] is params[0]["W"]
    every, treedef = tree.flatten(t)
    assert len(every) == 4 * 3 + 2  # the step count and the 5 are leaves too


def test_replace_is_the_inverse_of_leaves() -> None:
    params = bp.mlp([3, 4, 2]).init(0)
    values = [a * 2 for a in tree.leaves(params)]
    out = tree.replace(params, values)
    assert [a is b for a, b in zip(tree.leaves(out), values)] == [True] * 4
    assert out[1] == {} and isinstance(out, tuple)
    nested = _sample()
    again = tree.replace(nested, tree.leaves(nested))
    assert tree.paths(again) == tree.paths(nested)
    with pytest.raises(ValueError, match="more values"):
        tree.replace(params, [*values, 1])
    with pytest.raises(ValueError, match="fewer values"):
        tree.replace(params, values[:-1])
    # a tuple whose dicts hold a container takes the general path
    deep = ({"W": values[0], "inner": {"b": values[1]}}, {})
    back = tree.replace(deep, [values[2], values[3]])
    assert back[0]["W"] is values[2] and back[0]["inner"]["b"] is values[3] and back[1] == {}


def test_is_array_on_every_backend(xp: ModuleType) -> None:
    a = bp.to_backend(np.ones(2))
    assert tree.is_array(a)
    assert not any(tree.is_array(v) for v in (1, 2.0, True, "s", None))


def test_aligned_pairs_leaves_by_path_and_names_where_trees_differ() -> None:
    ref = ({"W": np.ones(2), "b": np.zeros(1)}, {}, [np.arange(3.0)])
    other = ({"b": np.full(1, 5.0), "W": np.full(2, 3.0)}, None, [np.arange(3.0) + 1])
    rows = tree.aligned(ref, other)
    assert [(a.shape, b.tolist()) for a, b in rows] == [
        ((2,), [3.0, 3.0]), ((1,), [5.0]), ((3,), [1.0, 2.0, 3.0])]
    assert [r[0] for r in rows] == tree.leaves(ref)  # in the order of leaves(ref)
    bad = ({"W": np.ones(2)}, {}, [np.arange(3.0)])
    with pytest.raises(bp.errors.StructureError,
                       match=r"at '0', the params have keys \['W', 'b'\], the grads \['W'\]"):
        tree.aligned(ref, bad, names=("params", "grads"))
    with pytest.raises(bp.errors.StructureError,
                       match=r"at '2/0', the tree 1 have a leaf, the tree 2 a list of 1"):
        tree.aligned(ref, (ref[0], {}, [[np.ones(3)]]))


def test_aligned_layers_fast_path_agrees_with_the_walk() -> None:
    """Tuples of flat dicts take aligned's short path; its rows are those the
    general walk gives (the same arrays, by identity), and any other layout
    (keys in another order, a nested layer) falls through to the walk."""
    rng = np.random.default_rng(0)

    def layer(keys: str) -> dict[str, np.ndarray]:
        return {k: rng.normal(size=2) for k in keys}

    params = (layer("Wb"), {}, layer("Wb"))
    grads = (layer("Wb"), {}, layer("Wb"))
    reordered = (dict(reversed(list(grads[0].items()))), {}, grads[2])
    nested = (layer("Wb"), (layer("Wb"), {}), layer("Wb"))
    for p, g in ((params, grads), (params, reordered), (nested, nested)):
        fast = tree.aligned(p, g)
        walked = tree.aligned(list(p), list(g))  # a list: the general walk
        assert len(fast) == len(walked) == len(tree.leaves(p))
        assert all(a is c and b is d for (a, b), (c, d) in zip(fast, walked))
    with pytest.raises(bp.errors.StructureError, match="'2'"):
        tree.aligned(params, (grads[0], {}, {"W": grads[2]["W"]}))
    # three trees (momentum's velocity), keys in any order
    rows = tree.aligned(params, grads, reordered)
    walked = tree.aligned(list(params), list(grads), list(reordered))
    assert all(all(a is b for a, b in zip(r, w)) for r, w in zip(rows, walked, strict=True))
    # a key of another name (same count): the walk names where
    renamed = (grads[0], {}, {"W": grads[2]["W"], "c": grads[2]["b"]})
    for others in ((renamed,), (renamed, grads)):
        with pytest.raises(bp.errors.StructureError, match="'2'"):
            tree.aligned(params, *others)
