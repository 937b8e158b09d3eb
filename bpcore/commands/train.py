"""``bpcore train``: train an MLP on a data set from the command line.

With no options it runs the default main job: a 64-512-10 ReLU network on
scikit-learn's bundled digits, on NumPy, and reports the accuracy on the
held-out test split. Everything else is a flag; ``--save``/``--resume``
continue a run bit for bit. Launched by ``mpiexec -n N`` it trains
data-parallel on N ranks (:mod:`bpcore.distributed`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..backend import BACKEND_NAMES
from ..errors import BpcoreError, OutputExistsError, SettingError
from ..layers.arch import MNIST1D_CNN, MNIST1D_GRU, MNIST1D_MLP, RECURRENT, is_recurrent
from ..losses import LOSSES
from ..model import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, RECIPE

__all__ = ["DATA_DEFAULTS", "DEFAULTS", "HELP", "MNIST1D_CNN", "MNIST1D_GRU", "MNIST1D_MLP",
           "RECURRENT_DEFAULTS", "add_arguments", "run"]

HELP = "train an MLP on a data set (default: digits, on NumPy) and report its test accuracy"

log = logging.getLogger("bpcore.train")

#: The default main job: the recipe of :data:`bpcore.model.RECIPE` (AdamW lr 3e-3,
#: weight decay 0.2, batches of 32, 30 epochs) on a 64-512-10 ReLU network.
DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "hidden": [512],
    "activation": "relu",
    "output": "identity",
    "optimizer": RECIPE["optimizer"],
    "batch_size": RECIPE["batch_size"],
    "epochs": RECIPE["epochs"],
    "seed": 0,
    "dtype": "float32",
    "scaling": "standard",
    "val": 0.1,
    "test": 0.2,
    "backend": "numpy",
    "threads": 1,
}
#: Data sets with fewer samples than this train and report on all of them
#: unless --val/--test are given (xor's 4 patterns cannot spare any).
SMALL_DATA = 20

_HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid")
_OUTPUT_ACTIVATIONS = ("identity", "sigmoid", "softmax", "tanh")
_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
#: Settings a resumed run takes from its checkpoint (a flag that differs is an error).
_RUN_KEYS = (
    "data", "val", "test", "layers", "arch", "activation", "output", "loss", "optimizer", "lr",
    "weight_decay", "batch_size", "seed", "dtype", "scaling",
)


#: Defaults of a data set that differ from :data:`DEFAULTS` (a flag, or a resumed
#: run's setting, still wins). MNIST-1D: the paper's CNN on all 4000 training
#: signals (its own 1000 test signals report), unscaled (the data are
#: standardized as a whole), with the recipe tuned here (see the README's table).
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": {
        "arch": MNIST1D_CNN, "scaling": "none", "val": 0.0, "optimizer": "adamw",
        "lr": 1e-2, "weight_decay": 0.05, "batch_size": 100, "epochs": 200,
    },
}
#: A data set's defaults for a recurrent network (an --arch naming rnn, gru or lstm), over
#: :data:`DATA_DEFAULTS`. MNIST-1D: the CNN's recipe with weight decay 0.02, measured on the
#: paper's GRU (MNIST1D_GRU; benchmarks/results/2026-12-03-gru-cli.md): seeds 0-2 gave
#: 90.4/91.3/93.9% (0.05, the CNN's, 90.3/90.8/92.0%; 0.01 and 0.2 were worse).
RECURRENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": {"weight_decay": 0.02},
}

EPILOG = """\
examples:
  bpcore train                                   the default job: digits on NumPy
  bpcore train --backend torch --epochs 20 --plot curves.png
  bpcore train --data mnist:~/data/mnist --layers 784,128,64,10 --activation sigmoid \\
               --optimizer sgd --lr 0.1 --batch-size 10 --epochs 5 --save mnist.npz
  bpcore train --resume mnist.npz --save mnist.npz --overwrite --epochs 10
                                                 continue that run, in the same file
  bpcore train --data my.csv --metrics run.csv   features, then the label, per row
  mpiexec -n 2 bpcore train                      data-parallel on 2 MPI ranks (needs
                                                 pip install "bpcore[mpi]")

  bpcore train --data mnist1d                    the MNIST-1D paper's CNN (needs pip
                                                 install "bpcore[mnist1d]")
  bpcore train --data mnist1d --arch "dense(100),relu,residual(dense(100),relu),dense(10)"
  bpcore train --data mnist1d --arch "bidirectional(gru(6)),flatten,dense(10)"
                                                 the paper's GRU (its own recipe)

--layers lists every size, inputs first and outputs last: 64,512,10 for digits
(64 features, 10 classes). --arch writes any network as layers separated by
commas, each size a layer takes from its input inferred from the data:
dense(n_out), conv1d(channels, kernel, stride=, padding=, dilation=), conv2d,
max_pool1d(k), avg_pool1d(k), batch_norm, layer_norm, dropout(p), flatten,
reshape(1, 40), residual(...), parallel(..., combine="sum"), gru(hidden,
return_sequences=), lstm, rnn, bidirectional(gru(...)), and the activations;
or a .json file of a bpcore layer config (Layer.config). Data
sets: digits, xor, patterns, mnist1d (or mnist1d:CACHE.npz), mnist:DIR,
fashion-mnist:DIR, a .npz (arrays X, y) or a .csv (label in the last column).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bpcore train``, grouped as ``--help`` shows them."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.fill(
        f"{HELP[0].upper()}{HELP[1:]}. Every option has a default: `bpcore train` alone "
        "trains a 64-512-10 ReLU network on scikit-learn's digits in a few seconds.",
        width=79,
    )
    parser.epilog = EPILOG

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", metavar="SPEC", default=None,
        help="digits, xor, patterns, mnist1d, mnist:DIR, fashion-mnist:DIR, or a .npz/.csv "
        f"path (default: {DEFAULTS['data']})",
    )
    data.add_argument(
        "--val", type=float, metavar="FRACTION", default=None,
        help=f"fraction held out for validation (default: {DEFAULTS['val']})",
    )
    data.add_argument(
        "--test", type=float, metavar="FRACTION", default=None,
        help=f"fraction held out for the final test (default: {DEFAULTS['test']}; "
        "MNIST uses its own t10k test files)",
    )
    data.add_argument(
        "--scaling", choices=("standard", "minmax", "none"), default=None,
        help="feature scaling, fitted on the training split only "
        f"(default: {DEFAULTS['scaling']})",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--layers", metavar="SIZES", default=None,
        help="comma-separated layer sizes, inputs first, e.g. 64,128,10 "
        "(default: FEATURES,512,CLASSES, i.e. 64,512,10 on digits)",
    )
    model.add_argument(
        "--arch", metavar="LAYERS", default=None,
        help="the network as layers separated by commas, sizes inferred from the data, e.g. "
        '"conv1d(25,5,stride=2,padding=1),relu,flatten,dense(10)", or a .json file of a '
        "layer config; instead of --layers/--activation/--output (default: --layers, or "
        "on mnist1d the paper's CNN)",
    )
    model.add_argument(
        "--activation", choices=_HIDDEN_ACTIVATIONS, default=None,
        help=f"hidden activation (default: {DEFAULTS['activation']})",
    )
    model.add_argument(
        "--output", choices=_OUTPUT_ACTIVATIONS, default=None,
        help="output activation; keep identity (logits) for the cross-entropy losses "
        f"(default: {DEFAULTS['output']})",
    )
    model.add_argument(
        "--loss", choices=tuple(LOSSES), metavar="NAME", default=None,
        help=f"loss: {', '.join(LOSSES)} (default: softmax_cross_entropy for class "
        "labels, mse for real targets)",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--optimizer", choices=_OPTIMIZERS, default=None,
        help=f"optimizer (default: {DEFAULTS['optimizer']})",
    )
    train.add_argument(
        "--lr", type=float, metavar="RATE", default=None,
        help=f"learning rate (default: {DEFAULT_LR['adamw']:g} for adam/adamw, "
        f"{DEFAULT_LR['sgd']:g} for sgd, {DEFAULT_LR['momentum']:g} for momentum)",
    )
    train.add_argument(
        "--weight-decay", type=float, metavar="DECAY", default=None,
        help=f"weight decay (default: {DEFAULT_WEIGHT_DECAY['adamw']:g} for adamw, 0 otherwise)",
    )
    train.add_argument(
        "--batch-size", type=int, metavar="N", default=None,
        help=f"samples per step (default: {DEFAULTS['batch_size']})",
    )
    train.add_argument(
        "--epochs", type=int, metavar="N", default=None,
        help=f"epochs in all; with --resume, training continues up to N "
        f"(default: {DEFAULTS['epochs']}, or the resumed run's own)",
    )
    train.add_argument(
        "--seed", type=int, metavar="N", default=None,
        help=f"seeds the split, the initial weights and the batch order "
        f"(default: {DEFAULTS['seed']})",
    )

    where = parser.add_argument_group("backend")
    where.add_argument(
        "--backend", choices=BACKEND_NAMES, default=None,
        help=f"array library to train on (default: {DEFAULTS['backend']}; "
        "see `bpcore info` for what is usable here)",
    )
    where.add_argument(
        "--device", metavar="DEVICE", default=None,
        help="device of the backend, e.g. cuda:0 (default: the backend's own)",
    )
    where.add_argument(
        "--dtype", choices=("float32", "float64"), default=None,
        help=f"floating-point type of the parameters (default: {DEFAULTS['dtype']})",
    )
    where.add_argument(
        "--threads", type=int, metavar="N", default=None,
        help="CPU threads for NumPy's BLAS and PyTorch; 0 keeps the libraries' own setting "
        f"(default: {DEFAULTS['threads']}: mini-batch products are too small to gain from "
        "more, and lose much on a busy machine)",
    )
    where.add_argument(
        "--compile", action="store_true",
        help="train with the compiled loop (bpcore.compile): on jax each group of up to 32 "
        "batches is one lax.scan in one XLA program, on torch the torch.compile'd step "
        "runs per batch; numpy has no compiler; each batch shape compiles once",
    )

    parallel = parser.add_argument_group("data-parallel (MPI)")
    parallel.add_argument(
        "--distributed", action=argparse.BooleanOptionalAction, default=None,
        help="train data-parallel over MPI: each rank a shard of every batch of "
        "--batch-size rows, gradients averaged each step, rank 0 prints and saves "
        "(default: on when launched by mpiexec with more than one rank)",
    )
    parallel.add_argument(
        "--allreduce-dtype", choices=("float16", "bfloat16"), default=None,
        help="send the gradients in this precision (default: the parameters' own)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--save", metavar="PATH", default=None,
        help="write a checkpoint after every epoch (atomic; refuses an existing file, the "
        "--resume file included, without --overwrite)",
    )
    out.add_argument(
        "--overwrite", action="store_true",
        help="let --save, --metrics and --plot replace existing files (never an input)",
    )
    out.add_argument(
        "--resume", metavar="PATH", default=None,
        help="continue the run saved in PATH, bit for bit on the same backend",
    )
    out.add_argument(
        "--metrics", metavar="FILE", default=None,
        help="write per-epoch loss/accuracy (training and validation) to FILE.csv or FILE.json",
    )
    out.add_argument(
        "--plot", metavar="FILE", default=None,
        help='draw loss and accuracy curves to FILE.png (needs pip install "bpcore[plot]")',
    )
    out.add_argument(
        "--quiet", "-q", action="store_true",
        help="no progress bar or per-epoch lines; print only the result",
    )
    out.add_argument(
        "--verbose", "-v", action="store_true",
        help="also print how long each phase took (start-up, data, training, evaluation)",
    )


def run(args: argparse.Namespace) -> int:
    """Train as the flags say; print the result line; return the exit status.

    Under ``mpiexec -n N`` (or with ``--distributed``) every rank runs this
    same function data-parallel, and an error on any rank aborts the whole
    job (``MPI_Abort``, exit status 2) instead of leaving the others waiting.
    """
    from ..distributed import (
        DistributedError,
        abort_on_error,
        communicator,
        mpi_available,
        mpi_world_size,
    )

    distributed = getattr(args, "distributed", None)
    launched = mpi_world_size()
    if distributed is None:
        distributed = launched > 1
        reason = mpi_available() if distributed else None
        if reason is not None:
            raise DistributedError(
                f"bpcore train was launched by MPI with {launched} ranks, but {reason}; "
                "or pass --no-distributed to run independent copies"
            )
    if not distributed:
        if getattr(args, "allreduce_dtype", None) is not None:
            raise SettingError("--allreduce-dtype sets how a data-parallel run sends its "
                               "gradients; this run is not data-parallel: launch it with "
                               "mpiexec -n N (or --distributed), or drop --allreduce-dtype")
        return _train(args, None)
    comm = communicator()
    with abort_on_error(comm, code=2):
        if args.device is None and args.backend in ("cupy", "torch"):
            args.device = comm.device(args.backend)  # one GPU per local rank
        return _train(args, comm)


def _train(args: argparse.Namespace, comm: Any) -> int:
    """The training run, on one process or (``comm``) one rank of many."""
    start = time.perf_counter()
    phases: dict[str, float] = {}
    lead = comm is None or comm.rank == 0  # only rank 0 prints and writes files
    import numpy as np

    from ..data import load_dataset, split
    from ..errors import DataError
    from ..metrics import METRICS_FORMATS, write_metrics
    from ..model import Model
    from ..plot import PLOT_FORMATS, plot_history, require_matplotlib
    from ..progress import log_to_stderr

    # -- check everything that can be checked before any training
    if args.metrics is not None and Path(args.metrics).suffix.lower() not in METRICS_FORMATS:
        raise SettingError(
            f"--metrics {args.metrics}: the file name must end in .csv or .json, "
            "e.g. --metrics run.csv"
        )
    if args.plot is not None:
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise SettingError(
                f"--plot {args.plot}: the file name must end in "
                f"{', '.join(PLOT_FORMATS)}, e.g. --plot curves.png"
            )
        require_matplotlib()
    _check_outputs(args)
    for flag in ("batch_size", "epochs", "seed", "threads"):
        value = getattr(args, flag)
        low = 1 if flag == "batch_size" else 0
        if value is not None and value < low:
            raise SettingError(f"--{flag.replace('_', '-')} must be >= {low}, got {value}")
    _check_backend(args.backend or DEFAULTS["backend"], args.device)

    if args.backend == "jax" and args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)  # before any JAX array exists

    with log_to_stderr(not args.quiet and lead):
        model: Model | None = None
        stored: dict[str, Any] = {}
        if args.resume is not None:
            model = Model.load(args.resume, backend=args.backend or DEFAULTS["backend"],
                               device=args.device, compile=getattr(args, "compile", False))
            stored = dict(model.extra.get("run") or {})
            if args.backend is None and stored.get("backend", "numpy") != model.backend.name:
                # resume where the run was trained
                model = Model.load(args.resume, backend=stored["backend"], device=args.device,
                                   compile=getattr(args, "compile", False))
            _check_resume(args, stored, model)

        setting = _settings(args, stored, model)
        phases["start-up"] = time.perf_counter() - start
        ds = load_dataset(setting["data"])
        if ds.n_classes is not None and ds.n_classes < 2:
            raise DataError(
                f"{ds.name}: every sample has the same label ({ds.y[0].tolist()!r}): a classifier "
                "needs samples of at least two classes"
            )
        if len(ds.X) < SMALL_DATA and args.val is None and args.test is None \
                and "val" not in stored:
            setting["val"] = setting["test"] = 0.0
            log.info("%s has %d samples, too few to hold any out: training and evaluating "
                     "on all of them (set --val/--test to split)", ds.name, len(ds.X))
        parts = split(ds, val=setting["val"], test=setting["test"], seed=setting["seed"])
        n_out = ds.n_classes if ds.n_classes is not None else int(ds.y.shape[1])
        phases["data"] = time.perf_counter() - start - phases["start-up"]
        if setting["loss"] is None:
            setting["loss"] = "softmax_cross_entropy" if ds.n_classes is not None else "mse"
        net = None
        if setting["arch"] is not None:
            net = _arch_network(setting["arch"], ds, n_out)
        else:
            if setting["layers"] is None:
                setting["layers"] = [int(ds.X.shape[1]), *DEFAULTS["hidden"], n_out]
            _check_layers(setting["layers"], ds, LOSSES[setting["loss"]].name)
        shown_net = setting["arch"] if net is not None else \
            "-".join(map(str, setting["layers"])) + f" {setting['activation']}"
        if setting["lr"] is None:
            setting["lr"] = DEFAULT_LR[setting["optimizer"]]
        if setting["weight_decay"] is None:
            setting["weight_decay"] = DEFAULT_WEIGHT_DECAY.get(setting["optimizer"], 0.0)

        backend = model.backend.name if model is not None else setting["backend"]
        with _threads(setting["threads"], backend):
            if model is None:
                model = Model(
                    net if net is not None else setting["layers"],
                    activation=setting["activation"],
                    output=setting["output"], loss=setting["loss"],
                    optimizer=setting["optimizer"], lr=setting["lr"],
                    weight_decay=setting["weight_decay"], batch_size=setting["batch_size"],
                    backend=backend, device=args.device, dtype=setting["dtype"],
                    seed=setting["seed"], scaling=setting["scaling"],
                    compile=getattr(args, "compile", False),
                )
            model.extra["run"] = {k: setting[k] for k in (*_RUN_KEYS, "epochs")}
            model.extra["run"]["backend"] = model.backend.name
            if comm is not None:
                model.distribute(comm, dtype=getattr(args, "allreduce_dtype", None))
                model.extra["run"]["ranks"] = comm.size
            log.info(
                "%s: %d train / %d validation / %d test samples, %d features, %s",
                ds.name, len(parts.X_train), len(parts.X_val), len(parts.X_test),
                ds.X.shape[1],
                f"{ds.n_classes} classes" if ds.n_classes is not None else f"{n_out} targets",
            )
            log.info(
                "model %s, %s, %s lr %g%s, batch %d, %s %s, seed %d%s",
                shown_net, model.loss.name, setting["optimizer"], setting["lr"],
                f" weight decay {setting['weight_decay']:g}" if setting["weight_decay"] else "",
                setting["batch_size"], model.backend.name, model.dtype, setting["seed"],
                f", resuming after epoch {model.epoch}" if args.resume else "",
            )
            if comm is not None:
                log.info(
                    "data-parallel on %d MPI ranks: %d rows per rank per step, global batch %d",
                    comm.size, setting["batch_size"], comm.size * setting["batch_size"],
                )

            callbacks = []
            if args.save is not None and lead:
                save_to = args.save

                def save(m: Model, record: dict[str, Any]) -> None:
                    m.save(save_to, overwrite=True)

                callbacks.append(save)
            if args.metrics is not None and lead:
                metrics_to = args.metrics

                def metrics(m: Model, record: dict[str, Any]) -> None:
                    write_metrics(m.history.records, metrics_to)

                callbacks.append(metrics)

            remaining = max(0, setting["epochs"] - model.epoch)
            if remaining == 0 and args.resume is not None:
                log.info("the run already has %d epochs (--epochs %d): nothing to train",
                         model.epoch, setting["epochs"])
            validation = (parts.X_val, parts.y_val) if len(parts.X_val) else None
            begun = time.perf_counter()
            model.fit(
                parts.X_train, parts.y_train, epochs=remaining, validation_data=validation,
                verbose=0 if args.quiet else "auto", callbacks=callbacks,
            )
            phases["training"] = time.perf_counter() - begun
            begun = time.perf_counter()
            if args.save is not None and remaining == 0 and lead:
                model.save(args.save, overwrite=True)

            which, X_eval, y_eval = "test", parts.X_test, parts.y_test
            if len(X_eval) == 0:
                which, X_eval, y_eval = "validation", parts.X_val, parts.y_val
            if len(X_eval) == 0:
                which, X_eval, y_eval = "training", parts.X_train, parts.y_train
            scores = model.evaluate(X_eval, y_eval)
            correct = None
            if scores["accuracy"] is not None and model.n_classes is not None:
                labels = np.asarray(y_eval)
                if labels.ndim == 2 and labels.shape[1] > 1:
                    labels = np.argmax(labels, axis=1)
                elif labels.ndim == 2:
                    labels = (labels[:, 0] >= 0.5).astype(np.int64)
                correct = int(np.count_nonzero(model.predict(X_eval) == labels))
            phases["evaluation"] = time.perf_counter() - begun

        elapsed = time.perf_counter() - start
        if args.metrics is not None and lead:
            write_metrics(model.history.records, args.metrics, extra={
                which: scores, "run": model.extra["run"], "backend": model.backend.name,
                "seconds": elapsed,
            })
        if args.plot is not None and lead:
            plot_history(
                model.history.records, args.plot,
                title=f"{shown_net if net is None else 'network'} on {ds.name} "
                f"({model.backend.name})",
            )

    if not lead:
        return 0
    ranks = f", {comm.size} ranks" if comm is not None else ""
    where = f"on {ds.name} — {model.backend.name}{ranks}, {elapsed:.1f} s"
    if correct is not None:
        n = len(X_eval)
        print(f"{which} accuracy {100 * correct / n:.1f}% ({correct}/{n}) {where}")
    else:
        print(f"{which} loss {scores['loss']:.4g} ({model.loss.name}) {where}")
    if args.verbose:
        since = _since_process_start()
        shown = [f"{k} {v:.2f} s" for k, v in phases.items()]
        if since is not None:
            shown.insert(0, f"interpreter and imports {since - elapsed:.2f} s")
        print("time: " + ", ".join(shown) + (f"; {since:.2f} s since the process started"
                                              if since is not None else ""), file=sys.stderr)
    return 0


def _since_process_start() -> float | None:
    """Wall seconds since this process started (Linux; ``None`` elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file the run will write: a path it may write, no input, nothing
    existing without --overwrite, no two the same — checked before training."""
    inputs = {}
    if args.resume is not None:
        inputs[_resolved(args.resume)] = "--resume"
    if args.data is not None and ":" not in str(args.data):
        inputs[_resolved(args.data)] = "--data"
    elif args.data is not None and ":" in str(args.data):
        inputs[_resolved(str(args.data).split(":", 1)[1])] = "--data"
    seen: dict[Path, str] = {}
    for flag in ("save", "metrics", "plot"):
        value = getattr(args, flag)
        if value is None:
            continue
        path = Path(value).expanduser()
        where = _resolved(value)
        name = f"--{flag} {value}"
        if where in seen:
            raise SettingError(f"{name}: the same file as {seen[where]}; give each output its "
                             "own path")
        seen[where] = f"--{flag}"
        role = inputs.get(where)
        if role is not None and not (flag == "save" and role == "--resume"):
            raise SettingError(f"{name}: that is the {role} file of this run; writing it would "
                             "destroy an input: choose another path")
        if path.is_dir():
            raise SettingError(f"{name}: is a directory; give a file path, e.g. "
                             f"{path / ('run' + _SUFFIXES[flag])}")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise SettingError(f"{name}: the directory {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise SettingError(f"{name}: cannot write into {parent} (permission denied)")
        if path.exists() and not args.overwrite:
            extra = " (the --resume file: the run would overwrite it)" if role else ""
            raise OutputExistsError(f"{name}: the file exists{extra}; pass --overwrite to "
                                  "replace it, or choose another path")


#: The example file name's suffix of each output flag, in messages.
_SUFFIXES = {"save": ".npz", "metrics": ".csv", "plot": ".png"}


def _resolved(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _check_backend(name: str, device: Any) -> None:
    """The backend is installed and usable here, and the device exists."""
    from ..backend import backend_info, backends, use_backend
    from ..errors import BackendError

    info = backend_info(name)  # imports this backend only
    if not info.available:
        usable = ", ".join(k for k, v in backends().items() if v.available)
        raise BackendError(f"--backend {name}: {info.reason}; install: {info.install} "
                           f"(usable here: {usable})")
    if device is not None:
        with use_backend(name, device):  # raises a BackendError naming what is available
            pass


# --------------------------------------------------------------------------
# settings


def _settings(
    args: argparse.Namespace, stored: dict[str, Any], model: Any
) -> dict[str, Any]:
    """Every run setting: the flag if given, else the resumed run's, else the default."""
    layers = _parse_layers(args.layers) if args.layers is not None else None
    given = {
        "data": args.data, "val": args.val, "test": args.test, "layers": layers,
        "activation": args.activation, "output": args.output,
        "loss": _loss_name(args.loss), "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size,
        "epochs": args.epochs, "seed": args.seed, "dtype": args.dtype,
        "scaling": args.scaling, "threads": args.threads, "backend": args.backend,
    }
    given["arch"] = args.arch
    if args.arch is not None:
        for flag in ("layers", "activation", "output"):
            if getattr(args, flag) is not None:
                raise SettingError(f"--arch describes the whole network: drop --{flag}")
    data = given["data"] if given["data"] is not None else stored.get("data", DEFAULTS["data"])
    special = DATA_DEFAULTS.get(str(data).partition(":")[0], {})
    arch = given["arch"] if given["arch"] is not None else stored.get("arch")
    if arch is not None and _recurrent(str(arch)):
        special = {**special, **RECURRENT_DEFAULTS.get(str(data).partition(":")[0], {})}
    chosen = given["optimizer"] if given["optimizer"] is not None else stored.get("optimizer")
    if chosen is not None and chosen != special.get("optimizer", chosen):
        # the recipe's weight decay is tuned for its own (decoupled) optimizer; Adam or
        # SGD would apply it as an L2 term of the gradient (the paper's GRU fell to ~35%)
        special = {k: v for k, v in special.items() if k != "weight_decay"}
    if args.layers is not None or stored.get("layers") is not None:
        special = {k: v for k, v in special.items() if k != "arch"}
    elif "arch" in special and args.arch is None and "arch" not in stored:
        for flag in ("activation", "output"):
            if getattr(args, flag) is not None:
                raise SettingError(f"--{flag} shapes a --layers network; on {data} the default "
                                   "network is the paper's CNN: give --layers or --arch too")
    setting: dict[str, Any] = {}
    for key, value in given.items():
        if value is not None:
            setting[key] = value
        elif key in stored:
            setting[key] = stored[key]
        else:
            setting[key] = special.get(key, DEFAULTS.get(key))
    if model is not None:
        # a resumed run: the model is what the checkpoint says it is
        config = model.optimizer.config
        hidden, output = _activations(model.net.config)
        setting.update(
            layers=None if setting["arch"] is not None else model.sizes or setting["layers"],
            loss=model.loss.name,
            optimizer=model.optimizer.name, lr=config.get("lr", setting["lr"]),
            weight_decay=config.get("weight_decay", setting["weight_decay"]),
            batch_size=model.batch_size, seed=model.seed, dtype=model.dtype,
            scaling=model.scaling, activation=hidden or setting["activation"],
            output=output or setting["output"],
        )
    return setting


def _recurrent(spec: str) -> bool:
    """Whether ``--arch`` (a string, or a .json layer config) has a recurrent layer; a
    file that cannot be read counts as not (``_arch_network`` says why, later)."""
    if not spec.strip().lower().endswith(".json"):
        return is_recurrent(spec)
    import json

    try:
        text = Path(spec.strip()).expanduser().read_text(encoding="utf-8")
        return any(isinstance(v, str) and v in RECURRENT for v in _names(json.loads(text)))
    except (OSError, ValueError, RecursionError):
        return False


def _names(config: Any) -> Iterator[Any]:
    if isinstance(config, dict):
        yield config.get("name")
        for v in config.values():
            yield from _names(v)
    elif isinstance(config, list):
        for v in config:
            yield from _names(v)


def _activations(config: Any) -> tuple[str | None, str | None]:
    """The hidden and output activation names of a sequential network's config."""
    layers = config.get("layers", []) if isinstance(config, dict) else []
    names = [c.get("name") for c in layers if isinstance(c, dict)]
    if not names:
        return None, None
    hidden = next((n for n in names[:-1] if n != "dense"), None)
    return hidden, ("identity" if names[-1] == "dense" else names[-1])


def _loss_name(name: str | None) -> str | None:
    return None if name is None else LOSSES[name].name


def _arch_network(spec: str, ds: Any, n_out: int) -> Any:
    """The network of ``--arch`` (a string, or a .json file of a layer config) for
    the samples of ``ds``; its outputs must be the data's classes (or targets)."""
    from ..layers import from_config, output_shape
    from ..layers.arch import build

    sample = tuple(int(n) for n in ds.X.shape[1:])
    if spec.strip().lower().endswith(".json"):
        import json

        path = Path(spec.strip()).expanduser()
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingError(f"--arch {spec}: cannot read the file ({exc.strerror})") from None
        except ValueError as exc:
            raise SettingError(f"--arch {spec}: not JSON ({exc})") from None
        if not isinstance(config, dict):
            raise SettingError(f"--arch {spec}: the file must hold a layer config (a JSON "
                               "object such as Layer.config writes)")
        net = from_config(config)
        try:
            out = output_shape(net, sample)
        except BpcoreError as exc:
            raise SettingError(f"--arch {spec}: the network does not take {ds.name}'s samples "
                               f"of shape {sample}: {exc}") from None
    else:
        try:
            net = build(spec, sample)
        except BpcoreError as exc:
            raise SettingError(f"--arch: {exc}") from None
        out = output_shape(net, sample)
    if out != (n_out,):
        what = f"{n_out} classes" if ds.n_classes is not None else f"{n_out} target columns"
        raise SettingError(f"--arch gives {out[0] if len(out) == 1 else out} outputs per "
                           f"sample but {ds.name} has {what}: end it with dense({n_out})")
    return net


def _parse_layers(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise SettingError(
            f"--layers {text!r}: give at least two comma-separated positive sizes, inputs "
            "first and outputs last, e.g. --layers 64,128,10"
        )
    return sizes


def _check_layers(sizes: list[int], ds: Any, loss: str) -> None:
    """The first size must be the data's features, the last its classes (or targets)."""
    features = int(ds.X.shape[1])
    middle = ",".join(map(str, sizes[1:-1])) or "..."
    if sizes[0] != features:
        raise SettingError(
            f"--layers starts with {sizes[0]} but {ds.name} has {features} features; "
            f"use --layers {features},{middle},{sizes[-1]}"
        )
    if ds.n_classes is None:
        k = int(ds.y.shape[1])
        if sizes[-1] != k:
            raise SettingError(
                f"--layers ends with {sizes[-1]} but {ds.name} has {k} target "
                f"column{'s' if k != 1 else ''}; use --layers {features},{middle},{k}"
            )
        if loss == "softmax_cross_entropy":
            raise SettingError(
                f"{ds.name} has real-valued targets, not class labels; use --loss mse "
                "(or binary_cross_entropy for targets in [0, 1])"
            )
        return
    classes = ds.n_classes
    binary_ok = classes <= 2 and loss != "softmax_cross_entropy"
    if sizes[-1] == classes or (binary_ok and sizes[-1] == 1):
        return
    labels = f"labels 0..{classes - 1}"
    if binary_ok:
        fix = f"--layers {features},{middle},1 (or {classes} with softmax_cross_entropy)"
    else:
        fix = f"--layers {features},{middle},{classes}"
    raise SettingError(
        f"--layers ends with {sizes[-1]} but {ds.name} has {classes} classes ({labels}); "
        f"the last size must be the number of classes: use {fix}"
    )


def _check_resume(args: argparse.Namespace, stored: dict[str, Any], model: Any) -> None:
    """A resumed run keeps its settings; a flag that contradicts them is an error."""
    if not stored:  # a Model.save checkpoint: its network is all there is to contradict
        sizes = getattr(model, "sizes", None)
        if args.layers is not None and _parse_layers(args.layers) != sizes:
            raise SettingError(
                f"--layers {args.layers} contradicts the resumed network ({args.resume}: "
                f"{'-'.join(map(str, sizes)) if sizes else model.net.name}); drop --layers, "
                "or start a new run without --resume")
        if args.arch is not None:
            raise SettingError(f"--arch with --resume {args.resume}: the resumed network "
                               "is kept; drop --arch, or start a new run without --resume")
        return
    given = {
        "data": args.data, "val": args.val, "test": args.test,
        "layers": _parse_layers(args.layers) if args.layers is not None else None,
        "activation": args.activation, "output": args.output, "loss": _loss_name(args.loss),
        "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
        "batch_size": args.batch_size, "seed": args.seed, "dtype": args.dtype,
        "scaling": args.scaling, "arch": args.arch,
    }
    for key in _RUN_KEYS:
        value = given.get(key)
        if value is not None and key in stored and value != stored[key]:
            flag = "--" + key.replace("_", "-")
            shown = ",".join(map(str, stored[key])) if key == "layers" else stored[key]
            raise SettingError(
                f"{flag} {args.layers if key == 'layers' else value} contradicts the resumed "
                f"run ({args.resume}: {flag} {shown}); a resumed run keeps its settings: "
                f"drop {flag}, or start a new run without --resume"
            )


@contextmanager
def _threads(n: int, backend: str) -> Iterator[None]:
    """Limit NumPy's BLAS (threadpoolctl) and PyTorch to ``n`` threads (0: leave them)."""
    if not n:
        yield
        return
    limiter: Any = None
    torch: Any = None
    before = 0
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # comes with scikit-learn; without it BLAS keeps its own
            pass
        else:
            limiter = threadpool_limits(limits=n)
        if backend == "torch" or "torch" in sys.modules:
            torch = importlib.import_module("torch")
            before = torch.get_num_threads()
            torch.set_num_threads(n)
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()
