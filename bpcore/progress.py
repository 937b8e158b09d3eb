"""Progress reporting for training: a tqdm bar per epoch and a log line per epoch.

The bar is drawn only where someone can see it (stderr is a terminal) and
only if tqdm is installed (``pip install "bpcore[train]"``); otherwise a
do-nothing bar stands in, so the training loop never checks. Per-epoch
summaries go through :mod:`logging` (logger ``bpcore``): a library never
prints; the ``bpcore`` command attaches a handler with :func:`log_to_stderr`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

__all__ = ["Bar", "epoch_bar", "log_to_stderr", "progress_wanted"]


class Bar(Protocol):
    """What the training loop calls on a progress bar (tqdm's own methods)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...

    def close(self) -> Any: ...


class _NoBar:
    """A bar that draws nothing."""

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def progress_wanted(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Whether to draw a bar: ``progress`` if given, else whether ``stream``
    (stderr by default) is a terminal; never without tqdm."""
    if progress is False:
        return False
    if importlib.util.find_spec("tqdm") is None:
        return False
    if progress is True:
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def epoch_bar(total: int, desc: str, *, enabled: bool) -> Bar:
    """A bar over ``total`` samples (its rate is samples/s), or a silent one.

    Parameters
    ----------
    total : int
        Samples in the epoch.
    desc : str
        Label, e.g. ``"epoch 3/30"``.
    enabled : bool
        Draw it (see :func:`progress_wanted`); the bar vanishes when closed,
        leaving the epoch's log line.
    """
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    bar: Bar = tqdm(
        total=total, desc=desc, unit="sample", unit_scale=True, leave=False,
        file=sys.stderr, dynamic_ncols=True,
    )
    return bar


@contextmanager
def log_to_stderr(enabled: bool = True, level: int = logging.INFO) -> Iterator[None]:
    """Print bpcore's log records (``bpcore.*`` loggers) to stderr inside a ``with`` block.

    The handler is removed on exit, so calling the command twice in one
    process (as the tests do) does not print every line twice.
    """
    if not enabled:
        yield
        return
    logger = logging.getLogger("bpcore")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
