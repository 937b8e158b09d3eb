"""What ``Model.fit`` reports and who may stop it: the History and the callbacks.

A callback is either a function ``callback(model, record)`` called after
every epoch (returning ``True`` stops training), or an object with any of
``on_train_begin(model)``, ``on_epoch_end(model, record) -> bool | None`` and
``on_train_end(model)``, as in Keras. ``record`` is the epoch's dict
(``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``seconds``,
``samples_per_s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import BpcoreError

__all__ = ["EarlyStopping", "History", "check_callbacks"]


class History:
    """The records of every epoch trained, Keras-style.

    ``history.history`` is a dict of lists (``{"loss": [...], "val_accuracy":
    [...]}``), ``history.epoch`` the epoch numbers, ``history.records`` one
    dict per epoch. Indexing by a name gives its list (``history["loss"]``),
    by an integer that epoch's record (``history[-1]["accuracy"]``).
    """

    def __init__(self, records: Sequence[dict[str, Any]] = ()) -> None:
        self.records: list[dict[str, Any]] = [dict(r) for r in records]

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record."""
        self.records.append(dict(record))

    @property
    def history(self) -> dict[str, list[Any]]:
        """Every metric's values, epoch by epoch."""
        keys: list[str] = []
        for r in self.records:
            keys.extend(k for k in r if k != "epoch" and k not in keys)
        return {k: [r.get(k) for r in self.records] for k in keys}

    @property
    def epoch(self) -> list[int]:
        """The (1-based) epoch numbers."""
        return [int(r["epoch"]) for r in self.records]

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self.history[key]
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self.records == other.records
        return self.records == other

    def __repr__(self) -> str:
        return f"History({len(self.records)} epochs: {', '.join(self.history)})"


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch record: ``val_loss`` (default), ``val_accuracy``,
        ``loss``, ``accuracy``. Losses improve downwards, accuracies upwards.
    patience : int
        Epochs without improvement before stopping.
    min_delta : float
        The least change that counts as an improvement.
    restore_best : bool
        At the end of training, put back the parameters (and optimizer state)
        of the best epoch.

    Examples
    --------
    >>> import bpcore as bp
    >>> stop = bp.callbacks.EarlyStopping(patience=3, restore_best=True)
    >>> stop.monitor
    'val_loss'
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise CallbackError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) \
                or min_delta < 0:
            raise CallbackError(f"EarlyStopping: min_delta must be a number >= 0, got "
                                f"{min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best = bool(restore_best)
        self.sign = 1.0 if "loss" in monitor else -1.0  # minimise losses, maximise the rest
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self._kept: Any = None

    def on_train_begin(self, model: Any) -> None:
        self.best, self.best_epoch, self.wait, self._kept = None, None, 0, None

    def on_epoch_end(self, model: Any, record: dict[str, Any]) -> bool:
        value = record.get(self.monitor)
        if value is None:
            raise CallbackError(
                f"EarlyStopping monitors {self.monitor!r}, which this fit does not report "
                f"(it reports {', '.join(k for k, v in record.items() if v is not None)}); "
                "pass validation_data or validation_split, or monitor 'loss'"
            )
        if self.best is None or self.sign * (self.best - value) > self.min_delta:
            self.best, self.best_epoch, self.wait = float(value), int(record["epoch"]), 0
            if self.restore_best:
                self._kept = model.snapshot()
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, model: Any) -> None:
        if self.restore_best and self._kept is not None:
            model.restore(self._kept)

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"restore_best={self.restore_best})")


class CallbackError(BpcoreError, ValueError):
    """A callback that is not callable or misconfigured."""


def check_callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list, each checked before any training."""
    if callbacks is None:
        return []
    if callable(callbacks) or hasattr(callbacks, "on_epoch_end"):
        callbacks = [callbacks]
    try:
        items = list(callbacks)
    except TypeError:
        raise CallbackError(
            f"callbacks must be a list of callables or callback objects, got "
            f"{type(callbacks).__name__}"
        ) from None
    for cb in items:
        hooks = ("on_train_begin", "on_epoch_end", "on_train_end")
        if not (callable(cb) or any(callable(getattr(cb, h, None)) for h in hooks)):
            raise CallbackError(
                f"callback {cb!r} is neither callable nor has on_epoch_end; pass a function "
                "callback(model, record) or an object such as bp.callbacks.EarlyStopping()"
            )
    return items


def call_hook(callbacks: list[Any], hook: str, model: Any,
              record: dict[str, Any] | None = None) -> bool:
    """Call ``hook`` on every callback that has it; whether one asked to stop."""
    stop = False
    for cb in callbacks:
        fn: Callable[..., Any] | None = getattr(cb, hook, None)
        if fn is None and hook == "on_epoch_end" and callable(cb):
            fn = cb
        if fn is None:
            continue
        result = fn(model) if record is None else fn(model, record)
        stop = stop or result is True
    return stop
