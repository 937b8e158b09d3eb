"""Checkpoints: safe, atomic, backend-neutral saving and loading of a training run.

A checkpoint is one ``.npz`` file written by NumPy and read with
``allow_pickle=False``, so loading one never executes code. It holds

* every array of the parameters and the optimizer state, moved to the host
  with :func:`bpcore.to_numpy` and stored under its path in the tree
  (``params/0/W``, ``opt/m/0/W``, ``opt/velocity/2/b``), and
* a JSON header, stored as a ``uint8`` array under ``__header__``: the format
  name and version, the bpcore version, the dtype, the epoch, the network's
  and the optimizer's configs, a free ``meta`` dict, and the *structure* of
  the parameters and of the optimizer state (tuples, dicts, ``SGDState`` /
  ``AdamState``, ``None``, the integer step count) with a tag on every node.

Because the arrays are plain NumPy, a checkpoint written from PyTorch, JAX,
CuPy or array-api-strict loads on any backend (:func:`bpcore.to_backend`).

Writes are atomic: the file is written to a temporary name in the target's
directory, flushed and ``fsync``-ed, then ``os.replace``-d onto the target and
the directory is ``fsync``-ed. A crash at any point leaves either the old
checkpoint or the new one, never a torn file (a killed writer can leave a
``.NAME.*.tmp`` file behind, which is safe to delete).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import optim, tree
from .backend import SUPPORTED_DTYPES, get_backend, resolve_dtype, to_backend, to_numpy, use_backend
from .errors import CheckpointError, CheckpointExistsError, CheckpointNotFoundError

__all__ = [
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
FORMAT_VERSION = 1
#: The archive member that holds the JSON header.
HEADER_KEY = "__header__"
_ROOTS = {"params": "params", "opt_state": "opt"}


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
        and lists.
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
        If the arrays are not float32/float64, the configs or ``meta`` are not
        JSON-able, or the file cannot be written. The previous file, if any, is
        then left as it was, and no temporary file remains.

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
    try:
        text = json.dumps(header, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{target}: the configs and meta must be JSON-able (numbers, strings, lists, "
            f"dicts): {exc}"
        ) from None
    arrays[HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

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


def _create_temp(target: Path) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise CheckpointError(f"{target}: could not create a temporary file next to it")


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


# --------------------------------------------------------------------------
# loading


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    backend: str | None = None,
    device: Any = None,
    model_config: dict[str, Any] | None = None,
) -> Checkpoint:
    """Read a checkpoint onto a backend.

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
        If the file is not a zip archive, is truncated or corrupt, has no
        header, is not a bpcore checkpoint, has a newer format version, lacks
        arrays, holds arrays whose shapes do not fit the stored architecture,
        stores a dtype other than float32/float64, or was saved from another
        architecture than ``model_config``. The message names the file.

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
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(
            f"{p}: no such checkpoint; check the path (checkpoints are written by "
            "bpcore train --save PATH or Model.save(PATH))"
        )
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not a checkpoint file")
    header, host = _read(p)
    dtype = header["dtype"]
    if model_config is not None:
        _compare_configs(header["model_config"], model_config, p)
    _check_arch(header["model_config"], host["params"], p)
    _check_opt_shapes(host["opt_state"], host["params"], p)

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


def _read(p: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validated header and the host trees ``{"params": ..., "opt_state": ...}``."""
    corrupt = (
        "the file is not a valid .npz archive (truncated, corrupt, or not a checkpoint); "
        "use an earlier checkpoint or retrain"
    )
    try:
        # our own handle: np.load leaks its file when the archive is corrupt
        f = p.open("rb")
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot open the file ({exc})") from None
    with f:
        try:
            z = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            # NumPy's text for a file that is neither .npz nor .npy suggests loading it
            # with allow_pickle, which a checkpoint never needs: leave it out.
            detail = "" if "pickle" in str(exc) else f" ({exc})"
            raise CheckpointError(f"{p}: {corrupt}{detail}") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(
                f"{p}: holds a single .npy array, not a bpcore checkpoint (.npz)"
            )
        with z:
            try:
                files = set(z.files)
                if HEADER_KEY not in files:
                    raise CheckpointError(
                        f"{p}: has no {HEADER_KEY} entry, so it is not a bpcore checkpoint "
                        "(an .npz written by something else?)"
                    )
                header = _parse_header(z[HEADER_KEY], p)
                host = {
                    root: _decode(header["structure"][root], z, files, p)
                    for root in ("params", "opt_state")
                }
            except CheckpointError:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"{p}: {corrupt} ({exc.__class__.__name__}: {exc})"
                ) from None
    return header, host


def _parse_header(raw: np.ndarray, p: Path) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{p}: the {HEADER_KEY} entry is not a uint8 array; corrupt file")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{p}: the header is not valid JSON ({exc}); corrupt file") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(
            f"{p}: not a bpcore checkpoint (format {fmt!r}, expected {FORMAT!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{p}: bad format version {version!r}; corrupt header")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {version} was written by a newer bpcore "
            f"({header.get('bpcore_version', '?')}); this bpcore reads versions up to "
            f"{FORMAT_VERSION}: upgrade bpcore (pip install -U bpcore)"
        )
    dtype = header.get("dtype")
    if dtype not in SUPPORTED_DTYPES:
        raise CheckpointError(
            f"{p}: stores dtype {dtype!r}; bpcore checkpoints hold float32 or float64"
        )
    expected = {
        "epoch": int, "model_config": dict, "optimizer_config": dict, "meta": dict,
        "structure": dict, "bpcore_version": str,
    }
    for key, kind in expected.items():
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{p}: header field {key!r} is missing or not a {kind.__name__}; corrupt header"
            )
    if not {"params", "opt_state"} <= set(header["structure"]):
        raise CheckpointError(f"{p}: the header does not describe params and opt_state")
    return header


def _decode(node: Any, z: Any, files: set[str], p: Path) -> Any:
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        return {"bool": bool, "int": int, "float": float, "str": str}[kind](node["value"])
    if kind == "dict":
        return {k: _decode(v, z, files, p) for k, v in node["items"].items()}
    if kind in ("tuple", "list"):
        items = [_decode(v, z, files, p) for v in node["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "namedtuple":
        name, fields = node["name"], node["fields"]
        cls = getattr(optim, name, None)
        known = list(getattr(cls, "_fields", ())) if isinstance(cls, type) else []
        if not (isinstance(cls, type) and issubclass(cls, tuple) and known == list(fields)):
            raise CheckpointError(
                f"{p}: the optimizer state is a {name} with fields {list(fields)}, which this "
                "bpcore does not know; load it with the bpcore version that wrote it"
            )
        return cls(*(_decode(fields[f], z, files, p) for f in known))
    if kind == "array":
        key = node["key"]
        if key not in files:
            raise CheckpointError(
                f"{p}: array {key!r} is missing from the file; the checkpoint is incomplete "
                "or corrupt"
            )
        a = z[key]
        if list(a.shape) != list(node["shape"]) or a.dtype.name != node["dtype"]:
            raise CheckpointError(
                f"{p}: array {key!r} is {a.dtype.name}{tuple(a.shape)} but the header "
                f"records {node['dtype']}{tuple(node['shape'])}; corrupt file"
            )
        return a
    raise CheckpointError(f"{p}: unknown structure tag {kind!r} in the header")


# --------------------------------------------------------------------------
# architecture checks


def _layers(config: dict[str, Any]) -> list[Any]:
    if config.get("name") == "sequential" and isinstance(config.get("layers"), list):
        return list(config["layers"])
    return [config]


def _check_arch(config: dict[str, Any], params: Any, p: Path) -> None:
    """Every dense layer's ``W`` is ``(n_in, n_out)`` and ``b`` is ``(n_out,)``."""
    if config.get("name") == "sequential":
        layers = _layers(config)
        if not isinstance(params, (list, tuple)) or len(params) != len(layers):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise CheckpointError(
                f"{p}: the stored network has {len(layers)} layers but the parameters hold "
                f"{got} groups; corrupt file"
            )
        for i, (layer, group) in enumerate(zip(layers, params, strict=True)):
            _check_layer(layer, group, f"layer {i}", p)
    else:
        _check_layer(config, params, "the layer", p)


def _check_layer(config: Any, params: Any, label: str, p: Path) -> None:
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: {label} has no valid config; corrupt header")
    if config.get("name") == "sequential":
        _check_arch(config, params, p)
        return
    if config.get("name") != "dense":
        return
    try:
        n_in, n_out = int(config["n_in"]), int(config["n_out"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{p}: {label} is a dense layer without sizes; corrupt header"
        ) from None
    want = {"W": (n_in, n_out), "b": (n_out,)}
    if not isinstance(params, dict) or set(params) != set(want):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise CheckpointError(
            f"{p}: {label} (dense {n_in}->{n_out}) needs arrays W and b, the file holds {keys}"
        )
    for k, shape in want.items():
        if tuple(params[k].shape) != shape:
            raise CheckpointError(
                f"{p}: {label} (dense {n_in}->{n_out}): {k} has shape "
                f"{tuple(params[k].shape)} but the architecture needs {shape}"
            )


def _shapes(node: Any) -> dict[str, tuple[int, ...]]:
    """``path -> shape`` of the host arrays of a decoded tree."""
    return {k: tuple(a.shape) for k, a in tree.paths(node) if isinstance(a, np.ndarray)}


def _check_opt_shapes(opt_state: Any, params: Any, p: Path) -> None:
    """SGD's velocity and Adam's moments must mirror the parameters' shapes."""
    fields = {optim.SGDState: ("velocity",), optim.AdamState: ("m", "v")}.get(type(opt_state), ())
    want = _shapes(params)
    for f in fields:
        part = getattr(opt_state, f)
        if part is None:
            continue
        got = _shapes(part)
        if got != want:
            bad = sorted(set(got.items()) ^ set(want.items()))
            raise CheckpointError(
                f"{p}: the optimizer state {type(opt_state).__name__}.{f} does not match the "
                f"parameters' shapes (first difference at {_ROOTS['opt_state']}/{f}/"
                f"{bad[0][0]}); corrupt file"
            )


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
    except (TypeError, ValueError) as exc:
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
