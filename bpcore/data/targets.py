"""Class labels as users have them: encoded to ``0 .. k-1`` for training, decoded on predict.

Labels may be integers with gaps, negative integers, strings or booleans.
Integer labels that already lie in ``0 .. n_outputs-1`` are kept as they are
(the output ``j`` is the class ``j``, even if a class is missing from this
training set); any other labels are sorted and numbered, as scikit-learn's
``LabelEncoder`` does, and the model keeps the classes to decode its
predictions and to save them in its checkpoint.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import LabelError

__all__ = ["LabelEncoding", "encode_labels"]


class LabelEncoding(NamedTuple):
    """The classes of a classifier, in the order of its outputs.

    Attributes
    ----------
    classes : numpy.ndarray
        ``classes[j]`` is the label of output ``j``.
    identity : bool
        Whether ``classes`` is ``0 .. k-1`` (labels need no translation).
    """

    classes: np.ndarray
    identity: bool

    def encode(self, y: Any, what: str = "y") -> np.ndarray:
        """The output index (int64) of every label in ``y``; an unknown label is a
        :class:`~bpcore.errors.LabelError`."""
        y = np.asarray(y)
        if self.identity and y.dtype.kind in "iub":
            k = len(self.classes)
            if y.size and (int(y.min()) < 0 or int(y.max()) >= k):
                bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
                raise LabelError(
                    f"{what} holds label {bad}, which this classifier does not know (its "
                    f"classes are 0..{k - 1}); fix the labels or train on data that has it"
                )
            return y.astype(np.int64)
        try:
            index = np.searchsorted(self.classes, y)
            index = np.minimum(index, len(self.classes) - 1)
            known = self.classes[index] == y
        except (TypeError, ValueError, np.exceptions.DTypePromotionError):
            raise LabelError(
                f"{what} holds labels of type {y.dtype} but this classifier's classes are "
                f"{self.classes.dtype} ({_show(self.classes)})"
            ) from None
        if not np.all(known):
            bad = y[~known][0]
            raise LabelError(
                f"{what} holds label {bad!r}, which this classifier was not trained on "
                f"(its classes: {_show(self.classes)})"
            )
        return index.astype(np.int64)

    def decode(self, index: Any) -> np.ndarray:
        """The labels of output indices."""
        return self.classes[np.asarray(index, dtype=np.int64)]

    def to_list(self) -> list[Any]:
        """The classes as JSON-able values (for checkpoints)."""
        return [v.item() if hasattr(v, "item") else v for v in self.classes]

    @classmethod
    def from_list(cls, classes: list[Any]) -> LabelEncoding:
        """The inverse of :meth:`to_list`."""
        array = np.asarray(classes)
        if array.ndim != 1 or len(array) < 1:
            raise LabelError(f"not a list of classes: {classes!r}")
        identity = array.dtype.kind in "iu" and np.array_equal(array, np.arange(len(array)))
        return cls(array, bool(identity))


def encode_labels(y: Any, n_outputs: int, *, what: str = "y") -> LabelEncoding:
    """The classes of the labels ``y`` for a classifier with ``n_outputs`` outputs.

    Raises
    ------
    LabelError
        One class only; more classes than outputs; labels neither in
        ``0 .. n_outputs-1`` nor as many distinct values as outputs.

    Examples
    --------
    >>> encode_labels([0, 2, 1, 2], 3).identity
    True
    >>> enc = encode_labels(["cat", "dog", "cat"], 2)
    >>> enc.classes.tolist(), enc.encode(["dog", "cat"]).tolist()
    (['cat', 'dog'], [1, 0])
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise LabelError(f"{what}: class labels must be one per sample, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise LabelError(
                f"{what} holds non-integer numbers, not class labels; cast whole-number labels "
                "to int, or use a regression loss (mse) for real-valued targets"
            )
        y = y.astype(np.int64)
    try:
        classes = np.unique(y)
    except TypeError:
        raise LabelError(f"{what}: labels of mixed types cannot be sorted into classes") from None
    if len(classes) < 2:
        raise LabelError(
            f"{what} holds one class only ({_show(classes)}): a classifier needs samples of "
            "at least two classes"
        )
    if classes.dtype.kind in "iub" and int(classes.min()) >= 0 and \
            int(classes.max()) < max(n_outputs, 2 if n_outputs == 1 else 0):
        k = max(n_outputs, 2)
        return LabelEncoding(np.arange(k), True)
    needed = len(classes)
    if needed != n_outputs and not (n_outputs == 1 and needed == 2):
        raise LabelError(
            f"{what} holds {needed} classes ({_show(classes)}) but the network has "
            f"{n_outputs} output{'s' if n_outputs != 1 else ''}; give the last layer one "
            "output per class"
        )
    return LabelEncoding(classes, bool(classes.dtype.kind in "iu" and
                                       np.array_equal(classes, np.arange(needed))))


def _show(classes: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in classes[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")
