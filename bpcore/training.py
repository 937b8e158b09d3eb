"""One epoch of training: the batches in groups of ``k`` steps, guarded against divergence.

:class:`bpcore.Model` trains through :func:`train_epoch`. An epoch's batch
order comes from :func:`bpcore.data.batch_indices` (seeded by the model's
seed and the epoch number, so a resumed run repeats it), or, data-parallel,
from :func:`bpcore.distributed.shard_batches` (this rank's part of every
global batch). Consecutive batches of one size are grouped, ``k`` at a time,
and each group runs as one call of a training loop (:func:`bpcore.train_loop`,
or :func:`bpcore.compile` with ``loop=True``: on JAX one XLA program for the
whole group), which removes the per-step dispatch that dominates small
batches.

The guard: before a group the parameters and optimizer state are copied;
after it the losses and the parameters are checked for NaN/Inf (one
host synchronisation per group). If any is not finite, the group is replayed
from the copy one batch at a time to find the first batch that diverged, and
:class:`~bpcore.errors.NonFiniteError` names it, with the parameters and
state of just before that batch kept (nothing non-finite is left in the
model, or saved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from . import tree
from .backend import Array
from .data import batch_indices
from .errors import NonFiniteError

__all__ = ["Group", "batch_groups", "train_epoch"]

#: Steps per call of the training loop (a group); a last, smaller group and
#: a last, smaller batch each make a group of their own.
GROUP_STEPS = 32


class Group(NamedTuple):
    """Consecutive batches of one size: row indices ``(k, batch)``, the number of
    the first batch in the epoch, and this rank's share of each global batch
    (data-parallel; ``None`` in one process)."""

    rows: np.ndarray
    first: int
    share: float | None


def batch_groups(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
    shards: Sequence[tuple[np.ndarray, float]] | None = None, steps: int = GROUP_STEPS,
) -> list[Group]:
    """The epoch's batches as groups of at most ``steps`` batches of one size."""
    if shards is None:
        parts: list[tuple[np.ndarray, float | None]] = [
            (b, None) for b in batch_indices(n, batch_size, seed=seed, epoch=epoch,
                                             shuffle=shuffle) if len(b)]
    else:
        parts = [(rows, share) for rows, share in shards]
    groups: list[Group] = []
    run: list[np.ndarray] = []
    key: tuple[int, float | None] | None = None
    first = 0
    for i, (rows, share) in enumerate(parts):
        if run and ((len(rows), share) != key or len(run) == steps):
            groups.append(Group(np.stack(run), first, key[1] if key else None))
            run = []
        if not run:
            first, key = i, (len(rows), share)
        run.append(rows)
    if run:
        groups.append(Group(np.stack(run), first, key[1] if key else None))
    return groups


def _copy(xp: ModuleType, state: Any) -> Any:
    return tree.map_arrays(lambda a: xp.asarray(a, copy=True), state)


def _finite(xp: ModuleType, values: Array, params: Any) -> bool:
    """Whether the losses and every parameter are finite (one host read)."""
    flags = [xp.all(xp.isfinite(values))]
    flags += [xp.all(xp.isfinite(a)) for a in tree.arrays(params)
              if xp.isdtype(a.dtype, "real floating")]
    return bool(xp.all(xp.stack(flags)))


def train_epoch(
    loop: Callable[..., tuple[Any, Any, Array]], params: Any, state: Any, x: Array, t: Array,
    groups: Sequence[Group], *, xp: ModuleType, device: Any, weights: Array | None = None,
    epoch: int, guard: bool = True, agree: Callable[[bool], bool] | None = None,
    before_group: Callable[[Group], None] | None = None,
    after_group: Callable[[Group, Any, Any], None] | None = None,
) -> tuple[Any, Any, list[Array], list[int]]:
    """Run every group of the epoch through ``loop(params, state, xs, ts[, ws])``.

    Returns the new parameters and state, each group's losses and the rows of
    each of its batches. ``agree(ok)`` makes every rank of a data-parallel
    run take the same decision on a divergence (a collective); ``before_group``
    (e.g. setting the all-reduce's share) and ``after_group(group, params,
    state)`` (keeping the model current, the progress bar) run around each group.

    Raises
    ------
    NonFiniteError
        With ``error.params`` and ``error.state``: the last finite ones.
    """
    values: list[Array] = []
    sizes: list[int] = []
    n_batches = sum(len(g.rows) for g in groups)
    for group in groups:
        if before_group is not None:
            before_group(group)
        k, batch = group.rows.shape
        rows = xp.asarray(group.rows.reshape(-1), device=device)
        xs = xp.reshape(xp.take(x, rows, axis=0), (k, batch, *x.shape[1:]))
        ts = xp.reshape(xp.take(t, rows, axis=0), (k, batch, *t.shape[1:]))
        ws = None if weights is None else xp.reshape(xp.take(weights, rows, axis=0), (k, batch))
        kept = _copy(xp, (params, state)) if guard else None
        args = (xs, ts) if ws is None else (xs, ts, ws)
        params, state, losses = loop(params, state, *args)
        if guard:
            ok = _finite(xp, losses, params)
            if agree is not None:
                ok = agree(ok)
            if not ok:
                _replay(loop, kept, args, xp, group, epoch, n_batches, agree)
        values.append(losses)
        sizes.extend([batch] * k)
        if after_group is not None:
            after_group(group, params, state)
    return params, state, values, sizes


def _replay(
    loop: Callable[..., tuple[Any, Any, Array]], kept: Any, args: tuple[Array, ...],
    xp: ModuleType, group: Group, epoch: int, n_batches: int,
    agree: Callable[[bool], bool] | None,
) -> None:
    """Re-run a diverged group one batch at a time from its copy; raise at the
    first batch after which the loss or a parameter is not finite."""
    params, state = _copy(xp, kept)
    for i in range(len(group.rows)):
        before = _copy(xp, (params, state))
        params, state, value = loop(params, state, *(a[i:i + 1, ...] for a in args))
        ok = _finite(xp, value, params)
        if agree is not None:
            ok = agree(ok)
        if not ok:
            loss = float(np.asarray(xp.reshape(value, (-1,))[0]))
            what = (f"the training loss became {loss}" if not np.isfinite(loss)
                    else "a parameter became NaN or infinite")
            error = NonFiniteError(
                f"{what} in epoch {epoch + 1}, batch {group.first + i + 1} of {n_batches}: "
                "the steps are too large for this problem (or the data hold extreme "
                "values); the model keeps its parameters and optimizer state from before "
                "that batch"
            )
            error.params, error.state = before  # type: ignore[attr-defined]
            error.batch = group.first + i  # type: ignore[attr-defined]
            raise error
    # The group diverged, its replay batch by batch did not (a compiled group can round
    # differently from single steps): keep the state from before the whole group.
    error = NonFiniteError(
        f"the training diverged in epoch {epoch + 1}, batches {group.first + 1}-"
        f"{group.first + len(group.rows)} of {n_batches} (the loss or a parameter became "
        "NaN or infinite): the steps are too large for this problem; the model keeps its "
        "parameters and optimizer state from before those batches"
    )
    error.params, error.state = kept  # type: ignore[attr-defined]
    error.batch = group.first  # type: ignore[attr-defined]
    raise error
