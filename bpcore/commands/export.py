"""``bpcore export``: a checkpoint as an ONNX file.

``bpcore export run.npz run.onnx`` loads the checkpoint that ``bpcore train
--save`` (or :meth:`bpcore.Model.save`) wrote and writes the model with
:meth:`bpcore.Model.export_onnx`: raw features in (the feature scaling is in
the graph), ``y`` out, and for a classifier ``probabilities`` and ``label``.
The output path is checked before the checkpoint is read: an existing file is
replaced only with ``--overwrite``, and never the checkpoint itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import OutputExistsError, SettingError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write a checkpoint (from `bpcore train --save`) as an ONNX model file"

EPILOG = """\
examples:
  bpcore train --save digits.npz && bpcore export digits.npz digits.onnx
  bpcore export digits.npz digits.onnx --overwrite --opset 20

The file takes raw features `x` (batch, n_in), or (batch, *sample) for a
network of convolutions or recurrent layers, in the checkpoint's dtype (int64
indices for an embedding); the network runs in evaluation mode (batch norm's
running statistics, no dropout). Its outputs are `y` (the network's output:
logits for a linear last layer) and, for a classifier, `probabilities` and
`label` (the class index; the classes are in the model's metadata, key
"classes"). Needs the onnx package (pip install onnx).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT OUT.onnx [--overwrite] [--opset N]``."""
    from ..onnx_export import DEFAULT_OPSET, MIN_OPSET

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint written by `bpcore train --save` or Model.save")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write (atomically)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT.onnx if it exists (never the checkpoint)")
    parser.add_argument("--opset", type=int, metavar="N", default=None,
                        help=f"ONNX opset, {MIN_OPSET} or later (default: {DEFAULT_OPSET}; "
                        "from 20 a float32 GELU is one Gelu node)")


def run(args: argparse.Namespace) -> int:
    """Check the output path, load the checkpoint, write the ONNX file; print one line."""
    from ..onnx_export import DEFAULT_OPSET, require_onnx

    _check_output(args)
    require_onnx()
    from ..model import Model

    model = Model.load(args.checkpoint, backend="numpy")
    path = model.export_onnx(args.output, overwrite=args.overwrite,
                             opset=DEFAULT_OPSET if args.opset is None else args.opset)
    outputs = "y, probabilities, label" if model.n_classes is not None else "y"
    graph = require_onnx().load(str(path), load_external_data=False).graph
    dims = " x ".join(d.dim_param or str(d.dim_value)
                      for d in graph.input[0].type.tensor_type.shape.dim)
    what = "int64 indices" if model.n_index is not None else f"{model.dtype}, raw features"
    print(f"wrote {path}: input x ({dims}, {what}), outputs {outputs}")
    return 0


def _check_output(args: argparse.Namespace) -> None:
    """OUT.onnx is a file path bpcore may write, not the checkpoint, not existing
    without --overwrite: checked before any work, as ``bpcore train`` checks its outputs."""
    path = Path(args.output).expanduser()
    name = f"OUT.onnx {args.output}"
    if path.resolve() == Path(args.checkpoint).expanduser().resolve():
        raise SettingError(f"{name}: that is the CHECKPOINT; writing it would destroy the "
                           "input: choose another path")
    if path.is_dir():
        raise SettingError(f"{name}: is a directory; give a file path, e.g. "
                           f"{path / 'model.onnx'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SettingError(f"{name}: the directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SettingError(f"{name}: cannot write into {parent} (permission denied)")
    if path.exists() and not args.overwrite:
        raise OutputExistsError(f"{name}: the file exists; pass --overwrite to replace it, or "
                              "choose another path")
