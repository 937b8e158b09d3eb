"""ONNX export: a bpcore network and its parameters as an ONNX model.

The graph is built with the ``onnx`` package (``onnx.helper``,
``onnx.numpy_helper``), imported only when an export runs: ``import bpcore``
never imports it. Install it with ``pip install "bpcore[onnx]"`` (which brings
``onnxruntime`` to run the file too).

What the file computes
----------------------
* **Input** ``x``: shape ``(batch, n_in)`` (``batch`` a dynamic dimension),
  of the parameters' dtype (float32 or float64). Given a ``scaler`` (as
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
output. A new kind is one function::

    @register_exporter("my_layer", keys=("width",))
    def _my_layer(graph, config, params, x):
        return graph.op("Mul", x, graph.constant(params["a"], "a"))

``keys`` lists the config keys the exporter understands: a config with any
other key is refused, so a layer kind that gains a hyper-parameter cannot be
exported with the old meaning. A kind with no exporter is a
:class:`~bpcore.errors.SettingError` naming it.

Kinds exported today: ``dense`` (``MatMul`` + ``Add``), ``identity``/``linear``
(no node), ``relu``, ``leaky_relu`` (``LeakyRelu`` with the layer's
``alpha``; in float64 ``Where(x > 0, x, alpha·x)``, as the node's ``alpha`` is
a float32), ``sigmoid``, ``tanh``, ``softmax`` (over the last axis), ``gelu``
(bpcore's tanh approximation: ``Gelu(approximate="tanh")`` in float32 from
opset 20, else its formula in elementary nodes), and ``sequential`` (the layers in turn),
so every network :func:`bpcore.mlp` and :func:`bpcore.layers.from_config`
build.
"""

from __future__ import annotations

import contextlib
import json
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

    def layer(self, config: Any, params: Any, x: str, segment: str | None = None) -> str:
        """Write the layer described by ``config`` (with its ``params``) on input ``x``;
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
        try:
            return fn(self, config, params, x)
        except BpcoreError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise SettingError(
                f"cannot export {where} to ONNX: its parameters do not fit its config ({exc!r})"
            ) from None
        finally:
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
    for i, (c, p) in enumerate(zip(layers, params)):
        x = graph.layer(c, p, x, str(i))
    return x


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


# --------------------------------------------------------------------------
# the model


def to_onnx(
    net: Layer,
    params: Any,
    *,
    n_in: int | Sequence[int] | None = None,
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
    n_in : int or sequence of int, optional
        Features per sample (or the per-sample shape); needed only when the
        network does not know it (``net.n_in`` is ``None``).
    scaler : bpcore.data.Scaler, optional
        Feature scaling ``(x - shift) / scale`` to put in front of the network,
        so the graph takes raw features.
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
        opset, ``probabilities`` or ``scaler``.
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
    shape = _input_shape(net, n_in)

    graph = Graph(export_dtype, opset)
    x = "x"
    graph._taken.add(x)
    method = "none"
    if scaler is not None:
        method = _scale(graph, scaler, shape)
        if method != "none":
            x = graph.op("Div", graph.op("Sub", x, graph.constant(scaler.shift, "scaler.shift")),
                         graph.constant(scaler.scale, "scaler.scale"))
    y = graph.layer(net.config, host, x)
    graph.op("Identity", y, output="y")
    n_out = net.n_out
    out_shape: list[Any] | None = ["batch", n_out] if n_out is not None else None
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
    inputs = [onnx.helper.make_tensor_value_info(
        "x", graph.elem_type, ["batch", *shape],
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

    The model is :func:`to_onnx`'s (``options`` are its keywords: ``n_in``,
    ``scaler``, ``probabilities``, ``threshold``, ``classes``, ``dtype``,
    ``opset``). It is written to a temporary file beside ``path``, flushed,
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


def _input_shape(net: Layer, n_in: int | Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample input shape: ``net.n_in``, or ``n_in`` where the net does not know it."""
    if n_in is None:
        if net.n_in is None:
            raise SettingError(
                "this network does not know its input size (it begins with a layer that "
                "keeps the width of its input); pass n_in=, e.g. n_in=64"
            )
        return (int(net.n_in),)
    shape = (n_in,) if isinstance(n_in, (int, np.integer)) else tuple(n_in)
    if not shape or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                        for n in shape):
        raise SettingError(f"n_in must be a positive int (or a shape of them), got {n_in!r}")
    if net.n_in is not None and shape != (net.n_in,):
        raise SettingError(f"n_in={n_in!r} but the network takes {net.n_in} features; "
                           "leave n_in out")
    return tuple(int(n) for n in shape)


def _scale(graph: Graph, scaler: Any, shape: tuple[int, ...]) -> str:
    """Check a scaler against the input shape; its method name."""
    try:
        method = str(scaler.method)
        shift, scale = np.asarray(scaler.shift), np.asarray(scaler.scale)
    except AttributeError:
        raise ArgumentError(
            f"scaler must be a bpcore.data.Scaler (method, shift, scale), got "
            f"{type(scaler).__name__}"
        ) from None
    if shift.shape != shape or scale.shape != shape:
        raise ShapeError(
            f"the scaler has shift {shift.shape} and scale {scale.shape} but the network takes "
            f"samples of shape {shape}"
        )
    cast = (shift.astype(graph.dtype), scale.astype(graph.dtype))
    if not all(np.all(np.isfinite(a)) for a in cast) or np.any(cast[1] == 0):
        raise SettingError(f"the scaler's shift and scale must be finite in {graph.dtype} and "
                           "the scale non-zero")
    return method


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
