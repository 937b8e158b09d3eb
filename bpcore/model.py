"""``Model``: ``fit`` / ``evaluate`` / ``predict`` / ``save`` / ``load`` over the functional core.

A thin stateful wrapper for people who want ``model.fit(X, y)``. It adds no
maths of its own: the network is a :class:`~bpcore.layers.Layer`, each batch
goes through one step built by :func:`bpcore.train_step`, probabilities come
from bpcore's softmax / sigmoid kernels, scaling and batching from
:mod:`bpcore.data`, and files from :mod:`bpcore.checkpoint`. What it does add
is bookkeeping: validating the data set once, fitting the feature scaler on
the training data, moving the data to the backend once, the epoch counter and
the history, so that a saved run resumes bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from .backend import Array, Backend, dtype_name, get_backend, resolve_dtype, to_numpy, use_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_features, check_params, check_targets
from .data import Scaler, batch_indices, fit_scaler
from .distributed import Communicator, DistributedError, shard_batches, shard_range
from .errors import BpcoreError, DTypeError, LabelError, NonFiniteError, ShapeError
from .layers import Layer, from_config, mlp
from .layers.activations import sigmoid_forward, softmax_forward
from .losses import Loss, get_loss
from .metrics import count_correct, predicted_labels
from .optim import Optimizer, get_optimizer
from .progress import epoch_bar, progress_wanted
from .step import train_step

__all__ = ["DEFAULT_LR", "Model", "NotFittedError", "optimizer_from_config"]

log = logging.getLogger("bpcore.model")

#: Learning rate used when ``lr`` is not given, per optimizer.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3}

#: Losses whose value is a sum over the batch (not a mean); the history and
#: :meth:`Model.evaluate` report them per sample so every loss reads alike.
_SUM_LOSSES = frozenset({"half_sse"})

#: Rows per forward pass in evaluate / predict.
_CHUNK = 4096

Callback = Callable[["Model", dict[str, Any]], Any]


class NotFittedError(BpcoreError, ValueError):
    """The model needs ``fit`` first (its feature scaling is fitted on training data)."""


class _Prepared(NamedTuple):
    """A data set on the model's backend, validated and scaled."""

    x: Array  # (n, n_in), the model's dtype
    t: Array  # targets as the loss wants them
    labels: Array | None  # int64 (n,) class labels for accuracy, else None


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from its ``Optimizer.config`` (as stored in a checkpoint)."""
    try:
        kwargs = {k: v for k, v in config.items() if k != "name"}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return get_optimizer(config["name"], **kwargs)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an optimizer config ({exc}): {config!r}") from None


class Model:
    """A network with its optimizer, feature scaling, backend and training history.

    Parameters
    ----------
    layers : list of int, or Layer
        Sizes such as ``[64, 128, 10]`` (inputs first; built with
        :func:`bpcore.mlp`), or a ready network (``bp.sequential(...)``).
    activation, output : str
        Hidden and output activations when ``layers`` is a list of sizes.
        Keep ``output="identity"`` (logits) for the ``*_cross_entropy`` losses.
    loss : str or Loss
        ``softmax_cross_entropy`` (default), ``binary_cross_entropy``, ``mse``, ``half_sse``.
    optimizer : str or Optimizer
        ``adam`` (default), ``adamw``, ``sgd``, ``momentum``, or a ready optimizer.
    lr : float, optional
        Learning rate; by default 1e-3 for adam/adamw, 0.1 for sgd, 0.05 for momentum.
    weight_decay : float, optional
        The optimizer's weight decay (its own default if omitted: 0.01 for
        adamw, 0 otherwise).
    batch_size : int
        Samples per training step.
    backend, device : optional
        Where the parameters and data live (``"numpy"``, ``"torch"``, ``"jax"``,
        ``"cupy"``, ``"array_api_strict"``); the current default backend
        (:func:`bpcore.get_backend`) if omitted.
    dtype : str
        ``"float32"`` or ``"float64"``.
    seed : int
        Seeds the initial weights and every epoch's batch order
        (:func:`bpcore.data.batch_indices`).
    scaling : str
        Feature scaling fitted on the training data: ``standard``, ``minmax`` or ``none``.
    compile : bool
        Train with the compiled step of :func:`bpcore.compile` (``jax.jit`` on
        JAX, ``torch.compile`` on PyTorch, the fused in-place step on NumPy;
        the eager step, with a warning, elsewhere). Each new batch shape
        compiles once (the last, smaller batch of an epoch too); the results
        are those of the eager step to rounding. The step updates the
        parameter arrays in place (NumPy, PyTorch) or donates them (JAX):
        use :attr:`params` after ``fit``, not arrays taken from it before.

    Attributes
    ----------
    net : Layer
    params, opt_state
        The current parameters (a tuple of dicts) and optimizer state.
    epoch : int
        Epochs trained so far.
    history : list of dict
        One record per epoch: ``epoch, loss, accuracy, val_loss, val_accuracy,
        seconds, samples_per_s``.
    scaler : bpcore.data.Scaler or None
        The feature scaling, fitted by the first :meth:`fit`.
    n_classes : int or None
        Classes for a classifier, ``None`` for regression.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 8, dtype=float)
    >>> y = np.array([0, 1, 1, 0] * 8)
    >>> model = bp.Model([2, 16, 2], activation="tanh", lr=0.05, batch_size=8)
    >>> history = model.fit(X, y, epochs=100, progress=False)
    >>> model.predict(X[:4]).tolist()
    [0, 1, 1, 0]
    """

    def __init__(
        self,
        layers: Sequence[int] | Layer,
        *,
        activation: str = "relu",
        output: str = "identity",
        loss: str | Loss = "softmax_cross_entropy",
        optimizer: str | Optimizer = "adam",
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int = 32,
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
                raise TypeError(
                    "Model(layers) takes a list of sizes such as [64, 128, 10] or a "
                    f"bpcore Layer, got {type(layers).__name__}"
                )
            sizes = list(layers)
            self.net = mlp(
                [int(n) if isinstance(n, np.integer) else n for n in sizes], activation, output
            )
            self.sizes = [int(n) for n in sizes]
        if self.net.n_in is None or self.net.n_out is None:
            raise ShapeError(
                "the Model needs a network whose input and output sizes are known; "
                "begin and end it with dense layers"
            )
        self.loss = get_loss(loss)
        if isinstance(optimizer, Optimizer):
            if lr is not None or weight_decay is not None:
                raise ValueError(
                    "lr and weight_decay are set on a ready Optimizer; pass them to it, "
                    "e.g. bp.adam(lr=1e-3), or pass the optimizer by name"
                )
            self.optimizer = optimizer
        else:
            if optimizer not in DEFAULT_LR:
                raise ValueError(
                    f"unknown optimizer {optimizer!r}; choose one of sgd, momentum, adam, adamw"
                )
            kwargs: dict[str, Any] = {"lr": DEFAULT_LR[optimizer] if lr is None else lr}
            if weight_decay is not None:
                kwargs["weight_decay"] = weight_decay
            self.optimizer = get_optimizer(optimizer, **kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if scaling not in ("standard", "minmax", "none"):
            raise ValueError(
                f"unknown scaling {scaling!r}; choose one of standard, minmax, none"
            )
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.scaling = scaling
        self.backend = _backend(backend, device)
        self.xp: ModuleType = self.backend.xp
        self._dtype = resolve_dtype(self.xp, dtype)
        self.dtype = dtype_name(self._dtype, self.xp)
        self.params: Any = self.net.init(
            self.seed, xp=self.xp, dtype=self._dtype, device=self.backend.device
        )
        self.opt_state: Any = self.optimizer.init(self.params)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.scaler: Scaler | None = None
        self.n_classes: int | None = self.net.n_out if self.loss.targets == "classes" else None
        #: Free JSON-able data saved with the model (``bpcore train`` keeps its
        #: run settings here, so ``--resume`` can check them).
        self.extra: dict[str, Any] = {}
        #: Whether training runs the compiled step (:func:`bpcore.compile`).
        self.compiled = bool(compile)
        self._step = self._make_step()
        check_params(self.params)
        #: The MPI communicator of data-parallel training (:meth:`distribute`), else None.
        self.comm: Communicator | None = None
        self._grad_sync: Any = None

    # ------------------------------------------------------------------
    # the public API

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 10,
        validation_data: tuple[Any, Any] | None = None,
        progress: bool | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> list[dict[str, Any]]:
        """Train for ``epochs`` more epochs; returns the whole history.

        The data set is validated once (shapes, dtypes, NaN/Inf, label range),
        the feature scaler is fitted on ``X`` at the first call (and reused
        after, so a resumed run scales alike), and the data move to the
        backend once; each epoch then takes the batches of
        :func:`bpcore.data.batch_indices` (``seed``, epoch number) with
        ``xp.take`` and runs one :func:`bpcore.train_step` per batch.

        Parameters
        ----------
        X : array, shape (n, n_in)
            Features, NumPy (host) or the model's backend; any real dtype.
        y : array, shape (n,) or (n, n_out)
            Integer class labels (``0 .. n_out - 1``; ``0/1`` for one output),
            or real targets for the ``mse`` / ``half_sse`` /
            ``binary_cross_entropy`` losses.
        epochs : int
            Epochs to run now; numbering continues from :attr:`epoch`.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        progress : bool, optional
            A tqdm bar per epoch; by default only when stderr is a terminal.
        callbacks : sequence of callables
            ``callback(model, record)`` after each epoch; returning ``True`` stops training.

        Returns
        -------
        list of dict
            :attr:`history`: ``epoch`` (1-based), ``loss`` (mean over the
            epoch's batches), ``accuracy`` (on the training data after the
            epoch; ``None`` for regression), ``val_loss``, ``val_accuracy``
            (``None`` without validation data), ``seconds`` (the whole epoch)
            and ``samples_per_s`` (training steps only).

        Raises
        ------
        ShapeError, DTypeError, LabelError, NonFiniteError
            For bad data, before any training; ``NonFiniteError`` also if the
            loss becomes NaN or infinite (lower the learning rate).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        train = self._prepare(X, y, fit=True)
        val = None
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            if _rows(validation_data[0]) > 0:
                val = self._prepare(*validation_data, what="validation ")
        n = train.x.shape[0]
        lead = self.comm is None or self.comm.rank == 0
        if self.comm is not None:
            _check_ranks_agree(self.comm, n)
        draw = progress_wanted(progress) and lead
        last = self.epoch + int(epochs)
        for _ in range(int(epochs)):
            record = self._epoch(train, val, n, last, draw)
            self.history.append(record)
            self.epoch += 1
            if lead:
                log.info(_summary(record, last))
            if any([cb(self, record) is True for cb in callbacks]):
                break
        return self.history

    def distribute(self, comm: Any = None, *, dtype: str | None = None) -> Model:
        """Train data-parallel over MPI from now on (run under ``mpiexec -n N``).

        Every rank runs the same program on the same data set. This call
        broadcasts rank 0's parameters, optimizer state, seed, epoch and
        feature scaling to all ranks (so they start identical whatever their
        own seeds); from then on :meth:`fit`
        gives each rank a disjoint shard of every epoch's shuffled order
        (``batch_size`` rows per rank per step: the global batch is
        ``batch_size * size``), averages the gradients over the ranks between
        backward and the update (:mod:`bpcore.distributed`), and gathers the
        loss and accuracy from all ranks; :meth:`evaluate` also gathers. Only
        rank 0 draws progress and logs; write checkpoints from rank 0
        (``if model.comm.rank == 0: model.save(...)``): they load in a
        single-process run. ``fit`` callbacks run on every rank; one that stops
        training must decide alike on all (e.g. from the gathered metrics).

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
        from .distributed import communicator

        if not isinstance(comm, Communicator):
            comm = communicator(comm)
        op = "sum" if self.loss.name in _SUM_LOSSES else "mean"
        sync = comm.grad_transform(op=op, dtype=dtype)
        scaler = None if self.scaler is None else self.scaler.to_dict()
        self.params, self.opt_state, self.seed, self.epoch, scaler = comm.bcast(
            (self.params, self.opt_state, self.seed, self.epoch, scaler)
        )
        self.scaler = None if scaler is None else Scaler.from_dict(scaler)
        check_params(self.params)
        self._step = self._make_step(sync)
        self.comm, self._grad_sync = comm, sync
        return self

    def evaluate(self, X: Any, y: Any) -> dict[str, float | None]:
        """Loss and accuracy on a data set (scaled as the training data were).

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float or None}``; the loss is per
            sample (``half_sse`` summed over a sample's outputs), accuracy is
            ``None`` for regression.
        """
        return self._evaluate(self._prepare(X, y, what=""))

    def predict(self, X: Any) -> Any:
        """Class labels (int64, shape ``(n,)``) of a classifier, else the outputs ``(n, n_out)``.

        A NumPy input gives a NumPy result; an array of the model's backend
        gives one of that backend.
        """
        host = _is_host(X)
        y = self._outputs(X)
        if self.n_classes is not None:
            y = predicted_labels(y, threshold=self._threshold(), xp=self.xp)
        return to_numpy(y) if host else y

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape ``(n, n_out)``: the softmax of the logits
        (the sigmoid for one output or ``binary_cross_entropy``); the outputs
        themselves if the network already ends in softmax or sigmoid."""
        host = _is_host(X)
        z = self._outputs(X)
        last = _last_activation(self.net.config)
        if last in ("softmax", "sigmoid"):
            p = z
        elif self.net.n_out == 1 or self.loss.targets == "binary":
            p, _ = sigmoid_forward(z, xp=self.xp)
        else:
            p, _ = softmax_forward(z, xp=self.xp)
        return to_numpy(p) if host else p

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write a checkpoint (parameters, optimizer state, architecture, dtype,
        epoch, scaler, history...) atomically; :meth:`load` resumes from it."""
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
        target = _backend(backend, device)
        ck = load_checkpoint(path, backend=target.name, device=target.device)
        meta = ck.meta
        try:
            model = cls(
                from_config(ck.model_config),
                loss=meta.get("loss", "softmax_cross_entropy"),
                optimizer=optimizer_from_config(ck.optimizer_config),
                batch_size=int(meta.get("batch_size", 32)),
                backend=target.name,
                device=target.device,
                dtype=ck.dtype,
                seed=int(meta.get("seed", 0)),
                scaling=str(meta.get("scaling", "standard")),
                compile=compile,
            )
        except (ValueError, TypeError) as exc:
            from .errors import CheckpointError

            raise CheckpointError(f"{path}: cannot rebuild the model it stores ({exc})") from None
        model.params, model.opt_state, model.epoch = ck.params, ck.opt_state, ck.epoch
        check_params(model.params)
        model.history = [dict(r) for r in meta.get("history", [])]
        if meta.get("scaler") is not None:
            model.scaler = Scaler.from_dict(meta["scaler"])
        if "n_classes" in meta:
            model.n_classes = meta["n_classes"]
        if meta.get("sizes") is not None:
            model.sizes = list(meta["sizes"])
        model.extra = dict(meta.get("extra") or {})
        return model

    def __repr__(self) -> str:
        arch = self.sizes if self.sizes is not None else self.net.name
        return (
            f"Model({arch}, loss={self.loss.name!r}, optimizer={self.optimizer.name!r}, "
            f"backend={self.backend.name!r}, dtype={self.dtype!r}, epoch={self.epoch})"
        )

    # ------------------------------------------------------------------
    # one epoch

    @property
    def _ref(self) -> Array:
        """A current parameter array: data must match its backend, device and dtype
        (looked up each time: a compiled JAX step deletes the arrays it was given)."""
        return check_params(self.params)[1]

    def _make_step(self, grad_transform: Any = None) -> Any:
        """The training step: eager, or compiled with :func:`bpcore.compile` (the data
        set is validated once by :meth:`fit`, so neither checks batches)."""
        if self.compiled:
            from .compile import compile as compile_step

            return compile_step(self.net, self.loss, self.optimizer, validate=False,
                                grad_transform=grad_transform)
        return train_step(self.net, self.loss, self.optimizer, validate=False,
                          grad_transform=grad_transform)

    def _epoch(
        self, train: _Prepared, val: _Prepared | None, n: int, last: int, draw: bool
    ) -> dict[str, Any]:
        epoch = self.epoch
        start = time.perf_counter()
        bar = epoch_bar(n, f"epoch {epoch + 1}/{last}", enabled=draw)
        try:
            # a diverging run overflows: NumPy's warnings give way to the clear
            # NonFiniteError below, raised once the epoch's loss is known
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = self._train_epoch(train, n, bar, draw)
            train_seconds = time.perf_counter() - start
            if not math.isfinite(loss):
                lr = self.optimizer.config.get("lr")
                raise NonFiniteError(
                    f"the training loss became {loss} in epoch {epoch + 1}: the steps are "
                    f"too large for this problem; lower the learning rate (now {lr}; "
                    f"try {_fmt_lr(lr)})"
                )
            accuracy = (self._evaluate(train, loss=False)["accuracy"]
                        if train.labels is not None else None)
            scores = self._evaluate(val) if val is not None else {}
            if draw and accuracy is not None:
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

    def _train_epoch(self, train: _Prepared, n: int, bar: Any, draw: bool) -> float:
        """One pass of training steps over the epoch's batches; the mean loss."""
        xp, step = self.xp, self._step
        shares: list[float] = []
        if self.comm is None:
            chunks = [c for c in batch_indices(n, self.batch_size, seed=self.seed,
                                               epoch=self.epoch) if len(c)]
        else:  # this rank's shard of each global batch, and its share of the rows
            parts = shard_batches(n, self.batch_size, rank=self.comm.rank,
                                  size=self.comm.size, seed=self.seed, epoch=self.epoch)
            chunks, shares = [p for p, _ in parts], [w for _, w in parts]
        # the whole epoch's order moves to the device once; batches are slices of it
        order = xp.asarray(np.concatenate(chunks), device=self.backend.device)
        params, state = self.params, self.opt_state
        values, sizes, at, shown = [], [], 0, time.perf_counter()
        for i, chunk in enumerate(chunks):
            if shares:
                self._grad_sync.scale = shares[i]
            idx = order[at:at + len(chunk)]
            at += len(chunk)
            params, state, value = step(
                params, state, xp.take(train.x, idx, axis=0), xp.take(train.t, idx, axis=0)
            )
            # kept current at every step: a compiled step consumes the arrays it is
            # given, so an interrupted epoch must not leave the model holding them
            self.params, self.opt_state = params, state
            values.append(value)
            sizes.append(len(chunk))
            if draw:
                bar.update(len(chunk))
                now = time.perf_counter()
                if now - shown > 0.25:
                    shown = now
                    bar.set_postfix_str(f"loss {self._per_sample(float(value), len(chunk)):.4f}")
        self.params, self.opt_state = params, state
        return self._mean_loss(values, sizes)

    def _per_sample(self, value: float, rows: int) -> float:
        return value / rows if self.loss.name in _SUM_LOSSES else value

    def _mean_loss(self, values: list[Array], sizes: list[int]) -> float:
        """The per-sample loss over batches of the given sizes (one sync);
        over every rank's batches when training data-parallel."""
        if self.comm is not None:
            num = den = 0.0
            if values:
                v = to_numpy(self.xp.stack(values)).astype(np.float64)
                w = np.asarray(sizes, dtype=np.float64)
                num = float(v.sum() if self.loss.name in _SUM_LOSSES else (v * w).sum())
                den = float(w.sum())
            num, den = self.comm.sum([num, den])
            return float(num / den) if den else math.nan
        if not values:
            return math.nan
        v = to_numpy(self.xp.stack(values)).astype(np.float64)
        w = np.asarray(sizes, dtype=np.float64)
        if self.loss.name in _SUM_LOSSES:
            return float(v.sum() / w.sum())
        return float((v * w).sum() / w.sum())

    def _evaluate(self, data: _Prepared, *, loss: bool = True) -> dict[str, float | None]:
        xp, n = self.xp, data.x.shape[0]
        values, sizes, correct = [], [], []
        first, stop = 0, n
        if self.comm is not None:  # each rank its own rows; the sums are gathered below
            first, stop = shard_range(n, rank=self.comm.rank, size=self.comm.size)
        for a in range(first, stop, _CHUNK):
            b = min(a + _CHUNK, stop)  # array-api-strict refuses out-of-range stops
            x = data.x[a:b, ...]
            y, _ = self.net.forward(self.params, x, xp=xp)
            if loss:
                values.append(self.loss.fn(y, data.t[a:b, ...], xp=xp)[0])
                sizes.append(b - a)
            if data.labels is not None:
                correct.append(count_correct(
                    y, data.labels[a:b], threshold=self._threshold(), xp=xp
                ))
        out: dict[str, float | None] = {"loss": self._mean_loss(values, sizes) if loss else None}
        if self.comm is not None and data.labels is not None:
            right = float(np.sum(to_numpy(xp.stack(correct)))) if correct else 0.0
            right, rows = self.comm.sum([right, stop - first])
            out["accuracy"] = right / rows if rows else None
            return out
        out["accuracy"] = (
            float(np.sum(to_numpy(xp.stack(correct)))) / n if correct and n else None
        )
        return out

    def _outputs(self, X: Any) -> Array:
        x = self._scaled(self._checked_host(X))
        xp = self.xp
        n = x.shape[0]
        parts = [self.net.forward(self.params, x[a:min(a + _CHUNK, n), ...], xp=xp)[0]
                 for a in range(0, n, _CHUNK)]
        if not parts:
            return xp.zeros((0, self.net.n_out), dtype=self._dtype, device=self.backend.device)
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    def _index_dtype(self) -> type[np.signedinteger[Any]]:
        """Host dtype for labels: int64, or int32 where JAX runs without 64-bit mode."""
        if self.backend.name == "jax":
            import jax

            if not jax.config.read("jax_enable_x64"):
                return np.int32
        return np.int64

    def _threshold(self) -> float:
        """Decision threshold for one output: 0 for logits, 0.5 for probabilities."""
        return 0.0 if self.loss.name == "binary_cross_entropy" else 0.5

    # ------------------------------------------------------------------
    # data: validated once, scaled, moved to the backend once

    def _checked_host(self, X: Any, what: str = "") -> np.ndarray:
        """``X`` as float64 on the host, after the shape, dtype and NaN/Inf checks."""
        host = _host_array(X, f"{what}X")
        if host.ndim != 2:
            raise ShapeError(
                f"{what}X must be 2-D (samples, features), got shape {host.shape}; "
                + ("for one sample use X[None, :]" if host.ndim == 1
                   else "flatten each sample, e.g. X.reshape(len(X), -1)")
            )
        if host.dtype.kind not in "biuf":
            raise DTypeError(f"{what}X must hold real numbers, got dtype {host.dtype}")
        host = host.astype(np.float64, copy=False)
        # shapes and NaN/Inf, with the messages of the public checks
        check_features(host, np.zeros(1), self.net.n_in)
        return host

    def _scaled(self, host: np.ndarray, *, fit: bool = False) -> Array:
        """Scale checked host features (fitting the scaler first if asked) and move them."""
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
        return self.backend.asarray(host.astype(self.dtype))

    def _prepare(self, X: Any, y: Any, *, fit: bool = False, what: str = "") -> _Prepared:
        t_host = _host_array(y, f"{what}y")
        n = _rows(X)
        if t_host.ndim not in (1, 2) or t_host.shape[0] != n:
            raise ShapeError(
                f"{n} {what}samples but {what}targets of shape {t_host.shape}; give one "
                "target (or label) per row of X"
            )
        if t_host.dtype.kind not in "biuf":
            raise DTypeError(f"{what}y must hold numbers, got dtype {t_host.dtype}")
        x_host = self._checked_host(X, what)
        n_out, kind = self.net.n_out, self.loss.targets
        assert n_out is not None
        labels = None
        if t_host.ndim == 1 and t_host.dtype.kind in "biu":
            labels = self.backend.asarray(t_host.astype(self._index_dtype()))
            if kind == "classes":
                check_targets(labels, self._ref, n, n_out, "classes")
                t, n_classes = labels, n_out
            elif n_out == 1:
                if n and (t_host.min() < 0 or t_host.max() > 1):
                    bad = int(t_host.min()) if t_host.min() < 0 else int(t_host.max())
                    raise LabelError(
                        f"label {bad} is out of range: a network with one output tells two "
                        "classes apart, so labels must be 0 or 1; give the last layer one "
                        "output per class and use the softmax_cross_entropy loss"
                    )
                t, n_classes = self.backend.asarray(t_host.astype(self.dtype)[:, None]), 2
            else:
                check_targets(labels, self._ref, n, n_out, "classes")
                onehot = np.zeros((n, n_out), dtype=self.dtype)
                onehot[np.arange(n), t_host] = 1
                t, n_classes = self.backend.asarray(onehot), n_out
        else:
            if t_host.ndim == 1 and n_out == 1:
                t_host = t_host[:, None]
            if t_host.ndim == 2:  # real targets (1-D floats fail the check below)
                t_host = t_host.astype(self.dtype)
            t = self.backend.asarray(t_host)
            check_targets(t, self._ref, n, n_out, kind)
            n_classes = None
            if kind == "classes":
                index = self._index_dtype()
                labels = self.backend.asarray(np.argmax(t_host, axis=1).astype(index))
                n_classes = n_out
            elif kind == "binary" and n_out == 1:
                labels = self.backend.asarray((t_host[:, 0] >= 0.5).astype(self._index_dtype()))
                n_classes = 2
        # only now that features and targets are valid: fit the scaler, move X
        x = self._scaled(x_host, fit=fit)
        if fit:
            self.n_classes = n_classes
        return _Prepared(x, t, labels)

    def _meta(self) -> dict[str, Any]:
        return {
            "loss": self.loss.name,
            "scaler": None if self.scaler is None else self.scaler.to_dict(),
            "scaling": self.scaling,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "history": self.history,
            "sizes": self.sizes,
            "backend": self.backend.name,
            "extra": self.extra,
        }


# --------------------------------------------------------------------------
# helpers


def _backend(name: str | None, device: Any) -> Backend:
    if name is None:
        current = get_backend()
        if device is None:
            return current
        name = current.name
    with use_backend(name, device) as b:
        return b


def _check_ranks_agree(comm: Communicator, n: int) -> None:
    """Every rank must fit on the same data set (each takes its own shard of it)."""
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
        raise TypeError(f"{what} is not an array ({type(x).__name__}: {exc})") from None


def _rows(x: Any) -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) == 0:
        raise ShapeError("X must be 2-D (samples, features), got a scalar")
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
