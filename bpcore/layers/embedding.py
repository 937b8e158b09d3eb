"""The embedding layer: rows of a table picked by integer indices.

``y[..., :] = W[i[...], :]`` for indices ``i`` of any shape, as
``torch.nn.Embedding`` (``W`` of shape ``(num_embeddings, dim)``). The
backward pass adds each ``dy`` row to the row of the table it came from,
``dW = onehot(i)ᵀ dy`` (the standard has no scatter-add: a one-hot matrix
and one product, portable everywhere; NumPy's ``add.at`` beside it), and
integer inputs have no gradient (``dx`` is ``None``): an embedding is the
first layer of a network.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, device_of, namespace
from ..dispatch import Binding, Workspace, specializes
from ..errors import ShapeError
from ..init import as_generator
from . import _weights
from .core import Layer, Params, Shape, positive_int

__all__ = ["EmbeddingCache", "embedding", "embedding_backward", "embedding_forward"]


class EmbeddingCache(NamedTuple):
    """What the backward pass needs: the indices, flattened, and their shape."""

    index: Array  # (n,) integer
    shape: tuple[int, ...]


def embedding_forward(
    params: Params, index: Array, *, xp: ModuleType | None = None
) -> tuple[Array, EmbeddingCache]:
    """``y = W[index]``: shape ``(*index.shape, dim)``.

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = embedding_forward({"W": np.arange(6.0).reshape(3, 2)}, np.array([2, 0]))
    >>> y.tolist()
    [[4.0, 5.0], [0.0, 1.0]]
    """
    xp = namespace(index, xp=xp)
    W = params["W"]
    flat = xp.reshape(index, (-1,))
    y = xp.take(W, flat, axis=0)
    return xp.reshape(y, (*index.shape, W.shape[1])), EmbeddingCache(flat, tuple(index.shape))


def embedding_backward(
    params: Params, cache: EmbeddingCache, dy: Array, *, xp: ModuleType | None = None,
    need_dx: bool = True,
) -> tuple[None, Params]:
    """``dW[r] = Σ_{k : index[k] = r} dy[k]`` (``onehot(index)ᵀ dy``); ``dx`` is ``None``."""
    xp = namespace(dy, xp=xp)
    W = params["W"]
    rows = xp.arange(W.shape[0], dtype=cache.index.dtype, device=device_of(dy))
    hit = xp.expand_dims(cache.index, axis=1) == xp.expand_dims(rows, axis=0)
    onehot = xp.astype(hit, dy.dtype)
    return None, {"W": onehot.mT @ xp.reshape(dy, (-1, W.shape[1]))}


@specializes(embedding_backward, "numpy")
def _embedding_backward_numpy(
    params: Params, cache: EmbeddingCache, dy: Array, *, xp: ModuleType | None = None,
    need_dx: bool = True, ws: Workspace | None = None,
) -> tuple[None, Params]:
    """The scatter-add as ``np.add.at`` (no one-hot matrix). MEASURE"""
    W = params["W"]
    dW = np.zeros(W.shape, dtype=dy.dtype)
    np.add.at(dW, cache.index, np.reshape(dy, (-1, W.shape[1])))
    return None, {"W": dW}


def embedding(num_embeddings: int, dim: int, *, init: str = "normal") -> Layer:
    """A table of ``num_embeddings`` vectors of size ``dim``, looked up by integer index.

    Takes integer indices of any shape, ``(batch,)`` or ``(batch, time)``, in
    ``[0, num_embeddings)``; gives ``(batch, dim)`` or ``(batch, time, dim)``.
    ``W`` starts ``N(0, 1)`` as in PyTorch (``init="normal"``), or by one of
    the fan-based schemes of :mod:`bpcore.layers._weights`.

    Examples
    --------
    >>> import numpy as np, bpcore as bp
    >>> layer = bp.embedding(100, 16)
    >>> y, _ = layer.forward(layer.init(0), np.array([[3, 7, 99]]))
    >>> y.shape
    (1, 3, 16)
    """
    n = positive_int(num_embeddings, "embedding(): num_embeddings")
    d = positive_int(dim, "embedding(): dim")
    if init != "normal":
        _weights.check_scheme(init, "embedding()")

    def init_params(rng: int | np.random.Generator | None = None, *,
                    xp: ModuleType | None = None, dtype: Any = None,
                    device: Any = None) -> Params:
        rng = as_generator(rng)
        if init == "normal":
            return {"W": _weights.place(rng.standard_normal((n, d)), xp, dtype, device)}
        W, _ = _weights.draw(init, rng, (n, d), 1, d, n, xp=xp, dtype=dtype, device=device)
        return {"W": W}

    config = {"name": "embedding", "num_embeddings": n, "dim": d, "init": init}

    def shapes() -> Params:
        return {"W": (n, d)}

    def out_shape(sample: Shape | None) -> Shape | None:
        if sample is None:
            return None
        if len(sample) > 1:
            raise ShapeError(f"embedding takes indices of shape (batch,) or (batch, time), got "
                             f"per-sample shape {sample}")
        return (*sample, d)

    def build(f: Any, b: Any, bind_: Any) -> Layer:
        return Layer(init_params, f, b, "embedding", None, None, config, bind_, None, shapes,
                     None, out_shape, None, n)

    def bind(binding: Binding) -> Layer:
        return build(binding.kernel(embedding_forward), binding.kernel(embedding_backward),
                     None)

    return build(embedding_forward, embedding_backward, bind)
