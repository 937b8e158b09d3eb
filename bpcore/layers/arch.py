"""Architectures written as people write them: ``"conv1d(25,5,stride=2),relu,dense(10)"``.

An architecture string is a comma-separated list of layers, each a name or a
call, read left to right; every size a layer takes from its input is
inferred from the shape of the data, so only what a layer *makes* is written:

==========================================  =====================================
``dense(n_out, init=...)``                  ``dense(n_in, n_out)``
``conv1d(out_channels, kernel_size, ...)``  the channels in from the input; a
``conv2d(out_channels, kernel_size, ...)``  flat ``(L,)`` sample is viewed as
                                            ``(1, L)`` by a first ``conv1d``
``max_pool1d(k, ...)``, ``avg_pool2d(...)``  as :mod:`bpcore.layers.pool`
``batch_norm(momentum=, eps=)``             ``num_features`` from the input
``layer_norm(eps=)``                        over every axis of a sample
``dropout(p)``, ``flatten``, ``reshape(1, 40)``
``relu``, ``tanh``, ``gelu``, ``leaky_relu(0.1)``, ...  the activations
``residual(layer, layer, ...)``             ``y = x + f(x)``
``parallel(a, b, combine="sum")``           branches (a branch of several layers:
                                            ``sequential(a, b)``)
``gru(hidden, return_sequences=True,``      the features per step from the input
``truncate=, initial_state=, reverse=)``    ``(time, features)``; a flat ``(L,)``
``lstm(hidden, ...)``, ``rnn(hidden, ...)`` sample is viewed as ``(L, 1)`` (L steps
                                            of one value) by a first recurrent
                                            layer; ``return_sequences=False``
                                            keeps the last state only
``bidirectional(gru(hidden, ...))``         both directions of one ``rnn``, ``gru``
                                            or ``lstm``, outputs concatenated
==========================================  =====================================

Arguments are Python literals (ints, floats, strings, tuples), positional or
``name=value``, as the layer functions take them. Nothing is evaluated: the
string is parsed (:mod:`ast`) and only these names and literal values are
accepted; anything else is a :class:`~bpcore.errors.SettingError` that quotes
the layer and says what is wrong. The MNIST-1D paper's CNN::

    conv1d(25,5,stride=2,padding=1),relu,conv1d(25,3,stride=2,padding=1),relu,
    conv1d(25,3,stride=2,padding=1),relu,flatten,dense(10)

its MLP ``dense(100),relu,residual(dense(100),relu),dense(10)``, and its GRU
baseline (a bidirectional GRU of hidden size 6 over the 40 steps, every step's
output flattened into a linear classifier)::

    bidirectional(gru(6)),flatten,dense(10)

A recurrent layer outputs ``(time, D·hidden)`` per sample (``D = 2`` when
bidirectional), or ``(D·hidden,)`` with ``return_sequences=False``, so
``lstm(32,return_sequences=False),dense(10)`` needs no ``flatten``.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable
from numbers import Integral
from typing import Any

from ..errors import BpcoreError, SettingError
from .activations import ACTIVATIONS
from .conv import conv1d, conv2d
from .core import Layer, Shape, output_shape, parallel, residual, sequential, show_shape
from .dense import dense
from .dropout import dropout
from .norm import batch_norm, layer_norm
from .pool import avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .recurrent import GATES, bidirectional
from .recurrent import gru as _gru_layer
from .recurrent import lstm as _lstm_layer
from .recurrent import rnn as _rnn_layer
from .reshape import flatten, reshape

__all__ = ["MNIST1D_CNN", "MNIST1D_GRU", "MNIST1D_MLP", "NAMES", "RECURRENT", "build",
           "is_recurrent"]

#: The MNIST-1D paper's networks (Greydanus & Kobak; greydanus/mnist1d, notebooks/models.py):
#: ConvBase (three conv1d of 25 channels, kernels 5/3/3, stride 2, padding 1, then linear)
#: and MLPBase (40-100-100-10 with one residual block), as architecture strings.
MNIST1D_CNN = ("conv1d(25,5,stride=2,padding=1),relu,conv1d(25,3,stride=2,padding=1),relu,"
               "conv1d(25,3,stride=2,padding=1),relu,flatten,dense(10)")
MNIST1D_MLP = "dense(100),relu,residual(dense(100),relu),dense(10)"
#: GRUBase: a bidirectional GRU (hidden 6) over the 40 steps, flattened (480) into a linear layer.
MNIST1D_GRU = "bidirectional(gru(6)),flatten,dense(10)"


def _known(shape: Shape, name: str, what: str) -> tuple[int, ...]:
    if None in shape:
        raise SettingError(f"{name} needs the {what} of its input, unknown here "
                           f"({show_shape(shape)})")
    return tuple(int(n) for n in shape if n is not None)


def _dense(shape: Shape, n_out: int, *, init: str = "glorot_uniform") -> Layer:
    if len(shape) != 1:
        raise SettingError(f"dense takes flat samples but gets {show_shape(shape)}: put "
                           "flatten before it")
    return dense(_known(shape, "dense", "size")[0], n_out, init=init)


def _conv(ndim: int) -> Callable[..., Layer]:
    make = conv1d if ndim == 1 else conv2d

    def build(shape: Shape, out_channels: int, kernel_size: Any, **kw: Any) -> Layer:
        if len(shape) != ndim + 1:
            axes = "length" if ndim == 1 else "height, width"
            fix = "; put reshape(...) before it" if ndim == 2 else ""
            raise SettingError(f"conv{ndim}d takes samples of shape (channels, {axes}) but "
                               f"gets {show_shape(shape)}{fix}")
        return make(_known(shape[:1], f"conv{ndim}d", "channels")[0], out_channels,
                    kernel_size, **kw)

    return build


def _batch_norm(shape: Shape, **kw: Any) -> Layer:
    if not shape:
        raise SettingError("batch_norm takes samples of at least one axis (channels first)")
    return batch_norm(_known(shape[:1], "batch_norm", "channels")[0], **kw)


def _layer_norm(shape: Shape, **kw: Any) -> Layer:
    return layer_norm(_known(shape, "layer_norm", "shape"), **kw)


def _plain(make: Callable[..., Layer]) -> Callable[..., Layer]:
    def build(shape: Shape, *args: Any, **kw: Any) -> Layer:
        return make(*args, **kw)

    return build


def _recurrent(kind: str) -> Callable[..., Layer]:
    make = {"rnn": _rnn_layer, "gru": _gru_layer, "lstm": _lstm_layer}[kind]

    def build(shape: Shape, hidden: int, **kw: Any) -> Layer:
        if len(shape) != 2:
            raise SettingError(f"{kind} takes samples of shape (time, features) but gets "
                               f"{show_shape(shape)}; put reshape(time, features) before it")
        return make(_known(shape[1:], kind, "features per step")[0], hidden, **kw)

    return build


def _reshape(shape: Shape, *sizes: Any) -> Layer:
    if len(sizes) == 1 and isinstance(sizes[0], tuple):
        sizes = sizes[0]
    return reshape(sizes)


#: ``name -> (shape, *args, **kwargs) -> Layer`` for every layer an architecture may name.
NAMES: dict[str, Callable[..., Layer]] = {
    "dense": _dense,
    "conv1d": _conv(1),
    "conv2d": _conv(2),
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "dropout": _plain(dropout),
    "flatten": _plain(flatten),
    "reshape": _reshape,
    "max_pool1d": _plain(max_pool1d),
    "max_pool2d": _plain(max_pool2d),
    "avg_pool1d": _plain(avg_pool1d),
    "avg_pool2d": _plain(avg_pool2d),
    **{kind: _recurrent(kind) for kind in GATES},
    **{name: _plain(make) for name, make in ACTIVATIONS.items()},
}
_COMPOSITES = ("residual", "parallel", "sequential", "bidirectional")
#: The recurrent layer names (a network with one of them trains by its own recipe in
#: ``bpcore train``).
RECURRENT = tuple(GATES)


def _literal(node: ast.expr, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise SettingError(f"{where}: arguments must be numbers, strings or tuples, got "
                           f"{ast.unparse(node)!r}") from None


def _name_of(node: ast.expr) -> tuple[str, list[ast.expr], list[ast.keyword]]:
    if isinstance(node, ast.Name):
        return node.id, [], []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id, list(node.args), list(node.keywords)
    raise SettingError(f"{ast.unparse(node)!r} is not a layer: write a name such as relu or a "
                       "call such as dense(10)")


def _unknown(name: str) -> SettingError:
    choices = [*NAMES, *_COMPOSITES]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = repr(name) if len(name) <= 60 else repr(name[:60]) + f"... ({len(name)} characters)"
    return SettingError(f"unknown layer {shown}{hint}; the layers are "
                        f"{', '.join(sorted(choices))}")


def _chain(nodes: list[ast.expr], shape: Shape) -> tuple[list[Layer], Shape]:
    layers: list[Layer] = []
    for node in nodes:
        made, shape = _one(node, shape)
        layers.extend(made)
    return layers, shape


def _one(node: ast.expr, shape: Shape) -> tuple[list[Layer], Shape]:
    """The layers of one item (a first conv1d on flat samples: a reshape, then it)."""
    name, args, keywords = _name_of(node)
    text = ast.unparse(node)
    if name in _COMPOSITES:
        if name == "sequential":
            layers, out = _chain(args, shape)
            return [sequential(*layers)], out
        if name == "bidirectional":
            return _bidirectional(node, args, keywords, shape)
        if name == "residual":
            layers, _ = _chain(args, shape)
            block = residual(*layers)
            return [block], output_shape(block, shape)
        combine = "concat"
        for kw in keywords:
            if kw.arg != "combine":
                raise SettingError(f"{text}: parallel takes branches and combine=, not "
                                   f"{kw.arg}=")
            combine = _literal(kw.value, text)
        branches = [sequential(*_chain([a], shape)[0]) for a in args]
        block = parallel(*branches, combine=combine)
        return [block], output_shape(block, shape)
    make = NAMES.get(name)
    if make is None:
        raise _unknown(name)
    values = [_literal(a, text) for a in args]
    kwargs = {}
    for kw in keywords:
        if kw.arg is None:
            raise SettingError(f"{text}: ** is not allowed here")
        kwargs[kw.arg] = _literal(kw.value, text)
    prefix, shape = _flat_view(name, shape)
    try:
        layer = make(shape, *values, **kwargs)
        out = output_shape(layer, shape)
    except TypeError as exc:
        why = re.sub(r"^[\w.<>]+\(\)", f"{name}()", str(exc))
        raise SettingError(f"{text}: {why}") from None
    except BpcoreError as exc:
        raise SettingError(f"{text}: {exc}") from None
    return [*prefix, layer], out


def _flat_view(name: str, shape: Shape) -> tuple[list[Layer], Shape]:
    """A flat ``(L,)`` sample seen as one channel by a first conv1d, ``(1, L)``, or as
    ``L`` steps of one value by a first recurrent layer, ``(L, 1)``."""
    if len(shape) != 1 or name not in ("conv1d", *GATES):
        return [], shape
    length = _known(shape, name, "length")[0]
    view = reshape((1, length) if name == "conv1d" else (length, 1))
    return [view], output_shape(view, shape)


def _bidirectional(
    node: ast.expr, args: list[ast.expr], keywords: list[ast.keyword], shape: Shape
) -> tuple[list[Layer], Shape]:
    """``bidirectional(gru(6, ...))``: the inner layer built for ``shape``, then both ways."""
    text = ast.unparse(node)
    inner = args[0] if len(args) == 1 and not keywords else None
    kind = _name_of(inner)[0] if inner is not None and isinstance(
        inner, (ast.Name, ast.Call)) else None
    if inner is None or kind not in GATES:
        raise SettingError(f"{text}: bidirectional wraps one rnn, gru or lstm layer, e.g. "
                           "bidirectional(gru(6)) or bidirectional(lstm(32, "
                           "return_sequences=False))")
    assert inner is not None
    prefix, shape = _flat_view(kind, shape)
    (one_way,), _ = _one(inner, shape)
    try:
        layer = bidirectional(one_way)
    except BpcoreError as exc:
        raise SettingError(f"{text}: {exc}") from None
    return [*prefix, layer], output_shape(layer, shape)


def is_recurrent(spec: str) -> bool:
    """Whether an architecture string names a recurrent layer (``rnn``, ``gru``, ``lstm``),
    read without building it (``False`` for a string that does not parse).

    >>> is_recurrent("bidirectional(gru(6)),flatten,dense(10)"), is_recurrent("dense(10)")
    (True, False)
    """
    try:
        tree = ast.parse(f"[{spec}]", mode="eval")
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.Name) and node.id in RECURRENT for node in ast.walk(tree))


def build(spec: str, in_shape: Shape) -> Layer:
    """The network an architecture string describes, for samples of shape ``in_shape``.

    Examples
    --------
    >>> net = build("dense(100),relu,residual(dense(100),relu),dense(10)", (40,))
    >>> net.n_in, net.n_out
    (40, 10)
    >>> cnn = build("conv1d(25,5,stride=2,padding=1),relu,flatten,dense(10)", (40,))
    >>> [layer["name"] for layer in cnn.config["layers"]]
    ['reshape', 'conv1d', 'relu', 'flatten', 'dense']
    >>> gru = build("bidirectional(gru(6)),flatten,dense(10)", (40,))
    >>> [layer["name"] for layer in gru.config["layers"]], gru.n_out
    (['reshape', 'bidirectional', 'flatten', 'dense'], 10)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SettingError("an architecture is a comma-separated list of layers, e.g. "
                           "dense(100),relu,dense(10)")
    try:
        tree = ast.parse(f"[{spec}]", mode="eval")
    except SyntaxError as exc:
        col = max(0, (exc.offset or 1) - 2)
        raise SettingError(f"cannot read the architecture at character {col + 1}: "
                           f"{spec[:col]}>>>{spec[col:]}; write layers such as "
                           "dense(10) separated by commas") from None
    body = tree.body
    assert isinstance(body, ast.List)
    if isinstance(in_shape, (str, bytes)) or not isinstance(in_shape, (tuple, list)) or not all(
            n is None or (isinstance(n, Integral) and not isinstance(n, bool)) for n in in_shape):
        raise SettingError(f"the sample shape must be a tuple of ints, e.g. (40,) or (1, 28, 28); "
                           f"got {in_shape!r}")
    in_shape = tuple(int(n) if n is not None else None for n in in_shape)
    if math.prod(n for n in in_shape if n is not None) < 1:
        raise SettingError(f"the samples have no values (shape {show_shape(in_shape)})")
    layers, _ = _chain(list(body.elts), tuple(in_shape))
    if not layers:
        raise SettingError("the architecture names no layer")
    return sequential(*layers)
