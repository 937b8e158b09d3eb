"""A bpcore network rebuilt from its configs with ``torch.nn.functional``, for
comparing bpcore's explicit gradients with PyTorch's autograd; and the
value-and-gradient of a bpcore network on any backend (jitted on JAX, whose
eager mode compiles every operation of a convolution for every shape)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from gradcheck import host, put

import bpcore as bp
from bpcore.backend import backend_name

__all__ = ["bp_grads", "torch_forward", "torch_grads"]


def torch_forward(torch: ModuleType, config: dict[str, Any], params: Any, x: Any,
                  state: Any = None, train: bool = True) -> Any:
    """``x`` through the layer of ``config`` with torch tensors ``params`` (and, for
    batch norm, running statistics ``state``, updated in place as torch does)."""
    F = torch.nn.functional
    name = config["name"]
    if name == "sequential":
        for i, (c, p) in enumerate(zip(config["layers"], params)):
            x = torch_forward(torch, c, p, x, None if state is None else state[i], train)
        return x
    if name == "residual":
        return x + torch_forward(torch, config["layer"], params, x, state, train)
    if name == "parallel":
        ys = [torch_forward(torch, c, p, x, None if state is None else state[i], train)
              for i, (c, p) in enumerate(zip(config["layers"], params))]
        return torch.cat(ys, dim=1) if config["combine"] == "concat" else sum(ys)
    if name == "reshape":
        return x.reshape(x.shape[0], *config["shape"])
    if name == "flatten":
        return x.reshape(x.shape[0], -1)
    if name == "dense":
        return x @ params["W"] + params["b"]
    if name in ("relu", "tanh", "sigmoid"):
        return getattr(torch, name)(x)
    if name == "dropout":
        assert not train or config["p"] == 0.0, "masks differ from torch's: compare p=0"
        return x
    if name.startswith("conv"):
        f = F.conv1d if name == "conv1d" else F.conv2d
        return f(x, params["W"], params["b"], stride=config["stride"],
                 padding=config["padding"], dilation=config["dilation"])
    if name.startswith("max_pool"):
        f = F.max_pool1d if name.endswith("1d") else F.max_pool2d
        return f(x, config["kernel_size"], config["stride"], config["padding"],
                 config["dilation"])
    if name.startswith("avg_pool"):
        f = F.avg_pool1d if name.endswith("1d") else F.avg_pool2d
        return f(x, config["kernel_size"], config["stride"], config["padding"],
                 count_include_pad=config["count_include_pad"])
    if name == "layer_norm":
        shape = config["normalized_shape"]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return F.layer_norm(x, shape, params["gamma"], params["beta"], config["eps"])
    if name == "batch_norm":
        return F.batch_norm(x, state["mean"], state["var"], params["gamma"], params["beta"],
                            training=train, momentum=config["momentum"], eps=config["eps"])
    if name == "embedding":
        return F.embedding(x, params["W"])
    raise KeyError(name)


def torch_grads(torch: ModuleType, net: bp.Layer, params: Any, x_host: np.ndarray,
                t_host: np.ndarray, state: Any = None, train: bool = True) -> Any:
    """``(loss, [{key: grad}], state)`` of softmax cross-entropy by torch autograd."""
    tparams = bp.tree.map_arrays(lambda a: torch.tensor(host(a), requires_grad=True), params)
    tstate = None if state is None else bp.tree.map_arrays(
        lambda a: torch.tensor(host(a)), state)
    x = torch.tensor(x_host)
    logits = torch_forward(torch, net.config, tparams, x, tstate, train)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(t_host))
    loss.backward()
    grads = bp.tree.map_arrays(lambda a: a.grad.numpy(), tparams)
    return loss.item(), grads, tstate


def bp_grads(xp: ModuleType, net: bp.Layer, params: Any, x_host: np.ndarray,
             t_host: np.ndarray, state: Any = None) -> tuple[float, Any]:
    """bpcore's ``value_and_grad`` on ``xp`` (under ``jax.jit`` on JAX)."""
    jax = backend_name(xp) == "jax"

    def grad(p: Any, x: Any, t: Any, s: Any) -> Any:
        return bp.value_and_grad(net, "softmax_cross_entropy", p, x, t, validate=not jax,
                                 state=s)

    if jax:
        import jax as jax_module

        grad = jax_module.jit(grad)
    value, grads = grad(params, put(xp, x_host), put(xp, t_host), state)
    return float(host(value)), grads
