"""Layers: the protocol, dense layers, activations, and networks built from them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from ..errors import SettingError
from . import activations as _act
from .activations import (
    ACTIVATIONS,
    activation,
    gelu,
    gelu_backward,
    gelu_forward,
    identity,
    identity_backward,
    identity_forward,
    leaky_relu,
    leaky_relu_backward,
    leaky_relu_forward,
    relu,
    relu_backward,
    relu_forward,
    sigmoid,
    sigmoid_backward,
    sigmoid_forward,
    softmax,
    softmax_backward,
    softmax_forward,
    tanh,
    tanh_backward,
    tanh_forward,
)
from .core import Layer, Params, positive_int, sequential
from .dense import DenseCache, dense, dense_backward, dense_forward

__all__ = [
    "ACTIVATIONS",
    "DenseCache",
    "Layer",
    "Params",
    "activation",
    "dense",
    "dense_backward",
    "dense_forward",
    "from_config",
    "gelu",
    "gelu_backward",
    "gelu_forward",
    "identity",
    "identity_backward",
    "identity_forward",
    "leaky_relu",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "mlp",
    "relu",
    "relu_backward",
    "relu_forward",
    "sequential",
    "sigmoid",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_backward",
    "softmax_forward",
    "tanh",
    "tanh_backward",
    "tanh_forward",
]


def mlp(
    sizes: Sequence[int],
    activation: str = "sigmoid",
    output: str = "identity",
    *,
    init: str | None = None,
) -> Layer:
    """A multilayer perceptron: dense layers of ``sizes`` with ``activation`` between.

    Parameters
    ----------
    sizes : sequence of int
        Feature counts, input first: ``[3, 4, 1]`` is the 3-4-1 network,
        ``[784, 128, 64, 10]`` the classic MNIST one.
    activation : str
        Hidden activation (``sigmoid``, ``tanh``, ``relu``, ``leaky_relu``, ``gelu``).
    output : str
        Activation after the last dense layer; ``identity`` (logits) by
        default, which is what the ``*_from_logits`` losses expect.
    init : str, optional
        Weight initializer; He uniform for the ReLU family and GELU, Glorot
        uniform otherwise.

    Examples
    --------
    >>> import bpcore as bp
    >>> net = bp.mlp([3, 4, 1], "sigmoid", "sigmoid")
    >>> net.n_in, net.n_out
    (3, 1)
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise SettingError(
            f"mlp() needs at least two sizes (inputs and outputs), got {sizes}; e.g. [2, 1]"
        )
    try:
        sizes = [positive_int(n, "a layer size") for n in sizes]  # numpy.int64 welcome
    except SettingError:
        raise SettingError(f"mlp() layer sizes must be positive ints, got {sizes}") from None
    if init is None:
        init = "he_uniform" if activation in ("relu", "leaky_relu", "gelu") else "glorot_uniform"
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(dense(n_in, n_out, init=init))
        last = i == len(sizes) - 2
        name = output if last else activation
        if not (last and name in ("identity", "linear")):
            layers.append(_act.activation(name))
    return sequential(*layers)


def from_config(config: dict[str, Any]) -> Layer:
    """Rebuild a layer (or a whole network) from its ``Layer.config``."""
    try:
        name = config["name"]
        if name == "sequential":
            return sequential(*(from_config(c) for c in config["layers"]))
        if name == "dense":
            return dense(config["n_in"], config["n_out"], init=config.get("init", "glorot_uniform"))
        kwargs = {k: v for k, v in config.items() if k != "name"}
        return activation(name, **kwargs)
    except (KeyError, TypeError) as exc:
        raise SettingError(f"not a bpcore layer config ({exc}): {config!r}") from None
