"""A census of bad inputs across bpcore's public surface (issue 12's headline target).

Every case is one distinct bad input, given as a new user or an attacker would
give it, to the Python API (layers, arch strings, optimizers, losses, the step
driver, ``Model``, ``bpcore.sklearn``, checkpoints, data loaders) or to the
``bpcore train`` / ``bench`` / ``export`` commands. Each outcome is put in one
class:

* ``clear``: a :class:`~bpcore.errors.BpcoreError` whose message names the
  problem (it contains the case's expected words, or at least says something
  when none are given); for the CLI: exit status 2, exactly one line on
  stderr, ``bpcore: error: ...``, no traceback;
* ``raw``: any other exception (from the CLI: a traceback);
* ``unclear``: a BpcoreError that does not name the problem (for the CLI: a
  non-zero exit with more than one line, or without ``bpcore: error:``);
* ``accepted``: the bad input was taken and a result came back;
* ``data_loss``: a user file present before the call was changed or removed
  (bytes compared), or something non-finite was written over it.

A case whose input turns out to be legitimate is marked ``valid`` with the
reason, and is counted apart (never as a failure). Every case runs in its own
temporary directory; nothing is written in the repository but ``--json``/
``--markdown``.

Run::

    python benchmarks/bad_input_census.py --json census.json --markdown census.md
    python benchmarks/bad_input_census.py --cli inprocess --fast   # what the test runs

``tests/test_bad_input_census.py`` runs the in-process cases (and the CLI cases
through ``bpcore.cli.main``) and asserts each is ``clear``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the checkpoint helpers of the hostile-file tests

import bpcore as bp  # noqa: E402
from bpcore.errors import BpcoreError  # noqa: E402

CLASSES = ("clear", "raw", "unclear", "accepted", "data_loss", "valid")
HAVE = {name: importlib.util.find_spec(name) is not None for name in ("torch", "sklearn")}
NAN, INF = float("nan"), float("inf")


@dataclass
class Case:
    """One distinct bad input.

    ``run(tmp)`` makes the call (in-process cases); ``argv`` is a command line
    (CLI cases; ``{tmp}`` is replaced by the case's directory). ``setup(tmp)``
    writes the user's files first; ``check(tmp, result)`` may return a reason
    the outcome is wrong although no error was raised. ``expect`` are words the
    error message must contain (case-insensitive). ``valid`` is the reason an
    accepted input is legitimate after all. ``slow`` cases train or spawn.
    """

    id: str
    area: str
    what: str
    run: Callable[[Path], Any] | None = None
    argv: list[str] | None = None
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, Any], str | None] | None = None
    expect: tuple[str, ...] = ()
    valid: str | None = None
    slow: bool = False
    issue: bool = False
    #: the input is bad only where no GPU is present (a CUDA device asked for)
    no_gpu: bool = False


@dataclass
class Outcome:
    id: str
    area: str
    what: str
    cls: str
    detail: str
    issue: bool = False
    seconds: float = 0.0


CASES: list[Case] = []


def case(id: str, area: str, what: str, run: Callable[[Path], Any] | None = None, **kw: Any
         ) -> None:
    if any(c.id == id for c in CASES):
        raise AssertionError(f"duplicate case id {id}")
    CASES.append(Case(id, area, what, run, **kw))


def cli(id: str, what: str, argv: Sequence[str], **kw: Any) -> None:
    case(id, "cli", what, argv=list(argv), **kw)


# --------------------------------------------------------------------------
# fixtures every case builds for itself (cheap)


def small() -> tuple[Any, Any, Any, Any, np.ndarray, np.ndarray]:
    """A 4-8-3 tanh net, its params, an Adam and its state, x (6, 4), labels (6,)."""
    net = bp.mlp([4, 8, 3], "tanh")
    params = net.init(0)
    opt = bp.adam(lr=0.01)
    state = opt.init(params)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    t = np.arange(6) % 3
    return net, params, opt, state, x, t


def blobs(n: int = 30, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    centers = rng.normal(0, 3, size=(classes, 4))
    return centers[labels] + rng.normal(0, 0.5, size=(n, 4)), labels.astype(np.int64)


def fitted(tmp: Path | None = None) -> bp.Model:
    model = bp.Model([4, 8, 3], activation="tanh", batch_size=8, backend="numpy")
    model.fit(*blobs(), epochs=1, progress=False, verbose=0)
    return model


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    rows = [",".join([*(f"{v:.6g}" for v in xs), str(t)]) for xs, t in zip(X, y)]
    path.write_text("\n".join(rows) + "\n")


def data_csv(tmp: Path) -> None:
    X, y = blobs(60)
    write_csv(tmp / "data.csv", X, y)


def saved_checkpoint(tmp: Path, name: str = "ck.npz") -> Path:
    return fitted().save(tmp / name)


def step_of(net: Any, opt: Any) -> Any:
    return bp.train_step(net, "softmax_cross_entropy", opt)


# --------------------------------------------------------------------------
# layers


def _layer_cases() -> None:
    bad_sizes = {"zero": 0, "negative": -3, "fraction": 2.5, "string": "3", "none": None,
                 "nan": NAN, "bool": True, "complex": 3j}
    for tag, v in bad_sizes.items():
        case(f"dense-n_in-{tag}", "layers", f"bp.dense({v!r}, 3)", lambda t, v=v: bp.dense(v, 3),
             expect=("n_in",))
        case(f"dense-n_out-{tag}", "layers", f"bp.dense(3, {v!r})", lambda t, v=v: bp.dense(3, v),
             expect=("n_out",))
    case("dense-init-unknown", "layers", "bp.dense(3, 4, init='bogus')",
         lambda t: bp.dense(3, 4, init="bogus"), expect=("bogus",))
    case("dense-huge-init", "layers", "bp.dense(4, 2**40).init(0): 16 TiB",
         lambda t: bp.dense(4, 2**40).init(0), expect=("memory",))
    conv1 = [("in-zero", lambda: bp.conv1d(0, 4, 3), "in_channels"),
             ("out-negative", lambda: bp.conv1d(1, -4, 3), "out_channels"),
             ("kernel-zero", lambda: bp.conv1d(1, 4, 0), "kernel_size"),
             ("kernel-fraction", lambda: bp.conv1d(1, 4, 2.5), "kernel_size"),
             ("kernel-string", lambda: bp.conv1d(1, 4, "3"), "kernel_size"),
             ("kernel-2d", lambda: bp.conv1d(1, 4, (3, 3)), "kernel_size"),
             ("stride-zero", lambda: bp.conv1d(1, 4, 3, stride=0), "stride"),
             ("stride-negative", lambda: bp.conv1d(1, 4, 3, stride=-1), "stride"),
             ("padding-negative", lambda: bp.conv1d(1, 4, 3, padding=-1), "padding"),
             ("dilation-zero", lambda: bp.conv1d(1, 4, 3, dilation=0), "dilation"),
             ("init-unknown", lambda: bp.conv1d(1, 4, 3, init="nope"), "nope")]
    for tag, fn, word in conv1:
        case(f"conv1d-{tag}", "layers", f"conv1d: {tag}", lambda t, fn=fn: fn(), expect=(word,))
    conv2 = [("kernel-1-tuple", lambda: bp.conv2d(1, 4, (3,)), "kernel_size"),
             ("kernel-zero", lambda: bp.conv2d(1, 4, (0, 3)), "kernel_size"),
             ("stride-zero", lambda: bp.conv2d(1, 4, 3, stride=(1, 0)), "stride"),
             ("padding-negative", lambda: bp.conv2d(1, 4, 3, padding=(-1, 0)), "padding"),
             ("dilation-zero", lambda: bp.conv2d(1, 4, 3, dilation=0), "dilation"),
             ("kernel-string", lambda: bp.conv2d(1, 4, "a"), "kernel_size"),
             ("in-none", lambda: bp.conv2d(None, 4, 3), "in_channels")]
    for tag, fn, word in conv2:
        case(f"conv2d-{tag}", "layers", f"conv2d: {tag}", lambda t, fn=fn: fn(), expect=(word,))
    pools = [("max1-kernel-zero", lambda: bp.max_pool1d(0), "kernel_size"),
             ("max1-stride-zero", lambda: bp.max_pool1d(2, stride=0), "stride"),
             ("max1-padding-negative", lambda: bp.max_pool1d(2, padding=-1), "padding"),
             ("max1-padding-over-half", lambda: bp.max_pool1d(2, padding=2), "padding"),
             ("max1-dilation-zero", lambda: bp.max_pool1d(2, dilation=0), "dilation"),
             ("max1-kernel-fraction", lambda: bp.max_pool1d(1.5), "kernel_size"),
             ("max2-kernel-1-tuple", lambda: bp.max_pool2d((2,)), "kernel_size"),
             ("max2-kernel-zero", lambda: bp.max_pool2d((0, 2)), "kernel_size"),
             ("max2-stride-zero", lambda: bp.max_pool2d(2, stride=(0, 1)), "stride"),
             ("max2-padding-over-half", lambda: bp.max_pool2d(2, padding=5), "padding"),
             ("avg1-kernel-zero", lambda: bp.avg_pool1d(0), "kernel_size"),
             ("avg1-stride-negative", lambda: bp.avg_pool1d(2, stride=-2), "stride"),
             ("avg1-padding-negative", lambda: bp.avg_pool1d(2, padding=-1), "padding"),
             ("avg1-count-include-pad-string",
              lambda: bp.avg_pool1d(2, count_include_pad="yes"), "count_include_pad"),
             ("avg2-kernel-negative", lambda: bp.avg_pool2d(-1), "kernel_size"),
             ("avg2-padding-over-half", lambda: bp.avg_pool2d(2, padding=(3, 3)), "padding")]
    for tag, fn, word in pools:
        case(f"pool-{tag}", "layers", f"pooling: {tag}", lambda t, fn=fn: fn(), expect=(word,))
    shaped = [("reshape-empty", lambda: bp.reshape(()), "shape"),
              ("reshape-two-minus-one", lambda: bp.reshape((-1, -1)), "shape"),
              ("reshape-zero", lambda: bp.reshape((0, 3)), "shape"),
              ("reshape-string", lambda: bp.reshape(("a",)), "shape"),
              ("reshape-int", lambda: bp.reshape(3), "shape"),
              ("reshape-fraction", lambda: bp.reshape((2.5,)), "shape"),
              ("layer-norm-zero", lambda: bp.layer_norm(0), "normalized_shape"),
              ("layer-norm-negative", lambda: bp.layer_norm(-3), "normalized_shape"),
              ("layer-norm-empty", lambda: bp.layer_norm(()), "shape"),
              ("layer-norm-eps-zero", lambda: bp.layer_norm(4, eps=0), "eps"),
              ("layer-norm-eps-negative", lambda: bp.layer_norm(4, eps=-1), "eps"),
              ("layer-norm-eps-nan", lambda: bp.layer_norm(4, eps=NAN), "eps"),
              ("batch-norm-zero", lambda: bp.batch_norm(0), "num_features"),
              ("batch-norm-momentum-negative", lambda: bp.batch_norm(4, momentum=-0.1),
               "momentum"),
              ("batch-norm-momentum-over-one", lambda: bp.batch_norm(4, momentum=1.5),
               "momentum"),
              ("batch-norm-eps-zero", lambda: bp.batch_norm(4, eps=0), "eps"),
              ("batch-norm-eps-string", lambda: bp.batch_norm(4, eps="a"), "eps"),
              ("dropout-negative", lambda: bp.dropout(-0.1), "p"),
              ("dropout-over-one", lambda: bp.dropout(1.5), "p"),
              ("dropout-nan", lambda: bp.dropout(NAN), "p"),
              ("dropout-string", lambda: bp.dropout("0.5"), "p"),
              ("dropout-none", lambda: bp.dropout(None), "p"),
              ("embedding-zero", lambda: bp.embedding(0, 4), "num_embeddings"),
              ("embedding-dim-zero", lambda: bp.embedding(10, 0), "dim"),
              ("embedding-dim-negative", lambda: bp.embedding(10, -1), "dim"),
              ("embedding-fraction", lambda: bp.embedding(2.5, 4), "num_embeddings"),
              ("embedding-init-unknown", lambda: bp.embedding(10, 4, init="x"), "init")]
    for tag, fn, word in shaped:
        case(tag, "layers", tag.replace("-", " "), lambda t, fn=fn: fn(), expect=(word,))
    compose = [("residual-empty", lambda: bp.residual(), "layer"),
               ("residual-int", lambda: bp.residual(5), "layer"),
               ("residual-shape-change", lambda: bp.residual(bp.dense(3, 4)), "residual"),
               ("parallel-empty", lambda: bp.parallel(), "branch"),
               ("parallel-int", lambda: bp.parallel(5), "branch"),
               ("parallel-combine-unknown",
                lambda: bp.parallel(bp.dense(3, 4), bp.dense(3, 4), combine="bogus"), "bogus"),
               ("parallel-sum-shapes-differ",
                lambda: bp.parallel(bp.dense(3, 4), bp.dense(3, 5), combine="sum"), "sum"),
               ("parallel-inputs-differ",
                lambda: bp.parallel(bp.dense(3, 4), bp.dense(5, 4)), "input"),
               ("sequential-int", lambda: bp.sequential(5), "layer"),
               ("sequential-string", lambda: bp.sequential("relu"), "layer"),
               ("sequential-empty", lambda: bp.sequential(), "layer"),
               ("sequential-sizes-differ",
                lambda: bp.sequential(bp.dense(3, 4), bp.dense(5, 2)), "4"),
               ("bidirectional-dense", lambda: bp.bidirectional(bp.dense(3, 4)), "gru"),
               ("bidirectional-int", lambda: bp.bidirectional(5), "layer"),
               ("bidirectional-config-unknown", lambda: bp.bidirectional({"name": "x"}), "x")]
    for tag, fn, word in compose:
        case(tag, "layers", tag.replace("-", " "), lambda t, fn=fn: fn(), expect=(word,))
    for kind in ("rnn", "gru", "lstm"):
        make = getattr(bp, kind)
        rec = [("n_in-zero", lambda m=make: m(0, 4), "n_in"),
               ("hidden-zero", lambda m=make: m(3, 0), "hidden"),
               ("hidden-negative", lambda m=make: m(3, -1), "hidden"),
               ("truncate-zero", lambda m=make: m(3, 4, truncate=0), "truncate"),
               ("initial-state-unknown", lambda m=make: m(3, 4, initial_state="x"),
                "initial_state"),
               ("return-sequences-string", lambda m=make: m(3, 4, return_sequences="yes"),
                "return_sequences")]
        for tag, fn, word in rec:
            case(f"{kind}-{tag}", "layers", f"bp.{kind}: {tag}", lambda t, fn=fn: fn(),
                 expect=(word,))
    for tag, v in {"string": "a", "nan": NAN, "inf": INF, "none": None, "list": [0.1]}.items():
        case(f"leaky-relu-{tag}", "layers", f"bp.leaky_relu({v!r})",
             lambda t, v=v: bp.leaky_relu(v), expect=("alpha",), issue=tag == "string")
    case("activation-unknown", "layers", "bp.activation('bogus')",
         lambda t: bp.activation("bogus"), expect=("bogus",))
    case("activation-int", "layers", "bp.activation(5)", lambda t: bp.activation(5))
    mlps = [("empty", lambda: bp.mlp([]), "sizes"),
            ("one-size", lambda: bp.mlp([4]), "sizes"),
            ("zero", lambda: bp.mlp([4, 0, 3]), "0"),
            ("negative", lambda: bp.mlp([4, -1, 3]), "-1"),
            ("fraction", lambda: bp.mlp([4, 2.5, 3]), "2.5"),
            ("string", lambda: bp.mlp("4,5,3"), "sizes"),
            ("none", lambda: bp.mlp(None), "sizes"),
            ("activation-unknown", lambda: bp.mlp([4, 5, 3], "bogus"), "bogus"),
            ("output-unknown", lambda: bp.mlp([4, 5, 3], output="bogus"), "bogus"),
            ("init-unknown", lambda: bp.mlp([4, 5, 3], init="bogus"), "bogus"),
            ("huge-init", lambda: bp.mlp([4, 2**40, 3]).init(0), "memory")]
    for tag, fn, word in mlps:
        case(f"mlp-{tag}", "layers", f"bp.mlp: {tag}", lambda t, fn=fn: fn(), expect=(word,))
    configs = [("empty", {}, "name"), ("unknown", {"name": "nope"}, "nope"),
               ("dense-missing", {"name": "dense"}, "n_in"),
               ("dense-negative", {"name": "dense", "n_in": -1, "n_out": 3}, "n_in"),
               ("string", "dense", "config"), ("none", None, "config"),
               ("layers-int", {"name": "sequential", "layers": 5}, "layers"),
               ("extra-key", {"name": "dense", "n_in": 3, "n_out": 4, "bogus": 1}, "bogus")]
    for tag, cfg, word in configs:
        case(f"from-config-{tag}", "layers", f"bp.from_config({cfg!r})",
             lambda t, cfg=cfg: bp.from_config(cfg), expect=(word,))

    def deep_config(t: Path) -> Any:
        cfg: dict[str, Any] = {"name": "dense", "n_in": 3, "n_out": 3}
        for _ in range(5000):
            cfg = {"name": "sequential", "layers": [cfg]}
        return bp.from_config(cfg)
    case("from-config-deep", "layers", "a layer config nested 5000 deep", deep_config)


# --------------------------------------------------------------------------
# architecture strings


def _arch_cases() -> None:
    from bpcore.layers.arch import build
    specs = [("empty", "", (8,), "architecture"), ("open-paren", "dense(", (8,), "dense("),
             ("unclosed", "dense(10", (8,), "dense(10"), ("no-args", "dense()", (8,), "dense"),
             ("negative", "dense(-1)", (8,), "-1"), ("zero", "dense(0)", (8,), "0"),
             ("float", "dense(1e3)", (8,), "dense"), ("name-arg", "dense(x)", (8,), "dense"),
             ("unknown", "bogus", (8,), "bogus"), ("space", "relu relu", (8,), "relu"),
             ("double-comma", "dense(10),,relu", (8,), "character"),
             ("conv-missing-kernel", "conv1d(25)", (40,), "conv1d"),
             ("conv-stride-zero", "conv1d(25,5,stride=0)", (40,), "stride"),
             ("flatten-arg", "flatten(3)", (8,), "flatten"),
             ("residual-empty", "residual()", (8,), "residual"),
             ("residual-shape", "residual(dense(7))", (8,), "residual"),
             ("gru-zero", "gru(0)", (40,), "hidden"),
             ("bidirectional-dense", "bidirectional(dense(4))", (40,), "bidirectional"),
             ("code", "__import__('os').system('true')", (8,), "__import__"),
             ("semicolon", "dense(10);relu", (8,), "dense"),
             ("unknown-keyword", "dense(10, foo=1)", (8,), "foo"),
             ("pool-too-big", "max_pool1d(100)", (40,), "max_pool1d"),
             ("kernel-too-big", "conv1d(4,50)", (40,), "conv1d"),
             ("very-long", "x" * 100_000, (8,), "unknown layer"),
             ("deep-nesting", "residual(" * 500 + "relu" + ")" * 500, (8,), ""),
             ("bad-in-shape-zero", "dense(4)", (0,), "shape"),
             ("bad-in-shape-negative", "dense(4)", (-1,), "shape"),
             ("bad-in-shape-string", "dense(4)", "a", "shape")]
    for tag, spec, shape, word in specs:
        case(f"arch-{tag}", "arch", f"build({spec[:40]!r}, {shape!r})",
             lambda t, spec=spec, shape=shape: build(spec, shape),
             expect=(word,) if word else ())


# --------------------------------------------------------------------------
# optimizers and losses


def _optimizer_cases() -> None:
    bad = {"negative": -0.1, "nan": NAN, "inf": INF, "string": "a", "none": None,
           "list": [0.1], "complex": 1j}
    for name in ("sgd", "momentum", "adam", "adamw"):
        make = getattr(bp, name)
        for tag, v in bad.items():
            case(f"{name}-lr-{tag}", "optim", f"bp.{name}(lr={v!r})",
                 lambda t, m=make, v=v: m(lr=v), expect=("lr",))
        for tag, v in {"negative": -1.0, "nan": NAN}.items():
            case(f"{name}-weight-decay-{tag}", "optim", f"bp.{name}(weight_decay={v!r})",
                 lambda t, m=make, v=v: m(weight_decay=v), expect=("weight_decay",))
        for tag, v in {"zero": 0.0, "negative": -1.0, "string": "a"}.items():
            case(f"{name}-clip-norm-{tag}", "optim", f"bp.{name}(clip_norm={v!r})",
                 lambda t, m=make, v=v: m(clip_norm=v), expect=("clip_norm",))
    for tag, v in {"negative": -0.5, "nan": NAN, "string": "x"}.items():
        case(f"sgd-momentum-{tag}", "optim", f"bp.sgd(momentum={v!r})",
             lambda t, v=v: bp.sgd(momentum=v), expect=("momentum",))
    case("sgd-nesterov-without-momentum", "optim", "bp.sgd(nesterov=True) (momentum 0)",
         lambda t: bp.sgd(nesterov=True), expect=("nesterov",))
    case("sgd-nesterov-string", "optim", "bp.sgd(momentum=0.9, nesterov='yes')",
         lambda t: bp.sgd(momentum=0.9, nesterov="yes"), expect=("nesterov",))
    for name in ("adam", "adamw"):
        make = getattr(bp, name)
        betas = {"beta1-one": (1.0, 0.999), "beta2-over-one": (0.9, 1.5),
                 "beta1-negative": (-0.1, 0.9), "string": "ab", "one-value": (0.9,),
                 "nan": (NAN, 0.999)}
        for tag, v in betas.items():
            case(f"{name}-betas-{tag}", "optim", f"bp.{name}(betas={v!r})",
                 lambda t, m=make, v=v: m(betas=v), expect=("beta",))
        for tag, v in {"negative": -1.0, "nan": NAN}.items():
            case(f"{name}-eps-{tag}", "optim", f"bp.{name}(eps={v!r})",
                 lambda t, m=make, v=v: m(eps=v), expect=("eps",))
    case("get-optimizer-unknown", "optim", "get_optimizer('bogus')",
         lambda t: bp.get_optimizer("bogus"), expect=("bogus",))
    case("get-optimizer-bad-lr", "optim", "get_optimizer('adam', lr=-1)",
         lambda t: bp.get_optimizer("adam", lr=-1), expect=("lr",))
    case("get-optimizer-unknown-kwarg", "optim", "get_optimizer('adam', foo=1)",
         lambda t: bp.get_optimizer("adam", foo=1), expect=("foo",))
    case("get-optimizer-int", "optim", "get_optimizer(5)", lambda t: bp.get_optimizer(5))
    case("get-loss-unknown", "losses", "get_loss('bogus')", lambda t: bp.get_loss("bogus"),
         expect=("bogus",))
    case("get-loss-int", "losses", "get_loss(5)", lambda t: bp.get_loss(5))
    case("get-loss-none", "losses", "get_loss(None)", lambda t: bp.get_loss(None))
    case("loss-shapes-differ", "losses", "mse(y (4,3), t (4,2))",
         lambda t: bp.mse(np.zeros((4, 3)), np.zeros((4, 2))), expect=("shape",))
    case("loss-labels-out-of-range", "losses", "softmax_cross_entropy, label 7 of 3",
         lambda t: bp.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 7])),
         valid="a bare loss kernel checks shapes, not values (a device sync per call); the "
         "step driver and Model check labels first (train-step-t-out-of-range), "
         "bp.checks.check_targets does in one's own loop")
    # numbers of any real type are numbers (the issue's refusals): valid inputs
    for tag, v in {"np-float32": np.float32(0.01), "0d-array": np.array(0.01),
                   "fraction": Fraction(1, 100), "decimal": Decimal("0.01")}.items():
        case(f"adam-lr-{tag}", "optim", f"bp.adam(lr={v!r})", lambda t, v=v: bp.adam(lr=v),
             valid="any real number type is a number (issue 12, point 4)", issue=True)
    case("mlp-np-int64", "layers", "bp.mlp([4, np.int64(5), 3])",
         lambda t: bp.mlp([4, np.int64(5), 3]),
         valid="any integral type is an int (issue 12, point 4)", issue=True)


# --------------------------------------------------------------------------
# the step driver: train_step, value_and_grad, predict


VALID_LIST = "a list of layer dicts is as good a sequence as a tuple"


def _params_variants() -> dict[str, tuple[Callable[[Any], Any], str]]:
    """Bad parameter trees for the 4-8-3 net (dense, tanh, dense), each with a word
    the refusal must contain."""

    def first(p: Any, layer: dict[str, Any]) -> Any:
        return (layer, *p[1:])

    def nan(p: Any) -> Any:
        w = p[0]["W"].copy()
        w[0, 0] = np.nan
        return first(p, {"W": w, "b": p[0]["b"]})

    def inf(p: Any) -> Any:
        b = p[-1]["b"].copy()
        b[0] = np.inf
        return (*p[:-1], {"W": p[-1]["W"], "b": b})

    def torch_leaf(p: Any) -> Any:
        import torch
        return first(p, {k: torch.asarray(v) for k, v in p[0].items()})

    return {
        "wrong-key": (lambda p: first(p, {"V": p[0]["W"], "b": p[0]["b"]}), "'V'"),
        "missing-key": (lambda p: first(p, {"W": p[0]["W"]}), "'b'"),
        "W-shape": (lambda p: first(p, {"W": np.zeros((5, 8), np.float32), "b": p[0]["b"]}),
                    "(5, 8)"),
        "b-shape": (lambda p: first(p, {"W": p[0]["W"], "b": np.zeros(7, np.float32)}), "(7,)"),
        "too-few-layers": (lambda p: p[:1], "layers"),
        "too-many-layers": (lambda p: (*p, p[0]), "layers"),
        "none": (lambda p: None, "no arrays"), "int": (lambda p: 5, "no arrays"),
        "list-not-tuple": (lambda p: list(p), VALID_LIST),
        "mixed-dtypes": (lambda p: first(p, {k: v.astype(np.float64) for k, v in p[0].items()}),
                         "float64"),
        "nan-weight": (nan, "nan"), "inf-bias": (inf, "inf"),
        **({"numpy-and-torch": (torch_leaf, "torch")} if HAVE["torch"] else {}),
        "int-weights": (lambda p: first(p, {k: v.astype(np.int32) for k, v in p[0].items()}),
                        "int32"),
        "string-leaf": (lambda p: first(p, {"W": "W", "b": p[0]["b"]}), "str"),
        "params-on-activation": (lambda p: (p[0], {"W": p[0]["W"]}, p[2]), "layer 1"),
    }


def _x_variants() -> dict[str, Callable[[np.ndarray], Any]]:
    return {"wrong-features": lambda x: x[:, :3], "1-d": lambda x: x[0],
            "3-d": lambda x: x[:, :, None], "empty-batch": lambda x: x[:0],
            "nan": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x),
            "inf": lambda x: np.full_like(x, np.inf), "strings": lambda x: x.astype(str),
            "complex": lambda x: x.astype(np.complex64), "none": lambda x: None,
            "object": lambda x: x.astype(object), "beyond-float32": lambda x: x * 1e39,
            "0-d": lambda x: np.float32(1.0)}


#: words the refusal of each bad x must contain
X_WORDS = {"wrong-features": "3 features", "1-d": "2-D", "3-d": "2-D", "empty-batch": "empty",
           "nan": "nan", "inf": "infinite", "strings": "<U", "complex": "complex64",
           "none": "NoneType", "object": "object", "beyond-float32": "infinite", "0-d": "2-D"}


def _step_cases() -> None:
    for tag, (fn, word) in _params_variants().items():
        def run_step(t: Path, fn: Any = fn) -> Any:
            net, params, opt, _, x, y = small()
            bad = fn(params)
            return step_of(net, opt)(bad, opt.init(params), x, y)

        def run_vg(t: Path, fn: Any = fn) -> Any:
            net, params, _, _, x, y = small()
            return bp.value_and_grad(net, "softmax_cross_entropy", fn(params), x, y)

        def run_predict(t: Path, fn: Any = fn) -> Any:
            net, params, _, _, x, _ = small()
            return bp.predict(net, fn(params), x)
        for where, run in (("train-step", run_step), ("value-and-grad", run_vg),
                           ("predict", run_predict)):
            case(f"{where}-params-{tag}", "step", f"{where} with params: {tag}", run,
                 issue=True, expect=(word,) if word and word != VALID_LIST else (),
                 valid=word if word == VALID_LIST else None)
    for tag, fn in _x_variants().items():
        def run_step_x(t: Path, fn: Any = fn) -> Any:
            net, params, opt, state, x, y = small()
            return step_of(net, opt)(params, state, fn(x), y)

        def run_predict_x(t: Path, fn: Any = fn) -> Any:
            net, params, _, _, x, _ = small()
            return bp.predict(net, params, fn(x))
        word = X_WORDS.get(tag, "")
        case(f"train-step-x-{tag}", "step", f"train_step with x: {tag}", run_step_x,
             expect=(word,) if word else ())
        case(f"predict-x-{tag}", "step", f"predict with x: {tag}", run_predict_x,
             expect=(word,) if word else ())
    targets = {"wrong-length": lambda y: y[:4], "out-of-range": lambda y: y + 5,
               "negative": lambda y: y - 1, "float-labels": lambda y: y + 0.5,
               "nan": lambda y: np.full(y.shape, np.nan), "2-d": lambda y: np.ones((6, 2)),
               "strings": lambda y: y.astype(str), "none": lambda y: None}
    for tag, fn in targets.items():
        def run_t(t: Path, fn: Any = fn) -> Any:
            net, params, opt, state, x, y = small()
            return step_of(net, opt)(params, state, x, fn(y))
        case(f"train-step-t-{tag}", "step", f"train_step with labels: {tag}", run_t,
             expect=({"none": "NoneType", "out-of-range": "label 7", "negative": "label -1",
                      "wrong-length": "(4,)", "2-d": "(6, 2)"}.get(tag, "label"),))
    states = {"none": lambda s, p: None, "other-arch": lambda s, p: bp.adam().init(
                  bp.mlp([4, 5, 3]).init(0)),
              "sgd-state-for-adam": lambda s, p: bp.momentum().init(p),
              "string": lambda s, p: "state",
              "count-negative": lambda s, p: s._replace(count=-1)}
    for tag, fn in states.items():
        def run_s(t: Path, fn: Any = fn) -> Any:
            net, params, opt, state, x, y = small()
            return step_of(net, opt)(params, fn(state, params), x, y)
        case(f"train-step-state-{tag}", "step", f"train_step with state: {tag}", run_s,
             issue=True)
    def mse_empty(t: Path) -> Any:
        net, params, opt, state, x, _ = small()
        return bp.train_step(net, "mse", opt)(params, state, x[:0], np.zeros((0, 3), np.float32))
    case("train-step-mse-empty-batch", "step", "train_step with mse on an empty batch",
         mse_empty, expect=("empty",), issue=True)
    weights = {"negative": lambda n: -np.ones(n), "wrong-length": lambda n: np.ones(n + 1),
               "nan": lambda n: np.full(n, np.nan), "all-zero": lambda n: np.zeros(n)}
    for tag, fn in weights.items():
        def run_w(t: Path, fn: Any = fn) -> Any:
            net, params, _, _, x, y = small()
            return bp.value_and_grad(net, "softmax_cross_entropy", params, x, y,
                                     weights=fn(len(y)))
        case(f"value-and-grad-weights-{tag}", "step", f"value_and_grad weights: {tag}", run_w)
    builders = [("optimizer-by-name", lambda: bp.train_step(small()[0], "mse", "adam"),
                 "optimizer"),
                ("net-string", lambda: bp.train_step("net", "mse", bp.adam()), "model"),
                ("loss-unknown", lambda: bp.train_step(small()[0], "bogus", bp.adam()),
                 "bogus"),
                ("optimizer-none", lambda: bp.train_step(small()[0], "mse", None), "optimizer"),
                ("loss-int", lambda: bp.train_step(small()[0], 5, bp.adam()), "loss"),
                ("grad-transform-int",
                 lambda: bp.train_step(small()[0], "mse", bp.adam(), grad_transform=5),
                 "grad_transform")]
    for tag, fn, word in builders:
        case(f"train-step-{tag}", "step", f"train_step: {tag}", lambda t, fn=fn: fn(),
             expect=(word,), issue=tag == "optimizer-by-name")
    case("value-and-grad-net-int", "step", "value_and_grad(5, ...)",
         lambda t: bp.value_and_grad(5, "mse", small()[1], small()[4], small()[5]))
    case("predict-net-none", "step", "predict(None, params, x)",
         lambda t: bp.predict(None, small()[1], small()[4]))
    case("to-backend-unknown", "backend", "to_backend(params, 'bogus')",
         lambda t: bp.to_backend(small()[1], "bogus"), expect=("bogus",))
    case("set-backend-unknown", "backend", "set_backend('bogus')",
         lambda t: bp.set_backend("bogus"), expect=("bogus",))
    case("use-backend-device-bogus", "backend", "use_backend('torch', device='bogus')",
         lambda t: bp.use_backend("torch", "bogus").__enter__(), expect=("bogus",))
    case("torch-cuda-unavailable", "backend", "use_backend('torch', device='cuda:0') on CPU",
         lambda t: bp.use_backend("torch", "cuda:0").__enter__(), expect=("cuda",),
         issue=True, no_gpu=True)
    case("cupy-unavailable", "backend", "set_backend('cupy') without CUDA",
         lambda t: bp.set_backend("cupy"), expect=("cupy",), no_gpu=True)
    case("mixed-compute-dtype", "step", "mixed_precision_step(compute_dtype='int8')",
         lambda t: bp.mixed_precision_step(small()[0], "mse", bp.adam(),
                                           compute_dtype="int8"), expect=("int8",))
    case("mixed-growth-interval", "step", "mixed_precision_step(growth_interval=0)",
         lambda t: bp.mixed_precision_step(small()[0], "mse", bp.adam(), compute_dtype="float16",
                                           growth_interval=0), expect=("growth_interval",))
    case("compile-loss-missing", "step", "bp.compile(net) without loss/optimizer",
         lambda t: bp.compile(small()[0]), expect=("loss",))


# --------------------------------------------------------------------------
# Model


def _model_cases() -> None:
    builds = {"empty": dict(layers=[]), "one-size": dict(layers=[4]),
              "zero": dict(layers=[4, 0, 3]), "huge": dict(layers=[4, 2**40, 3]),
              "activation": dict(layers=[4, 8, 3], activation="bogus"),
              "loss": dict(layers=[4, 8, 3], loss="bogus"),
              "optimizer": dict(layers=[4, 8, 3], optimizer="bogus"),
              "lr-negative": dict(layers=[4, 8, 3], lr=-1), "lr-string": dict(layers=[4, 8, 3],
                                                                              lr="a"),
              "batch-size-zero": dict(layers=[4, 8, 3], batch_size=0),
              "batch-size-fraction": dict(layers=[4, 8, 3], batch_size=2.5),
              "backend": dict(layers=[4, 8, 3], backend="bogus"),
              "device": dict(layers=[4, 8, 3], backend="torch", device="bogus"),
              "dtype-float16": dict(layers=[4, 8, 3], dtype="float16"),
              "dtype-int32": dict(layers=[4, 8, 3], dtype="int32"),
              "seed-negative": dict(layers=[4, 8, 3], seed=-1),
              "seed-string": dict(layers=[4, 8, 3], seed="a"),
              "scaling": dict(layers=[4, 8, 3], scaling="bogus"),
              "weight-decay-negative": dict(layers=[4, 8, 3], weight_decay=-1.0),
              "layers-string": dict(layers="4,8,3")}
    words = {"huge": "memory", "activation": "bogus", "loss": "bogus", "optimizer": "bogus",
             "lr-negative": "lr", "lr-string": "lr", "batch-size-zero": "batch_size",
             "batch-size-fraction": "batch_size", "backend": "bogus", "device": "bogus",
             "dtype-float16": "float16", "dtype-int32": "int32", "seed-negative": "seed",
             "seed-string": "seed", "scaling": "bogus", "weight-decay-negative": "weight_decay"}
    for tag, kw in builds.items():
        case(f"model-{tag}", "model", f"Model({kw})",
             lambda t, kw=kw: bp.Model(kw.pop("layers") if False else kw["layers"],
                                       **{k: v for k, v in kw.items() if k != "layers"}),
             expect=(words[tag],) if tag in words else (), issue=tag in ("huge", "device"))
    X, y = blobs()
    fits: dict[str, Callable[[], Any]] = {
        "x-wrong-features": lambda: (X[:, :3], y, {}),
        "x-nan": lambda: (np.where(X > 2, np.nan, X), y, {}),
        "x-empty": lambda: (X[:0], y[:0], {}),
        "x-string": lambda: ("X", y, {}), "x-none": lambda: (None, y, {}),
        "x-1d": lambda: (X[:, 0], y, {}),
        "y-wrong-length": lambda: (X, y[:-1], {}),
        "y-one-class": lambda: (X, np.zeros_like(y), {}),
        "y-nan": lambda: (X, np.full(len(y), np.nan), {}),
        "y-none": lambda: (X, None, {}),
        "too-many-classes": lambda: (X, np.arange(len(y)) % 7, {}),
        "epochs-negative": lambda: (X, y, {"epochs": -1}),
        "epochs-fraction": lambda: (X, y, {"epochs": 2.5}),
        "epochs-string": lambda: (X, y, {"epochs": "5"}),
        "validation-split-over-one": lambda: (X, y, {"validation_split": 1.5}),
        "validation-split-negative": lambda: (X, y, {"validation_split": -0.1}),
        "validation-split-one": lambda: (X, y, {"validation_split": 1.0}),
        "validation-data-shape": lambda: (X, y, {"validation_data": (X[:, :2], y)}),
        "validation-data-one": lambda: (X, y, {"validation_data": (X,)}),
        "sample-weight-negative": lambda: (X, y, {"sample_weight": -np.ones(len(y))}),
        "sample-weight-nan": lambda: (X, y, {"sample_weight": np.full(len(y), np.nan)}),
        "sample-weight-length": lambda: (X, y, {"sample_weight": np.ones(3)}),
        "callbacks-int": lambda: (X, y, {"callbacks": [5]}),
        "callbacks-not-list": lambda: (X, y, {"callbacks": 5}),
        "verbose-unknown": lambda: (X, y, {"verbose": "loud"}),
        "batch-size-zero": lambda: (X, y, {"batch_size": 0}),
        "shuffle-string": lambda: (X, y, {"shuffle": "yes"}),
    }
    fit_words = {"x-none": "got None", "x-string": "str", "x-wrong-features": "features",
                 "x-nan": "nan", "x-empty": "no samples",
                 "y-wrong-length": "29", "y-one-class": "class", "callbacks-int": "callback",
                 "epochs-negative": "epochs", "epochs-fraction": "epochs",
                 "validation-split-over-one": "validation_split",
                 "sample-weight-negative": "weight", "batch-size-zero": "batch_size",
                 "too-many-classes": "7"}
    for tag, make in fits.items():
        def run_fit(t: Path, make: Any = make) -> Any:
            Xb, yb, kw = make()
            model = bp.Model([4, 8, 3], activation="tanh", batch_size=8, backend="numpy")
            kw = {"epochs": 1, "verbose": 0, "progress": False, **kw}
            return model.fit(Xb, yb, **kw)
        case(f"model-fit-{tag}", "model", f"Model.fit: {tag}", run_fit,
             expect=(fit_words[tag],) if tag in fit_words else (),
             issue=tag in ("y-one-class", "x-empty", "callbacks-int"))
    case("model-fit-wide-labels", "model", "fit with labels 250000-250019 on a 3-output net",
         lambda t: bp.Model([4, 8, 3], backend="numpy").fit(
             blobs(40)[0], 250000 + np.arange(40) % 20, epochs=1, progress=False, verbose=0),
         expect=("20",), issue=True)

    def wide_labels_encoded(t: Path) -> Any:
        X, _ = blobs(40)
        model = bp.Model([4, 8, 20], backend="numpy")
        model.fit(X, 250000 + np.arange(40) % 20, epochs=1, progress=False, verbose=0)
        pred = model.predict(X)
        assert set(np.asarray(pred).tolist()) <= set(range(250000, 250020))
        return pred
    case("model-fit-wide-labels-encoded", "model", "labels 250000-250019 on a 20-output net",
         wide_labels_encoded, valid="labels with gaps are encoded to 0..k-1 (point 6)",
         issue=True)

    def string_labels(t: Path) -> Any:
        X, y = blobs()
        labels = np.array(["cat", "dog", "eel"])[y]
        model = bp.Model([4, 8, 3], backend="numpy")
        model.fit(X, labels, epochs=1, progress=False, verbose=0)
        assert set(model.predict(X).tolist()) <= {"cat", "dog", "eel"}
    case("model-fit-string-labels", "model", "string labels", string_labels,
         valid="string labels are encoded and decoded (point 6)", issue=True)

    def predict_unfitted(t: Path) -> Any:
        return bp.Model([4, 8, 3], backend="numpy").predict(blobs()[0])
    case("model-predict-unfitted", "model", "predict before fit", predict_unfitted,
         expect=("fit",))
    pred = {"wrong-features": lambda m, X: m.predict(X[:, :3]),
            "nan": lambda m, X: m.predict(np.full_like(X, np.nan)),
            "empty": lambda m, X: m.predict(X[:0]),
            "string": lambda m, X: m.predict("X"),
            "proba-wrong-features": lambda m, X: m.predict_proba(X[:, :2]),
            "evaluate-wrong-length": lambda m, X: m.evaluate(X, blobs()[1][:3]),
            "evaluate-unknown-label": lambda m, X: m.evaluate(X, blobs()[1] + 10)}
    for tag, fn in pred.items():
        case(f"model-predict-{tag}", "model", f"Model.predict: {tag}",
             lambda t, fn=fn: fn(fitted(), blobs()[0]))

    def save_existing(t: Path) -> Any:
        (t / "keep.npz").write_bytes(b"the user's file")
        return fitted().save(t / "keep.npz")
    case("model-save-existing", "model", "save onto an existing file", save_existing,
         expect=("exists",))
    case("model-save-directory", "model", "save to a directory",
         lambda t: fitted().save(t), expect=("directory",))
    case("model-save-missing-dir", "model", "save into a missing directory",
         lambda t: fitted().save(t / "nope" / "m.npz"),
         valid="documented (save_checkpoint): missing parent directories are created")
    case("model-save-none", "model", "save(None)", lambda t: fitted().save(None))

    def save_after_nan(t: Path) -> Any:
        X, y = blobs()
        model = bp.Model([4, 8, 3], optimizer="sgd", lr=1e38, scaling="none", batch_size=30,
                         backend="numpy")
        with contextlib.suppress(bp.NonFiniteError):
            model.fit(X * 1e30, y, epochs=3, progress=False, verbose=0)
        if not all(np.isfinite(np.asarray(a)).all() for a in bp.tree.leaves(model.params)):
            raise AssertionError("model.params not finite after NonFiniteError")
        model.save(t / "after.npz")
        return bp.Model.load(t / "after.npz")
    case("model-save-after-divergence", "model",
         "save after fit raised NonFiniteError (params kept finite)", save_after_nan,
         valid="the last finite parameters are kept and saved (point 2)", issue=True)

    def diverge(t: Path) -> Any:
        X, y = blobs()
        model = bp.Model([4, 8, 3], optimizer="sgd", lr=1e38, scaling="none", batch_size=30,
                         backend="numpy")
        return model.fit(X * 1e30, y, epochs=3, progress=False, verbose=0)
    case("model-fit-diverges", "model", "fit with lr 1e38 on inputs near 1e30", diverge,
         expect=("epoch",), issue=True)
    loads = {"none": lambda t: bp.Model.load(None),
             "missing": lambda t: bp.Model.load(t / "missing.npz"),
             "directory": lambda t: bp.Model.load(t),
             "text-file": lambda t: (t / "a.npz").write_text("hello") and bp.Model.load(
                 t / "a.npz"),
             "other-npz": lambda t: (np.savez(t / "o.npz", X=np.ones(3)), bp.Model.load(
                 t / "o.npz"))[1],
             "empty-file": lambda t: ((t / "e.npz").write_bytes(b""), bp.Model.load(
                 t / "e.npz"))[1],
             "backend": lambda t: bp.Model.load(saved_checkpoint(t), backend="bogus"),
             "int-path": lambda t: bp.Model.load(5)}
    for tag, fn in loads.items():
        case(f"model-load-{tag}", "model", f"Model.load: {tag}", fn,
             issue=tag == "none")


# --------------------------------------------------------------------------
# bpcore.sklearn


def _sklearn_cases() -> None:
    from bpcore import sklearn as bsk
    X, y = blobs()
    params = {"hidden-zero": {"hidden_layer_sizes": (0,)},
              "hidden-negative": {"hidden_layer_sizes": (-1,)},
              "hidden-string": {"hidden_layer_sizes": "abc"},
              "activation": {"activation": "bogus"}, "solver": {"solver": "bogus"},
              "alpha-negative": {"alpha": -1.0}, "batch-size-zero": {"batch_size": 0},
              "learning-rate": {"learning_rate": "bogus"},
              "learning-rate-init-negative": {"learning_rate_init": -1.0},
              "max-iter-zero": {"max_iter": 0}, "momentum-over-one": {"momentum": 2.0},
              "beta-1-one": {"beta_1": 1.0}, "beta-2-negative": {"beta_2": -0.1},
              "validation-fraction": {"validation_fraction": 1.5, "early_stopping": True},
              "n-iter-no-change-zero": {"n_iter_no_change": 0},
              "backend": {"backend": "bogus"}, "dtype": {"dtype": "int8"}}
    for tag, kw in params.items():
        word = next(iter(kw))
        case(f"sklearn-classifier-{tag}", "sklearn", f"MLPClassifier({kw}).fit",
             lambda t, kw=kw: bsk.MLPClassifier(**{"max_iter": 2, **kw}).fit(X, y),
             expect=(word,))
    for tag, kw in {"activation": {"activation": "bogus"},
                    "alpha-nan": {"alpha": NAN}}.items():
        case(f"sklearn-regressor-{tag}", "sklearn", f"MLPRegressor({kw}).fit",
             lambda t, kw=kw: bsk.MLPRegressor(max_iter=2, **kw).fit(X, y * 1.0),
             expect=(next(iter(kw)),))
    data = {"x-nan": lambda: (np.where(X > 2, np.nan, X), y),
            "y-length": lambda: (X, y[:-2]), "x-1d": lambda: (X[:, 0], y),
            "x-words": lambda: (np.full(X.shape, "a"), y), "x-empty": lambda: (X[:0], y[:0])}
    for tag, make in data.items():
        case(f"sklearn-fit-{tag}", "sklearn", f"MLPClassifier.fit: {tag}",
             lambda t, make=make: bsk.MLPClassifier(max_iter=2).fit(*make()))
    case("sklearn-fit-x-numeric-strings", "sklearn", "MLPClassifier.fit on numeric strings",
         lambda t: bsk.MLPClassifier(max_iter=2).fit(X.astype(str), y),
         valid="as scikit-learn's own MLPClassifier: numeric strings are converted")
    case("sklearn-predict-wrong-features", "sklearn", "predict with 3 of 4 features",
         lambda t: bsk.MLPClassifier(max_iter=2).fit(X, y).predict(X[:, :3]),
         expect=("features",))
    case("sklearn-regressor-y-nan", "sklearn", "MLPRegressor.fit with NaN targets",
         lambda t: bsk.MLPRegressor(max_iter=2).fit(X, np.full(len(y), np.nan)))


# --------------------------------------------------------------------------
# checkpoints


def _checkpoint_cases() -> None:
    from bpcore.checkpoint import load_checkpoint

    def edited(dotted: str, value: Any) -> Callable[[Path], Any]:
        from test_checkpoint_hostile import edit, set_field

        def run(t: Path) -> Any:
            path = saved_checkpoint(t)
            edit(path, set_field(dotted, value))
            return bp.Model.load(path, backend="numpy")
        return run
    fields = [("epoch", -5), ("epoch", 1e30), ("epoch", "x"), ("epoch", None), ("epoch", NAN),
              ("epoch", INF), ("structure.opt_state.fields.count.value", -1),
              ("meta.n_classes", "three"), ("meta.n_classes", None), ("meta.batch_size", 2.5),
              ("meta.scaler", {"method": "standard", "shift": [0.0, 1.0],
                               "scale": [1.0, 1.0]}),
              ("dtype", "float64"), ("optimizer_config.lr", -1.0),
              ("model_config.layers.0.n_in", 0), ("meta.classes", [2, 1, 0]),
              ("meta.scaler.method", "zscore"),
              ("optimizer_config", {"name": "sgd", "lr": 0.1, "momentum": 0.0,
                                    "nesterov": False, "weight_decay": 0.0})]
    for dotted, value in fields:
        tag = f"{dotted.split('.')[-1] if 'value' not in dotted else 'adam-count'}-{value!r}"
        tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)[:40]
        word = {"optimizer_config": "sgd"}.get(dotted, dotted.split(".")[-1]
                                                  if "value" not in dotted else "count")
        case(f"checkpoint-{tag}", "checkpoint", f"header {dotted} = {value!r}",
             edited(dotted, value), expect=(word,), issue=True)

    def opt_state_none(t: Path) -> Any:
        from test_checkpoint_hostile import edit

        def fn(header: dict[str, Any], arrays: dict[str, Any]) -> None:
            header["structure"]["opt_state"] = {"type": "none"}
            for k in [k for k in arrays if k.startswith("opt")]:
                del arrays[k]
        path = saved_checkpoint(t)
        edit(path, fn)
        return bp.Model.load(path, backend="numpy")
    case("checkpoint-opt-state-none", "checkpoint", "opt_state None for an Adam model",
         opt_state_none, expect=("opt_state",), issue=True)

    def nan_weight(t: Path) -> Any:
        from test_checkpoint_hostile import edit

        def fn(header: dict[str, Any], arrays: dict[str, Any]) -> None:
            arrays["params/0/W"] = arrays["params/0/W"].copy()
            arrays["params/0/W"][0, 0] = np.nan
        path = saved_checkpoint(t)
        edit(path, fn)
        return bp.Model.load(path, backend="numpy")
    case("checkpoint-nan-weight", "checkpoint", "one NaN weight (digest recomputed)",
         nan_weight, expect=("params/0/W",), issue=True)

    def flipped_bit(t: Path) -> Any:
        from test_checkpoint_hostile import read_members, write_members
        path = saved_checkpoint(t)
        members = read_members(path)
        members = [(n, d[:-3] + bytes([d[-3] ^ 1]) + d[-2:]) if n == "params/0/W.npy" else (n, d)
                   for n, d in members]
        write_members(path, members)
        return load_checkpoint(path, backend="numpy")
    case("checkpoint-bit-flip-crc", "checkpoint", "a bit flipped, the zip CRC recomputed",
         flipped_bit, expect=("digest",), issue=True)

    def deep_json(t: Path) -> Any:
        from test_checkpoint_hostile import header_text, write_header_text
        path = saved_checkpoint(t)
        text = header_text(path)
        write_header_text(path, text.replace('"meta": {', '"meta": {"deep": ' + "[" * 100_000
                                             + "]" * 100_000 + ", ", 1))
        return load_checkpoint(path, backend="numpy")
    case("checkpoint-deep-json", "checkpoint", "header JSON nested 100k deep", deep_json,
         expect=("json",), issue=True)

    def tokenize_header(t: Path) -> Any:
        from test_checkpoint_hostile import npy_text, replace_member
        path = saved_checkpoint(t)
        replace_member(path, "params/0/W.npy", npy_text(b"(4, 8), }", b"(4, 8), " + b"'" * 3))
        return load_checkpoint(path, backend="numpy")
    case("checkpoint-npy-tokenize", "checkpoint", "a garbage .npy header (tokenize error)",
         tokenize_header, expect=("malformed",), issue=True)

    def zip_field(signature: bytes, offset: int, value: int) -> Callable[[Path], Any]:
        def run(t: Path) -> Any:
            path = saved_checkpoint(t)
            original = load_checkpoint(path, backend="numpy")
            data = bytearray(path.read_bytes())
            at = data.index(signature) + offset
            data[at] = value
            path.write_bytes(bytes(data))
            loaded = load_checkpoint(path, backend="numpy")
            for a, b in zip(bp.tree.leaves(original.params), bp.tree.leaves(loaded.params)):
                if np.asarray(a).tobytes() != np.asarray(b).tobytes():
                    raise AssertionError("loaded, but not the original")
            return loaded
        return run
    case("checkpoint-zip-local-version", "checkpoint", "local 'version needed' byte set to 99",
         zip_field(b"PK\x03\x04", 4, 99), issue=True,
         valid="the local header's version is read by nothing: the load is bit-identical")
    case("checkpoint-zip-local-method", "checkpoint", "local compression method set to 99",
         zip_field(b"PK\x03\x04", 8, 99), issue=True)
    case("checkpoint-zip-central-version", "checkpoint", "central 'version needed' set to 99",
         zip_field(b"PK\x01\x02", 6, 99), issue=True)
    case("checkpoint-zip-central-method", "checkpoint", "central compression method set to 99",
         zip_field(b"PK\x01\x02", 10, 99), issue=True)

    def bomb(t: Path) -> Any:
        from test_checkpoint_hostile import bomb_checkpoint
        bomb_checkpoint(t / "bomb.npz", consistent=True)
        return load_checkpoint(t / "bomb.npz", backend="numpy")
    case("checkpoint-zip-bomb", "checkpoint", "2 GiB declared in a 2 MB zip", bomb,
         expect=("zip bomb",), issue=True)

    def truncated(t: Path) -> Any:
        path = saved_checkpoint(t)
        path.write_bytes(path.read_bytes()[:200])
        return load_checkpoint(path, backend="numpy")
    case("checkpoint-truncated", "checkpoint", "the first 200 bytes only", truncated)
    case("checkpoint-random-bytes", "checkpoint", "1 kB of random bytes",
         lambda t: ((t / "r.npz").write_bytes(np.random.default_rng(0).bytes(1024)),
                    load_checkpoint(t / "r.npz"))[1])
    case("checkpoint-pickle", "checkpoint", "an npz holding a pickled object array",
         lambda t: (np.savez(t / "p.npz", a=np.array([{"x": 1}], dtype=object)),
                    load_checkpoint(t / "p.npz"))[1])
    case("checkpoint-model-config-mismatch", "checkpoint", "load against another architecture",
         lambda t: load_checkpoint(saved_checkpoint(t), model_config=bp.mlp([4, 5, 3]).config),
         expect=("5",))



# --------------------------------------------------------------------------
# data loaders


def _data_cases() -> None:
    from bpcore.data import batch_indices, fit_scaler, load_dataset, parse_idx, split
    files = {
        "empty-csv": ("e.csv", b""),
        "strings-csv": ("s.csv", b"a,b,c\nx,y,z\nq,r,s\n"),
        "ragged-csv": ("r.csv", b"1,2,3\n4,5\n6,7,8\n"),
        "nan-csv": ("n.csv", b"1,nan,0\n2,3,1\n4,5,0\n"),
        "huge-label-csv": ("h.csv", b"1,2,0\n3,4,1e12\n5,6,1\n"),
        "binary-csv": ("b.csv", bytes(range(256)) * 4),
        "header-only-csv": ("ho.csv", b"x1,x2,label\n"),
        "one-column-csv": ("oc.csv", b"1\n2\n3\n"),
        "txt-suffix": ("d.txt", b"1,2,0\n"),
        "npz-garbage": ("g.npz", b"not a zip"),
    }
    for tag, (name, data) in files.items():
        def run(t: Path, name: str = name, data: bytes = data) -> Any:
            (t / name).write_bytes(data)
            return load_dataset(str(t / name))
        case(f"data-{tag}", "data", f"load_dataset of {tag}", run, expect=(name,),
             issue=tag == "huge-label-csv",
             valid="labels 0, 1, 1e12 are 3 classes, encoded 0..2 by Model (point 6)"
             if tag == "huge-label-csv" else None)

    def npz(name: str, **arrays: Any) -> Callable[[Path], Any]:
        def run(t: Path) -> Any:
            np.savez(t / name, **arrays)
            return load_dataset(str(t / name))
        return run
    case("data-npz-no-X", "data", "an npz without X", npz("a.npz", y=np.zeros(3)),
         expect=("X",))
    case("data-npz-lengths", "data", "an npz whose X and y differ in length",
         npz("b.npz", X=np.zeros((4, 2)), y=np.zeros(3)), expect=("3",))
    case("data-npz-object", "data", "an npz of object arrays",
         npz("c.npz", X=np.array([[{}]], dtype=object), y=np.zeros(1)))
    case("data-npz-3d-y", "data", "an npz with 3-D labels",
         npz("d.npz", X=np.zeros((4, 2)), y=np.zeros((4, 2, 2))))
    case("data-unknown-name", "data", "load_dataset('bogus')", lambda t: load_dataset("bogus"),
         expect=("bogus",))
    case("data-missing-file", "data", "a missing .csv", lambda t: load_dataset(
        str(t / "missing.csv")), expect=("missing.csv",))
    case("data-mnist-missing-dir", "data", "mnist:DIR that does not exist",
         lambda t: load_dataset(f"mnist:{t}/nope"), expect=("nope",))
    case("data-mnist-empty-dir", "data", "fashion-mnist:DIR with no files",
         lambda t: load_dataset(f"fashion-mnist:{t}"), expect=("train",))
    case("data-directory", "data", "a directory as a data file",
         lambda t: (os.mkdir(t / "d.csv"), load_dataset(str(t / "d.csv")))[1],
         expect=("directory",))
    idx_overflow = b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3
    case("data-idx-overflow", "data", "an IDX header whose dimensions overflow",
         lambda t: parse_idx(idx_overflow, "x.idx"), expect=("x.idx",), issue=True)
    case("data-idx-truncated", "data", "an IDX file shorter than its header says",
         lambda t: parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x10abc", "t.idx"),
         expect=("t.idx",))
    case("data-idx-bad-magic", "data", "an IDX file with a bad magic number",
         lambda t: parse_idx(b"\x01\x02\x03\x04", "m.idx"), expect=("m.idx",))
    xor = lambda: load_dataset("xor")  # noqa: E731
    case("split-val-over-one", "data", "split(val=1.5)", lambda t: split(xor(), val=1.5),
         expect=("val",))
    case("split-test-negative", "data", "split(test=-0.1)", lambda t: split(xor(), test=-0.1),
         expect=("test",))
    case("split-sum-over-one", "data", "split(val=0.6, test=0.6)",
         lambda t: split(load_dataset("digits"), val=0.6, test=0.6), expect=("1",))
    case("split-xor-defaults", "data", "xor (4 samples) with the default splits",
         lambda t: split(xor()), issue=True,
         valid="one sample of each class is kept in training (point 6)")
    case("batch-indices-zero", "data", "batch_indices(batch_size=0)",
         lambda t: list(batch_indices(10, 0, seed=0, epoch=0)), expect=("batch",))
    case("batch-indices-negative-n", "data", "batch_indices(n=-1)",
         lambda t: list(batch_indices(-1, 4, seed=0, epoch=0)))
    case("fit-scaler-unknown", "data", "fit_scaler(method='bogus')",
         lambda t: fit_scaler(np.ones((3, 2)), "bogus"), expect=("bogus",))
    case("fit-scaler-empty", "data", "fit_scaler on no samples",
         lambda t: fit_scaler(np.ones((0, 2))))
    case("fit-scaler-nan", "data", "fit_scaler on NaN",
         lambda t: fit_scaler(np.full((3, 2), np.nan)))


# --------------------------------------------------------------------------
# the CLI


def finite_checkpoint(name: str) -> Callable[[Path, Any], str | None]:
    def check(t: Path, result: Any) -> str | None:
        path = t / name
        if not path.exists():
            return f"{name} was removed"
        try:
            loaded = bp.Model.load(path, backend="numpy")
        except BpcoreError as exc:
            return f"{name} no longer loads: {exc}"
        if not all(np.isfinite(np.asarray(a)).all() for a in bp.tree.leaves(loaded.params)):
            return f"{name} holds non-finite weights"
        return None
    return check


def _cli_cases() -> None:
    base = ["train", "--data", "{tmp}/data.csv", "--epochs", "1", "--quiet",
            "--layers", "4,8,3"]
    D = dict(setup=data_csv)
    user = dict(setup=lambda t: (data_csv(t), (t / "mine.csv").write_text("precious\n"),
                                 (t / "mine.png").write_bytes(b"\x89PNG precious"),
                                 (t / "mine.npz").write_bytes(b"precious")))
    cli("train-metrics-onto-data", "--metrics onto the --data file",
        [*base, "--metrics", "{tmp}/data.csv"], **D, issue=True, expect=("data.csv",))
    cli("train-metrics-onto-data-overwrite", "--metrics onto --data, with --overwrite",
        [*base, "--metrics", "{tmp}/data.csv", "--overwrite"], **D, issue=True)
    cli("train-metrics-existing", "--metrics onto an existing file",
        [*base, "--metrics", "{tmp}/mine.csv"], **user, issue=True, expect=("mine.csv",))
    cli("train-plot-existing", "--plot onto an existing file",
        [*base, "--plot", "{tmp}/mine.png"], **user, issue=True, expect=("mine.png",))
    cli("train-save-existing", "--save onto an existing file",
        [*base, "--save", "{tmp}/mine.npz"], **user, expect=("mine.npz",))
    cli("train-save-onto-data", "--save onto the --data file, with --overwrite",
        [*base, "--save", "{tmp}/data.csv", "--overwrite"], **D)
    cli("train-save-equals-metrics", "--save and --metrics on one path",
        [*base, "--save", "{tmp}/out.csv", "--metrics", "{tmp}/out.csv"], **D)
    cli("train-metrics-directory", "--metrics into a directory",
        [*base, "--metrics", "{tmp}"], **D, issue=True, expect=(".csv",))
    cli("train-metrics-directory-csv", "--metrics onto a directory named out.csv",
        [*base, "--metrics", "{tmp}/out.csv"], setup=lambda t: (data_csv(t), os.mkdir(
            t / "out.csv")), issue=True, expect=("directory",))
    cli("train-metrics-missing-dir", "--metrics in a missing directory",
        [*base, "--metrics", "{tmp}/nope/m.csv"], **D, issue=True, expect=("nope",))
    cli("train-metrics-suffix", "--metrics with an unknown suffix",
        [*base, "--metrics", "{tmp}/m.xlsx"], **D, expect=("xlsx",))
    cli("train-plot-suffix", "--plot with a suffix other than .png",
        [*base, "--plot", "{tmp}/p.gif"], **D)
    cli("train-save-directory", "--save to a directory", [*base, "--save", "{tmp}"], **D,
        expect=("directory",))
    cli("train-diverging-save", "a diverging run saving over ck.npz with --overwrite",
        ["train", "--data", "{tmp}/data.csv", "--layers", "4,8,3", "--quiet", "--epochs", "3",
         "--optimizer", "adamw", "--lr", "1e38", "--batch-size", "2000", "--save",
         "{tmp}/ck.npz", "--overwrite", "--scaling", "none"],
        setup=lambda t: (data_csv(t), saved_checkpoint(t)), check=finite_checkpoint("ck.npz"),
        issue=True, slow=True, expect=("epoch",))
    cli("train-huge-inputs-no-scaling", "inputs near 1e39 with --scaling none",
        ["train", "--data", "{tmp}/big.csv", "--layers", "4,8,3", "--quiet", "--epochs", "1",
         "--scaling", "none"],
        setup=lambda t: write_csv(t / "big.csv", blobs(60)[0] * 1e38, blobs(60)[1]),
        issue=True, expect=("too large",))
    values = {"lr-negative": ["--lr", "-1"], "lr-string": ["--lr", "abc"],
              "lr-nan": ["--lr", "nan"], "lr-inf": ["--lr", "inf"],
              "epochs-zero": ["--epochs", "0"], "epochs-negative": ["--epochs", "-1"],
              "epochs-string": ["--epochs", "x"], "batch-size-zero": ["--batch-size", "0"],
              "batch-size-fraction": ["--batch-size", "2.5"],
              "weight-decay-negative": ["--weight-decay", "-1"],
              "seed-negative": ["--seed", "-1"], "seed-string": ["--seed", "abc"],
              "threads-negative": ["--threads", "-1"], "val-over-one": ["--val", "1.5"],
              "test-negative": ["--test", "-0.1"], "val-test-sum": ["--val", "0.6", "--test",
                                                                    "0.6"],
              "layers-huge": ["--layers", "4,99999999999,3"],
              "layers-zero": ["--layers", "4,0,3"], "layers-string": ["--layers", "abc"],
              "layers-mismatch": ["--layers", "5,10"], "layers-empty": ["--layers", ""],
              "arch-bad": ["--arch", "bogus("], "arch-missing-json": ["--arch",
                                                                      "{tmp}/nope.json"],
              "arch-and-layers": ["--arch", "dense(8),relu,dense(3)", "--layers", "4,8,3"],
              "optimizer-unknown": ["--optimizer", "bogus"],
              "activation-unknown": ["--activation", "bogus"],
              "dtype-float16": ["--dtype", "float16"], "loss-unknown": ["--loss", "bogus"],
              "backend-unknown": ["--backend", "bogus"],
              "device-bogus": ["--backend", "torch", "--device", "bogus"],
              "torch-cuda": ["--backend", "torch", "--device", "cuda:0"],
              "cupy": ["--backend", "cupy"], "numpy-device": ["--device", "cuda:0"],
              "unknown-flag": ["--bogus"], "scaling-unknown": ["--scaling", "zscore"],
              "output-sigmoid-ce": ["--output", "softmax", "--loss", "softmax_cross_entropy"],
              "resume-missing": ["--resume", "{tmp}/missing.npz"],
              "allreduce-without-mpi": ["--allreduce-dtype", "float16"],
              "compile-numpy": ["--compile"]}
    words = {"lr-negative": "lr", "lr-string": "lr", "lr-nan": "lr", "lr-inf": "lr",
             "epochs-zero": "epochs", "epochs-negative": "epochs",
             "batch-size-zero": "batch-size", "layers-huge": "memory",
             "layers-mismatch": "5", "device-bogus": "bogus", "torch-cuda": "cuda",
             "threads-negative": "threads", "seed-negative": "seed",
             "val-over-one": "val", "resume-missing": "missing.npz"}
    valid = {"compile-numpy": "documented: numpy has no compiler, --compile runs the loop",
             "output-sigmoid-ce": "a network may end in softmax (the help says keep "
             "identity for the cross-entropies): well-defined, if a poor choice",
             "epochs-zero": "as Model.fit(epochs=0) and Keras: evaluates the initial "
             "network (with --resume: the run as saved)"}
    for tag, extra in values.items():
        argv = [a for a in base if True]
        if any(e == "--layers" for e in extra) or any(e == "--arch" for e in extra):
            argv = argv[:-2]
        if tag == "arch-and-layers":
            argv = [*base[:-2]]
        if tag == "epochs-zero" or tag.startswith("epochs-"):
            argv = [a for i, a in enumerate(argv) if not (a == "--epochs" or (
                i > 0 and argv[i - 1] == "--epochs"))]
        cli(f"train-{tag}", f"bpcore train {' '.join(extra)}", [*argv, *extra], **D,
            expect=(words[tag],) if tag in words else (), valid=valid.get(tag),
            issue=tag in ("layers-huge", "torch-cuda", "device-bogus"),
            no_gpu=tag in ("torch-cuda", "cupy"))
    cli("train-data-missing", "--data missing.csv", ["train", "--data", "{tmp}/missing.csv",
                                                     "--quiet"], expect=("missing.csv",))
    cli("train-data-unknown", "--data bogus", ["train", "--data", "bogus", "--quiet"],
        expect=("bogus",))
    cli("train-data-xor-defaults", "--data xor with the default splits",
        ["train", "--data", "xor", "--quiet", "--epochs", "1"], issue=True,
        valid="fewer than 20 samples: trains and evaluates on all of them, and says so")
    cli("train-data-xor-splits", "--data xor with --val 0.1 --test 0.2",
        ["train", "--data", "xor", "--quiet", "--epochs", "1", "--val", "0.1", "--test", "0.2"],
        issue=True, valid="asked-for splits keep one sample of each class in training")
    cli("train-csv-label-1e12", "a CSV label of 1e12",
        ["train", "--data", "{tmp}/l.csv", "--quiet", "--epochs", "1"],
        setup=lambda t: (t / "l.csv").write_text("1,2,0\n3,4,1e12\n5,6,1\n" * 10), issue=True,
        valid="labels 0, 1, 1e12 are 3 classes: a 3-output network (point 6)")
    cli("train-one-class", "a one-class data set",
        ["train", "--data", "{tmp}/one.csv", "--quiet", "--epochs", "1"],
        setup=lambda t: write_csv(t / "one.csv", blobs(30)[0], np.zeros(30, int)), issue=True,
        expect=("class",))
    cli("train-resume-text", "--resume a text file",
        ["train", "--data", "{tmp}/data.csv", "--quiet", "--resume", "{tmp}/r.npz"],
        setup=lambda t: (data_csv(t), (t / "r.npz").write_text("hi")), expect=("r.npz",))
    cli("train-resume-other-layers", "--resume with --layers that differ",
        ["train", "--data", "{tmp}/data.csv", "--quiet", "--resume", "{tmp}/ck.npz",
         "--layers", "4,5,3", "--epochs", "2"],
        setup=lambda t: (data_csv(t), saved_checkpoint(t)), expect=("layers",))
    cli("train-resume-save-same", "--resume ck.npz --save ck.npz without --overwrite",
        ["train", "--data", "{tmp}/data.csv", "--quiet", "--resume", "{tmp}/ck.npz",
         "--save", "{tmp}/ck.npz", "--epochs", "2"],
        setup=lambda t: (data_csv(t), saved_checkpoint(t)), expect=("overwrite",))
    cli("train-resume-nan", "--resume a checkpoint with a NaN weight",
        ["train", "--data", "{tmp}/data.csv", "--quiet", "--resume", "{tmp}/ck.npz",
         "--epochs", "2"],
        setup=lambda t: (data_csv(t), _nan_checkpoint(t)), expect=("params/0/W",), issue=True)
    cli("top-unknown-command", "bpcore bogus", ["bogus"])
    cli("top-unknown-option", "bpcore --bogus", ["--bogus"])
    cli("train-extra-positional", "bpcore train extra", ["train", "extra"])
    bench = {"sizes-zero": ["--sizes", "0"], "sizes-string": ["--sizes", "abc"],
             "workloads-unknown": ["--workloads", "bogus"],
             "backends-unknown": ["--backends", "bogus"], "dtype-float16": ["--dtype", "float16"],
             "max-time-negative": ["--max-time", "-1"], "passes-zero": ["--passes", "0"],
             "json-directory": ["--json", "{tmp}"], "compare-missing": ["--compare",
                                                                        "{tmp}/old.json"],
             "compare-fail-bad": ["--compare-fail", "bogus"],
             "threads-negative": ["--threads", "-2"], "device-tpu": ["--device", "tpu"],
             "rows-unknown": ["--rows", "bogus"], "min-rounds-zero": ["--min-rounds", "0"],
             "markdown-existing": ["--markdown", "{tmp}/mine.csv"],
             "json-missing-dir": ["--json", "{tmp}/nope/r.json"],
             "warmup-nan": ["--warmup", "nan"], "peers-unknown": ["--peers", "bogus"],
             "json-existing": ["--json", "{tmp}/mine.csv"],
             "plot-existing": ["--plot", "{tmp}/mine.png"],
             "json-onto-compare": ["--json", "{tmp}/mine.csv", "--compare", "{tmp}/mine.csv",
                                   "--overwrite"],
             "json-and-markdown-same": ["--json", "{tmp}/r.json", "--markdown", "{tmp}/r.json"]}
    for tag, extra in bench.items():
        cli(f"bench-{tag}", f"bpcore bench {' '.join(extra)}",
            ["bench", "--quick", "--backends", "numpy", "--peers", "none", "--workloads", "seed",
             "--sizes", "16", *extra] if tag not in ("sizes-zero", "sizes-string",
                                                     "workloads-unknown", "backends-unknown",
                                                     "peers-unknown")
            else ["bench", "--quick", *extra], **user)
    export = {"missing": ["{tmp}/missing.npz", "{tmp}/o.onnx"],
              "onto-checkpoint": ["{tmp}/ck.npz", "{tmp}/ck.npz"],
              "out-directory": ["{tmp}/ck.npz", "{tmp}"],
              "out-existing": ["{tmp}/ck.npz", "{tmp}/mine.csv"],
              "out-missing-dir": ["{tmp}/ck.npz", "{tmp}/nope/o.onnx"],
              "opset-low": ["{tmp}/ck.npz", "{tmp}/o.onnx", "--opset", "5"],
              "opset-string": ["{tmp}/ck.npz", "{tmp}/o.onnx", "--opset", "abc"],
              "text-checkpoint": ["{tmp}/mine.csv", "{tmp}/o.onnx"],
              "one-argument": ["{tmp}/ck.npz"]}
    for tag, extra in export.items():
        cli(f"export-{tag}", f"bpcore export {' '.join(extra)}", ["export", *extra],
            setup=lambda t: (user["setup"](t), saved_checkpoint(t)))


def _nan_checkpoint(t: Path) -> Path:
    from test_checkpoint_hostile import edit
    path = saved_checkpoint(t)

    def fn(header: dict[str, Any], arrays: dict[str, Any]) -> None:
        arrays["params/0/W"] = arrays["params/0/W"].copy()
        arrays["params/0/W"][0, 0] = np.nan
    edit(path, fn)
    return path


def build_cases() -> list[Case]:
    """Every case (those needing scikit-learn or torch only where they are installed)."""
    if not CASES:
        makers = [_layer_cases, _arch_cases, _optimizer_cases, _step_cases, _model_cases,
                  _checkpoint_cases, _data_cases, _cli_cases]
        if HAVE["sklearn"]:
            makers.insert(5, _sklearn_cases)
        for make in makers:
            make()
    return CASES


# --------------------------------------------------------------------------
# running and classifying


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 50 << 20:
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _lost(before: dict[str, bytes], root: Path, allowed: set[str]) -> str | None:
    for name, data in before.items():
        p = root / name
        if not p.exists():
            return f"{name} was removed"
        if name not in allowed and p.read_bytes() != data:
            return f"{name} was changed"
    return None


def _clear_message(message: str, expect: tuple[str, ...]) -> str | None:
    """Why a message is not clear, or None."""
    if len(message.strip()) < 15:
        return f"message too short: {message!r}"
    low = message.lower()
    missing = [w for w in expect if w.lower() not in low]
    if missing:
        return f"does not name {missing}: {message[:200]!r}"
    return None


def run_inprocess(c: Case, tmp: Path) -> tuple[str, str]:
    assert c.run is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                result = c.run(tmp)
    except BpcoreError as exc:
        why = _clear_message(str(exc), c.expect)
        name = type(exc).__name__
        return ("unclear", f"{name}: {why}") if why else ("clear", f"{name}: {exc}"[:300])
    except RecursionError:
        return "raw", "RecursionError"
    except Exception as exc:
        return "raw", f"{type(exc).__name__}: {exc}"[:300]
    if c.check is not None:
        why = c.check(tmp, result)
        if why:
            return "accepted", why
    if c.valid:
        return "valid", c.valid
    return "accepted", f"returned {type(result).__name__}"


def run_cli(c: Case, tmp: Path, mode: str) -> tuple[str, str]:
    assert c.argv is not None
    argv = [a.replace("{tmp}", str(tmp)) for a in c.argv]
    if mode == "subprocess":
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "100"}
        try:
            proc = subprocess.run([sys.executable, "-m", "bpcore", *argv], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return "unclear", "timed out after 300 s"
        rc, err = proc.returncode, proc.stderr
    else:
        from bpcore.cli import main
        buf, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(out):
                    try:
                        rc = main(argv)
                    except SystemExit as exc:
                        rc = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:
            return "raw", f"{type(exc).__name__}: {exc}"[:300]
        finally:
            os.chdir(cwd)
        err = buf.getvalue()
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in err:
        return "raw", lines[-1][:300] if lines else "traceback"
    if rc == 0:
        if c.check is not None:
            why = c.check(tmp, None)
            if why:
                return "accepted", why
        if c.valid:
            return "valid", c.valid
        return "accepted", "exit status 0"
    if rc == 2 and len(lines) == 1 and lines[0].startswith("bpcore: error: "):
        why = _clear_message(lines[0], c.expect)
        return ("unclear", why) if why else ("clear", lines[0][:300])
    return "unclear", f"exit {rc}, {len(lines)} stderr lines: " + " | ".join(lines[-3:])[:300]


def run_case(c: Case, mode: str = "subprocess") -> Outcome:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bpcore-census-") as d:
        tmp = Path(d)
        if c.setup is not None:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c.setup(tmp)
        before = _snapshot(tmp)
        with bp.use_backend("numpy"):
            cls, detail = run_inprocess(c, tmp) if c.run else run_cli(c, tmp, mode)
        allowed = {"ck.npz"} if c.check is not None else set()
        lost = _lost(before, tmp, allowed)
        if lost:
            cls, detail = "data_loss", f"{lost}; outcome {cls}: {detail}"[:300]
        elif c.check is not None and cls in ("clear", "unclear"):
            why = c.check(tmp, None)
            if why:
                cls, detail = "data_loss", f"{why}; outcome {cls}: {detail}"[:300]
    return Outcome(c.id, c.area, c.what, cls, detail, c.issue, time.perf_counter() - start)


def census(mode: str = "subprocess", fast: bool = False, only: str | None = None,
           progress: bool = True) -> list[Outcome]:
    out = []
    cases = [c for c in build_cases() if not (fast and c.slow)
             and (only is None or only in c.id)]
    for i, c in enumerate(cases, 1):
        o = run_case(c, mode)
        out.append(o)
        if progress:
            print(f"[{i}/{len(cases)}] {o.cls:9} {o.id}: {o.detail[:140]}", file=sys.stderr)
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md
    v = {"python": platform.python_version(), "bpcore": bp.__version__}
    for name in ("numpy", "array-api-compat", "array-api-strict", "torch", "jax",
                 "scikit-learn", "hypothesis"):
        try:
            v[name] = md.version(name)
        except md.PackageNotFoundError:
            v[name] = "not installed"
    return v


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(),
            "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(o.cls for o in outcomes)
    return {k: counts.get(k, 0) for k in CLASSES}


def zip_bomb() -> dict[str, Any]:
    """The 2 GiB zip bomb (2 MB on disk) loaded in a fresh process, each way the
    hostile-file tests build it: the outcome, tracemalloc's peak and the RSS growth."""
    from test_checkpoint_hostile import bomb_checkpoint, measure_load
    out = {}
    with tempfile.TemporaryDirectory(prefix="bpcore-census-") as d:
        for consistent in (False, True):
            path = Path(d) / "bomb.npz"
            bomb_checkpoint(path, consistent=consistent)
            result = measure_load(path)
            result["file_bytes"] = path.stat().st_size
            result["outcome"] = result["outcome"].replace(str(path), "bomb.npz")[:200]
            out["architecture agrees" if consistent else "architecture disagrees"] = result
    return out


def markdown(outcomes: list[Outcome], mode: str) -> str:
    t = tally(outcomes)
    lines = [f"{len(outcomes)} distinct bad inputs ({sum(o.issue for o in outcomes)} of them "
             f"the issue's reproducers), CLI run as `{mode}`:", "",
             "| class | count |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in t.items()]
    areas = sorted({o.area for o in outcomes})
    lines += ["", "| area | " + " | ".join(CLASSES) + " |",
              "| --- |" + " ---: |" * len(CLASSES)]
    for a in areas:
        at = tally([o for o in outcomes if o.area == a])
        lines.append(f"| {a} | " + " | ".join(str(at[k]) for k in CLASSES) + " |")
    bad = [o for o in outcomes if o.cls not in ("clear", "valid")]
    if bad:
        lines += ["", "Not yet clear:", ""]
        lines += [f"- `{o.id}` ({o.cls}): {o.detail}" for o in bad]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", choices=["subprocess", "inprocess"], default="subprocess")
    ap.add_argument("--fast", action="store_true", help="leave out the slow cases")
    ap.add_argument("--only", help="run the cases whose id contains this")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--zip-bomb", action="store_true",
                    help="also measure the memory of loading the 2 GiB zip bomb")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    outcomes = census(args.cli, args.fast, args.only)
    elapsed = time.perf_counter() - start
    text = markdown(outcomes, args.cli)
    bomb = zip_bomb() if args.zip_bomb else None
    if bomb:
        text += "\nZip bomb (2 GiB declared):\n\n" + "\n".join(
            f"- {k}: traced peak {v['traced_peak'] / 2**20:.1f} MiB, RSS growth "
            f"{v['rss_growth'] / 2**20:.1f} MiB; {v['outcome']}" for k, v in bomb.items()) + "\n"
    print(text)
    print(f"{elapsed:.1f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "mode": args.cli, "seconds": round(elapsed, 1), "machine": machine(),
            "versions": versions(), "counts": tally(outcomes), "zip_bomb": bomb,
            "cases": [o.__dict__ for o in outcomes]}, indent=1, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
