"""Checkpoints: safe, atomic, verified saving and loading of a training run.

A checkpoint is one ``.npz`` file: a zip archive of ``.npy`` members, stored
uncompressed, as :func:`numpy.savez` writes it. It holds

* every array of the parameters and the optimizer state, moved to the host
  with :func:`bpcore.to_numpy` and stored under its path in the tree
  (``params/0/W``, ``opt/m/0/W``, ``opt/velocity/2/b``), and
* a JSON header, stored as a ``uint8`` array under ``__header__``: the format
  name and version, the bpcore version, the dtype, the epoch, the network's
  and the optimizer's configs, a free ``meta`` dict, the *structure* of the
  parameters and of the optimizer state (tuples, dicts, ``SGDState`` /
  ``AdamState``, ``None``, the integer step count) with a tag on every node,
  and ``sha256``, a digest of all of that and of every array's bytes.

Because the arrays are plain NumPy, a checkpoint written from PyTorch, JAX,
CuPy or array-api-strict loads on any backend (:func:`bpcore.to_backend`).
Nothing non-finite is ever saved.

Loading trusts nothing in the file, and reads no array before it has checked

1. the archive: every member stored (a compressed member could expand far
   beyond the file: a zip bomb), unencrypted, inside the file, overlapping no
   other, its name unique; the members are exactly the header's arrays;
2. the header: every field type- and range-checked (see :func:`load_checkpoint`);
3. every member's ``.npy`` header, parsed strictly (never ``literal_eval``):
   little-endian float32/float64 (int32/int64 for a step count), C order,
   the shape and dtype the header records, the byte size the zip records;
4. the shapes against the architecture: a dense layer's ``W`` is
   ``(n_in, n_out)``, the optimizer's moments mirror the parameters.

A load therefore takes memory bounded by the file's size and, where the
architecture's layer kinds are known, by the architecture's own size. The
arrays are then read in chunks and hashed: a flipped bit anywhere, even with
the zip's CRC recomputed, is a :class:`~bpcore.errors.CheckpointError`, as
is any non-finite value. Every failure is a ``CheckpointError`` naming the
file and the field. Checkpoints of format version 1 (bpcore before the
digest) still load: everything but the digest is verified.

The digest is SHA-256 over ``len(C)`` (8 bytes, little-endian), ``C``, then
the bytes of each array (little-endian, C order) in sorted key order, where
``C`` is the header without ``sha256`` as canonical JSON (sorted keys,
separators ``","`` and ``":"``, ASCII).

Writes are atomic: the file is written to a temporary name in the target's
directory (``.NAME.bpcore-HOST-PID-RANDOM.tmp``), flushed and ``fsync``-ed,
then ``os.replace``-d onto the target and the directory is ``fsync``-ed. A
crash at any point leaves either the old checkpoint or the new one, never a
torn file. A killed writer leaves its temporary file behind; the next save
into the directory removes it once that writer (same host, same PID
namespace) is gone, and removes the ``.NAME.RANDOM.tmp`` files of older
bpcore versions that have been untouched for an hour. Temporary names start
with a dot and end in ``.tmp``, so ``*.npz`` never matches one.

A new layer kind plugs into the architecture check with one entry in
``_LAYER_PARAMS``: its config name, mapped to the shapes of its parameters
computed from the rebuilt :class:`~bpcore.layers.Layer`. A kind without an
entry is checked generically: its config must be a dict with a ``name``,
its arrays must be float arrays of the checkpoint's dtype, and what they
take is bounded by the file's size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import socket
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import array_api_compat
import numpy as np

from . import losses, optim
from .backend import SUPPORTED_DTYPES, get_backend, resolve_dtype, to_backend, to_numpy, use_backend
from .data.prep import SCALERS, Scaler
from .errors import BpcoreError, CheckpointError, CheckpointExistsError, CheckpointNotFoundError
from .layers import ACTIVATIONS, Layer, from_config
from .layers.core import input_shape, show_shape
from .step import TrainState

__all__ = [
    "DIGEST_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "HEADER_KEY",
    "Checkpoint",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "bpcore-checkpoint"
#: 2: the header carries ``sha256``; 1 (still read): no digest.
FORMAT_VERSION = 2
#: The archive member that holds the JSON header.
HEADER_KEY = "__header__"
#: The header field holding the digest of the header and the arrays.
DIGEST_KEY = "sha256"
_ROOTS = {"params": "params", "opt_state": "opt"}
_FIELDS = ("format", "format_version", "bpcore_version", "dtype", "epoch", "model_config",
           "optimizer_config", "meta", "structure")

_MAX_INT = 2**63 - 1
_MAX_NDIM = 32
_MAX_DEPTH = 100  # JSON nesting; far more than any config, far less than the recursion limit
_MAX_HEADER_BYTES = 64 << 20
_MAX_NPY_HEADER = 65535
_CHUNK = 1 << 22
#: The ``.npy`` dtypes a checkpoint may hold: descr -> dtype name.
_DESCRS = {"<f4": "float32", "<f8": "float64", "<i4": "int32", "<i8": "int64"}
_INT_DTYPES = ("int32", "int64")
#: numpy.lib.format's header: the dict's keys sorted, each ``'key': repr(value), ``.
_NPY_HEADER = re.compile(
    r"\{'descr': '([^']*)', 'fortran_order': (True|False), 'shape': \(([0-9, ]*)\), \} *\n"
)
#: Temporary files: this version's (writer tag and pid) and older versions'.
_TEMP = re.compile(r"\..+\.bpcore-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{12}\.tmp")
_LEGACY_TEMP = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")
_LEGACY_STALE_S = 3600.0


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    params : tuple of dict
        The network's parameters, one dict per layer, on the requested backend.
    opt_state : SGDState, AdamState or None
        The optimizer's state, its arrays on the requested backend.
    model_config : dict
        The network's ``Layer.config``; :func:`bpcore.from_config` rebuilds it.
    optimizer_config : dict
        The optimizer's ``Optimizer.config``.
    dtype : str
        ``"float32"`` or ``"float64"``.
    epoch : int
        Epochs completed when the checkpoint was written.
    version : str
        The bpcore version that wrote it.
    meta : dict
        Free JSON data (loss name, scaler, class count, history, seed, ...).
        JSON has no tuples: tuples saved in ``meta`` come back as lists.
    """

    params: Any
    opt_state: Any
    model_config: dict[str, Any]
    optimizer_config: dict[str, Any]
    dtype: str
    epoch: int
    version: str
    meta: dict[str, Any]


class _Spec:
    """An array the header describes, not yet read: its key, shape and dtype name."""

    __slots__ = ("dtype", "key", "shape")

    def __init__(self, key: str, shape: tuple[int, ...], dtype: str) -> None:
        self.key, self.shape, self.dtype = key, shape, dtype


class _Plan(NamedTuple):
    """A checked header: the trees with :class:`_Spec` leaves, and every spec by key."""

    header: dict[str, Any]
    params: Any
    opt_state: Any
    specs: dict[str, _Spec]


class _Net(NamedTuple):
    """What the architecture says about a network's ends (None: not known, or, for a
    layer that is not ``opaque``, the width of its input kept)."""

    n_in: int | None
    n_out: int | None
    #: whether the width after it is unknown (a layer kind this bpcore cannot see through)
    opaque: bool = False
    #: whether every layer kind in it is one this bpcore knows
    known: bool = True


def _fail(p: Path, field: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{p}: {field}: {msg}")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------
# saving


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    params: Any,
    opt_state: Any,
    model_config: dict[str, Any],
    optimizer_config: dict[str, Any],
    epoch: int,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint atomically.

    Everything is checked as :func:`load_checkpoint` checks it before a byte
    is written, so a checkpoint that saves also loads.

    Parameters
    ----------
    path : str or path-like
        The file to write (conventionally ``*.npz``); missing parent
        directories are created.
    params : tuple of dict of arrays
        The network's parameters, on any backend and device; e.g. ``W`` of
        shape ``(n_in, n_out)`` and ``b`` of shape ``(n_out,)`` per dense layer.
    opt_state : SGDState, AdamState or None
        The optimizer's state, arrays shaped as ``params``.
    model_config, optimizer_config : dict
        ``Layer.config`` of the network and ``Optimizer.config``.
    epoch : int
        Epochs completed.
    meta : dict, optional
        Any JSON-able data; NumPy scalars and arrays are converted to numbers
        and lists. The keys :class:`bpcore.Model` writes (``loss``,
        ``scaler``, ``n_classes``, ``batch_size``, ...) are checked as on load.
    overwrite : bool
        Replace an existing file. Without it an existing file is an error.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    CheckpointExistsError
        If ``path`` exists and ``overwrite`` is false (a ``FileExistsError``).
    CheckpointError
        If the arrays are not float32/float64 or hold NaN or infinity, their
        shapes do not fit ``model_config`` or ``optimizer_config``, the
        configs or ``meta`` are not JSON-able, or the file cannot be written.
        The previous file, if any, is then left as it was, and no temporary
        file remains.

    Examples
    --------
    >>> import bpcore as bp, tempfile, os
    >>> net, opt = bp.mlp([3, 4, 1]), bp.adam()
    >>> params = net.init(0)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
    >>> save_checkpoint(path, params=params, opt_state=opt.init(params),
    ...                 model_config=net.config, optimizer_config=opt.config, epoch=0).name
    'run.npz'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"the checkpoint path must be a str or a path, e.g. "
                              f"'model.npz'; got {type(path).__name__}")
    target = Path(path).expanduser()
    if target.is_dir():
        raise CheckpointError(
            f"{target}: is a directory; give a file name such as {target / 'model.npz'}"
        )
    if target.exists() and not overwrite:
        raise _exists(target)
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise CheckpointError(f"{target}: epoch must be an int >= 0, got {epoch!r}")
    for label, cfg in (("model_config", model_config), ("optimizer_config", optimizer_config)):
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{target}: {label} must be a dict, got {type(cfg).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise CheckpointError(f"{target}: meta must be a dict, got {type(meta).__name__}")

    arrays: dict[str, np.ndarray] = {}
    structure = {
        "params": _encode(params, _ROOTS["params"], arrays, target),
        "opt_state": _encode(opt_state, _ROOTS["opt_state"], arrays, target),
    }
    dtype = _common_dtype(arrays, target)
    for key, a in arrays.items():
        _check_finite(a, key, target, saving=True)
    from ._version import __version__

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bpcore_version": __version__,
        "dtype": dtype,
        "epoch": int(epoch),
        "model_config": model_config,
        "optimizer_config": optimizer_config,
        "meta": {} if meta is None else meta,
        "structure": structure,
    }
    try:  # as the loader will see it: tuples become lists, NumPy scalars numbers
        header = json.loads(json.dumps(header, default=_json_default))
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{target}: the configs and meta must be JSON-able (numbers, strings, lists, "
            f"dicts): {exc}"
        ) from None
    _check_depth(header, target)
    _check_header(header, target, saving=True)  # what load will check, so that what saves loads
    digest = _new_digest(header)
    for key in sorted(arrays):
        digest.update(arrays[key].reshape(-1).view(np.uint8))
    header[DIGEST_KEY] = digest.hexdigest()
    text = json.dumps(header)
    arrays[HEADER_KEY] = np.frombuffer(text.encode("ascii"), dtype=np.uint8)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{target}: cannot create its directory ({exc})") from exc
    _write_atomic(target, arrays, overwrite)
    return target


def _exists(target: Path) -> CheckpointExistsError:
    return CheckpointExistsError(
        f"{target}: a checkpoint already exists there; pass overwrite=True to replace it "
        "(or --save a new path)"
    )


def _write_atomic(target: Path, arrays: dict[str, np.ndarray], overwrite: bool) -> None:
    """Temp file in the same directory, fsync, os.replace, fsync the directory."""
    tmp: str | None = None
    _remove_stale_temps(target.parent)
    try:
        tmp, fd = _create_temp(target)
        with os.fdopen(fd, "wb") as f:
            savez: Any = np.savez  # numpy's stubs mistake **arrays for its keywords
            savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and target.exists():  # appeared while we were writing
            raise _exists(target)
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{target}: could not write the checkpoint ({exc}); any previous checkpoint "
            "there is untouched"
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def _writer_tag() -> str:
    """This host and PID namespace, hashed: whose PIDs a temp file's name can be checked against."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    text = f"{socket.gethostname()}\0{namespace}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]


def _create_temp(target: Path) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    stem = f".{target.name}.bpcore-{_writer_tag()}-{os.getpid()}"
    for _ in range(100):
        tmp = str(target.parent / f"{stem}-{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise CheckpointError(f"{target}: could not create a temporary file next to it")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (True when unsure)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temps(directory: Path) -> list[str]:
    """Delete the temporary files of saves into ``directory`` that were killed.

    Only names this module writes, and only when stale: the writer's PID is
    gone (same host and PID namespace), or, for older bpcore versions' names,
    the file has not changed for an hour. POSIX only (elsewhere there is no
    safe way to ask whether a PID is alive). Returns the names removed.
    """
    if os.name != "posix":
        return []
    tag, now, removed = _writer_tag(), time.time(), []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            ours = _TEMP.fullmatch(entry.name)
            if ours is not None:
                if ours.group(1) != tag or _alive(int(ours.group(2))):
                    continue
            elif _LEGACY_TEMP.fullmatch(entry.name) is not None:
                if now - entry.stat(follow_symlinks=False).st_mtime < _LEGACY_STALE_S:
                    continue
            else:
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            continue
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode(node: Any, key: str, arrays: dict[str, np.ndarray], target: Path) -> dict[str, Any]:
    """The tagged structure of ``node``; its arrays go to ``arrays`` under ``key``."""
    if node is None:
        return {"type": "none"}
    if isinstance(node, (bool, np.bool_)):
        return {"type": "bool", "value": bool(node)}
    if isinstance(node, (int, np.integer)):
        return {"type": "int", "value": int(node)}
    if isinstance(node, (float, np.floating)):
        return {"type": "float", "value": float(node)}
    if isinstance(node, str):
        return {"type": "str", "value": node}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return {
            "type": "namedtuple",
            "name": type(node).__name__,
            "fields": {f: _encode(v, f"{key}/{f}", arrays, target) for f, v in zip(
                node._fields, node, strict=True
            )},
        }
    if isinstance(node, dict):
        items = {}
        for k, v in node.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise CheckpointError(
                    f"{target}: dict key {k!r} at {key} cannot be saved; keys must be "
                    "non-empty strings without '/'"
                )
            items[k] = _encode(v, f"{key}/{k}", arrays, target)
        return {"type": "dict", "items": items}
    if isinstance(node, (list, tuple)):
        kind = "tuple" if isinstance(node, tuple) else "list"
        return {"type": kind, "items": [
            _encode(v, f"{key}/{i}", arrays, target) for i, v in enumerate(node)
        ]}
    if array_api_compat.is_array_api_obj(node):
        host = np.asarray(to_numpy(node), order="C")  # (ascontiguousarray makes 0-D 1-D)
        if host.dtype.byteorder == ">":
            host = host.astype(host.dtype.newbyteorder("<"))
        arrays[key] = host
        return {"type": "array", "key": key, "shape": list(host.shape), "dtype": host.dtype.name}
    raise CheckpointError(
        f"{target}: cannot save a {type(node).__module__}.{type(node).__qualname__} at {key}; "
        "checkpoints hold arrays in tuples, lists, dicts and optimizer states"
    )


def _common_dtype(arrays: dict[str, np.ndarray], target: Path) -> str:
    floats = {k: a.dtype.name for k, a in arrays.items() if a.dtype.kind in "fc"}
    names = sorted(set(floats.values()))
    params = [k for k in arrays if k.startswith(_ROOTS["params"] + "/")]
    if not params:
        raise CheckpointError(
            f"{target}: the parameters hold no arrays; save the output of net.init(seed) "
            "or of training"
        )
    if len(names) != 1 or names[0] not in SUPPORTED_DTYPES:
        raise CheckpointError(
            f"{target}: arrays must all be float32 or all float64, got "
            f"{', '.join(names) or 'no floating arrays'}; cast them first"
        )
    return names[0]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def _new_digest(header: dict[str, Any]) -> Any:
    """A SHA-256 fed with the canonical JSON of ``header`` (less the digest), length first."""
    body = {k: v for k, v in header.items() if k != DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    data = canonical.encode("ascii")
    digest = hashlib.sha256(len(data).to_bytes(8, "little"))
    digest.update(data)
    return digest


def _check_finite(a: np.ndarray, key: str, p: Path, *, saving: bool = False) -> None:
    """Every value of a float array is finite (checked a chunk at a time)."""
    if a.dtype.kind != "f":
        return
    flat = a.reshape(-1)
    step = _CHUNK // max(a.itemsize, 1)
    for start in range(0, flat.size, step):
        bad = np.flatnonzero(~np.isfinite(flat[start:start + step]))
        if bad.size:
            index = tuple(int(i) for i in np.unravel_index(start + int(bad[0]), a.shape))
            value = flat[start + int(bad[0])]
            if saving:
                raise CheckpointError(
                    f"{p}: array {key!r} holds {value} (first at index {index}); checkpoints "
                    "never store NaN or infinity: training diverged, so lower the learning "
                    "rate, or save an earlier state"
                )
            raise _fail(p, f"array {key!r}", f"holds {value} (first at index {index}); "
                        "bpcore never saves NaN or infinity, so the file is corrupt")


# --------------------------------------------------------------------------
# loading


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    backend: str | None = None,
    device: Any = None,
    model_config: dict[str, Any] | None = None,
) -> Checkpoint:
    """Read a checkpoint onto a backend, verifying everything in it first.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_checkpoint`.
    backend : str, optional
        ``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``, ``"array_api_strict"``;
        the current default (:func:`bpcore.get_backend`) if omitted.
    device : optional
        E.g. ``"cuda:0"``; the backend's default if omitted.
    model_config : dict, optional
        The architecture the caller expects (``net.config``). If given and it
        differs from the stored one (ignoring initializer names), loading
        fails and the message says which layer differs.

    Returns
    -------
    Checkpoint
        Arrays on ``backend`` with the stored shapes and dtype.

    Raises
    ------
    CheckpointNotFoundError
        If ``path`` does not exist (a ``FileNotFoundError``).
    CheckpointError
        For anything else that is wrong, naming the file and the field: not a
        zip archive, truncated or corrupt, compressed or overlapping members
        (a zip bomb), no header, not a bpcore checkpoint, a newer format
        version, a header field of the wrong type or out of range (``epoch``
        an int >= 0; ``dtype`` float32/float64 and every array of it; a dense
        layer's ``n_in``/``n_out`` ints >= 1; ``optimizer_config`` one that
        builds, with ``opt_state`` the state that optimizer keeps, Adam's
        ``count`` an int >= 0; ``meta``'s ``loss``, ``scaling``, ``scaler``
        (one value per network input), ``n_classes`` (as the loss and the
        output layer allow), ``batch_size`` >= 1, ``seed`` >= 0, ``history``,
        ``sizes``, ``classes``, ``extra``), arrays missing, extra or not fitting the
        architecture, a digest that does not match, a NaN or infinity, or an
        architecture other than ``model_config``.

    Examples
    --------
    >>> import bpcore as bp, tempfile, os
    >>> net = bp.mlp([3, 4, 1])
    >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
    >>> _ = save_checkpoint(path, params=net.init(0), opt_state=None,
    ...                     model_config=net.config, optimizer_config={}, epoch=3)
    >>> ck = load_checkpoint(path, backend="numpy", model_config=net.config)
    >>> ck.epoch, tuple(ck.params[0]["W"].shape)
    (3, (3, 4))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"the checkpoint path must be a str or a path, e.g. "
                              f"'model.npz'; got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(
            f"{p}: no such checkpoint; check the path (checkpoints are written by "
            "bpcore train --save PATH or Model.save(PATH))"
        )
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not a checkpoint file")
    header, host = _read(p, model_config)
    dtype = header["dtype"]

    if backend is None:
        xp = get_backend().xp
    else:
        with use_backend(backend, device) as b:
            xp = b.xp
    resolve_dtype(xp, dtype)  # e.g. float64 on jax without 64-bit mode: a clear DTypeError
    moved = to_backend(host, backend, device=device)
    return Checkpoint(
        params=moved["params"],
        opt_state=moved["opt_state"],
        model_config=header["model_config"],
        optimizer_config=header["optimizer_config"],
        dtype=dtype,
        epoch=header["epoch"],
        version=header["bpcore_version"],
        meta=header["meta"],
    )


_CORRUPT = (
    "the file is not a valid .npz archive (truncated, corrupt, or not a checkpoint); "
    "use an earlier checkpoint or retrain"
)


def _corrupt(p: Path, exc: BaseException) -> CheckpointError:
    # NumPy's and zipfile's texts never help here (and must not suggest allow_pickle)
    detail = "" if "pickle" in str(exc) else f" ({type(exc).__name__}: {str(exc)[:200]})"
    return CheckpointError(f"{p}: {_CORRUPT}{detail}")


def _read(p: Path, model_config: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked header and the host trees ``{"params": ..., "opt_state": ...}``."""
    try:
        f = p.open("rb")
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot open the file ({exc})") from None
    with f:
        if f.read(6) == b"\x93NUMPY":
            raise CheckpointError(
                f"{p}: holds a single .npy array, not a bpcore checkpoint (.npz)"
            )
        try:  # a parser of untrusted bytes: whatever it raises means a corrupt file
            zf = zipfile.ZipFile(f)
        except Exception as exc:
            raise _corrupt(p, exc) from None
        with zf:
            members = _members(zf, f, p)
            if HEADER_KEY + ".npy" not in members:
                raise CheckpointError(
                    f"{p}: has no {HEADER_KEY} entry, so it is not a bpcore checkpoint "
                    "(an .npz written by something else?)"
                )
            header = _read_header(zf, members[HEADER_KEY + ".npy"], p)
            plan = _check_header(header, p)
            if model_config is not None:
                _compare_configs(header["model_config"], model_config, p)
            arrays = _read_arrays(zf, members, plan, p)
    host = {root: _fill(getattr(plan, root), lambda spec: arrays[spec.key])
            for root in ("params", "opt_state")}
    return header, host


def _members(zf: zipfile.ZipFile, f: IO[bytes], p: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name, each stored, unique, and apart from the others."""
    size = os.fstat(f.fileno()).st_size
    members: dict[str, zipfile.ZipInfo] = {}
    spans = []
    for info in zf.infolist():
        field = f"member {info.filename!r}"
        if info.filename in members:
            raise _fail(p, field, "appears twice in the archive; corrupt file")
        members[info.filename] = info
        if info.flag_bits & 0x1:
            raise _fail(p, field, "is encrypted; bpcore never writes encrypted checkpoints")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _fail(
                p, field, "is compressed; bpcore writes every member stored, and a compressed "
                "one could expand far beyond the file (a zip bomb): not loaded"
            )
        if info.compress_size != info.file_size:
            raise _fail(p, field, f"is stored in {info.compress_size} bytes but records "
                        f"{info.file_size}; corrupt file (or a zip bomb)")
        try:
            f.seek(info.header_offset)
            local = f.read(30)
        except (OSError, ValueError, OverflowError) as exc:
            raise _corrupt(p, exc) from None
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise _fail(p, field, f"{_CORRUPT} (no local header at its offset)")
        flags, method = struct.unpack("<HH", local[6:10])
        if method != info.compress_type or flags & 0x1:
            raise _fail(p, field, "its local header disagrees with the zip's directory (method "
                        f"{method}, flags {flags:#x}); corrupt file")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        end = start + info.compress_size
        if end > size:
            raise _fail(p, field, f"{_CORRUPT} (it ends {end - size} bytes past the file)")
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, end, name), (offset, _, other) in itertools.pairwise(spans):
        if offset < end:
            raise _fail(p, f"member {other!r}",
                        f"overlaps member {name!r} in the archive; corrupt file (or a zip bomb)")
    return members


def _npy_layout(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path
) -> tuple[int, str, tuple[int, ...]]:
    """``(header bytes, descr, shape)`` of a ``.npy`` member, parsed strictly and
    checked against the size the zip records (nothing but the header is read)."""
    field = f"member {info.filename!r}"
    try:
        with zf.open(info) as m:
            prefix = m.read(8)
            if len(prefix) < 8 or prefix[:6] != b"\x93NUMPY" or prefix[6:] not in (
                b"\x01\x00", b"\x02\x00"
            ):
                raise _fail(p, field, "is not a .npy array (version 1.0 or 2.0); corrupt file")
            width = 2 if prefix[6] == 1 else 4
            raw = m.read(width)
            length = int.from_bytes(raw, "little")
            if len(raw) < width or length > _MAX_NPY_HEADER:
                raise _fail(p, field, "has a .npy header that is truncated or too long")
            text = m.read(length)
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile on untrusted bytes
        raise _corrupt(p, exc) from None
    match = _NPY_HEADER.fullmatch(text.decode("latin1")) if len(text) == length else None
    if match is None:
        raise _fail(p, field, f"has a malformed .npy header {_show(text[:80])}; corrupt file")
    descr, fortran, dims = match.groups()
    shape = tuple(int(d) for d in dims.replace(",", " ").split())
    rendered = "()" if not shape else repr(shape)
    if rendered != f"({dims})" or len(shape) > _MAX_NDIM:
        raise _fail(p, field, f"has a malformed shape ({dims}) in its .npy header")
    if fortran != "False":
        raise _fail(p, field, "is stored in Fortran order; bpcore writes C order")
    if descr not in _DESCRS and descr != "|u1":
        raise _fail(p, field, f"has dtype {descr!r}; checkpoints hold little-endian "
                    "float32/float64 (and int32/int64 step counts)")
    offset = 8 + width + length
    data = math.prod(shape) * np.dtype(descr).itemsize
    if info.file_size != offset + data:
        raise _fail(p, field, f"holds {info.file_size - offset} bytes of data but its shape "
                    f"{shape} and dtype {descr} need {data}; corrupt file")
    return offset, descr, shape


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, offset: int, out: np.ndarray, digest: Any,
    p: Path,
) -> None:
    """Read a member's data into ``out`` a chunk at a time (the zip checks its CRC)."""
    buf = out.reshape(-1).view(np.uint8)
    n = buf.size
    try:
        with zf.open(info) as m:
            m.read(offset)
            at = 0
            while at < n:
                chunk = m.read(min(_CHUNK, n - at))
                if not chunk:
                    raise _fail(p, f"member {info.filename!r}", f"{_CORRUPT} (truncated)")
                buf[at:at + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                if digest is not None:
                    digest.update(chunk)
                at += len(chunk)
            m.read(1)  # to the end: zipfile checks the CRC there
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile on untrusted bytes (a bad CRC, a short read)
        raise _corrupt(p, exc) from None


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> dict[str, Any]:
    offset, descr, shape = _npy_layout(zf, info, p)
    if descr != "|u1" or len(shape) != 1:
        raise CheckpointError(f"{p}: the {HEADER_KEY} entry is not a uint8 array; corrupt file")
    if shape[0] > _MAX_HEADER_BYTES:
        raise _fail(p, "header", f"is {shape[0]} bytes, more than any checkpoint's "
                    f"({_MAX_HEADER_BYTES}); corrupt file")
    raw = np.empty(shape, dtype=np.uint8)
    _read_member(zf, info, offset, raw, None, p)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"), parse_int=_parse_int,
                            object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        text = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise CheckpointError(f"{p}: the header is not valid JSON ({text}); corrupt file") \
            from None
    _check_depth(header, p)
    return header


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if a key appears twice (parsers differ on which one wins)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice in one object")
        out[k] = v
    return out


def _check_depth(value: Any, p: Path) -> None:
    """JSON nested at most ``_MAX_DEPTH`` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise _fail(p, "header", f"is nested more than {_MAX_DEPTH} levels deep; corrupt")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _read_arrays(
    zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], plan: _Plan, p: Path
) -> dict[str, np.ndarray]:
    """Check every member against the plan, then read, hash and check the arrays."""
    expected = {key + ".npy" for key in plan.specs} | {HEADER_KEY + ".npy"}
    for key in sorted(plan.specs):
        if key + ".npy" not in members:
            raise CheckpointError(
                f"{p}: array {key!r} is missing from the file; the checkpoint is incomplete "
                "or corrupt"
            )
    extra = sorted(set(members) - expected)
    if extra:
        raise _fail(p, f"member {extra[0]!r}", "is not an array the header describes; corrupt "
                    "file (or not a bpcore checkpoint)")
    layouts = {}
    for key, spec in sorted(plan.specs.items()):
        offset, descr, shape = _npy_layout(zf, members[key + ".npy"], p)
        if shape != spec.shape or _DESCRS.get(descr) != spec.dtype:
            got = _DESCRS.get(descr, descr)
            raise CheckpointError(
                f"{p}: array {key!r} is {got}{shape} but the header records "
                f"{spec.dtype}{spec.shape}; corrupt file"
            )
        layouts[key] = (offset, descr)
    # only now, every size known and bounded: read
    stored = plan.header.get(DIGEST_KEY)
    digest = _new_digest(plan.header) if stored is not None else None
    arrays = {}
    for key in sorted(plan.specs):
        offset, descr = layouts[key]
        out = np.empty(plan.specs[key].shape, dtype=np.dtype(descr))
        _read_member(zf, members[key + ".npy"], offset, out, digest, p)
        arrays[key] = out
    if digest is not None and digest.hexdigest() != stored:
        raise _fail(p, DIGEST_KEY, "the digest of the header and the arrays does not match "
                    "the one stored: the file was changed or damaged after it was written")
    for key, a in arrays.items():
        _check_finite(a, key, p)
        if a.dtype.kind == "i" and int(a) < 0:
            raise _fail(p, f"array {key!r}", f"is the step count {int(a)}; it must be >= 0")
    return arrays


def _fill(node: Any, leaf: Callable[[_Spec], Any]) -> Any:
    """The planned tree with ``leaf(spec)`` in place of each spec."""
    if isinstance(node, _Spec):
        return leaf(node)
    if isinstance(node, dict):
        return {k: _fill(v, leaf) for k, v in node.items()}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_fill(v, leaf) for v in node))
    if isinstance(node, (tuple, list)):
        return type(node)(_fill(v, leaf) for v in node)
    return node


# --------------------------------------------------------------------------
# the header: every field type- and range-checked


def _int(value: Any, p: Path, field: str, *, low: int = 0, high: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f">= {low}" if high == _MAX_INT else f"in [{low}, {high}]"
        raise _fail(p, field, f"must be an int {bound}, got {_show(value)}")
    return value


def _check_header(header: Any, p: Path, *, saving: bool = False) -> _Plan:
    """Every field of a parsed header checked; the planned trees (no array is read).
    ``saving``: the digest is not there yet."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(
            f"{p}: not a bpcore checkpoint (format {_show(fmt)}, expected {FORMAT!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{p}: bad format version {_show(version)}; corrupt header")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {version} was written by a newer bpcore "
            f"({_show(header.get('bpcore_version', '?'))}); this bpcore reads versions up to "
            f"{FORMAT_VERSION}: upgrade bpcore (pip install -U bpcore)"
        )
    unknown = sorted(set(header) - {*_FIELDS, DIGEST_KEY})
    if unknown:
        raise _fail(p, f"header field {unknown[0]!r}", "is not a field of a bpcore checkpoint")
    dtype = header.get("dtype")
    if dtype not in SUPPORTED_DTYPES:
        raise CheckpointError(
            f"{p}: stores dtype {_show(dtype)}; bpcore checkpoints hold float32 or float64"
        )
    expected = {
        "epoch": int, "model_config": dict, "optimizer_config": dict, "meta": dict,
        "structure": dict, "bpcore_version": str,
    }
    for key, kind in expected.items():
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{p}: header field {key!r} is missing or not {_a(kind.__name__)}, got "
                f"{_show(value)}; corrupt header"
            )
    _int(header["epoch"], p, "header field 'epoch'")
    if re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]{0,63}", header["bpcore_version"]) is None:
        raise _fail(p, "header field 'bpcore_version'", "must be a version such as 0.1.0, got "
                    f"{_show(header['bpcore_version'])}")
    digest = header.get(DIGEST_KEY)
    if digest is None and version >= 2 and not saving:
        raise _fail(p, f"header field {DIGEST_KEY!r}", f"is missing; format version {version} "
                    "always stores the digest of its arrays: corrupt header")
    if digest is not None and (not isinstance(digest, str)
                               or re.fullmatch("[0-9a-f]{64}", digest) is None):
        raise _fail(p, f"header field {DIGEST_KEY!r}", f"must be 64 hex digits, got "
                    f"{_show(digest)}")
    structure = header["structure"]
    if set(structure) != {"params", "opt_state"}:
        raise CheckpointError(f"{p}: the header does not describe params and opt_state "
                              f"(it holds {sorted(structure)})")
    specs: dict[str, _Spec] = {}
    params = _plan(structure["params"], _ROOTS["params"], dtype, specs, p, opt=False)
    opt_state = _plan(structure["opt_state"], _ROOTS["opt_state"], dtype, specs, p, opt=True)
    net = _check_arch(header["model_config"], params, p)
    if isinstance(opt_state, TrainState):  # a network with layer state: its TrainState
        _check_train_state(header["model_config"], opt_state, p)
        _check_ints(opt_state, _ROOTS["opt_state"], p)
        _check_opt(header["optimizer_config"], opt_state.opt, params, p,
                   key=f"{_ROOTS['opt_state']}/opt")
    else:
        _check_opt(header["optimizer_config"], opt_state, params, p)
    _check_meta(header["meta"], header["model_config"], net, p)
    return _Plan(header, params, opt_state, specs)


_NODE_KEYS = {
    "none": {"type"}, "bool": {"type", "value"}, "int": {"type", "value"},
    "float": {"type", "value"}, "str": {"type", "value"}, "dict": {"type", "items"},
    "list": {"type", "items"}, "tuple": {"type", "items"},
    "namedtuple": {"type", "name", "fields"}, "array": {"type", "key", "shape", "dtype"},
}
_SCALAR_TYPES: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str}


def _state_classes() -> dict[str, Any]:
    """The optimizer-state NamedTuples a checkpoint may hold, by name."""
    return {
        name: cls for name, cls in vars(optim).items()
        if name.endswith("State") and isinstance(cls, type) and issubclass(cls, tuple)
        and hasattr(cls, "_fields")
    } | {"TrainState": TrainState}


def _plan(node: Any, key: str, dtype: str, specs: dict[str, _Spec], p: Path, *,
          opt: bool) -> Any:
    """The tree a structure node describes, arrays as :class:`_Spec`; every tag checked."""
    field = f"structure at {key!r}"
    kind = node.get("type") if isinstance(node, dict) else None
    if not isinstance(kind, str) or kind not in _NODE_KEYS:
        raise CheckpointError(f"{p}: unknown structure tag {_show(kind)} in the header "
                              f"at {key!r}; corrupt header")
    if set(node) != _NODE_KEYS[kind]:
        raise _fail(p, field, f"a {kind} node holds {sorted(node)}, expected "
                    f"{sorted(_NODE_KEYS[kind])}")
    if kind == "none":
        return None
    if kind in _SCALAR_TYPES:
        value = node["value"]
        if not isinstance(value, _SCALAR_TYPES[kind]) or (kind != "bool" and isinstance(
                value, bool)):
            raise _fail(p, field, f"{_a(kind)} node holds {_show(value)}")
        if kind == "int":
            _int(value, p, field, low=-_MAX_INT)
        if kind == "float" and not math.isfinite(value):
            raise _fail(p, field, f"holds {value}; checkpoints hold finite numbers")
        return value
    if kind == "dict":
        items = node["items"]
        if not isinstance(items, dict) or any(not k or "/" in k for k in items):
            raise _fail(p, field, "a dict node needs items keyed by non-empty names without '/'")
        return {k: _plan(v, f"{key}/{k}", dtype, specs, p, opt=opt) for k, v in items.items()}
    if kind in ("tuple", "list"):
        items = node["items"]
        if not isinstance(items, list):
            raise _fail(p, field, f"a {kind} node needs a list of items")
        planned = [_plan(v, f"{key}/{i}", dtype, specs, p, opt=opt) for i, v in enumerate(items)]
        return tuple(planned) if kind == "tuple" else planned
    if kind == "namedtuple":
        name, fields = node["name"], node["fields"]
        cls = _state_classes().get(name) if isinstance(name, str) and opt else None
        if not isinstance(fields, dict) or cls is None or list(cls._fields) != list(fields):
            got = list(fields) if isinstance(fields, dict) else _show(fields)
            raise CheckpointError(
                f"{p}: the optimizer state is a {_show(name)} with fields {got}, which this "
                "bpcore does not know; load it with the bpcore version that wrote it"
            )
        return cls(*(_plan(fields[f], f"{key}/{f}", dtype, specs, p, opt=opt)
                     for f in cls._fields))
    # an array
    shape, name = node["shape"], node["dtype"]
    if node["key"] != key:
        raise _fail(p, field, f"the array node is keyed {_show(node['key'])}")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
        raise _fail(p, field, f"the shape must be a list of at most {_MAX_NDIM} ints, got "
                    f"{_show(shape)}")
    for d in shape:
        _int(d, p, f"{field} (shape)")
    if name != dtype and not (opt and name in _INT_DTYPES and not shape):
        raise _fail(p, field, f"the array is {_show(name)} but the header's dtype is {dtype}: "
                    "every array is of that dtype (an optimizer's step count may be a 0-D "
                    "int32/int64)")
    spec = _Spec(key, tuple(shape), name)
    specs[key] = spec
    return spec


def _specs(node: Any, prefix: str = "") -> Iterator[tuple[str, _Spec]]:
    """``(path below the root, spec)`` of every array in a planned tree."""
    if isinstance(node, _Spec):
        yield prefix, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _specs(v, f"{prefix}/{k}")
    elif isinstance(node, tuple) and hasattr(node, "_fields"):
        for k, v in zip(node._fields, node):
            yield from _specs(v, f"{prefix}/{k}")
    elif isinstance(node, (tuple, list)):
        for i, v in enumerate(node):
            yield from _specs(v, f"{prefix}/{i}")


# --------------------------------------------------------------------------
# architecture checks


def _dense_params(layer: Layer) -> dict[str, tuple[int, ...]]:
    n_in, n_out = int(layer.n_in or 0), int(layer.n_out or 0)
    return {"W": (n_in, n_out), "b": (n_out,)}


def _own_params(layer: Layer) -> dict[str, tuple[int, ...]]:
    """The shapes the rebuilt layer says it makes (``Layer.shapes``)."""
    assert layer.shapes is not None
    return {k: tuple(v) for k, v in layer.shapes().items()}


def _no_params(layer: Layer) -> dict[str, tuple[int, ...]]:
    return {}


#: The parameters of each known layer kind: ``config name -> (Layer -> {key: shape})``,
#: the layer rebuilt with :func:`bpcore.from_config`. A new kind plugs in here, e.g.
#: ``"layer_norm": lambda layer: {"gamma": (layer.n_in,), "beta": (layer.n_in,)}``.
_LAYER_PARAMS: dict[str, Callable[[Layer], dict[str, tuple[int, ...]]]] = {
    "dense": _dense_params,
    **dict.fromkeys(ACTIVATIONS, _no_params),
    **dict.fromkeys(("conv1d", "conv2d", "layer_norm", "batch_norm", "embedding",
                     "rnn", "gru", "lstm", "bidirectional"), _own_params),
    "dropout": _no_params,
    **dict.fromkeys(("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "flatten",
                     "reshape"), _no_params),
}


def _layers(config: dict[str, Any]) -> list[Any]:
    if config.get("name") == "sequential" and isinstance(config.get("layers"), list):
        return list(config["layers"])
    return [config]


def _check_arch(config: dict[str, Any], params: Any, p: Path) -> _Net:
    """The planned parameters fit the architecture; the network's ends where known."""
    if not _finite_numbers(config):
        raise _fail(p, "model_config", "holds NaN or infinity")
    return _check_layer(config, params, "the layer", p)


def _check_layer(config: Any, params: Any, label: str, p: Path) -> _Net:
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise CheckpointError(f"{p}: {label} has no valid config (a dict with a name); "
                              "corrupt header")
    name = config["name"]
    if name == "sequential":
        layers = config.get("layers")
        if set(config) != {"name", "layers"} or not isinstance(layers, list) or not layers:
            raise _fail(p, "model_config", f"{label} is a sequential without a list of layers")
        if not isinstance(params, tuple):
            raise CheckpointError(
                f"{p}: the stored network has {len(layers)} layers but its parameters are a "
                f"{type(params).__name__}, not a tuple of {len(layers)} groups; corrupt file"
            )
        if len(params) != len(layers):
            raise CheckpointError(
                f"{p}: the stored network has {len(layers)} layers but the parameters hold "
                f"{len(params)} groups; corrupt file"
            )
        n_in: int | None = None
        in_known = True  # no layer of unknown width before the first n_in
        width: int | None = None  # None and width_known: the input's width
        width_known = True
        reshaped = False  # a layer the width bookkeeping cannot see through
        known = True
        for i, (layer, group) in enumerate(zip(layers, params, strict=True)):
            sub = f"layer {i}" if label == "the layer" else f"{label}, layer {i}"
            net = _check_layer(layer, group, sub, p)
            reshaped = reshaped or net.opaque
            known = known and net.known
            if net.n_in is not None and width is not None and net.n_in != width:
                raise _fail(p, "model_config", f"layer {i} takes {net.n_in} features but the "
                            f"layer before it gives {width}")
            if in_known and n_in is None:
                if net.n_in is not None:
                    n_in = net.n_in
                elif net.opaque:
                    in_known = False
            if net.n_out is not None:
                width, width_known = net.n_out, True
            elif net.opaque:
                width, width_known = None, False
        if reshaped and known:  # layers that change the shape of a sample:
            try:  # the network's own shape inference, as it runs when it is built
                from_config(config)
            except (ValueError, TypeError, OverflowError, BpcoreError) as exc:
                raise _fail(p, "model_config", f"{label} is not a valid network ({exc})") \
                    from None
        return _Net(n_in if in_known else None, width if width_known else None,
                    not width_known, known)
    if name in ("residual", "parallel"):
        return _check_composite(config, params, label, p)
    shapes_of = _LAYER_PARAMS.get(name)
    if shapes_of is None:
        return _Net(None, None, True, False)  # a kind this bpcore does not know: generically
    init = config.get("init", "glorot_uniform")
    if not isinstance(init, str):
        raise _fail(p, "model_config", f"{label}'s init must be a name, got {_show(init)}")
    try:
        layer = from_config({k: v for k, v in config.items() if k != "init"})
    except (ValueError, TypeError, OverflowError, BpcoreError) as exc:
        raise _fail(p, "model_config", f"{label} ({_describe(config)}) is not a valid "
                    f"layer ({exc})") from None
    if _arch(layer.config) != _arch(config):
        raise _fail(p, "model_config", f"{label} is {_show(config)}, not a config this layer "
                    f"writes ({_show(layer.config)})")
    want = shapes_of(layer)
    title = f"{label} ({name} {layer.n_in}->{layer.n_out})" if name == "dense" else \
        f"{label} ({name})"
    if not isinstance(params, dict) or set(params) != set(want):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        needs = f"arrays {' and '.join(want)}" if want else "no arrays"
        raise CheckpointError(f"{p}: {title} needs {needs}, the file holds {keys}")
    for k, shape in want.items():
        got = params[k]
        if not isinstance(got, _Spec) or got.shape != shape:
            shown = got.shape if isinstance(got, _Spec) else type(got).__name__
            raise CheckpointError(
                f"{p}: {title}: {k} has shape {shown} but the architecture needs {shape}"
            )
    # a layer that changes the shape of a sample (a convolution, pooling, flatten) is
    # opaque to the width bookkeeping here; the whole network's inference checks it
    return _Net(layer.n_in, layer.n_out, layer.out_shape is not None)


def _check_composite(config: dict[str, Any], params: Any, label: str, p: Path) -> _Net:
    """A residual block (its block's parameters) or parallel branches (a tuple, one
    group per branch): each part checked, then the whole by its own shape inference."""
    if config["name"] == "residual":
        if set(config) != {"name", "layer"}:
            raise _fail(p, "model_config", f"{label} is a residual without its block")
        nets = [_check_layer(config["layer"], params, f"{label}'s block", p)]
    else:
        branches = config.get("layers")
        if set(config) != {"name", "combine", "layers"} or not isinstance(branches, list) \
                or len(branches) < 2:
            raise _fail(p, "model_config", f"{label} is a parallel without its branches")
        if not isinstance(params, tuple) or len(params) != len(branches):
            raise CheckpointError(
                f"{p}: {label} has {len(branches)} branches but its parameters are not a tuple "
                f"of {len(branches)} groups; corrupt file")
        nets = [_check_layer(c, g, f"{label} branch {i}", p)
                for i, (c, g) in enumerate(zip(branches, params))]
    known = all(n.known for n in nets)
    if known:
        try:
            from_config(config)
        except (ValueError, TypeError, OverflowError, BpcoreError) as exc:
            raise _fail(p, "model_config", f"{label} is not a valid {config['name']} ({exc})") \
                from None
    return _Net(None, None, True, known)


def _finite_numbers(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return False
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _check_train_state(config: dict[str, Any], state: TrainState, p: Path) -> None:
    """A TrainState's counters are 0-D integers and its layer state has the
    structure and shapes the architecture's ``init_state`` makes (where every
    layer kind is known)."""
    for name in ("step", "seed"):
        v = getattr(state, name)
        if not ((isinstance(v, _Spec) and v.dtype in _INT_DTYPES and not v.shape) or (
                isinstance(v, int) and not isinstance(v, bool))):
            raise _fail(p, f"opt_state.{name}", f"must be an int (or a 0-D integer array), got "
                        f"{_show(v)}")
    try:
        net = from_config(config)
    except (ValueError, TypeError, OverflowError, BpcoreError):
        return  # unknown kinds: checked generically
    want = {} if net.init_state is None else net.init_state(
        xp=_numpy_namespace(), dtype="float64", device="cpu")
    have = {path: spec.shape for path, spec in _specs(state.layers)}
    need = {path: tuple(a.shape) for path, a in tree_paths(want)}
    if have != need or _structure(state.layers) != _structure(want):
        raise _fail(p, "opt_state.layers", "does not have the structure and shapes of the "
                    f"network's layer state ({sorted(need) or 'no arrays'}); corrupt file")


def _numpy_namespace() -> Any:
    import array_api_compat.numpy as xp

    return xp


def _structure(node: Any) -> Any:
    """A tree with its leaves dropped: how dicts, tuples and lists nest."""
    if isinstance(node, dict):
        return {k: _structure(v) for k, v in node.items()}
    if isinstance(node, (tuple, list)):
        return [_structure(v) for v in node]
    return None


def tree_paths(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, array)`` of a tree of NumPy arrays, with :func:`_specs`' paths."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from tree_paths(v, f"{prefix}/{k}")
    elif isinstance(node, (tuple, list)):
        for i, v in enumerate(node):
            yield from tree_paths(v, f"{prefix}/{i}")
    elif node is not None:
        yield prefix, node


def _check_opt(config: dict[str, Any], opt_state: Any, params: Any, p: Path, *,
               key: str = _ROOTS["opt_state"]) -> None:
    """The optimizer's config builds it, its state is the one it keeps, mirroring the
    parameters' shapes; step counts are >= 0."""
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail(p, "optimizer_config", f"the name must be a string, got {_show(name)}")
    if not _finite_numbers(config):
        raise _fail(p, "optimizer_config", "holds NaN or infinity")
    is_state = isinstance(opt_state, tuple) and hasattr(opt_state, "_fields")
    if is_state and name not in optim.OPTIMIZERS:
        raise _fail(p, "optimizer_config", f"names no bpcore optimizer ({_show(name)}) but "
                    f"opt_state is {_a(type(opt_state).__name__)}, the state of one")
    if name in optim.OPTIMIZERS:
        kwargs = {k: v for k, v in config.items() if k != "name"}
        if isinstance(kwargs.get("betas"), list):
            kwargs["betas"] = tuple(kwargs["betas"])
        try:
            opt = optim.get_optimizer(name, **kwargs)
        except (ValueError, TypeError, OverflowError, BpcoreError) as exc:
            raise _fail(p, "optimizer_config", f"does not build the {name} optimizer "
                        f"({exc})") from None
        stubs = _fill(params, lambda spec: np.zeros((), dtype=spec.dtype))  # no memory
        _match_state(opt.init(stubs), opt_state, key, name, p)
    _check_ints(opt_state, key, p)
    if not is_state:
        return
    want = dict(_specs(params))
    for field, part in zip(opt_state._fields, opt_state):
        for path, spec in _specs(part):
            if spec.dtype in _INT_DTYPES and not spec.shape:
                continue
            mirror = want.get(path)
            if mirror is None or (mirror.shape, mirror.dtype) != (spec.shape, spec.dtype):
                raise CheckpointError(
                    f"{p}: the optimizer state {type(opt_state).__name__}.{field} does not "
                    f"match the parameters' shapes (first difference at {spec.key}: "
                    f"{spec.shape}, the parameter {_ROOTS['params']}{path}: "
                    f"{mirror.shape if mirror is not None else 'none'}); corrupt file"
                )
        got = {path for path, s in _specs(part) if not (s.dtype in _INT_DTYPES and not s.shape)}
        if isinstance(part, (tuple, list, dict)) and got and got != set(want):
            missing = sorted(set(want) - got)[0]
            raise CheckpointError(
                f"{p}: the optimizer state {type(opt_state).__name__}.{field} does not match "
                f"the parameters' shapes (it has nothing for {_ROOTS['params']}{missing}); "
                "corrupt file"
            )


def _match_state(expected: Any, got: Any, key: str, name: str, p: Path) -> None:
    """The planned state has the structure ``opt.init`` gives (shapes checked apart)."""

    def kind(node: Any) -> str:
        if node is None:
            return "None"
        if isinstance(node, (_Spec, np.ndarray)):
            return "an array"
        if isinstance(node, (bool, int, float, str, dict, list)):
            return _a(type(node).__name__)
        return type(node).__name__  # a tuple, SGDState, AdamState

    def fail() -> CheckpointError:
        where = "opt_state" if key == _ROOTS["opt_state"] else f"opt_state at {key!r}"
        return _fail(p, where, f"is {kind(got)} but optimizer_config names {name}, whose "
                     f"state has {kind(expected)} there")

    if expected is None or got is None:
        if expected is not got:
            raise fail()
    elif isinstance(expected, np.ndarray):
        if not isinstance(got, _Spec) or got.dtype in _INT_DTYPES:
            raise fail()
    elif isinstance(expected, int) and not isinstance(expected, bool):
        int_array = isinstance(got, _Spec) and got.dtype in _INT_DTYPES and not got.shape
        if not (int_array or (isinstance(got, int) and not isinstance(got, bool))):
            raise fail()
    elif isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            raise fail()
        for k in expected:
            _match_state(expected[k], got[k], f"{key}/{k}", name, p)
    elif isinstance(expected, (tuple, list)):
        if type(got) is not type(expected) or len(got) != len(expected):
            raise fail()
        fields = getattr(expected, "_fields", range(len(expected)))
        for f, a, b in zip(fields, expected, got):
            _match_state(a, b, f"{key}/{f}", name, p)
    elif type(got) is not type(expected) or got != expected:
        raise fail()


def _check_ints(node: Any, key: str, p: Path) -> None:
    """Ints in an optimizer state (step counts) are >= 0."""
    if isinstance(node, bool):
        return
    if isinstance(node, int):
        _int(node, p, f"opt_state at {key!r} (a step count)")
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_ints(v, f"{key}/{k}", p)
    elif isinstance(node, (tuple, list)):
        fields = getattr(node, "_fields", range(len(node)))
        for f, v in zip(fields, node):
            _check_ints(v, f"{key}/{f}", p)


# --------------------------------------------------------------------------
# meta: the keys bpcore.Model writes


def _check_meta(meta: dict[str, Any], config: dict[str, Any], net: _Net, p: Path) -> None:
    """The keys :meth:`bpcore.Model.save` writes and :meth:`~bpcore.Model.load` reads,
    where present, type- and range-checked against the architecture."""

    def field(name: str) -> str:
        return f"meta.{name}"

    loss = meta.get("loss", "softmax_cross_entropy")
    if "loss" in meta and (not isinstance(loss, str) or loss not in losses.LOSSES):
        raise _fail(p, field("loss"), f"must name a loss ({', '.join(losses.LOSSES)}), got "
                    f"{_show(loss)}")
    if "scaling" in meta and meta["scaling"] not in SCALERS:
        raise _fail(p, field("scaling"), f"must be one of {', '.join(SCALERS)}, got "
                    f"{_show(meta['scaling'])}")
    if "backend" in meta and not isinstance(meta["backend"], str):
        raise _fail(p, field("backend"), f"must be a string, got {_show(meta['backend'])}")
    if "batch_size" in meta:
        _int(meta["batch_size"], p, field("batch_size"), low=1)
    if "seed" in meta:
        _int(meta["seed"], p, field("seed"))
    if "extra" in meta and meta["extra"] is not None and not isinstance(meta["extra"], dict):
        raise _fail(p, field("extra"), f"must be a dict, got {_show(meta['extra'])}")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise _fail(p, field("history"), "must be a list of dicts, one per epoch")
    scaler = meta.get("scaler")
    if scaler is not None:
        _check_scaler(scaler, config, net, p)
    if "n_classes" in meta:
        _check_n_classes(meta["n_classes"], loss, net, p)
    if meta.get("classes") is not None:
        _check_classes(meta["classes"], net, p)
    sizes = meta.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, list) or not sizes:
            raise _fail(p, field("sizes"), f"must be a list of layer widths, got {_show(sizes)}")
        for i, n in enumerate(sizes):
            _int(n, p, f"{field('sizes')}[{i}]", low=1)
        want = _dense_sizes(config)
        if want is not None and sizes != want:
            raise _fail(p, field("sizes"), f"is {_show(sizes)} but the network's dense layers "
                        f"are {want}")


def _check_scaler(scaler: Any, config: dict[str, Any], net: _Net, p: Path) -> None:
    """Method, shift and scale; one value per value of a sample (``Model`` scales an n-D
    sample value by value), so its size is the product of the network's per-sample
    input shape, e.g. ``time * features`` for a recurrent network, not its ``n_in``."""
    field = "meta.scaler"
    if not isinstance(scaler, dict) or set(scaler) != {"method", "shift", "scale"}:
        raise _fail(p, field, f"must be a dict of method, shift and scale, got {_show(scaler)}")
    for key in ("shift", "scale"):
        values = scaler[key]
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise _fail(p, f"{field}.{key}", f"must be a list of numbers, got {_show(values)}")
    try:
        fitted = Scaler.from_dict(scaler)
    except BpcoreError as exc:
        raise _fail(p, field, str(exc)) from None
    n = fitted.shift.shape[0]
    sample: Any = None
    if net.known:
        with contextlib.suppress(ValueError, TypeError, OverflowError, BpcoreError):
            sample = input_shape(from_config(config))
    if sample is None:  # a layer kind this bpcore does not know, or one taking any shape
        return
    size = math.prod(int(k) for k in sample if k is not None)
    if None not in sample and n != size:
        raise _fail(p, field, f"scales {n} features but the network takes {size} inputs "
                    f"per sample (shape {show_shape(sample)})")
    if None in sample and (size == 0 or n % size):
        raise _fail(p, field, f"scales {n} features but the network takes samples of shape "
                    f"{show_shape(sample)}: a multiple of {size} inputs per sample")


def _check_n_classes(n_classes: Any, loss: str, net: _Net, p: Path) -> None:
    """As :class:`bpcore.Model` sets it: the output count for a classification loss;
    otherwise None or at most the output count (2 for one output)."""
    field = "meta.n_classes"
    targets = getattr(losses.LOSSES.get(loss), "targets", None)
    if n_classes is None:
        if targets == "classes":
            raise _fail(p, field, f"is None but the loss {loss} classifies; it must be the "
                        f"number of outputs ({net.n_out})")
        return
    _int(n_classes, p, field, low=1)
    if net.n_out is None:
        return
    if targets == "classes" and n_classes != net.n_out:
        raise _fail(p, field, f"is {n_classes} but the network has {net.n_out} outputs, one "
                    f"per class of the loss {loss}")
    if n_classes > max(net.n_out, 2):
        raise _fail(p, field, f"is {n_classes} but the network has {net.n_out} outputs")


def _check_classes(classes: Any, net: _Net, p: Path) -> None:
    """A classifier's labels, output by output: distinct, sorted, of one JSON type,
    one per output (two for a single output)."""
    field = "meta.classes"
    if not isinstance(classes, list) or len(classes) < 2:
        raise _fail(p, field, f"must be a list of at least two labels, got {_show(classes)}")
    kinds = {type(c) for c in classes}
    if len(kinds) != 1 or not kinds <= {int, str, bool, float} or not _finite_numbers(classes):
        raise _fail(p, field, f"must hold labels of one type (ints, strings, booleans or "
                    f"finite numbers), got {_show(classes)}")
    if any(not a < b for a, b in itertools.pairwise(classes)):
        raise _fail(p, field, f"must be distinct and sorted, got {_show(classes)}")
    if net.n_out is not None and len(classes) != max(net.n_out, 2):
        raise _fail(p, field, f"names {len(classes)} classes but the network has {net.n_out} "
                    "outputs")


def _dense_sizes(config: dict[str, Any]) -> list[Any] | None:
    """``[n_in, hidden..., n_out]`` of a sequential's dense layers, as Model records it."""
    if config.get("name") != "sequential":
        return None
    dense = [c for c in config.get("layers", []) if isinstance(c, dict)
             and c.get("name") == "dense"]
    if not dense:
        return None
    return [dense[0].get("n_in"), *(c.get("n_out") for c in dense)]


# --------------------------------------------------------------------------
# comparing architectures


def _arch(config: Any) -> Any:
    """A layer config without the initializer name, which does not change the shapes."""
    if isinstance(config, dict):
        return {k: _arch(v) for k, v in config.items() if k != "init"}
    if isinstance(config, list):
        return [_arch(v) for v in config]
    return config


def _describe(config: Any) -> str:
    if not isinstance(config, dict):
        return repr(config)
    name = config.get("name", "?")
    if name == "dense":
        return f"dense({config.get('n_in')} -> {config.get('n_out')})"
    extra = ", ".join(f"{k}={v!r}" for k, v in config.items() if k not in ("name", "init"))
    return f"{name}({extra})" if extra else str(name)


def _compare_configs(stored: dict[str, Any], given: dict[str, Any], p: Path) -> None:
    try:
        given = json.loads(json.dumps(given, default=_json_default))
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{p}: model_config is not JSON-able ({exc})") from None
    if _arch(stored) == _arch(given):
        return
    s_layers, g_layers = _layers(stored), _layers(given)
    fix = (
        "build the model from the checkpoint's own config (bpcore.from_config("
        "checkpoint.model_config)) or load a checkpoint of this architecture"
    )
    for i, (a, b) in enumerate(zip(s_layers, g_layers, strict=False)):
        if _arch(a) != _arch(b):
            raise CheckpointError(
                f"{p}: saved from a different architecture: layer {i} is {_describe(a)} in "
                f"the checkpoint but {_describe(b)} in the model; {fix}"
            )
    raise CheckpointError(
        f"{p}: saved from a different architecture: the checkpoint has {len(s_layers)} "
        f"layers, the model {len(g_layers)}; {fix}"
    )
