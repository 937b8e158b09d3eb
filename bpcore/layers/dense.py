"""The dense (affine) layer: ``z = x @ W + b``."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, namespace
from ..dispatch import Binding, Workspace, specializes
from ..init import as_generator, initializer, zeros
from . import _weights
from .core import Layer, Params, positive_int

__all__ = ["DenseCache", "dense", "dense_backward", "dense_forward"]


class DenseCache(NamedTuple):
    """What the backward pass of a dense layer needs: its input."""

    x: Array


def dense_forward(
    params: Params, x: Array, *, xp: ModuleType | None = None
) -> tuple[Array, DenseCache]:
    """Affine map ``z = x @ W + b``.

    Parameters
    ----------
    params : dict
        ``W`` of shape ``(n_in, n_out)``, ``b`` of shape ``(n_out,)``.
    x : array, shape (batch, n_in)

    Returns
    -------
    z : array, shape (batch, n_out)
    cache : DenseCache

    Examples
    --------
    >>> import numpy as np
    >>> z, _ = dense_forward({"W": np.eye(2), "b": np.ones(2)}, np.ones((1, 2)))
    >>> z.tolist()
    [[2.0, 2.0]]
    """
    return x @ params["W"] + params["b"], DenseCache(x)


def dense_backward(
    params: Params, cache: DenseCache, dz: Array, *,
    xp: ModuleType | None = None, need_dx: bool = True,
) -> tuple[Array | None, Params]:
    """Delta rule for an affine layer.

    ``dW = xᵀ dz``, ``db = Σ_batch dz``, ``dx = dz Wᵀ`` (``None`` when
    ``need_dx`` is false, as for a network's first layer).

    Parameters
    ----------
    dz : array, shape (batch, n_out)
        Gradient of the loss with respect to this layer's output.

    Returns
    -------
    dx : array of shape (batch, n_in), or None
    grads : dict with ``W`` (n_in, n_out) and ``b`` (n_out,)
    """
    xp = namespace(dz, xp=xp)
    x = cache.x
    grads = {"W": x.mT @ dz, "b": xp.sum(dz, axis=0)}
    return (dz @ params["W"].mT if need_dx else None), grads


@specializes(dense_forward, "numpy")
def _dense_forward_numpy(
    params: Params, x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, DenseCache]:
    """``x @ W + b`` with the product written into the workspace and the bias
    added in place (no allocation per step).
    Without it a step takes 6.5% longer (wide network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    W = params["W"]
    dtype = x.dtype if x.dtype == W.dtype else np.result_type(x, W)
    shape = (x.shape[0], W.shape[1])
    z = np.matmul(x, W, out=None if ws is None else ws.buffer("z", shape, dtype))
    np.add(z, params["b"], out=z)
    return z, DenseCache(x)


@specializes(dense_forward, "torch")
def _dense_forward_torch(
    params: Params, x: Array, *, xp: ModuleType | None = None, ws: Workspace | None = None
) -> tuple[Array, DenseCache]:
    """``x @ W + b`` as one ``addmm`` (the bias added by the GEMM itself).
    Without it a step takes 9.0% longer (wide network, batch 4096;
    benchmarks/specializations.py, 2026-12-02)."""
    W, b = params["W"], params["b"]
    if ws is None:
        return sys.modules["torch"].addmm(b, x, W), DenseCache(x)
    z = ws.buffer("z", (x.shape[0], W.shape[1]), x.dtype, device=x.device)
    return sys.modules["torch"].addmm(b, x, W, out=z), DenseCache(x)


@specializes(dense_backward, "numpy")
def _dense_backward_numpy(
    params: Params, cache: DenseCache, dz: Array, *,
    xp: ModuleType | None = None, need_dx: bool = True, ws: Workspace | None = None,
) -> tuple[Array | None, Params]:
    """The delta rule with ``dW`` and ``dx`` written into the workspace.
    Without it a step takes 5.6% longer (seed network, batch 16;
    benchmarks/specializations.py, 2026-12-02)."""
    W, x = params["W"], cache.x
    dW = None if ws is None else ws.buffer("dW", W.shape, dz.dtype)
    grads = {"W": np.matmul(x.T, dz, out=dW), "b": np.add.reduce(dz, axis=0)}
    if not need_dx:
        return None, grads
    dx = None if ws is None else ws.buffer("dx", x.shape, dz.dtype)
    return np.matmul(dz, W.T, out=dx), grads


def dense(
    n_in: int, n_out: int, *, init: str = "glorot_uniform"
) -> Layer:
    """A dense (fully connected) layer with ``W: (n_in, n_out)`` and ``b: (n_out,)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output feature counts.
    init : str
        Weight initializer: ``glorot_uniform`` (default), ``glorot_normal``,
        ``he_uniform``, ``he_normal`` (see :mod:`bpcore.init`); biases start at
        zero. ``torch``: PyTorch's ``nn.Linear`` default, ``W`` and ``b`` both
        uniform in ``±1/√n_in``.

    Examples
    --------
    >>> import bpcore as bp
    >>> layer = bp.dense(3, 2)
    >>> params = layer.init(0)
    >>> tuple(params["W"].shape), tuple(params["b"].shape)
    ((3, 2), (2,))
    """
    n_in, n_out = positive_int(n_in, "dense(): n_in"), positive_int(n_out, "dense(): n_out")
    torch_init = init == "torch"  # PyTorch's nn.Linear default: W and b in ±1/√n_in
    w_init = None if torch_init else initializer(init)

    def init_params(
        rng: int | np.random.Generator | None = None, *,
        xp: ModuleType | None = None, dtype: Any = None, device: Any = None,
    ) -> Params:
        rng = as_generator(rng)  # a seed works too, as in the example above
        if w_init is None:
            W, b = _weights.draw("torch", rng, (n_in, n_out), n_out, n_in, n_out, xp=xp,
                                 dtype=dtype, device=device)
            return {"W": W, "b": b}
        W = w_init(rng, (n_in, n_out), xp=xp, dtype=dtype, device=device)
        return {"W": W, "b": zeros(rng, (n_out,), xp=xp, dtype=dtype, device=device)}

    config = {"name": "dense", "n_in": n_in, "n_out": n_out,
              "init": init if isinstance(init, str) else getattr(init, "__name__", "custom")}

    def shapes() -> Params:
        return {"W": (n_in, n_out), "b": (n_out,)}

    def bind(binding: Binding) -> Layer:
        return Layer(init_params, binding.kernel(dense_forward), binding.kernel(dense_backward),
                     "dense", n_in, n_out, config, None, None, shapes)

    return Layer(init_params, dense_forward, dense_backward, "dense", n_in, n_out, config, bind,
                 None, shapes)
