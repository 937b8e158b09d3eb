"""Training curves: loss and accuracy against epoch, written to an image file.

matplotlib is optional (``pip install "bpcore[plot]"``) and imported only
when a plot is drawn. The figure is rendered with the Agg canvas directly
(``matplotlib.figure.Figure``, no ``pyplot``), so drawing never opens a
window and never changes the process's matplotlib backend.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import BpcoreError, SettingError

__all__ = ["PLOT_FORMATS", "MissingDependencyError", "plot_history", "require_matplotlib"]

#: Image formats :func:`plot_history` writes, by extension.
PLOT_FORMATS = (".png", ".svg", ".pdf")


class MissingDependencyError(BpcoreError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` (naming the fix) if matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError(
            'plotting needs matplotlib, which is not installed; install it with: '
            'pip install "bpcore[plot]"'
        )


def plot_history(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw training and validation loss and accuracy against epoch.

    Parameters
    ----------
    history : sequence of dict
        Per-epoch records as :meth:`bpcore.Model.fit` returns them (``epoch``,
        ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``; missing or
        ``None`` values are left out of the curves).
    path : str or path-like
        The image to write: ``.png`` (default choice), ``.svg`` or ``.pdf``.
    title : str, optional
        A title over both panels.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    MissingDependencyError
        Without matplotlib (the message says ``pip install "bpcore[plot]"``).
    ValueError
        For another file extension, or an empty history.
    """
    target = Path(path).expanduser()
    if target.suffix.lower() not in PLOT_FORMATS:
        raise SettingError(
            f"cannot plot to {target}: the extension must be one of "
            f"{', '.join(PLOT_FORMATS)} (got {target.suffix or 'none'}), e.g. --plot curves.png"
        )
    if not history:
        raise SettingError("there is no training history to plot (no epoch has run)")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    panels = (
        (loss_ax, "loss", "loss", 1.0),
        (acc_ax, "accuracy", "accuracy (%)", 100.0),
    )
    for ax, key, label, factor in panels:
        drawn = False
        for prefix, name, style in (("", "training", "-"), ("val_", "validation", "--")):
            xs, ys = _series(history, prefix + key, factor)
            if xs:
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None,
                        markersize=3, label=name)
                drawn = True
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    if target.parent != Path():
        target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    return target


def _series(
    history: Sequence[Mapping[str, Any]], key: str, factor: float
) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, record in enumerate(history):
        value = record.get(key)
        if value is None:
            continue
        xs.append(float(record.get("epoch", i + 1)))
        ys.append(float(value) * factor)
    return xs, ys
