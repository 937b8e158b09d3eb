"""``Model``: ``fit`` / ``evaluate`` / ``predict`` / ``save`` / ``load`` over the functional core.

A thin stateful wrapper for people who want ``model.fit(X, y)``. It adds no
maths of its own: the network is a :class:`~bpcore.layers.Layer`, training
runs the step driver's loop (:func:`bpcore.train_loop`, or
:func:`bpcore.compile` with ``compile=True``) through
:func:`bpcore.training.train_epoch`, predictions go through the same driver,
labels are encoded by :mod:`bpcore.data.targets`, scaling and batching come
from :mod:`bpcore.data`, files from :mod:`bpcore.checkpoint`. What it adds is
bookkeeping: validating the data set once, the feature scaler fitted on the
training data, the data moved to the backend once, the epoch counter, the
history and the callbacks, so that a saved run resumes bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import tree
from .backend import Array, Backend, dtype_name, get_backend, resolve_dtype, to_numpy, use_backend
from .callbacks import History, call_hook, check_callbacks
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_features, check_params, check_targets, check_weights
from .data import Scaler, fit_scaler
from .data.targets import LabelEncoding, encode_labels
from .errors import (
    ArgumentError,
    BpcoreError,
    DTypeError,
    LabelError,
    NonFiniteError,
    SettingError,
    ShapeError,
)
from .layers import Layer, from_config, mlp
from .layers.activations import sigmoid_forward, softmax_forward
from .layers.core import input_shape
from .losses import LossFunction, get_loss
from .metrics import count_correct, predicted_labels
from .optim import Optimizer, get_optimizer
from .progress import epoch_bar, progress_wanted
from .step import Driver, TrainState, train_loop
from .training import GROUP_STEPS, batch_groups, train_epoch
from .values import integer

__all__ = ["DEFAULT_LR", "RECIPE", "Model", "NotFittedError", "optimizer_from_config"]

log = logging.getLogger("bpcore.model")

#: The default training recipe, shared by ``Model`` and ``bpcore train``: AdamW,
#: learning rate 3e-3, weight decay 0.2, batches of 32, 30 epochs. Tuned on the
#: digits main job (64-512-10 ReLU; test accuracy median 98.6% over seeds 0-4 in
#: about a second of training here). The functional optimizers (``bp.adamw()``)
#: keep PyTorch's defaults instead (lr 1e-3, weight decay 0.01), so that they
#: compare one to one with ``torch.optim``.
RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.2, "batch_size": 32, "epochs": 30,
}

#: Learning rate used when ``lr`` is not given, per optimizer.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 3e-3, "adamw": 3e-3}
#: Weight decay used when ``weight_decay`` is not given (the others: none).
DEFAULT_WEIGHT_DECAY = {"adamw": 0.2}

#: Losses whose value is a sum over the batch (not a mean); the history and
#: :meth:`Model.evaluate` report them per sample so every loss reads alike.
_SUM_LOSSES = frozenset({"half_sse"})

#: Rows per forward pass in evaluate / predict.
_CHUNK = 4096


class NotFittedError(BpcoreError, ValueError):
    """The model needs ``fit`` first (its feature scaling is fitted on training data)."""


class _Prepared(NamedTuple):
    """A data set on the model's backend, validated and scaled."""

    x: Array  # (n, *sample): (n, n_in) for a dense network; the model's dtype
    t: Array  # targets as the loss wants them
    labels: Array | None  # int (n,) output indices for accuracy, else None
    weights: Array | None  # (n,) sample weights, else None


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from its ``Optimizer.config`` (as stored in a checkpoint)."""
    try:
        kwargs = {k: v for k, v in config.items() if k != "name"}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return get_optimizer(config["name"], **kwargs)
    except (KeyError, TypeError) as exc:
        raise SettingError(f"not an optimizer config ({exc}): {config!r}") from None


def _int(name: str, value: Any, low: int) -> int:
    """An integral number ``>= low`` (any integer type) as an int, or a clear error."""
    return integer(value, name, low=low)


class Model:
    """A network with its optimizer, feature scaling, classes, backend and history.

    Parameters
    ----------
    layers : list of int, or Layer
        Sizes such as ``[64, 512, 10]`` (inputs first; built with
        :func:`bpcore.mlp`), or a ready network (``bp.sequential(...)``).
        A network that begins with :func:`bpcore.embedding` takes integer
        indices, ``X`` of shape ``(samples,)`` or ``(samples, time)``: they are
        checked (integers in range) and passed as they are, never scaled or
        cast to float.
    activation, output : str
        Hidden and output activations when ``layers`` is a list of sizes.
        Keep ``output="identity"`` (logits) for the ``*_cross_entropy`` losses.
    loss : str or Loss
        ``softmax_cross_entropy`` (default), ``binary_cross_entropy``, ``mse``, ``half_sse``.
    optimizer : str or Optimizer
        ``adamw`` (default), ``adam``, ``sgd``, ``momentum``, or a ready optimizer.
    lr, weight_decay : float, optional
        The optimizer's; by default those of :data:`RECIPE` for adamw (3e-3,
        0.2), 3e-3 for adam, 0.1 for sgd, 0.05 for momentum.
    batch_size : int
        Samples per training step (default 32; ``fit`` may override it).
    backend, device : optional
        Where the parameters and data live (``"numpy"``, ``"torch"``, ``"jax"``,
        ``"cupy"``, ``"array_api_strict"``); the current default backend
        (:func:`bpcore.get_backend`) if omitted.
    dtype : str
        ``"float32"`` or ``"float64"``.
    seed : int
        Seeds the initial weights and every epoch's batch order.
    scaling : str
        Feature scaling fitted on the training data: ``standard``, ``minmax`` or
        ``none`` (always ``none`` for the integer inputs of an embedding).
    compile : bool
        Train with :func:`bpcore.compile` (``loop=True``): on JAX each group of
        up to 32 batches runs as one ``lax.scan`` in one XLA program, on
        PyTorch the ``torch.compile``'d step runs per batch; NumPy has no
        compiler. Results equal the eager ones to rounding.

    Attributes
    ----------
    net : Layer
    params, opt_state
        The current parameters (a tuple of dicts) and optimizer state. ``fit``
        updates these arrays in place on NumPy, PyTorch, CuPy and
        array-api-strict (and donates them on a compiled JAX step): copy them
        (``model.snapshot()``) to keep the old values.
    epoch : int
        Epochs trained so far.
    history : History
        One record per epoch (``history.history`` is a dict of lists).
    classes_ : numpy.ndarray or None
        The class labels of a classifier, in the order of its outputs.
    scaler : bpcore.data.Scaler or None
        The feature scaling, fitted by the first :meth:`fit`.
    n_classes : int or None
        Classes for a classifier, ``None`` for regression.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 8, dtype=float)
    >>> y = np.array(["no", "yes", "yes", "no"] * 8)
    >>> model = bp.Model([2, 16, 2], activation="tanh", lr=0.05, batch_size=8)
    >>> history = model.fit(X, y, epochs=100, verbose=0)
    >>> model.predict(X[:4]).tolist()
    ['no', 'yes', 'yes', 'no']
    """

    def __init__(
        self,
        layers: Sequence[int] | Layer,
        *,
        activation: str = "relu",
        output: str = "identity",
        loss: str | LossFunction = "softmax_cross_entropy",
        optimizer: str | Optimizer = RECIPE["optimizer"],
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int = RECIPE["batch_size"],
        backend: str | None = None,
        device: Any = None,
        dtype: str = "float32",
        seed: int = 0,
        scaling: str = "standard",
        compile: bool = False,
    ) -> None:
        if isinstance(layers, Layer):
            self.net = layers
            self.sizes: list[int] | None = _dense_sizes(layers.config)
        else:
            if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
                raise ArgumentError(
                    "Model(layers) takes a list of sizes such as [64, 128, 10] or a "
                    f"bpcore Layer, got {type(layers).__name__}"
                )
            self.sizes = [_int("a layer size", n, 1) for n in layers]
            self.net = mlp(self.sizes, activation, output)
        if self.net.n_out is None or (self.net.n_in is None and self.net.in_shape is None
                                      and self.net.out_shape is None):
            raise ShapeError(
                "the Model needs a network whose input and output sizes are known; "
                "begin and end it with dense layers (or, for a convolutional network, "
                "begin it with a convolution or bp.reshape and end it with a dense layer)"
            )
        self.loss = get_loss(loss)
        if isinstance(optimizer, Optimizer):
            if lr is not None or weight_decay is not None:
                raise SettingError(
                    "lr and weight_decay are set on a ready Optimizer; pass them to it, "
                    "e.g. bp.adam(lr=1e-3), or pass the optimizer by name"
                )
            self.optimizer = optimizer
        else:
            if optimizer not in DEFAULT_LR:
                raise SettingError(
                    f"unknown optimizer {optimizer!r}; choose one of sgd, momentum, adam, adamw"
                )
            kwargs: dict[str, Any] = {"lr": DEFAULT_LR[optimizer] if lr is None else lr}
            if weight_decay is not None or optimizer in DEFAULT_WEIGHT_DECAY:
                kwargs["weight_decay"] = (DEFAULT_WEIGHT_DECAY[optimizer]
                                          if weight_decay is None else weight_decay)
            self.optimizer = get_optimizer(optimizer, **kwargs)
        self.batch_size = _int("batch_size", batch_size, 1)
        self.seed = _int("seed", seed, 0)
        if scaling not in ("standard", "minmax", "none"):
            raise SettingError(
                f"unknown scaling {scaling!r}; choose one of standard, minmax, none"
            )
        #: Rows of the embedding a network begins with (its inputs are integer
        #: indices, never scaled nor cast to float), else None.
        self.n_index: int | None = self.net.n_index
        # integer indices are not scaled: any scaling asked for is moot
        self.scaling = "none" if self.n_index is not None else scaling
        self.backend = _backend(backend, device)
        self.xp: ModuleType = self.backend.xp
        self._dtype = resolve_dtype(self.xp, dtype)
        self.dtype = dtype_name(self._dtype, self.xp)
        self.params: Any = self.net.init(
            self.seed, xp=self.xp, dtype=self._dtype, device=self.backend.device
        )
        #: the optimizer's state; for a network with layer state (batch norm,
        #: dropout) the :class:`~bpcore.step.TrainState` that also holds it
        self.opt_state: Any = Driver(self.net, self.loss, self.optimizer).init_state(
            self.params, seed=self.seed)
        self.epoch = 0
        self.history = History()
        self.scaler: Scaler | None = None
        self.encoding: LabelEncoding | None = None
        self.n_classes: int | None = self.net.n_out if self.loss.targets == "classes" else None
        #: Free JSON-able data saved with the model (``bpcore train`` keeps its
        #: run settings here, so ``--resume`` can check them).
        self.extra: dict[str, Any] = {}
        #: Whether training runs the compiled loop (:func:`bpcore.compile`).
        self.compiled = bool(compile)
        #: The MPI communicator of data-parallel training (:meth:`distribute`), else None.
        self.comm: Any = None
        self._grad_sync: Any = None
        self._loops: dict[bool, Any] = {}
        self._driver = Driver(self.net, self.loss)
        check_params(self.params)

    # ------------------------------------------------------------------
    # the public API

    @property
    def classes_(self) -> np.ndarray | None:
        """The class labels, in the order of the outputs (``None`` for regression)."""
        return None if self.encoding is None else self.encoding.classes

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = RECIPE["epochs"],
        batch_size: int | None = None,
        validation_split: float = 0.0,
        validation_data: tuple[Any, ...] | None = None,
        shuffle: bool = True,
        sample_weight: Any = None,
        verbose: int | str = "auto",
        callbacks: Any = (),
        progress: bool | None = None,
    ) -> History:
        """Train for ``epochs`` more epochs; returns the :class:`History` (of every epoch).

        The data set is validated once (shapes, dtypes, NaN/Inf, labels), the
        feature scaler is fitted on ``X`` at the first call (and reused after,
        so a resumed run scales alike), the labels are encoded (any labels:
        ints with gaps, strings; the classes are kept in :attr:`classes_`),
        and the data move to the backend once. Each epoch takes its batches
        in the seeded order of :func:`bpcore.data.batch_indices` and trains on
        them through :func:`bpcore.training.train_epoch`.

        Parameters
        ----------
        X : array, shape (n, n_in)
            Features, NumPy (host) or the model's backend; any real dtype.
        y : array, shape (n,) or (n, n_out)
            Class labels, or real targets for ``mse`` / ``half_sse`` /
            ``binary_cross_entropy``.
        epochs : int
            Epochs to run now (default 30); numbering continues from :attr:`epoch`.
        batch_size : int, optional
            Samples per step for this fit (default: the model's).
        validation_split : float
            Hold out this fraction of ``X``, ``y`` (their last rows, before
            shuffling, as Keras does) for validation.
        validation_data : (X_val, y_val) or (X_val, y_val, weights), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        shuffle : bool
            Shuffle the batches of each epoch (seeded by the model's seed and
            the epoch number).
        sample_weight : array, shape (n,), optional
            Per-sample weights of the loss (``>= 0``): each batch's loss is
            the weighted mean.
        verbose : {"auto", 0, 1, 2}
            0: silent; 1: a progress bar per epoch; 2: one line per epoch on
            stderr; "auto": the bar when stderr is a terminal. Every epoch is
            also logged (logger ``bpcore.model``) unless 0.
        callbacks : sequence
            Functions ``callback(model, record)`` (returning ``True`` stops) or
            objects with ``on_train_begin`` / ``on_epoch_end`` / ``on_train_end``,
            e.g. :class:`bpcore.callbacks.EarlyStopping`.
        progress : bool, optional
            The older spelling of ``verbose`` (``True`` is 1, ``False`` is 0).

        Raises
        ------
        ShapeError, DTypeError, LabelError, NonFiniteError, SettingError
            For bad data or settings, before any training. ``NonFiniteError``
            also when training diverges: it names the epoch and batch, and the
            model keeps the last finite parameters and optimizer state.
        """
        epochs = _int("epochs", epochs, 0)
        batch = self.batch_size if batch_size is None else _int("batch_size", batch_size, 1)
        shown = _verbosity(verbose, progress)
        hooks = check_callbacks(callbacks)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise SettingError(f"shuffle must be True or False, got {shuffle!r}")
        if not isinstance(validation_split, (int, float)) or isinstance(validation_split, bool) \
                or not 0.0 <= validation_split < 1.0:
            raise SettingError(
                f"validation_split must be a fraction in [0, 1), got {validation_split!r}"
            )
        if validation_split and validation_data is not None:
            raise SettingError("give validation_split or validation_data, not both")
        n_all = _rows(X)
        if validation_split:
            n_val = max(1, round(n_all * validation_split))
            if n_val >= n_all:
                raise SettingError(
                    f"validation_split={validation_split} of {n_all} samples leaves none to "
                    "train on"
                )
            X_host, y_host = _host_array(X, "X"), _host_array(y, "y")
            validation_data = (X_host[n_all - n_val:], y_host[n_all - n_val:])
            X, y = X_host[:n_all - n_val], y_host[:n_all - n_val]
            if sample_weight is not None:
                w_host = _host_array(sample_weight, "sample_weight")
                validation_data = (*validation_data, w_host[n_all - n_val:])
                sample_weight = w_host[:n_all - n_val]
        train = self._prepare(X, y, fit=True, weights=sample_weight)
        val = None
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list))
                    and len(validation_data) in (2, 3)):
                raise SettingError("validation_data must be (X_val, y_val) or "
                                   "(X_val, y_val, weights)")
            if _rows(validation_data[0]) > 0:
                val = self._prepare(*validation_data[:2], what="validation ",
                                    weights=validation_data[2] if len(validation_data) == 3
                                    else None)
        n = train.x.shape[0]
        lead = self.comm is None or self.comm.rank == 0
        if self.comm is not None:
            _check_ranks_agree(self.comm, n)
        bar_on = shown.bar and lead
        last = self.epoch + epochs
        call_hook(hooks, "on_train_begin", self)
        try:
            for _ in range(epochs):
                record = self._epoch(train, val, n, batch, last, bar_on, shuffle)
                self.history.append(record)
                self.epoch += 1
                if lead and shown.log:
                    line = _summary(record, last)
                    log.info(line)
                    if shown.line:
                        print(line, file=sys.stderr)
                if call_hook(hooks, "on_epoch_end", self, record):
                    break
        finally:
            call_hook(hooks, "on_train_end", self)
        return self.history

    def snapshot(self) -> tuple[Any, Any]:
        """Copies of the parameters and optimizer state (for :meth:`restore`)."""
        xp = self.xp
        return tree.map_arrays(lambda a: xp.asarray(a, copy=True), (self.params, self.opt_state))

    def restore(self, kept: tuple[Any, Any]) -> None:
        """Put back parameters and optimizer state taken by :meth:`snapshot`."""
        self.params, self.opt_state = kept

    def distribute(self, comm: Any = None, *, dtype: str | None = None) -> Model:
        """Train data-parallel over MPI from now on (run under ``mpiexec -n N``).

        Every rank runs the same program on the same data set. This call
        broadcasts rank 0's parameters, optimizer state, seed, epoch and
        feature scaling to all ranks (so they start identical whatever their
        own seeds); from then on :meth:`fit` gives each rank a disjoint shard
        of every epoch's shuffled order (``batch_size`` rows per rank per step:
        the global batch is ``batch_size * size``), averages the gradients over
        the ranks between backward and the update (:mod:`bpcore.distributed`),
        and gathers the loss and accuracy from all ranks; :meth:`evaluate` also
        gathers. Only rank 0 draws progress and logs; write checkpoints from
        rank 0 (``if model.comm.rank == 0: model.save(...)``): they load in a
        single-process run. ``fit`` callbacks run on every rank; one that stops
        training must decide alike on all (e.g. from the gathered metrics).
        Batch norm is synchronised (:func:`bpcore.distributed.sync_batch_norm`):
        its training statistics are the global batch's, so the running
        statistics stay identical on every rank and N ranks train as one
        process does with the global batch.

        Parameters
        ----------
        comm : bpcore.distributed.Communicator or mpi4py communicator, optional
            ``MPI.COMM_WORLD`` by default.
        dtype : {None, "float16", "bfloat16"}
            Send the gradients in a reduced precision (see
            :meth:`bpcore.distributed.Communicator.allreduce`).

        Returns
        -------
        Model
            ``self``.
        """
        from .distributed import Communicator, communicator, sync_batch_norm

        if not isinstance(comm, Communicator):
            comm = communicator(comm)
        op = "sum" if self.loss.name in _SUM_LOSSES else "mean"
        sync = comm.grad_transform(op=op, dtype=dtype)
        self.net = sync_batch_norm(self.net, comm, sync)  # its config stays the same
        scaler = None if self.scaler is None else self.scaler.to_dict()
        classes = None if self.encoding is None else self.encoding.to_list()
        self.params, self.opt_state, self.seed, self.epoch, scaler, classes = comm.bcast(
            (self.params, self.opt_state, self.seed, self.epoch, scaler, classes)
        )
        self.scaler = None if scaler is None else Scaler.from_dict(scaler)
        self.encoding = None if classes is None else LabelEncoding.from_list(classes)
        check_params(self.params)
        self.comm, self._grad_sync, self._loops = comm, sync, {}
        return self

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float | None]:
        """Loss and accuracy on a data set (scaled as the training data were).

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float or None}``; the loss is per
            sample (``half_sse`` summed over a sample's outputs), accuracy is
            ``None`` for regression.
        """
        return self._evaluate(self._prepare(X, y, what="", weights=sample_weight))

    def predict(self, X: Any) -> Any:
        """Class labels of a classifier (its :attr:`classes_`), else the outputs ``(n, n_out)``.

        A NumPy input gives a NumPy result; an array of the model's backend
        gives one of that backend (class indices decoded on the host only
        when the classes are not ``0 .. k-1``).
        """
        host = _is_host(X)
        y = self._outputs(X)
        if self.n_classes is None:
            return to_numpy(y) if host else y
        labels = predicted_labels(y, threshold=self._threshold(), xp=self.xp)
        if self.encoding is not None and not self.encoding.identity:
            return self.encoding.decode(to_numpy(labels))
        return to_numpy(labels) if host else labels

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape ``(n, n_out)`` (columns in the order of
        :attr:`classes_`): the softmax of the logits (the sigmoid for one output
        or ``binary_cross_entropy``); the outputs themselves if the network
        already ends in softmax or sigmoid."""
        host = _is_host(X)
        z = self._outputs(X)
        kind = self._probabilities()
        if kind == "identity":
            p = z
        elif kind == "sigmoid":
            p, _ = sigmoid_forward(z, xp=self.xp)
        else:
            p, _ = softmax_forward(z, xp=self.xp)
        return to_numpy(p) if host else p

    def _probabilities(self) -> str:
        """How :meth:`predict_proba` turns outputs into probabilities: ``identity``
        (the network ends in softmax or sigmoid), ``sigmoid`` or ``softmax``."""
        if _last_activation(self.net.config) in ("softmax", "sigmoid"):
            return "identity"
        return "sigmoid" if self.net.n_out == 1 or self.loss.targets == "binary" else "softmax"

    def export_onnx(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                    opset: int | None = None) -> Path:
        """Write the model as an ONNX file (atomically; an existing file only with
        ``overwrite``): input ``x`` of raw features ``(batch, n_in)`` (or ``(batch,
        *sample)``; integer indices for an embedding) in the model's dtype (the
        feature scaling is folded into the graph), output ``y`` (the network's
        outputs, in evaluation mode: batch norm's running statistics, no dropout),
        and for a classifier ``probabilities`` (as :meth:`predict_proba`) and
        ``label`` (the index into :attr:`classes_`, as :meth:`predict`). See
        :mod:`bpcore.onnx_export`; needs the ``onnx`` package."""
        from .onnx_export import DEFAULT_OPSET, export_onnx

        if self.scaler is None and self.scaling != "none":
            raise NotFittedError(f"this model scales its inputs ({self.scaling}) with "
                                 "statistics of the training data: fit(X, y) before exporting")
        classifier = self.n_classes is not None
        return export_onnx(
            self.net, self.params, path, overwrite=overwrite, scaler=self.scaler,
            state=self.opt_state if isinstance(self.opt_state, TrainState) else None,
            probabilities=self._probabilities() if classifier else None,
            threshold=self._threshold(), classes=self.classes_ if classifier else None,
            opset=DEFAULT_OPSET if opset is None else opset,
        )

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write a checkpoint (parameters, optimizer state, architecture, dtype,
        epoch, scaler, classes, history...) atomically; :meth:`load` resumes from it."""
        return save_checkpoint(
            path,
            params=self.params,
            opt_state=self.opt_state,
            model_config=self.net.config,
            optimizer_config=self.optimizer.config,
            epoch=self.epoch,
            meta=self._meta(),
            overwrite=overwrite,
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], backend: str | None = None, device: Any = None,
        *, compile: bool = False,
    ) -> Model:
        """Rebuild a model from :meth:`save`'s checkpoint, on ``backend`` (the
        current default if omitted) and ``device``; ``compile`` as for :class:`Model`.

        Raises
        ------
        bpcore.errors.CheckpointError
            For a missing, corrupt or foreign file (the message names it).
        """
        from .errors import CheckpointError

        if not isinstance(path, (str, os.PathLike)):
            raise CheckpointError(
                f"Model.load takes a file path, got {type(path).__name__}"
            )
        target = _backend(backend, device)
        ck = load_checkpoint(path, backend=target.name, device=target.device)
        meta = ck.meta
        try:
            model = cls(
                from_config(ck.model_config),
                loss=meta.get("loss", "softmax_cross_entropy"),
                optimizer=optimizer_from_config(ck.optimizer_config),
                batch_size=int(meta.get("batch_size", RECIPE["batch_size"])),
                backend=target.name,
                device=target.device,
                dtype=ck.dtype,
                seed=int(meta.get("seed", 0)),
                scaling=str(meta.get("scaling", "standard")),
                compile=compile,
            )
            model._restore_meta(meta)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: cannot rebuild the model it stores ({exc})") from None
        model.params, model.opt_state, model.epoch = ck.params, ck.opt_state, ck.epoch
        check_params(model.params)
        return model

    def __repr__(self) -> str:
        arch = self.sizes if self.sizes is not None else self.net.name
        return (
            f"Model({arch}, loss={self.loss.name!r}, optimizer={self.optimizer.name!r}, "
            f"backend={self.backend.name!r}, dtype={self.dtype!r}, epoch={self.epoch})"
        )

    # pickling and copying rebuild the network from its config, the arrays from the host

    def __getstate__(self) -> dict[str, Any]:
        if self.comm is not None:
            raise SettingError("a data-parallel Model cannot be pickled; pickle it before "
                               "distribute() or save() a checkpoint instead")
        if self.loss.name not in ("half_sse", "mse", "softmax_cross_entropy",
                                  "binary_cross_entropy"):
            raise SettingError(f"a Model with the custom loss {self.loss.name!r} cannot be "
                               "pickled; save() a checkpoint and rebuild it with the loss")
        try:
            from_config(self.net.config)
        except (ValueError, TypeError, KeyError) as exc:
            raise SettingError(
                f"this Model's network cannot be rebuilt from its config ({exc}), so it "
                "cannot be pickled"
            ) from None
        return {
            "config": self.net.config, "optimizer": self.optimizer.config,
            "params": tree.map_arrays(to_numpy, self.params),
            "opt_state": tree.map_arrays(to_numpy, self.opt_state),
            "backend": self.backend.name, "device": _device_name(self.backend.device),
            "dtype": self.dtype, "epoch": self.epoch, "meta": self._meta(),
            "compiled": self.compiled,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .backend import to_backend

        meta = state["meta"]
        Model.__init__(
            self, from_config(state["config"]), loss=meta["loss"],
            optimizer=optimizer_from_config(state["optimizer"]),
            batch_size=meta["batch_size"], backend=state["backend"], device=state["device"],
            dtype=state["dtype"], seed=meta["seed"], scaling=meta["scaling"],
            compile=state["compiled"],
        )
        self._restore_meta(meta)
        self.params = to_backend(state["params"], self.backend.name, device=self.backend.device)
        self.opt_state = to_backend(state["opt_state"], self.backend.name,
                                    device=self.backend.device)
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------
    # one epoch

    @property
    def _ref(self) -> Array:
        """A current parameter array: data must match its backend, device and dtype
        (looked up each time: a compiled JAX step deletes the arrays it was given)."""
        return check_params(self.params)[1]

    def _loop(self, weighted: bool) -> Any:
        """The training loop (built once): eager, or compiled with :func:`bpcore.compile`
        (the data set is validated once by :meth:`fit`, so neither checks batches)."""
        loop = self._loops.get(weighted)
        if loop is None:
            if self.compiled:
                from .compile import compile as compile_step

                loop = compile_step(self.net, self.loss, self.optimizer, validate=False,
                                    grad_transform=self._grad_sync, loop=True)
            else:
                loop = train_loop(self.net, self.loss, self.optimizer, validate=False,
                                  inplace=True, grad_transform=self._grad_sync)
            self._loops[weighted] = loop
        return loop

    def _epoch(
        self, train: _Prepared, val: _Prepared | None, n: int, batch: int, last: int,
        bar_on: bool, shuffle: bool,
    ) -> dict[str, Any]:
        from .distributed import shard_batches

        epoch = self.epoch
        start = time.perf_counter()
        shards = None
        if self.comm is not None:
            shards = shard_batches(n, batch, rank=self.comm.rank, size=self.comm.size,
                                   seed=self.seed, epoch=epoch, shuffle=shuffle)
        groups = batch_groups(n, batch, seed=self.seed, epoch=epoch, shuffle=shuffle,
                              shards=shards, steps=GROUP_STEPS)
        bar = epoch_bar(n, f"epoch {epoch + 1}/{last}", enabled=bar_on)

        def before(group: Any) -> None:
            if group.share is not None:
                self._grad_sync.scale = group.share

        def after(group: Any, params: Any, state: Any) -> None:
            # kept current at every group: a compiled step consumes the arrays it is
            # given, so an interrupted epoch must not leave the model holding them
            self.params, self.opt_state = params, state
            bar.update(int(group.rows.size))

        agree = None if self.comm is None else (lambda ok: self.comm.sum([0.0 if ok else 1.0])[0]
                                                == 0.0)
        try:
            # a diverging run overflows: NumPy's warnings give way to the clear
            # NonFiniteError that names the batch
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                try:
                    _, _, values, sizes = train_epoch(
                        self._loop(train.weights is not None), self.params, self.opt_state,
                        train.x, train.t, groups, xp=self.xp, device=self.backend.device,
                        weights=train.weights, epoch=epoch, agree=agree,
                        before_group=before, after_group=after,
                    )
                except NonFiniteError as exc:
                    self.params, self.opt_state = exc.params, exc.state  # type: ignore[attr-defined]
                    lr = self.optimizer.config.get("lr")
                    raise NonFiniteError(f"{exc}; lower the learning rate (now {lr}; try "
                                         f"{_fmt_lr(lr)})") from None
            train_seconds = time.perf_counter() - start
            loss = self._mean_loss(values, sizes, stacked=True)
            accuracy = (self._evaluate(train, loss=False)["accuracy"]
                        if train.labels is not None else None)
            scores = self._evaluate(val) if val is not None else {}
            if bar_on and accuracy is not None:
                bar.set_postfix_str(f"loss {loss:.4f}, acc {100 * accuracy:.2f}%")
        finally:
            bar.close()
        return {
            "epoch": epoch + 1,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": scores.get("loss"),
            "val_accuracy": scores.get("accuracy"),
            "seconds": time.perf_counter() - start,
            "samples_per_s": n / train_seconds if train_seconds > 0 else None,
        }

    def _mean_loss(self, values: list[Array], sizes: list[int], *,
                   stacked: bool = False) -> float:
        """The per-sample loss over batches of the given sizes (one sync); over
        every rank's batches when training data-parallel."""
        if values:
            parts = [to_numpy(v).reshape(-1) for v in values] if stacked else \
                [to_numpy(self.xp.stack(values)).reshape(-1)]
            v = np.concatenate(parts).astype(np.float64)
            w = np.asarray(sizes, dtype=np.float64)
            num = float(v.sum() if self.loss.name in _SUM_LOSSES else (v * w).sum())
            den = float(w.sum())
        else:
            num = den = 0.0
        if self.comm is not None:
            num, den = self.comm.sum([num, den])
        return float(num / den) if den else math.nan

    def _evaluate(self, data: _Prepared, *, loss: bool = True) -> dict[str, float | None]:
        from .distributed import shard_range

        xp, n = self.xp, data.x.shape[0]
        values, sizes, correct = [], [], []
        first, stop = 0, n
        if self.comm is not None:  # each rank its own rows; the sums are gathered below
            first, stop = shard_range(n, rank=self.comm.rank, size=self.comm.size)
        for a in range(first, stop, _CHUNK):
            b = min(a + _CHUNK, stop)  # array-api-strict refuses out-of-range stops
            y = self._driver.predict(self.params, data.x[a:b, ...], self.opt_state)
            if loss:
                w = None if data.weights is None else data.weights[a:b, ...]
                values.append(self.loss(y, data.t[a:b, ...], xp=xp, weights=w)[0])
                sizes.append(b - a)
            if data.labels is not None:
                correct.append(count_correct(
                    y, data.labels[a:b], threshold=self._threshold(), xp=xp
                ))
        out: dict[str, float | None] = {"loss": self._mean_loss(values, sizes) if loss else None}
        right = float(np.sum(to_numpy(xp.stack(correct)))) if correct else 0.0
        rows = float(stop - first)
        if self.comm is not None and data.labels is not None:
            right, rows = self.comm.sum([right, rows])
        out["accuracy"] = right / rows if data.labels is not None and rows else None
        return out

    def _outputs(self, X: Any) -> Array:
        x = self._scaled(self._checked_host(X))
        n = x.shape[0]
        parts = [self._driver.predict(self.params, x[a:min(a + _CHUNK, n), ...], self.opt_state)
                 for a in range(0, n, _CHUNK)]
        if not parts:
            return self.xp.zeros((0, self.net.n_out), dtype=self._dtype,
                                 device=self.backend.device)
        return parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=0)

    def _index_dtype(self) -> type[np.signedinteger[Any]]:
        """Host dtype for labels: int64, or int32 where JAX runs without 64-bit mode."""
        if self.backend.name == "jax":
            import jax

            if not jax.config.read("jax_enable_x64"):
                return np.int32
        return np.int64

    def _threshold(self) -> float:
        """Decision threshold for one output: 0 for logits, 0.5 for probabilities
        (or a regression on 0/1 targets)."""
        return 0.0 if self.loss.name == "binary_cross_entropy" else 0.5

    # ------------------------------------------------------------------
    # data: validated once, scaled, moved to the backend once

    def _checked_host(self, X: Any, what: str = "") -> np.ndarray:
        """``X`` as float64 on the host, after the shape, dtype and NaN/Inf checks."""
        host = _host_array(X, f"{what}X")
        if self.n_index is not None:
            return self._checked_indices(host, what)
        sample = input_shape(self.net)  # None: a network that takes any shape
        flat = sample is not None and len(sample) == 1
        if (flat and host.ndim != 2) or (sample is None and host.ndim < 2):
            raise ShapeError(
                f"{what}X must be 2-D (samples, features), got shape {host.shape}; "
                + ("for one sample use X[None, :]" if host.ndim == 1
                   else "flatten each sample, e.g. X.reshape(len(X), -1)")
            )
        if host.dtype.kind not in "biuf":
            raise DTypeError(f"{what}X must hold real numbers, got dtype {host.dtype}")
        host = host.astype(np.float64, copy=False)
        # shapes (through the network's shape inference) and NaN/Inf, with the
        # messages of the public checks
        check_features(host, np.zeros(1), self.net.n_in, model=self.net)
        return host

    def _checked_indices(self, host: np.ndarray, what: str) -> np.ndarray:
        """``X`` of integer indices for the embedding the network begins with, as
        the backend's index dtype on the host, after the dtype, shape and range checks."""
        if host.dtype.kind not in "iu":
            raise DTypeError(
                f"{what}X must hold integer indices (this network begins with an embedding "
                f"of {self.n_index} rows), got dtype {host.dtype}; cast with "
                "X.astype(np.int64)"
            )
        if host.ndim not in (1, 2):
            raise ShapeError(f"{what}X must be indices of shape (samples,) or (samples, time) "
                             f"for a network that begins with an embedding, got {host.shape}")
        host = host.astype(self._index_dtype(), copy=False)
        if host.shape[0]:
            check_features(host, np.zeros(1), None, model=self.net)  # range, shapes
        return host

    def _scaled(self, host: np.ndarray, *, fit: bool = False) -> Array:
        """Scale checked host features (fitting the scaler first if asked) and move
        them; integer indices (an embedding first) are moved as they are."""
        if self.n_index is not None:
            if fit and host.shape[0] == 0:
                raise ShapeError("X holds no samples; fit needs at least one")
            return self.backend.asarray(host)
        sample = host.shape[1:]
        host = host.reshape(host.shape[0], -1)  # n-D samples: one scaling per value
        if self.scaler is None:
            if fit:
                if host.shape[0] == 0:
                    raise ShapeError("X holds no samples; fit needs at least one")
                self.scaler = fit_scaler(host, self.scaling)
            elif self.scaling != "none":
                raise NotFittedError(
                    f"this model scales its inputs ({self.scaling}) with statistics of the "
                    "training data, which it has not seen yet: call fit(X, y) first, or "
                    "build it with scaling='none'"
                )
        if self.scaler is not None:
            host = self.scaler.transform(host)
        with np.errstate(over="ignore", invalid="ignore"):  # checked on the next line
            scaled = host.astype(self.dtype).reshape(host.shape[0], *sample)
        if not np.all(np.isfinite(scaled)):
            raise NonFiniteError(
                f"X holds values too large for {self.dtype} after scaling (up to "
                f"{np.max(np.abs(host)):.3g}); scale the features (scaling='standard') or "
                "use dtype='float64'"
            )
        return self.backend.asarray(scaled)

    def _prepare(self, X: Any, y: Any, *, fit: bool = False, what: str = "",
                 weights: Any = None) -> _Prepared:
        t_host = _host_array(y, f"{what}y")
        n = _rows(X)
        if t_host.ndim not in (1, 2) or t_host.shape[0] != n:
            raise ShapeError(
                f"{n} {what}samples but {what}targets of shape {t_host.shape}; give one "
                "target (or label) per row of X"
            )
        if n == 0 and fit:
            raise ShapeError(f"{what}X holds no samples; fit needs at least one")
        x_host = self._checked_host(X, what)
        n_out, kind = self.net.n_out, self.loss.targets
        assert n_out is not None
        labels = None
        n_classes: int | None = None
        w = None
        if weights is not None:
            w_host = _host_array(weights, f"{what}sample_weight")
            if w_host.ndim != 1 or w_host.shape[0] != n or w_host.dtype.kind not in "biuf":
                raise ShapeError(f"{what}sample_weight must hold one number per sample, "
                                 f"shape ({n},), got {w_host.shape} {w_host.dtype}")
            w = self.backend.asarray(w_host.astype(self.dtype))
            check_weights(w, self._ref, n)
        if t_host.ndim == 1 and (t_host.dtype.kind in "biuOSU" or kind == "classes"):
            encoding = self._encoding(t_host, fit=fit, what=what)
            index = encoding.encode(t_host, f"{what}y").astype(self._index_dtype())
            labels = self.backend.asarray(index)
            if kind == "classes":
                t, n_classes = labels, n_out
            elif n_out == 1:
                t, n_classes = self.backend.asarray(index.astype(self.dtype)[:, None]), 2
            else:
                onehot = np.zeros((n, n_out), dtype=self.dtype)
                onehot[np.arange(n), index] = 1
                t, n_classes = self.backend.asarray(onehot), n_out
        else:
            if t_host.dtype.kind not in "biuf":
                raise DTypeError(f"{what}y must hold numbers, got dtype {t_host.dtype}")
            if t_host.ndim == 1 and n_out == 1:
                t_host = t_host[:, None]
            if t_host.ndim == 2:  # real targets (1-D floats fail the check below)
                t_host = t_host.astype(self.dtype)
            t = self.backend.asarray(t_host)
            check_targets(t, self._ref, n, n_out, kind)
            if kind == "classes":
                labels = self.backend.asarray(np.argmax(t_host, axis=1).astype(
                    self._index_dtype()))
                n_classes = n_out
            elif kind == "binary" and n_out == 1:
                labels = self.backend.asarray((t_host[:, 0] >= 0.5).astype(self._index_dtype()))
                n_classes = 2
        # only now that features and targets are valid: fit the scaler, move X
        x = self._scaled(x_host, fit=fit)
        if fit:
            self.n_classes = n_classes
        return _Prepared(x, t, labels, w)

    def _encoding(self, y: np.ndarray, *, fit: bool, what: str) -> LabelEncoding:
        """The classes (found at the first fit, fixed after)."""
        if self.encoding is None:
            n_out = self.net.n_out
            assert n_out is not None
            if not fit:
                return encode_labels(y, n_out, what=f"{what}y")
            try:
                self.encoding = encode_labels(y, n_out, what=f"{what}y")
            except LabelError as exc:
                raise LabelError(_label_fix(str(exc), self.loss.name, n_out)) from None
        return self.encoding

    def _meta(self) -> dict[str, Any]:
        return {
            "loss": self.loss.name,
            "scaler": None if self.scaler is None else self.scaler.to_dict(),
            "scaling": self.scaling,
            "n_classes": self.n_classes,
            "classes": None if self.encoding is None else self.encoding.to_list(),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "history": self.history.records,
            "sizes": self.sizes,
            "backend": self.backend.name,
            "extra": self.extra,
        }

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.history = History(meta.get("history") or [])
        if meta.get("scaler") is not None:
            self.scaler = Scaler.from_dict(meta["scaler"])
        if "n_classes" in meta:
            self.n_classes = meta["n_classes"]
        if meta.get("classes") is not None:
            self.encoding = LabelEncoding.from_list(meta["classes"])
        if meta.get("sizes") is not None:
            self.sizes = list(meta["sizes"])
        self.extra = dict(meta.get("extra") or {})


# --------------------------------------------------------------------------
# helpers


class _Verbosity(NamedTuple):
    bar: bool  # a progress bar per epoch
    line: bool  # one printed line per epoch
    log: bool  # one logged line per epoch (logger bpcore.model)


def _verbosity(verbose: Any, progress: bool | None) -> _Verbosity:
    if verbose != "auto" and (isinstance(verbose, bool) or verbose not in (0, 1, 2)):
        raise SettingError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if progress is not None:
        return _Verbosity(bool(progress), False, True)
    if verbose == "auto":
        return _Verbosity(progress_wanted(None), False, True)
    return _Verbosity(verbose == 1, verbose == 2, verbose != 0)


def _label_fix(message: str, loss: str, n_out: int) -> str:
    if n_out == 1 and "network has" in message:
        return (f"{message}; a network with one output tells two classes apart (labels 0 or "
                "1); give the last layer one output per class and use softmax_cross_entropy")
    return message


def _backend(name: str | None, device: Any) -> Backend:
    if name is None:
        current = get_backend()
        if device is None:
            return current
        name = current.name
    with use_backend(name, device) as b:
        return b


def _device_name(device: Any) -> Any:
    """A device as something that pickles and ``use_backend`` understands."""
    if device is None or isinstance(device, (str, int)):
        return device
    text = str(device)
    platform, index = getattr(device, "platform", None), getattr(device, "id", None)
    if platform is not None and index is not None:  # a JAX device
        return f"{platform}:{index}"
    return text


def _check_ranks_agree(comm: Any, n: int) -> None:
    """Every rank must fit on the same data set (each takes its own shard of it)."""
    from .distributed import DistributedError

    counts = comm.allgather(n)
    if len(set(counts)) > 1:
        raise DistributedError(
            f"data-parallel fit got {counts[comm.rank]} samples on rank {comm.rank} but "
            f"{counts} across the ranks; give every rank the whole training set (each "
            "rank takes its own shard of every epoch)"
        )
    if n < comm.size:
        raise DistributedError(
            f"{n} training samples cannot be shared among {comm.size} ranks; use fewer "
            "ranks or more data"
        )


def _is_host(x: Any) -> bool:
    return isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x)


def _host_array(x: Any, what: str) -> np.ndarray:
    """A NumPy view or copy of ``x`` (any backend's array, a list, a NumPy array)."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_array_api_obj(x):
        return np.asarray(to_numpy(x))
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DTypeError(f"{what} is not an array ({type(x).__name__}: {exc})") from None


def _rows(x: Any) -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        try:
            shape = np.shape(x)
        except (TypeError, ValueError):
            raise DTypeError(f"X is not an array ({type(x).__name__})") from None
    if len(shape) == 0:
        got = "None" if x is None else f"a scalar ({type(x).__name__})"
        raise ShapeError(f"X must be 2-D (samples, features), got {got}")
    return int(shape[0])


def _dense_sizes(config: Any) -> list[int] | None:
    """``[n_in, hidden..., n_out]`` of a sequential net of dense layers (else None)."""
    if not isinstance(config, dict) or config.get("name") != "sequential":
        return None
    dense = [c for c in config.get("layers", [])
             if isinstance(c, dict) and c.get("name") == "dense"]
    if not dense:
        return None
    return [int(dense[0]["n_in"]), *(int(c["n_out"]) for c in dense)]


def _last_activation(config: Any) -> str | None:
    if isinstance(config, dict) and config.get("name") == "sequential" and config.get("layers"):
        return _last_activation(config["layers"][-1])
    return config.get("name") if isinstance(config, dict) else None


def _fmt_lr(lr: Any) -> str:
    try:
        return f"{float(lr) / 10:g}"
    except (TypeError, ValueError):
        return "0.001"


def _summary(record: dict[str, Any], last: int) -> str:
    parts = [f"epoch {record['epoch']}/{last}", f"loss {record['loss']:.4f}"]
    if record.get("accuracy") is not None:
        parts.append(f"acc {100 * record['accuracy']:.2f}%")
    if record.get("val_loss") is not None:
        parts.append(f"val_loss {record['val_loss']:.4f}")
    if record.get("val_accuracy") is not None:
        parts.append(f"val_acc {100 * record['val_accuracy']:.2f}%")
    parts.append(f"{record['seconds']:.2f} s")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)

