"""The exceptions bpcore raises at its public boundary.

Every message names the problem and the fix. Each class also derives from the
built-in exception a caller would expect (``ValueError``, ``TypeError``), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendMismatchError",
    "BpcoreError",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "DTypeError",
    "DataError",
    "LabelError",
    "NonFiniteError",
    "OutputExistsError",
    "SettingError",
    "ShapeError",
    "StructureError",
]


class BpcoreError(Exception):
    """Base class of every error bpcore raises on purpose."""


class ShapeError(BpcoreError, ValueError):
    """An array has the wrong rank or size for the model."""


class DTypeError(BpcoreError, TypeError):
    """An array has a dtype bpcore does not support, or dtypes are mixed."""


class LabelError(BpcoreError, ValueError):
    """Class labels are not integers or lie outside ``[0, n_classes)``."""


class NonFiniteError(BpcoreError, ValueError):
    """An input holds NaN or infinity."""


class BackendError(BpcoreError, ValueError):
    """A backend name is unknown, or the backend is not installed here."""


class BackendMismatchError(BpcoreError, TypeError):
    """Arrays from two backends, or two devices, meet in one call."""


class DataError(BpcoreError, ValueError):
    """A data set cannot be found or read: a missing, malformed or unknown source."""


class CheckpointError(BpcoreError, ValueError):
    """A checkpoint cannot be written or read: missing, corrupt, or for another model."""


class CheckpointExistsError(CheckpointError, FileExistsError):
    """Saving would overwrite an existing checkpoint and ``overwrite`` was not given."""


class OutputExistsError(BpcoreError, FileExistsError):
    """An output file (``--metrics``, ``--plot``, ``bpcore export``'s file...) exists and
    overwriting was not asked for."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file to load does not exist."""


class SettingError(BpcoreError, ValueError):
    """A setting is not valid: a layer size, a hyper-parameter, a configuration."""


class ArgumentError(BpcoreError, TypeError):
    """An argument of the wrong kind: not a layer, not a callable, not an array."""


class StructureError(SettingError):
    """Two trees that must match (parameters and gradients, parameters and an
    optimizer's state) differ in their keys, lengths or nesting."""
