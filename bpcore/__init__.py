"""bpcore: backpropagation written once against the Python Array API standard.

The same explicit forward and backward kernels run on NumPy, CuPy, PyTorch,
JAX and array-api-strict arrays. This module re-exports the public API; it
defines nothing of its own.
"""

from __future__ import annotations

from . import checks, dispatch, init, layers, losses, optim, tree
from ._version import __version__
from .backend import (
    Array,
    Backend,
    BackendInfo,
    backends,
    get_backend,
    namespace,
    set_backend,
    to_backend,
    to_numpy,
    use_backend,
)
from .compile import compile
from .errors import (
    ArgumentError,
    BackendError,
    BackendMismatchError,
    BpcoreError,
    CheckpointError,
    DataError,
    DTypeError,
    LabelError,
    NonFiniteError,
    SettingError,
    ShapeError,
)
from .layers import (
    Layer,
    activation,
    dense,
    from_config,
    gelu,
    identity,
    leaky_relu,
    mlp,
    relu,
    sequential,
    sigmoid,
    softmax,
    tanh,
)
from .losses import Loss, binary_cross_entropy, get_loss, half_sse, mse, softmax_cross_entropy
from .mixed import mixed_precision_step
from .model import Model
from .optim import Optimizer, adam, adamw, get_optimizer, momentum, sgd
from .step import predict, train_loop, train_step, value_and_grad

__all__ = [
    "ArgumentError",
    "Array",
    "Backend",
    "BackendError",
    "BackendInfo",
    "BackendMismatchError",
    "BpcoreError",
    "CheckpointError",
    "DTypeError",
    "DataError",
    "LabelError",
    "Layer",
    "Loss",
    "Model",
    "NonFiniteError",
    "Optimizer",
    "SettingError",
    "ShapeError",
    "__version__",
    "activation",
    "adam",
    "adamw",
    "backends",
    "binary_cross_entropy",
    "checks",
    "compile",
    "dispatch",
    "dense",
    "from_config",
    "gelu",
    "get_backend",
    "get_loss",
    "get_optimizer",
    "half_sse",
    "identity",
    "init",
    "layers",
    "leaky_relu",
    "losses",
    "mixed_precision_step",
    "mlp",
    "momentum",
    "mse",
    "namespace",
    "optim",
    "predict",
    "relu",
    "sequential",
    "set_backend",
    "sgd",
    "sigmoid",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
    "to_backend",
    "to_numpy",
    "train_loop",
    "train_step",
    "tree",
    "use_backend",
    "value_and_grad",
]
