"""Layers: the protocol, dense and convolutional layers, pooling, activations, and
networks built from them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from .conv import (
    ConvCache,
    conv1d,
    conv1d_backward,
    conv1d_forward,
    conv2d,
    conv2d_backward,
    conv2d_forward,
)
from .core import (
    Context,
    Layer,
    Params,
    Shape,
    output_shape,
    parallel,
    positive_int,
    residual,
    sequential,
)
from .dense import DenseCache, dense, dense_backward, dense_forward
from .dropout import dropout
from .embedding import embedding
from .norm import batch_norm, layer_norm
from .pool import (
    PoolCache,
    avg_pool1d,
    avg_pool2d,
    avg_pool_backward,
    avg_pool_forward,
    max_pool1d,
    max_pool2d,
    max_pool_backward,
    max_pool_forward,
)
from .recurrent import LAYERS as _RECURRENT  # rnn, gru, lstm, bidirectional
from .recurrent import bidirectional, gru, lstm, rnn
from .reshape import flatten, reshape, reshape_backward, reshape_forward

__all__ = [
    "ACTIVATIONS",
    "bidirectional",
    "gru",
    "lstm",
    "rnn",
    "LAYERS",
    "Context",
    "ConvCache",
    "DenseCache",
    "Layer",
    "Params",
    "PoolCache",
    "Shape",
    "activation",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool_backward",
    "avg_pool_forward",
    "batch_norm",
    "conv1d",
    "conv1d_backward",
    "conv1d_forward",
    "conv2d",
    "conv2d_backward",
    "conv2d_forward",
    "dense",
    "dense_backward",
    "dense_forward",
    "dropout",
    "embedding",
    "flatten",
    "from_config",
    "gelu",
    "gelu_backward",
    "gelu_forward",
    "identity",
    "identity_backward",
    "identity_forward",
    "layer_norm",
    "leaky_relu",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "max_pool1d",
    "max_pool2d",
    "max_pool_backward",
    "max_pool_forward",
    "mlp",
    "output_shape",
    "parallel",
    "relu",
    "relu_backward",
    "relu_forward",
    "reshape",
    "reshape_backward",
    "reshape_forward",
    "residual",
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
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise SettingError(f"mlp() takes the layer sizes as a sequence of ints, inputs first, "
                           f"e.g. [64, 128, 10]; got {sizes!r}")
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


#: How deep ``from_config`` follows nested sequential/residual/parallel configs.
MAX_CONFIG_DEPTH = 100

#: Layer kinds by config name (besides ``sequential`` and the activations):
#: ``from_config`` calls ``LAYERS[name](**config_without_name)``.
LAYERS: dict[str, Callable[..., Layer]] = {
    "dense": dense,
    "conv1d": conv1d,
    "conv2d": conv2d,
    "max_pool1d": max_pool1d,
    "max_pool2d": max_pool2d,
    "avg_pool1d": avg_pool1d,
    "avg_pool2d": avg_pool2d,
    "flatten": flatten,
    "reshape": reshape,
    "layer_norm": layer_norm,
    "batch_norm": batch_norm,
    "dropout": dropout,
    "embedding": embedding,
    **_RECURRENT,
}


def from_config(
    config: dict[str, Any], *, layers: dict[str, Callable[..., Layer]] | None = None
) -> Layer:
    """Rebuild a layer (or a whole network) from its ``Layer.config``.

    ``layers`` overrides :data:`LAYERS` by name, e.g. to build every batch norm
    with a run-time setting that is not in the config
    (:func:`bpcore.distributed.sync_batch_norm`).
    """
    kinds = LAYERS if layers is None else {**LAYERS, **layers}

    def build(config: dict[str, Any], depth: int = 0) -> Layer:
        if depth > MAX_CONFIG_DEPTH:
            raise SettingError(f"a layer config nested more than {MAX_CONFIG_DEPTH} deep; "
                               "flatten the network into fewer sequential levels")
        try:
            name = config["name"]
            if name == "sequential":
                return sequential(*(build(c, depth + 1) for c in config["layers"]))
            if name == "residual":
                return residual(build(config["layer"], depth + 1))
            if name == "parallel":
                return parallel(*(build(c, depth + 1) for c in config["layers"]),
                                combine=config["combine"])
            if name == "dense" and "dense" not in (layers or {}):
                extra = sorted(set(config) - {"name", "n_in", "n_out", "init"})
                if extra:
                    raise SettingError(f"dense layer config: unknown key(s) {extra}; a dense "
                                       "layer has n_in, n_out and init")
                return dense(config["n_in"], config["n_out"],
                             init=config.get("init", "glorot_uniform"))
            kwargs = {k: v for k, v in config.items() if k != "name"}
            if isinstance(name, str) and name in kinds:
                return kinds[name](**kwargs)
            return activation(name, **kwargs)
        except (KeyError, TypeError) as exc:
            raise SettingError(f"not a bpcore layer config ({exc}): {config!r:.300}") from None

    return build(config)
