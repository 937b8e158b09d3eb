"""The recurrent workload: one training step of the MNIST-1D GRU baseline.

The network of the MNIST-1D paper's GRU baseline (greydanus/mnist1d,
``notebooks/models.py`` GRUBase): a bidirectional GRU of hidden size 6 over
the 40 steps of a sample (one value a step), every step's output flattened
into a linear classifier (480 -> 10); softmax cross-entropy and Adam (lr
1e-2). Unlike the dense workloads of :mod:`~bpcore.benchtools.workloads`,
whose cost is their GEMMs, this one is a time loop of small operations: 80
dependent steps (40 each way) forward and backward, so it measures the per-
operation overhead of each library.

Every row starts from the same weights (torch's initialization, loaded into
bpcore with :func:`bpcore.layers.recurrent.load_torch_state_dict`) and trains
on the same batch. :func:`build` makes a row's timed ``step()`` as
:func:`bpcore.benchtools.rows.build` does for the dense workloads (a
:class:`~bpcore.benchtools.rows.Runner`); ``benchmarks/e2e/gru_step.py`` times
them in interleaved rounds.

In ``bpcore bench`` the same network is the ``gru`` workload
(:data:`bpcore.benchtools.workloads.WORKLOADS`, written as
:data:`bpcore.layers.arch.MNIST1D_GRU`): its rows are the suite's (bpcore on
every backend, compiled or not, from bpcore's initial weights), and its
``torch-eager``/``torch-compile`` peers run ``torch.nn.GRU`` holding those very
weights, built here by :func:`torch_recurrent`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .rows import Runner, Unavailable, cpu_name

__all__ = ["GRU_ROWS", "GRU_WORKLOAD", "GRUWorkload", "build", "host_setup", "torch_recurrent"]


class GRUWorkload(NamedTuple):
    """The recurrent network and its recipe."""

    name: str
    time: int
    features: int
    hidden: int
    classes: int
    lr: float
    description: str


GRU_WORKLOAD = GRUWorkload(
    "gru-mnist1d", 40, 1, 6, 10, 1e-2,
    "MNIST-1D GRU baseline: bidirectional GRU (hidden 6) over 40 steps of 1 value, "
    "flattened into dense 480-10, softmax cross-entropy, Adam lr 1e-2",
)

#: Row name -> what it runs.
GRU_ROWS = {
    "bpcore-numpy": "bp.compile(net, loss, opt) on NumPy: the step driver's workspace, in place",
    "bpcore-numpy-default": "bp.train_step(net, loss, opt): every batch checked, functional",
    "bpcore-torch": "bp.train_step(..., validate=False) on PyTorch tensors (eager)",
    "bpcore-jax-compiled": "bp.compile(net, loss, opt) on JAX: one jax.jit program",
    "torch-eager": "torch.nn.GRU + torch.nn.Linear + torch.optim.Adam, eager",
    "torch-compile": "the torch-eager step's forward under torch.compile",
}


def host_setup(
    workload: GRUWorkload = GRU_WORKLOAD, batch: int = 100, dtype: str = "float32",
    seed: int = 0,
) -> tuple[Any, Any, tuple[Any, ...], np.ndarray, np.ndarray]:
    """``(torch GRU, torch Linear, bpcore host params, x, labels)``: one set of weights."""
    import torch

    from ..layers.recurrent import load_torch_state_dict

    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    gru = torch.nn.GRU(workload.features, workload.hidden, batch_first=True,
                       bidirectional=True).to(tdtype)
    lin = torch.nn.Linear(2 * workload.hidden * workload.time, workload.classes).to(tdtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, workload.time)).astype(dtype)
    t = rng.integers(0, workload.classes, batch)
    params: tuple[Any, ...] = ({}, load_torch_state_dict(gru, "gru"), {},
              {"W": lin.weight.detach().numpy().T.copy(), "b": lin.bias.detach().numpy().copy()})
    return gru, lin, params, x, t


def torch_recurrent(config: dict[str, Any], params: dict[str, np.ndarray]) -> Any:
    """A ``torch.nn`` module computing bpcore's recurrent layer ``config`` with the
    weights ``params`` (host arrays; ``W_ih`` is torch's ``weight_ih_l0``, the
    ``_reverse`` keys its ``*_l0_reverse``): ``torch.nn.RNN/GRU/LSTM`` with
    ``batch_first=True`` (``bidirectional=True`` for a bidirectional layer),
    returning every step's output, or with ``return_sequences=False`` the final
    states (for two directions ``concat(h_n[0], h_n[1])``, as bpcore).

    Raises
    ------
    Unavailable
        For options torch's modules do not have (truncated BPTT, a learned initial
        state, one reversed direction alone).
    """
    import torch
    from torch import nn

    from ..layers.recurrent import _TORCH_NAMES

    bi = config["name"] == "bidirectional"
    inner = config["layer"] if bi else config
    kind = inner["name"]
    if inner.get("truncate") is not None or inner.get("initial_state", "zeros") != "zeros" \
            or inner.get("reverse"):
        raise Unavailable(f"no torch module for a {kind} with truncate=, a learned initial "
                          "state or reverse=True alone")
    cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
    module = cls(inner["n_in"], inner["hidden"], batch_first=True, bidirectional=bi,
                 dtype=torch.from_numpy(np.asarray(params["W_ih"])).dtype)
    with torch.no_grad():
        for key, name in _TORCH_NAMES.items():
            for s in ("", "_reverse") if bi else ("",):
                getattr(module, name + s).copy_(torch.from_numpy(
                    np.ascontiguousarray(params[key + s])))
    seq = bool(inner.get("return_sequences", True))

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = module

        def forward(self, x: Any) -> Any:
            y, h_n = self.cell(x)
            if seq:
                return y
            h_n = h_n[0] if kind == "lstm" else h_n  # (D, batch, H)
            return torch.cat(tuple(h_n), dim=1)

    return Recurrent()


def network(workload: GRUWorkload = GRU_WORKLOAD) -> Any:
    """The bpcore network: reshape, bidirectional GRU, flatten, dense."""
    import bpcore as bp
    from bpcore.layers.recurrent import bidirectional, gru

    return bp.sequential(bp.reshape((workload.time, workload.features)),
                         bidirectional(gru(workload.features, workload.hidden)), bp.flatten(),
                         bp.dense(2 * workload.hidden * workload.time, workload.classes))


def build(row: str, batch: int = 100, dtype: str = "float32", device: str = "cpu",
          workload: GRUWorkload = GRU_WORKLOAD) -> Runner:
    """Row ``row``'s timed ``step()`` (one training step, finished on the host).

    Raises
    ------
    Unavailable
        For a row that cannot run here (a library missing, a device other than the CPU).
    """
    if row not in GRU_ROWS:
        raise Unavailable(f"no recurrent row {row!r}; rows: {', '.join(GRU_ROWS)}")
    if device != "cpu":
        raise Unavailable("the recurrent rows run on the CPU only so far")
    try:
        import torch
    except ImportError:
        raise Unavailable("the recurrent rows need torch (the weights come from torch.nn.GRU)") \
            from None
    gru_t, lin, host_params, x_h, t_h = host_setup(workload, batch, dtype)
    extra = {"workload": workload.name, "row": GRU_ROWS[row], "batch": batch, "dtype": dtype}
    if row.startswith("torch-"):
        return Runner(_torch_step(torch, gru_t, lin, x_h, t_h, workload, row == "torch-compile"),
                      cpu_name(), extra)
    backend = {"bpcore-numpy": "numpy", "bpcore-numpy-default": "numpy",
               "bpcore-torch": "torch", "bpcore-jax-compiled": "jax"}[row]
    if backend == "jax":
        try:
            import jax  # noqa: F401
        except ImportError:
            raise Unavailable("jax is not installed") from None
    return Runner(_bpcore_step(backend, row, host_params, x_h, t_h, workload), cpu_name(), extra)


def _torch_step(torch: Any, gru_t: Any, lin: Any, x_h: np.ndarray, t_h: np.ndarray,
                workload: GRUWorkload, compiled: bool) -> Callable[[], None]:
    model = torch.nn.ModuleDict({"gru": copy.deepcopy(gru_t), "lin": copy.deepcopy(lin)})
    opt = torch.optim.Adam(model.parameters(), workload.lr)
    x, t = torch.tensor(x_h), torch.tensor(t_h)
    criterion = torch.nn.CrossEntropyLoss()

    def forward(x: Any) -> Any:  # GRUBase.forward
        out, _ = model["gru"](x.view(*x.shape[:2], workload.features))
        return model["lin"](out.reshape(out.shape[0], -1))

    fwd = torch.compile(forward) if compiled else forward

    def step() -> None:
        value = criterion(fwd(x), t)
        value.backward()
        opt.step()
        opt.zero_grad()
        value.item()

    return step


def _bpcore_step(backend: str, row: str, host_params: Any, x_h: np.ndarray, t_h: np.ndarray,
                 workload: GRUWorkload) -> Callable[[], None]:
    import bpcore as bp

    net, loss = network(workload), "softmax_cross_entropy"
    with bp.use_backend(backend) as b:
        params = bp.to_backend(host_params, backend)
        opt = bp.adam(workload.lr)
        state = opt.init(params)
        x, t = b.asarray(x_h), b.asarray(t_h)
        step_fn: Callable[..., Any]
        if row in ("bpcore-numpy", "bpcore-jax-compiled"):
            step_fn = bp.compile(net, loss, opt)
        else:
            step_fn = bp.train_step(net, loss, opt, validate=row == "bpcore-numpy-default")
    box = [params, state]

    def step() -> None:
        box[0], box[1], value = step_fn(box[0], box[1], x, t)
        float(value)

    return step
