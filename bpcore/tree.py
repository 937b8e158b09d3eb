"""Trees of arrays: the one walker of parameters, gradients and optimizer state.

A *tree* is a nest of dicts, lists, tuples and NamedTuples whose leaves are
arrays or plain values (Adam's step count is an ``int``); ``None`` is an
empty subtree (SGD without momentum keeps ``velocity=None``). A network's
parameters are a tuple with one ``{"W": ..., "b": ...}`` dict per layer, and
their gradients and the optimizer's moments have the same structure.

Everything in bpcore that walks such a nest — optimizers, checks, moving
between backends, data-parallel buckets, mixed-precision casts,
checkpoints — goes through the functions here.

Examples
--------
>>> import numpy as np
>>> from bpcore import tree
>>> params = ({"W": np.ones((2, 3)), "b": np.zeros(3)}, {})
>>> [a.shape for a in tree.leaves(params)]
[(2, 3), (3,)]
>>> doubled = tree.map(lambda a: 2 * a, params)
>>> float(doubled[0]["W"][0, 0])
2.0
>>> values, treedef = tree.flatten(params)
>>> tree.unflatten(treedef, values)[0]["b"].shape
(3,)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import array_api_compat

__all__ = [
    "arrays",
    "first_array",
    "flatten",
    "is_array",
    "leaves",
    "map",
    "map_arrays",
    "paths",
    "replace",
    "unflatten",
]

_SCALARS = (bool, int, float, complex, str, bytes)


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of an Array API backend (not a Python number)."""
    return not isinstance(x, _SCALARS) and array_api_compat.is_array_api_obj(x)


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _children(node: Any) -> list[Any] | None:
    """The children of a container, in order (``None`` for a leaf)."""
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, (list, tuple)):
        return list(node)
    return None


def _rebuild(node: Any, children: list[Any]) -> Any:
    """A container of ``node``'s type and keys holding ``children``."""
    if isinstance(node, dict):
        return dict(zip(node.keys(), children))
    if _is_namedtuple(node):
        return type(node)(*children)
    return type(node)(children)


def _walk(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    if tree is None:
        return
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _walk(v, f"{path}/{k}" if path else str(k))
    elif _is_namedtuple(tree):
        for k, v in zip(tree._fields, tree):
            yield from _walk(v, f"{path}/{k}" if path else k)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _walk(v, f"{path}/{i}" if path else str(i))
    else:
        yield path, tree


def paths(tree: Any) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for every leaf, depth first; a path reads ``"0/W"``
    (list and tuple positions, dict keys and NamedTuple fields joined by ``/``)."""
    return list(_walk(tree, ""))


def leaves(tree: Any) -> list[Any]:
    """Every leaf of ``tree`` (arrays and plain values), depth first; ``None`` is skipped."""
    # The hot path of every update, so no recursion: an explicit stack, and
    # exact type checks before the isinstance fallbacks (NamedTuples, subclasses).
    out: list[Any] = []
    stack = [tree]
    pop, push = stack.pop, stack.extend
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            push(reversed(node.values()))
        elif kind is tuple or kind is list:
            push(reversed(node))
        elif node is None:
            continue
        elif isinstance(node, dict):
            push(reversed(list(node.values())))
        elif isinstance(node, (list, tuple)):
            push(reversed(node))
        else:
            out.append(node)
    return out


def arrays(tree: Any) -> list[Any]:
    """The array leaves of ``tree``, depth first."""
    return [leaf for leaf in leaves(tree) if is_array(leaf)]


def first_array(tree: Any) -> Any:
    """The first array leaf of ``tree`` (``None`` if it holds none)."""
    for _, leaf in _walk(tree, ""):
        if is_array(leaf):
            return leaf
    return None


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``fn(leaf, *matching leaves of rest)`` for every leaf, in a tree of
    ``tree``'s structure (``None`` subtrees stay ``None``).

    The trees in ``rest`` must have ``tree``'s structure (they may hold more
    keys: only ``tree``'s are visited).
    """
    if tree is None:
        return None
    children = _children(tree)
    if children is None:
        return fn(tree, *rest)
    if isinstance(tree, dict):
        return {k: map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    columns = zip(children, *rest) if rest else ((c,) for c in children)
    return _rebuild(tree, [map(fn, *col) for col in columns])


def map_arrays(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``fn`` applied to the array leaves of ``tree``; other leaves stay as they are."""
    return map(lambda a: fn(a) if is_array(a) else a, tree)


def replace(tree: Any, values: list[Any]) -> Any:
    """A tree of ``tree``'s structure whose leaves are ``values``, in the order
    of :func:`leaves` (the inverse of ``leaves``)."""
    if type(tree) is tuple and all(type(d) is dict for d in tree):
        # the common case, parameters as a tuple of flat dicts: no recursion
        it = iter(values)
        flat = all(v is not None and type(v) not in (dict, list, tuple)
                   for d in tree for v in d.values())
        if flat:
            out = tuple({k: next(it) for k in d} for d in tree)
            if next(it, _END) is not _END:
                raise ValueError("more values than leaves")
            return out
    _, treedef = flatten(tree)
    return unflatten(treedef, values)


_END = object()


class _Slot(NamedTuple):
    """Where the ``position``-th leaf of a flattened tree sat (picklable)."""

    position: int


def flatten(tree: Any, *, only_arrays: bool = False) -> tuple[list[Any], Any]:
    """The leaves of ``tree`` (depth first) and a *treedef* for :func:`unflatten`.

    With ``only_arrays`` the plain values (Python numbers, strings) stay in
    the treedef and only the arrays are returned. The treedef is a picklable
    copy of the structure, so it can be sent to another process.
    """
    found: list[Any] = []

    def walk(node: Any) -> Any:
        if node is None:
            return None
        children = _children(node)
        if children is not None:
            return _rebuild(node, [walk(c) for c in children])
        if only_arrays and not is_array(node):
            return node
        found.append(node)
        return _Slot(len(found) - 1)

    return found, walk(tree)


def unflatten(treedef: Any, values: list[Any]) -> Any:
    """The tree of :func:`flatten`'s ``treedef`` with its leaves taken from ``values``."""
    if isinstance(treedef, _Slot):
        return values[treedef.position]
    if treedef is None:
        return None
    children = _children(treedef)
    if children is None:
        return treedef
    return _rebuild(treedef, [unflatten(c, values) for c in children])
