"""ONNX export: a bpcore network and its parameters as an ONNX model.

The graph is built with the ``onnx`` package (``onnx.helper``,
``onnx.numpy_helper``), imported only when an export runs: ``import bpcore``
never imports it. Install it with ``pip install "bpcore[onnx]"`` (which brings
``onnxruntime`` to run the file too).

What the file computes
----------------------
* **Input** ``x``: shape ``(batch, n_in)``, or ``(batch, *sample)`` for a
  network that takes samples of more axes (``(batch, C, L)`` for a
  convolution, ``(batch, time, F)`` for a recurrent layer, any number of
  steps), ``batch`` (and a size the network leaves open) a dynamic
  dimension, of the parameters' dtype (float32 or float64); int64 indices
  for a network that begins with an ``embedding``. Given a ``scaler`` (as
  :meth:`bpcore.Model.export_onnx` passes the model's), the graph starts with
  ``(x - shift) / scale`` (a ``Sub`` and a ``Div``), so it takes the *raw*
  features, as :meth:`bpcore.Model.predict` does.
* **Output** ``y``: the network's output exactly as :func:`bpcore.predict`
  gives it: logits for a network with a linear last layer, probabilities for
  one that ends in ``softmax`` or ``sigmoid``.
* For a classifier (``probabilities`` given), two more outputs:
  ``probabilities``, the class probabilities as
  :meth:`bpcore.Model.predict_proba` gives them (softmax of the logits,
  sigmoid for one output, or ``y`` itself when the network already ends in
  softmax or sigmoid), and ``label`` (int64, shape ``(batch,)``), the index of
  the predicted class as :meth:`bpcore.Model.predict` picks it (``argmax(y)``;
  ``y > threshold`` for one output). The classes those indices stand for are in
  the model's metadata, ``metadata_props["classes"]`` (JSON).
* ``metadata_props`` also hold ``bpcore_config`` (the network's
  :attr:`~bpcore.layers.Layer.config` as JSON), ``scaler`` (``none``,
  ``standard`` or ``minmax``) and the outputs' meaning (``outputs``).

How a layer kind is exported
----------------------------
From its :attr:`~bpcore.layers.Layer.config`: the exporter registered for the
config's ``"name"`` in :data:`EXPORTERS` writes the layer's nodes. An exporter
is ``fn(graph, config, params, x) -> y``: ``graph`` is the :class:`Graph`
being built (``graph.op``, ``graph.constant``, ``graph.layer`` for sub-layers),
``config`` the layer's config, ``params`` its parameters (NumPy, in the
export's dtype) and ``x`` the name of its input; it returns the name of its
output. A layer with layer state (batch norm) reads it as ``graph.state``; a
composite passes each part its share (``graph.layer(..., state=...)``). A
new kind is one function::

    @register_exporter("my_layer", keys=("width",))
    def _my_layer(graph, config, params, x):
        return graph.op("Mul", x, graph.constant(params["a"], "a"))

``keys`` lists the config keys the exporter understands: a config with any
other key is refused, so a layer kind that gains a hyper-parameter cannot be
exported with the old meaning. A kind with no exporter is a
:class:`~bpcore.errors.SettingError` naming it.

Kinds exported today: every layer kind bpcore has (a network in evaluation
mode, as :func:`bpcore.predict` runs it):

* ``dense`` (``MatMul`` + ``Add``), ``identity``/``linear`` (no node),
  ``relu``, ``leaky_relu`` (``LeakyRelu`` with the layer's ``alpha``; in
  float64 ``Where(x > 0, x, alpha·x)``, as the node's ``alpha`` is a
  float32), ``sigmoid``, ``tanh``, ``softmax`` (over the last axis),
  ``gelu`` (bpcore's tanh approximation: ``Gelu(approximate="tanh")`` in
  float32 from opset 20, else its formula in elementary nodes);
* ``conv1d``/``conv2d`` (``Conv``: stride, zero padding, dilation; the
  weights' layout is ONNX's), ``max_pool1d/2d`` (``MaxPool``, with
  dilation), ``avg_pool1d/2d`` (``AveragePool``, ``count_include_pad`` as
  the layer's), ``flatten`` (``Flatten``), ``reshape`` (``Reshape``);
* ``dropout`` (the identity: no node), ``layer_norm``
  (``LayerNormalization`` in float32 from opset 17, else its formula),
  ``batch_norm`` (``BatchNormalization`` with the running statistics of the
  layer ``state``, in float64 its formula), ``embedding`` (``Gather``; the
  input ``x`` is then int64 indices);
* ``sequential`` (the layers in turn), ``residual`` (``Add``), ``parallel``
  (``Concat`` along axis 1, or ``Add``);
* ``rnn``, ``gru``, ``lstm`` and ``bidirectional`` (one ``RNN``/``GRU``/
  ``LSTM`` node each; PyTorch's gate blocks reordered to ONNX's, ``z, r, h``
  with ``linear_before_reset=1`` for the GRU and ``i, o, f, c`` for the
  LSTM; ``Transpose``/``Reshape`` between bpcore's ``(batch, time, F)`` and
  ONNX's ``(time, batch, F)`` on the way in and ``(time, D, batch, H)`` on
  the way out; a learned initial state broadcast over the batch).

Every float32 file runs in onnxruntime. Its CPU provider (1.32) has no
float64 ``Conv``, ``AveragePool``, ``RNN``, ``GRU`` or ``LSTM``: a float64
network with one of those is a valid ONNX file that onnxruntime refuses to
run (export it in float32, or run it elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import tree
from ._version import __version__
from .backend import to_numpy
from .checks import check_params
from .errors import ArgumentError, BpcoreError, DTypeError, SettingError, ShapeError
from .layers import Layer
from .layers.core import fits, input_shape, output_shape, show_shape
from .step import TrainState

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "MIN_OPSET",
    "PROBABILITIES",
    "ExportExistsError",
    "Exporter",
    "Graph",
    "export_onnx",
    "register_exporter",
    "require_onnx",
    "to_onnx",
]

#: The ONNX opset written by default: 17 (2022), which older runtimes read too;
#: ``opset=20`` or later writes a float32 GELU as one ``Gelu`` node.
DEFAULT_OPSET = 17
#: The oldest opset written: 13 is where ``Softmax`` became per-axis.
MIN_OPSET = 13
#: How ``probabilities`` may be formed from ``y``.
PROBABILITIES = ("softmax", "sigmoid", "identity")
#: The outputs and what they hold (also in ``metadata_props["outputs"]``); the
#: last two only for a classifier.
_OUTPUTS_DOC = {
    "y": "the network's output, as bpcore.predict gives it",
    "probabilities": "class probabilities, as Model.predict_proba gives them",
    "label": "index of the predicted class (into metadata 'classes'), as Model.predict picks it",
}
#: The 2 GiB a protobuf message can hold.
_PROTOBUF_LIMIT = 2**31 - 1

#: ``fn(graph, config, params, x) -> y``: writes one layer's nodes into ``graph``.
Exporter = Callable[["Graph", dict[str, Any], Any, str], str]
#: Layer kind (``config["name"]``) -> (exporter, config keys it understands).
EXPORTERS: dict[str, tuple[Exporter, frozenset[str]]] = {}


class ExportExistsError(BpcoreError, FileExistsError):
    """The ONNX file exists and ``overwrite`` was not given."""


def register_exporter(*names: str, keys: Sequence[str] = ()) -> Callable[[Exporter], Exporter]:
    """Register ``fn`` as the exporter of the layer kinds ``names`` (a decorator).

    Parameters
    ----------
    names : str
        The kinds' ``config["name"]``.
    keys : sequence of str
        The config keys besides ``name`` that the exporter reads; any other
        key in a layer's config makes the export fail with a clear error.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise SettingError("register_exporter() needs the layer kinds' names, e.g. 'conv2d'")

    def register(fn: Exporter) -> Exporter:
        if not callable(fn):
            raise ArgumentError(f"an exporter must be callable, got {type(fn).__name__}")
        for name in names:
            EXPORTERS[name] = (fn, frozenset(keys))
        return fn

    return register


def require_onnx() -> Any:
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            f"ONNX export needs the onnx package ({exc}): pip install onnx "
            "(and onnxruntime to run the exported file)"
        ) from None
    return onnx


class Graph:
    """The ONNX graph being built: what an exporter writes its layer into.

    Attributes
    ----------
    dtype : numpy.dtype
        The export's float dtype (the parameters'); constants are cast to it.
    opset : int
        The ONNX opset being written (an exporter may choose nodes by it).
    nodes, initializers : list
        The ``NodeProto`` and ``TensorProto`` written so far.
    """

    def __init__(self, dtype: np.dtype[Any], opset: int) -> None:
        onnx = require_onnx()
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.elem_type: int = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._taken: set[str] = set()
        self._scope: list[str] = []
        #: The layer state of the layer being written (batch norm's running
        #: statistics; a tuple per layer inside a composite), ``None`` if none was given.
        self.state: Any = None

    def name(self, hint: str) -> str:
        """A new unique name, ``hint`` in the current layer's scope."""
        base = ".".join([*self._scope, hint])
        name, i = base, 1
        while name in self._taken:
            name, i = f"{base}_{i}", i + 1
        self._taken.add(name)
        return name

    def constant(self, value: Any, hint: str, *, dtype: Any = None) -> str:
        """An initializer holding ``value`` (in the export's dtype unless ``dtype``
        is given); returns its name."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        """A node ``op_type(*inputs)`` with one output; returns the output's name."""
        if output is None:
            output = self.name(op_type)
        else:
            self._taken.add(output)
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), [output], name=output, **attrs
        ))
        return output

    def ops(self, op_type: str, *inputs: str, outputs: Sequence[bool], **attrs: Any
            ) -> list[str]:
        """A node ``op_type(*inputs)`` with several outputs, ``outputs[i]`` saying
        whether output ``i`` is wanted (an unwanted one is left unnamed, ``""``);
        returns their names (``""`` for the unwanted)."""
        names = [self.name(f"{op_type}_{i}") if want else "" for i, want in enumerate(outputs)]
        while names and not names[-1]:
            names.pop()
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), names, name=self.name(op_type), **attrs
        ))
        return names + [""] * (len(outputs) - len(names))

    def int64(self, value: Any, hint: str) -> str:
        """An int64 initializer (shapes, axes, indices); returns its name."""
        return self.constant(value, hint, dtype=np.int64)

    def layer(self, config: Any, params: Any, x: str, segment: str | None = None, *,
              state: Any = None) -> str:
        """Write the layer described by ``config`` (with its ``params`` and layer
        ``state``, which its exporter reads as :attr:`state`) on input ``x``;
        returns the name of its output. ``segment`` names a sub-layer within the
        current one (a sequential network's gives its index)."""
        path = self._scope if segment is None else [*self._scope, segment]
        kind = config.get("name") if isinstance(config, dict) else None
        if not isinstance(kind, str):
            raise SettingError(
                f"{'layer ' + '.'.join(path) if path else 'the network'} has no config naming "
                f"its kind ({config!r:.80}); ONNX export works from Layer.config, "
                "{'name': ..., ...}"
            )
        where = f"layer {'.'.join(path)} ({kind})" if path else f"the network ({kind})"
        entry = EXPORTERS.get(kind)
        if entry is None:
            raise SettingError(
                f"cannot export {where} to ONNX: no exporter is registered for layer kind "
                f"{kind!r} (kinds with one: {', '.join(sorted(EXPORTERS))}); add one with "
                "bpcore.onnx_export.register_exporter"
            )
        fn, keys = entry
        unknown = sorted(set(config) - keys - {"name"})
        if unknown:
            raise SettingError(
                f"cannot export {where} to ONNX: its config has {', '.join(map(repr, unknown))}, "
                f"which the {kind} exporter does not know (it reads: "
                f"{', '.join(sorted(keys)) or 'nothing'}); extend the exporter first"
            )
        if segment is not None:
            self._scope.append(segment)
        outer, self.state = self.state, state
        try:
            return fn(self, config, params, x)
        except BpcoreError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise SettingError(
                f"cannot export {where} to ONNX: its parameters do not fit its config ({exc!r})"
            ) from None
        finally:
            self.state = outer
            if segment is not None:
                self._scope.pop()


# --------------------------------------------------------------------------
# the exporters of the layer kinds bpcore has


@register_exporter("sequential", keys=("layers",))
def _sequential(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    layers = config["layers"]
    if not isinstance(params, (tuple, list)) or len(params) != len(layers):
        n = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
        raise SettingError(
            f"a sequential network of {len(layers)} layers needs one parameter dict per "
            f"layer, got {n}"
        )
    states = _parts(graph.state, len(layers))
    for i, (c, p) in enumerate(zip(layers, params)):
        x = graph.layer(c, p, x, str(i), state=states[i])
    return x


def _parts(state: Any, n: int) -> list[Any]:
    """A composite's layer state split per part (``None`` each when it has none)."""
    if isinstance(state, (tuple, list)) and len(state) == n:
        return list(state)
    return [None] * n


@register_exporter("dense", keys=("n_in", "n_out", "init"))
def _dense(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    W, b = params["W"], params["b"]
    if W.shape != (config["n_in"], config["n_out"]) or b.shape != (config["n_out"],):
        raise ShapeError(
            f"dense layer {config['n_in']}->{config['n_out']} has W {W.shape} and b {b.shape}; "
            "export the parameters made for this network"
        )
    z = graph.op("MatMul", x, graph.constant(W, "W"))
    return graph.op("Add", z, graph.constant(b, "b"))


@register_exporter("identity", "linear")
def _identity(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    return x


def _unary(op_type: str) -> Exporter:
    def export(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
        return graph.op(op_type, x)

    return export


register_exporter("relu")(_unary("Relu"))
register_exporter("sigmoid")(_unary("Sigmoid"))
register_exporter("tanh")(_unary("Tanh"))


@register_exporter("leaky_relu", keys=("alpha",))
def _leaky_relu(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``LeakyRelu`` in float32; in float64 bpcore's ``where(x > 0, x, alpha * x)``, since
    the node's ``alpha`` is a float32 attribute (0.01 would be off by 2e-8 relative)."""
    alpha = float(config.get("alpha", 0.01))
    if graph.dtype == np.float32:
        return graph.op("LeakyRelu", x, alpha=alpha)
    positive = graph.op("Greater", x, graph.constant(0.0, "zero"))
    return graph.op("Where", positive, x, graph.op("Mul", graph.constant(alpha, "alpha"), x))


@register_exporter("softmax")
def _softmax(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    return graph.op("Softmax", x, axis=-1)


@register_exporter("gelu")
def _gelu(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """bpcore's GELU, the tanh form ``½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))``
    (see :func:`bpcore.layers.gelu_forward`): a ``Gelu`` node in float32 from opset
    20, else the formula in elementary nodes, in the order bpcore computes it
    (onnxruntime 1.32's float64 ``Gelu`` is off by 1e-8)."""
    if graph.opset >= 20 and graph.dtype == np.float32:
        return graph.op("Gelu", x, approximate="tanh")
    from .layers.activations import _GELU_C, _GELU_K

    cube = graph.op("Mul", graph.op("Mul", x, x), x)
    inner = graph.op("Add", x, graph.op("Mul", graph.constant(_GELU_K, "k"), cube))
    t = graph.op("Tanh", graph.op("Mul", graph.constant(_GELU_C, "c"), inner))
    half_x = graph.op("Mul", graph.constant(0.5, "half"), x)
    return graph.op("Mul", half_x, graph.op("Add", graph.constant(1.0, "one"), t))


def _axes(value: Any, ndim: int) -> list[int]:
    """A config's int-or-list geometry as ``ndim`` ints."""
    out = [int(value)] * ndim if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(out) != ndim:
        raise SettingError(f"expected {ndim} values, got {value!r}")
    return out


@register_exporter("conv1d", "conv2d", keys=("in_channels", "out_channels", "kernel_size",
                                             "stride", "padding", "dilation", "init"))
def _conv(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``Conv`` (PyTorch's and ONNX's layout agree: ``W`` (C_out, C_in, *kernel)), the
    zero padding at both ends of each axis."""
    ndim = 1 if config["name"] == "conv1d" else 2
    k = _axes(config["kernel_size"], ndim)
    W, b = params["W"], params["b"]
    want = (config["out_channels"], config["in_channels"], *k)
    if tuple(W.shape) != want or tuple(b.shape) != (config["out_channels"],):
        raise ShapeError(f"{config['name']} has W {W.shape} and b {b.shape} but its config "
                         f"says W {want}; export the parameters made for this network")
    pads = _axes(config["padding"], ndim)
    return graph.op("Conv", x, graph.constant(W, "W"), graph.constant(b, "b"), kernel_shape=k,
                    strides=_axes(config["stride"], ndim), pads=pads + pads,
                    dilations=_axes(config["dilation"], ndim))


@register_exporter("max_pool1d", "max_pool2d", keys=("kernel_size", "stride", "padding",
                                                     "dilation"))
def _max_pool(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``MaxPool``: its padding never wins a window, as bpcore's ``-inf`` padding."""
    ndim = 1 if config["name"] == "max_pool1d" else 2
    pads = _axes(config["padding"], ndim)
    return graph.op("MaxPool", x, kernel_shape=_axes(config["kernel_size"], ndim),
                    strides=_axes(config["stride"], ndim), pads=pads + pads,
                    dilations=_axes(config.get("dilation", 1), ndim))


@register_exporter("avg_pool1d", "avg_pool2d", keys=("kernel_size", "stride", "padding",
                                                     "count_include_pad"))
def _avg_pool(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``AveragePool`` with the layer's ``count_include_pad``."""
    ndim = 1 if config["name"] == "avg_pool1d" else 2
    pads = _axes(config["padding"], ndim)
    return graph.op("AveragePool", x, kernel_shape=_axes(config["kernel_size"], ndim),
                    strides=_axes(config["stride"], ndim), pads=pads + pads,
                    count_include_pad=int(bool(config.get("count_include_pad", True))))


@register_exporter("flatten")
def _flatten(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    return graph.op("Flatten", x, axis=1)


@register_exporter("reshape", keys=("shape",))
def _reshape(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``Reshape`` to ``(batch, *shape)`` (the 0 keeps the batch axis)."""
    return graph.op("Reshape", x, graph.int64([0, *map(int, config["shape"])], "shape"))


@register_exporter("dropout", keys=("p",))
def _dropout(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """Evaluation mode, as :func:`bpcore.predict` runs it: the identity (no node)."""
    return x


@register_exporter("layer_norm", keys=("normalized_shape", "eps"))
def _layer_norm(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``LayerNormalization`` over the trailing axes in float32 from opset 17; else
    bpcore's formula ``γ (x - μ) / √(σ² + ε) + β`` in elementary nodes, in bpcore's
    order (the node's ``epsilon`` is a float32: 1e-3 would be off by 4e-11 in float64)."""
    gamma, beta = params["gamma"], params["beta"]
    shape = config["normalized_shape"]
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(int, shape))
    if tuple(gamma.shape) != shape or tuple(beta.shape) != shape:
        raise ShapeError(f"layer_norm over {shape} has gamma {gamma.shape} and beta "
                         f"{beta.shape}; export the parameters made for this network")
    g, b, eps = graph.constant(gamma, "gamma"), graph.constant(beta, "beta"), config["eps"]
    if graph.opset >= 17 and graph.dtype == np.float32:
        return graph.op("LayerNormalization", x, g, b, axis=-len(shape), epsilon=float(eps))
    axes = list(range(-len(shape), 0))

    def mean(a: str) -> str:  # ReduceMean's axes: an attribute before opset 18, an input from it
        if graph.opset >= 18:
            return graph.op("ReduceMean", a, graph.int64(axes, "axes"), keepdims=1)
        return graph.op("ReduceMean", a, axes=axes, keepdims=1)

    centered = graph.op("Sub", x, mean(x))
    var = mean(graph.op("Mul", centered, centered))
    rstd = graph.op("Div", graph.constant(1.0, "one"),
                    graph.op("Sqrt", graph.op("Add", var, graph.constant(eps, "eps"))))
    return graph.op("Add", graph.op("Mul", g, graph.op("Mul", centered, rstd)), b)


@register_exporter("batch_norm", keys=("num_features", "momentum", "eps"))
def _batch_norm(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """Evaluation mode, with the running statistics of the layer's state (what
    :func:`bpcore.predict` normalizes with): ``BatchNormalization`` in float32; in
    float64 bpcore's ``γ (x - mean) / √(var + ε) + β`` with ``1/√(var + ε)`` computed
    here as bpcore does (the node's ``epsilon`` is a float32), over ``x`` viewed as
    ``(batch, C, -1)``."""
    c = int(config["num_features"])
    state = graph.state
    if not isinstance(state, dict) or "mean" not in state or "var" not in state:
        raise SettingError(
            "batch_norm normalizes with its running statistics, which are layer state, not "
            "parameters: pass state= (the TrainState the training step returned, or its "
            ".layers; Model.export_onnx passes the model's)"
        )
    arrays = {"gamma": params["gamma"], "beta": params["beta"],
              "mean": np.asarray(to_numpy(state["mean"])),
              "var": np.asarray(to_numpy(state["var"]))}
    for key, a in arrays.items():
        if tuple(a.shape) != (c,):
            raise ShapeError(f"batch_norm({c}) has {key} of shape {tuple(a.shape)}, not "
                             f"({c},); export the parameters and state made for this network")
    if not all(np.all(np.isfinite(a)) for a in arrays.values()) or np.any(arrays["var"] < 0):
        raise SettingError("batch_norm's running statistics are not finite (or a variance "
                           "is negative); export the state of a healthy run")
    eps = float(config["eps"])
    if graph.dtype == np.float32:
        return graph.op("BatchNormalization", x,
                        *(graph.constant(a, k) for k, a in arrays.items()), epsilon=eps)
    column = {k: graph.constant(np.asarray(a, graph.dtype).reshape(c, 1), k)
              for k, a in arrays.items() if k != "var"}
    var = np.asarray(arrays["var"], graph.dtype)
    rstd = graph.constant((1.0 / np.sqrt(var + eps)).reshape(c, 1), "rstd")
    flat = graph.op("Reshape", x, graph.int64([0, c, -1], "per_channel"))
    xhat = graph.op("Mul", graph.op("Sub", flat, column["mean"]), rstd)
    y = graph.op("Add", graph.op("Mul", column["gamma"], xhat), column["beta"])
    return graph.op("Reshape", y, graph.op("Shape", x))


@register_exporter("embedding", keys=("num_embeddings", "dim", "init"))
def _embedding(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``Gather`` of the table's rows by the int64 indices ``x``."""
    W = params["W"]
    if tuple(W.shape) != (config["num_embeddings"], config["dim"]):
        raise ShapeError(f"embedding({config['num_embeddings']}, {config['dim']}) has W "
                         f"{W.shape}; export the parameters made for this network")
    return graph.op("Gather", graph.constant(W, "W"), x, axis=0)


@register_exporter("residual", keys=("layer",))
def _residual(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """``x + f(x)``."""
    return graph.op("Add", x, graph.layer(config["layer"], params, x, "f", state=graph.state))


@register_exporter("parallel", keys=("combine", "layers"))
def _parallel(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    """Every branch on ``x``, then ``Concat`` along axis 1 or a chain of ``Add``
    (left to right, as bpcore sums)."""
    branches = config["layers"]
    if not isinstance(params, (tuple, list)) or len(params) != len(branches):
        raise SettingError(f"parallel of {len(branches)} branches needs one parameter entry "
                           "per branch")
    states = _parts(graph.state, len(branches))
    ys = [graph.layer(c, p, x, str(i), state=s)
          for i, (c, p, s) in enumerate(zip(branches, params, states))]
    if config["combine"] == "concat":
        return graph.op("Concat", *ys, axis=1)
    if config["combine"] != "sum":
        raise SettingError(f"parallel's combine is {config['combine']!r}; bpcore has concat "
                           "and sum")
    y = ys[0]
    for other in ys[1:]:
        y = graph.op("Add", y, other)
    return y


#: PyTorch's gate blocks (rows of W_ih, W_hh, b_ih, b_hh) in ONNX's order: GRU
#: ``r, z, n`` -> ``z, r, h``; LSTM ``i, f, g, o`` -> ``i, o, f, c``.
_GATE_ORDER = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}
_RECURRENT_KEYS = ("n_in", "hidden", "return_sequences", "truncate", "initial_state",
                   "reverse")


@register_exporter("rnn", "gru", "lstm", keys=_RECURRENT_KEYS)
def _recurrent(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    return _recurrent_node(graph, config, params, x, ("",))


@register_exporter("bidirectional", keys=("layer",))
def _bidirectional(graph: Graph, config: dict[str, Any], params: Any, x: str) -> str:
    inner = config["layer"]
    if not isinstance(inner, dict) or inner.get("name") not in _GATE_ORDER:
        raise SettingError(f"bidirectional wraps an rnn, gru or lstm, got {inner!r:.80}")
    unknown = sorted(set(inner) - set(_RECURRENT_KEYS) - {"name"})
    if unknown:
        raise SettingError(f"the bidirectional {inner['name']}'s config has "
                           f"{', '.join(map(repr, unknown))}, which the exporter does not "
                           "know; extend the exporter first")
    return _recurrent_node(graph, inner, params, x, ("", "_reverse"))


def _recurrent_node(graph: Graph, config: dict[str, Any], params: Any, x: str,
                    suffixes: tuple[str, ...]) -> str:
    """One ONNX ``RNN``/``GRU``/``LSTM`` node over both or one direction.

    bpcore's ``(batch, time, F)`` is transposed to ONNX's ``(time, batch, F)``; the
    gate blocks are reordered (:data:`_GATE_ORDER`), GRU with ``linear_before_reset=1``
    (``r ⊙ (W_hn h + b_hn)``, PyTorch's form); outputs ``Y`` ``(time, D, batch, H)``
    become ``(batch, time, D·H)`` (forward direction first), or the final states
    ``Y_h`` ``(D, batch, H)`` become ``(batch, D·H)``. Truncation changes only the
    gradient, so it does not enter the graph. A learned initial state is broadcast
    over the batch.
    """
    kind, H, F = config["name"], int(config["hidden"]), int(config["n_in"])
    order = _GATE_ORDER[kind]
    G, D = len(order), len(suffixes)

    def gates(a: Any, key: str, shape: tuple[int, ...]) -> Any:
        if tuple(a.shape) != shape:
            raise ShapeError(f"{kind}({F}, {H}) has {key} of shape {tuple(a.shape)}, not "
                             f"{shape}; export the parameters made for this network")
        return np.concatenate([a[g * H:(g + 1) * H] for g in order], axis=0)

    W = np.stack([gates(params["W_ih" + s], "W_ih" + s, (G * H, F)) for s in suffixes])
    R = np.stack([gates(params["W_hh" + s], "W_hh" + s, (G * H, H)) for s in suffixes])
    B = np.stack([np.concatenate([gates(params["b_ih" + s], "b_ih" + s, (G * H,)),
                                  gates(params["b_hh" + s], "b_hh" + s, (G * H,))])
                  for s in suffixes])
    states = ("h0", "c0") if kind == "lstm" else ("h0",)
    initial = ["", ""]
    if config.get("initial_state", "zeros") == "learned":
        batch = graph.op("Gather", graph.op("Shape", x), graph.int64([0], "batch_axis"), axis=0)
        grid = graph.op("Concat", graph.int64([1], "one"), batch, graph.int64([1], "one"),
                        axis=0)  # (1, batch, 1)
        for i, key in enumerate(states):
            s0 = np.stack([np.asarray(params[key + s]).reshape(1, H) for s in suffixes])
            initial[i] = graph.op("Expand", graph.constant(s0, key), grid)  # (D, batch, H)
    elif config.get("initial_state", "zeros") != "zeros":
        raise SettingError(f"{kind}'s initial_state is {config['initial_state']!r}; bpcore "
                           "has zeros and learned")
    direction = "bidirectional" if D == 2 else "reverse" if config.get("reverse") else "forward"
    inputs = [graph.op("Transpose", x, perm=[1, 0, 2]), graph.constant(W, "W"),
              graph.constant(R, "R"), graph.constant(B, "B"), "", initial[0]]
    if kind == "lstm":
        inputs.append(initial[1])
    while not inputs[-1]:
        inputs.pop()
    extra = {"linear_before_reset": 1} if kind == "gru" else {}
    seq = bool(config.get("return_sequences", True))
    y, y_h = graph.ops(kind.upper(), *inputs, outputs=(seq, not seq), hidden_size=H,
                       direction=direction, **extra)[:2]
    if seq:  # (time, D, batch, H) -> (batch, time, D, H) -> (batch, time, D·H)
        out = graph.op("Transpose", y, perm=[2, 0, 1, 3])
        return graph.op("Reshape", out, graph.int64([0, 0, D * H], "shape"))
    out = graph.op("Transpose", y_h, perm=[1, 0, 2])  # (D, batch, H) -> (batch, D, H)
    return graph.op("Reshape", out, graph.int64([0, D * H], "shape"))


# --------------------------------------------------------------------------
# the model


def to_onnx(
    net: Layer,
    params: Any,
    *,
    state: Any = None,
    n_in: int | Sequence[int | None] | None = None,
    scaler: Any = None,
    probabilities: str | None = None,
    threshold: float = 0.0,
    classes: Sequence[Any] | None = None,
    dtype: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> Any:
    """The ONNX model (an ``onnx.ModelProto``) of ``net`` with ``params``.

    Parameters
    ----------
    net : Layer
        The network (``bp.mlp(...)``, ``bp.sequential(...)``, any layer whose
        kind has an exporter in :data:`EXPORTERS`).
    params
        Its parameters, on any backend and device (copied to the host).
    state : optional
        The network's layer state: the :class:`~bpcore.step.TrainState` its
        training step returned (or that state's ``.layers``). Needed for
        ``batch_norm``, whose running statistics the graph normalizes with
        (evaluation mode, as :func:`bpcore.predict`); dropout is the identity.
    n_in : int or sequence of int, optional
        Features per sample, or the per-sample shape (``None`` for a size left
        dynamic in the graph, e.g. ``(None, 3)``: any number of steps of 3
        features; ``()`` for one index per sample into an embedding). Needed
        only where the network does not fix it: by default the shape it takes
        (``(time, F)`` with a dynamic ``time`` for a recurrent first layer),
        else the scaler's, else the flat input a first ``reshape`` takes, else
        for an embedding ``()`` or ``(time,)``, whichever the network takes.
    scaler : bpcore.data.Scaler, optional
        Feature scaling ``(x - shift) / scale`` to put in front of the network,
        so the graph takes raw features (one ``shift``/``scale`` per value of a
        sample, laid out as the sample).
    probabilities : {None, "softmax", "sigmoid", "identity"}
        For a classifier, how its class probabilities follow from ``y``; adds
        the outputs ``probabilities`` and ``label``.
    threshold : float
        With one output, ``label`` is 1 where ``y > threshold`` (0 for logits,
        0.5 for probabilities), as :func:`bpcore.metrics.predicted_labels`.
    classes : sequence, optional
        The class labels of the outputs (stored as JSON in the metadata).
    dtype : {"float32", "float64"}, optional
        The export's dtype; by default the parameters'. A network without
        parameters exports in float32 unless told otherwise.
    opset : int
        The ONNX opset (default :data:`DEFAULT_OPSET`), from :data:`MIN_OPSET`
        to the newest the installed ``onnx`` knows.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(..., full_check=True)``.

    Raises
    ------
    SettingError
        A layer kind without an exporter (named), an unknown config key, a bad
        opset, ``probabilities`` or ``scaler``, a ``batch_norm`` without its
        running statistics (``state``).
    ShapeError, DTypeError, ArgumentError
        Parameters that do not fit the network, or are not float32/float64.
    ImportError
        Without the ``onnx`` package.
    """
    onnx = require_onnx()
    if not isinstance(net, Layer):
        raise ArgumentError(
            f"to_onnx() takes a bpcore Layer (e.g. bp.mlp([4, 8, 3])) and its parameters, got "
            f"{type(net).__name__}; for a bp.Model call model.export_onnx(path)"
        )
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= newest:
        raise SettingError(f"opset must be an int from {MIN_OPSET} to {newest} (the newest the "
                           f"installed onnx {onnx.__version__} knows), got {opset!r}")
    opset = int(opset)
    if probabilities is not None and probabilities not in PROBABILITIES:
        raise SettingError(f"probabilities must be None or one of {', '.join(PROBABILITIES)}, "
                           f"got {probabilities!r}")
    host, export_dtype = _host_params(net, params, dtype)
    layer_state = _host_state(state)
    shape = _input_shape(net, n_in, scaler)
    indices = net.n_index is not None
    if indices and scaler is not None and str(getattr(scaler, "method", "none")) != "none":
        raise SettingError("this network begins with an embedding: its inputs are integer "
                           "indices, which are never scaled; export without a scaler")
    graph = Graph(export_dtype, opset)
    x = "x"
    graph._taken.add(x)
    method = "none"
    if scaler is not None and not indices:
        method, shift, scale = _scale(graph, scaler, shape)
        shape = tuple(shift.shape)  # a dynamic size the scaler fixes is fixed
        if method != "none":
            x = graph.op("Div", graph.op("Sub", x, graph.constant(shift, "scaler.shift")),
                         graph.constant(scale, "scaler.scale"))
    try:
        y_shape = output_shape(net, shape)
    except ShapeError as exc:
        raise ShapeError(f"the network cannot take samples of shape {show_shape(shape)}: "
                         f"{exc}; pass n_in= with the per-sample shape it takes") from None
    y = graph.layer(net.config, host, x, state=layer_state)
    graph.op("Identity", y, output="y")
    n_out = y_shape[-1] if y_shape else None
    out_shape: list[Any] | None = ["batch", *y_shape]
    outputs = [onnx.helper.make_tensor_value_info("y", graph.elem_type, out_shape,
                                                  _OUTPUTS_DOC["y"])]
    if probabilities is not None:
        p = {"softmax": lambda: graph.op("Softmax", "y", axis=-1),
             "sigmoid": lambda: graph.op("Sigmoid", "y"),
             "identity": lambda: "y"}[probabilities]()
        graph.op("Identity", p, output="probabilities")
        if n_out == 1:
            above = graph.op("Greater", "y", graph.constant([threshold], "threshold"))
            one = graph.op("Cast", above, to=onnx.TensorProto.INT64)
            graph.op("Squeeze", one, graph.constant([1], "axis", dtype=np.int64), output="label")
        else:
            graph.op("ArgMax", "y", output="label", axis=-1, keepdims=0)
        outputs += [
            onnx.helper.make_tensor_value_info("probabilities", graph.elem_type, out_shape,
                                               _OUTPUTS_DOC["probabilities"]),
            onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["batch"],
                                               _OUTPUTS_DOC["label"]),
        ]
    dims = ["batch", *(f"dim{i + 1}" if n is None else n for i, n in enumerate(shape))]
    inputs = [onnx.helper.make_tensor_value_info(
        "x", onnx.TensorProto.INT64 if indices else graph.elem_type, dims,
        "integer indices into the embedding" if indices else
        "features" + (" (raw: the graph scales them)" if method != "none" else ""),
    )]
    body = onnx.helper.make_graph(graph.nodes, "bpcore", inputs, outputs, graph.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(
        body, opset_imports=opsets, producer_name="bpcore", producer_version=__version__,
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
        doc_string="exported by bpcore: " + "; ".join(
            f"{k}: {v}" for k, v in _OUTPUTS_DOC.items() if k == "y" or probabilities),
    )
    meta = {
        "bpcore_version": __version__,
        "bpcore_config": json.dumps(net.config),
        "scaler": method,
        "outputs": json.dumps({k: v for k, v in _OUTPUTS_DOC.items()
                               if k == "y" or probabilities is not None}),
    }
    if classes is not None:
        meta["classes"] = json.dumps([c.item() if hasattr(c, "item") else c for c in classes])
    onnx.helper.set_model_props(model, meta)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise SettingError(
            f"the network's parameters take {model.ByteSize() / 2**30:.1f} GiB, more than the "
            "2 GiB an ONNX file holds without external data; export a smaller network"
        )
    # fills in shapes the network does not know (an output width kept from the
    # input) and, strict, fails on a graph whose shapes do not fit
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    net: Layer,
    params: Any,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write ``net`` with ``params`` as an ONNX file, atomically.

    The model is :func:`to_onnx`'s (``options`` are its keywords: ``state``,
    ``n_in``, ``scaler``, ``probabilities``, ``threshold``, ``classes``,
    ``dtype``, ``opset``). It is written to a temporary file beside ``path``, flushed,
    ``fsync``-ed and renamed onto ``path`` (as :mod:`bpcore.checkpoint` writes),
    so a crash leaves the old file or the new one, never a torn one. For a
    :class:`bpcore.Model` use :meth:`~bpcore.Model.export_onnx`, which also
    puts its feature scaling and classes in.

    Parameters
    ----------
    net : Layer
    params
        The network's parameters, on any backend.
    path : str or path-like
        The file to write (conventionally ``*.onnx``); missing parent
        directories are created.
    overwrite : bool
        Replace an existing file; without it an existing file is an error.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ExportExistsError
        ``path`` exists and ``overwrite`` is false (also a ``FileExistsError``);
        checked before anything is built, and again just before the rename.
    SettingError, ShapeError, DTypeError, ArgumentError, ImportError
        As :func:`to_onnx`; nothing is written then.
    OSError
        The file cannot be written; any previous file there is untouched.

    Examples
    --------
    >>> import bpcore as bp, os, tempfile
    >>> from bpcore.onnx_export import export_onnx
    >>> net = bp.mlp([3, 4, 2], "relu")
    >>> export_onnx(net, net.init(0), os.path.join(tempfile.mkdtemp(), "net.onnx")).name
    'net.onnx'
    """
    target = _check_target(path, overwrite)
    model = to_onnx(net, params, **options)
    data = model.SerializeToString()
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data, overwrite)
    return target


# --------------------------------------------------------------------------
# helpers


def _host_params(net: Layer, params: Any, dtype: str | None) -> tuple[Any, np.dtype[Any]]:
    """The parameters as NumPy arrays, after bpcore's checks, and the export's dtype."""
    if dtype is not None and dtype not in ("float32", "float64"):
        raise DTypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if any(tree.is_array(a) for a in tree.leaves(params)):
        check_params(params, net)  # one backend, one float dtype, the network's shapes
        host = tree.map_arrays(to_numpy, params)
        found = next(a for a in tree.leaves(host) if tree.is_array(a)).dtype
        if dtype is not None and np.dtype(dtype) != found:
            raise DTypeError(
                f"the parameters are {found} but dtype={dtype!r} was asked; export in the "
                "parameters' dtype, or cast them first"
            )
        return host, np.dtype(found)
    return params, np.dtype(dtype or "float32")


def _host_state(state: Any) -> Any:
    """The layer-state tree (of a :class:`~bpcore.step.TrainState`, or as given) on the host."""
    if isinstance(state, TrainState):
        state = state.layers
    return None if state is None else tree.map_arrays(to_numpy, state)


def _input_shape(net: Layer, n_in: int | Sequence[int | None] | None,
                 scaler: Any) -> tuple[int | None, ...]:
    """The per-sample input shape (``None`` for a dynamic size): ``n_in`` if given,
    else what the network takes, the scaler's, a first reshape's, an embedding's."""
    want = input_shape(net)
    if n_in is not None:
        shape = (n_in,) if isinstance(n_in, (int, np.integer)) else tuple(n_in)
        if isinstance(n_in, (str, bytes)) or (not shape and net.n_index is None) or any(
                n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                   or n < 1) for n in shape):
            raise SettingError(f"n_in must be a positive int (or a per-sample shape of them, "
                               f"None for a dynamic size), got {n_in!r}")
        shape = tuple(None if n is None else int(n) for n in shape)
        if not fits(want, shape):
            assert want is not None
            raise SettingError(f"n_in={n_in!r} but the network takes samples of shape "
                               f"{show_shape(want)}; leave n_in out")
        return shape
    if want is not None:
        return tuple(want)
    shift = getattr(scaler, "shift", None)
    if shift is not None and net.n_index is None:
        return tuple(int(n) for n in np.shape(shift))
    first = net.config
    while isinstance(first, dict) and first.get("name") == "sequential" and first["layers"]:
        first = first["layers"][0]
    if isinstance(first, dict) and first.get("name") == "reshape":
        return (math.prod(int(n) for n in first["shape"]),)
    if net.n_index is not None:  # one index per sample, or a sequence of them
        for shape in ((), (None,)):
            with contextlib.suppress(ShapeError):
                output_shape(net, shape)
                return shape
    raise SettingError(
        "this network does not know its input size (it begins with a layer that "
        "keeps the width of its input); pass n_in=, e.g. n_in=64"
    )


def _scale(graph: Graph, scaler: Any, shape: tuple[int | None, ...]) -> tuple[str, Any, Any]:
    """Check a scaler against the input shape; its method name, and its shift and scale
    laid out as a sample (one per value, as :class:`bpcore.Model` scales)."""
    try:
        method = str(scaler.method)
        shift, scale = np.asarray(scaler.shift), np.asarray(scaler.scale)
    except AttributeError:
        raise ArgumentError(
            f"scaler must be a bpcore.data.Scaler (method, shift, scale), got "
            f"{type(scaler).__name__}"
        ) from None
    known = math.prod(n for n in shape if n is not None)
    missing = [i for i, n in enumerate(shape) if n is None]
    sample = list(shape)
    if len(missing) == 1 and known and shift.size % known == 0:
        sample[missing[0]] = shift.size // known  # the dynamic size the scaler fixes
    sizes = [n for n in sample if n is not None]
    if shift.shape != scale.shape or len(sizes) != len(sample) or shift.size != math.prod(sizes):
        raise ShapeError(
            f"the scaler has shift {shift.shape} and scale {scale.shape} but the network takes "
            f"samples of shape {show_shape(shape)}"
        )
    cast = (shift.astype(graph.dtype), scale.astype(graph.dtype))
    if not all(np.all(np.isfinite(a)) for a in cast) or np.any(cast[1] == 0):
        raise SettingError(f"the scaler's shift and scale must be finite in {graph.dtype} and "
                           "the scale non-zero")
    return method, cast[0].reshape(sample), cast[1].reshape(sample)


def _check_target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"path must be a file path, got {type(path).__name__}")
    target = Path(path).expanduser()
    if target.is_dir():
        raise SettingError(f"{target}: is a directory; give a file name such as "
                           f"{target / 'model.onnx'}")
    if target.exists() and not overwrite:
        raise _exists(target)
    return target


def _exists(target: Path) -> ExportExistsError:
    return ExportExistsError(f"{target}: the file exists; pass overwrite=True (bpcore export: "
                             "--overwrite) to replace it, or choose another path")


def _write_atomic(target: Path, data: bytes, overwrite: bool) -> None:
    """Temp file beside ``target``, fsync, os.replace, fsync the directory
    (the temp-file naming and clean-up of :mod:`bpcore.checkpoint`)."""
    from .checkpoint import _create_temp, _fsync_dir, _remove_stale_temps

    _remove_stale_temps(target.parent)
    tmp: str | None = None
    try:
        tmp, fd = _create_temp(target)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and target.exists():  # appeared while we were writing
            raise _exists(target)
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        if isinstance(exc, BpcoreError):
            raise
        raise OSError(f"{target}: could not write the ONNX file ({exc}); any previous file "
                      "there is untouched") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
