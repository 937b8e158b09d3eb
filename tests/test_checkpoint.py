"""Tests for bpcore.checkpoint: round trips on every backend, atomic writes, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import require_backend

import bpcore as bp
from bpcore.backend import backend_name, namespace, to_numpy
from bpcore.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    HEADER_KEY,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from bpcore.errors import CheckpointError, CheckpointExistsError, CheckpointNotFoundError
from bpcore.optim import AdamState, SGDState
from bpcore.tree import map_arrays as tree_map

OPTIMIZERS = {
    "momentum": lambda: bp.momentum(lr=0.1, momentum=0.9),
    "adam": lambda: bp.adam(lr=0.01),
    "sgd": lambda: bp.sgd(lr=0.1),
}


def trained(opt_name: str = "adam", *, dtype: str = "float32", sizes: tuple[int, ...] = (3, 4, 2)
            ) -> tuple[bp.Layer, bp.Optimizer, Any, Any]:
    """A small network on the default backend, one optimizer step in, so the state is nonzero."""
    net = bp.mlp(list(sizes), "tanh")
    opt = OPTIMIZERS[opt_name]()
    params = net.init(0, dtype=dtype)
    state = opt.init(params)
    grads = tree_map(lambda a: a * 0.5 + 0.25, params)
    params, state = opt.update(grads, state, params)
    return net, opt, params, state


def save(path: Path, net: bp.Layer, opt: bp.Optimizer, params: Any, state: Any, **kw: Any) -> Path:
    kw.setdefault("epoch", 3)
    return save_checkpoint(
        path, params=params, opt_state=state, model_config=net.config,
        optimizer_config=opt.config, **kw,
    )


def host(tree: Any) -> Any:
    return tree_map(to_numpy, tree)


def assert_trees_equal(a: Any, b: Any) -> None:
    """Same structure, types, shapes, dtypes and values (compared on the host)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_trees_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_trees_equal(x, y)
    elif a is None or isinstance(a, (int, float)):
        assert a == b
    else:
        x, y = to_numpy(a), to_numpy(b)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def rewrite(path: Path, edit: Any) -> None:
    """Load a checkpoint's raw arrays and header, let ``edit(arrays, header)`` change them,
    and write the result back (a hand-made corrupt or foreign checkpoint)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop(HEADER_KEY).tobytes())
    edit(arrays, header)
    if header is not None:
        arrays[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.unlink()
    np.savez(path, **arrays)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, bp.Layer, Any]:
    with bp.use_backend("numpy"):
        net, opt, params, state = trained("adam")
        path = save(tmp_path / "run.npz", net, opt, params, state)
    return path, net, params


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name", ["momentum", "adam", "sgd"])
def test_round_trip_on_every_backend(
    xp: ModuleType, tmp_path: Path, opt_name: str, dtype: str
) -> None:
    net, opt, params, state = trained(opt_name, dtype=dtype)
    meta = {"loss": "softmax_cross_entropy", "history": [{"loss": 0.5}], "seed": 7}
    path = save(tmp_path / "ck.npz", net, opt, params, state, meta=meta)
    ck = load_checkpoint(path, model_config=net.config)
    assert isinstance(ck, Checkpoint)
    assert_trees_equal(ck.params, params)
    assert_trees_equal(ck.opt_state, state)
    assert isinstance(ck.opt_state, AdamState if opt_name == "adam" else SGDState)
    ref = ck.params[0]["W"]
    assert backend_name(namespace(ref)) == backend_name(xp)
    assert ck.dtype == dtype and ck.epoch == 3 and ck.meta == meta
    assert ck.model_config == net.config and ck.optimizer_config == opt.config
    assert ck.version == bp.__version__
    rebuilt = bp.from_config(ck.model_config)
    y, _ = rebuilt.forward(ck.params, xp.ones((2, 3), dtype=ref.dtype))
    assert tuple(y.shape) == (2, 2)


@pytest.mark.parametrize("source", ["torch", "jax", "array_api_strict"])
def test_cross_backend_save_then_load_on_numpy(tmp_path: Path, source: str) -> None:
    require_backend(source)
    with bp.use_backend(source):
        net, opt, params, state = trained("adam", dtype="float64")
        path = save(tmp_path / f"{source}.npz", net, opt, params, state)
    ck = load_checkpoint(path, backend="numpy")
    assert isinstance(ck.params[0]["W"], np.ndarray)
    assert isinstance(ck.opt_state.m[2]["b"], np.ndarray)
    assert_trees_equal(ck.params, host(params))
    assert_trees_equal(ck.opt_state, host(state))


def test_numpy_checkpoint_loads_on_every_backend(xp: ModuleType, tmp_path: Path) -> None:
    with bp.use_backend("numpy"):
        net, opt, params, state = trained("momentum")
        path = save(tmp_path / "np.npz", net, opt, params, state)
    ck = load_checkpoint(path)  # the default backend: the fixture's
    assert backend_name(namespace(ck.opt_state.velocity[0]["W"])) == backend_name(xp)
    assert_trees_equal(host(ck.params), params)
    assert_trees_equal(host(ck.opt_state), state)


def test_opt_state_none_and_meta_conversion(tmp_path: Path) -> None:
    net = bp.mlp([2, 1])
    params = net.init(1, xp=None)
    meta = {"lr": np.float32(0.5), "n": np.int64(3), "tuple": (1, 2), "arr": np.arange(2)}
    path = save_checkpoint(tmp_path / "a.npz", params=params, opt_state=None,
                           model_config=net.config, optimizer_config={}, epoch=0, meta=meta)
    ck = load_checkpoint(path, backend="numpy")
    assert ck.opt_state is None
    assert ck.meta == {"lr": 0.5, "n": 3, "tuple": [1, 2], "arr": [0, 1]}


def test_no_pickle_plain_npz_layout(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, params = saved
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        assert {"params/0/W", "params/0/b", "params/2/W", "opt/m/0/W", "opt/v/2/b"} <= files
        assert all(z[k].dtype != object for k in files)
        np.testing.assert_array_equal(z["params/0/W"], params[0]["W"])
        header = json.loads(z[HEADER_KEY].tobytes())
    assert header["format"] == FORMAT and header["format_version"] == FORMAT_VERSION
    assert header["dtype"] == "float32" and header["epoch"] == 3
    opt = header["structure"]["opt_state"]
    assert opt["type"] == "namedtuple" and opt["name"] == "AdamState"
    assert opt["fields"]["count"] == {"type": "int", "value": 1}
    assert header["structure"]["params"]["items"][1] == {"type": "dict", "items": {}}


def test_save_returns_path_and_creates_directories(tmp_path: Path) -> None:
    net, opt, params, state = trained("sgd")
    out = save(tmp_path / "runs" / "deep" / "x.npz", net, opt, params, state)
    assert out == tmp_path / "runs" / "deep" / "x.npz" and out.is_file()


# --------------------------------------------------------------------------
# overwrite and atomicity


def test_overwrite_refused_unless_asked(saved: tuple[Path, bp.Layer, Any]) -> None:
    path = saved[0]
    before = path.read_bytes()
    new_net, new_opt, new_params, new_state = trained("sgd")
    with pytest.raises(CheckpointExistsError, match="overwrite") as info:
        save(path, new_net, new_opt, new_params, new_state)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, CheckpointError)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    save(path, new_net, new_opt, new_params, new_state, overwrite=True, epoch=9)
    assert load_checkpoint(path, backend="numpy").epoch == 9
    assert leftovers(path.parent) == []


def test_crash_at_rename_keeps_old_checkpoint(
    saved: tuple[Path, bp.Layer, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, params = saved

    def crash(*args: Any) -> None:
        raise RuntimeError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    new = trained("adam", sizes=(3, 4, 2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        save(path, *new, overwrite=True, epoch=99)
    monkeypatch.undo()
    ck = load_checkpoint(path, backend="numpy")
    assert ck.epoch == 3
    assert_trees_equal(ck.params, params)
    assert leftovers(path.parent) == []


def test_crash_mid_write_keeps_old_checkpoint(
    saved: tuple[Path, bp.Layer, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = saved[0]

    def half_written(file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_written)
    new = trained("sgd")
    with pytest.raises(CheckpointError, match="No space left") as info:
        save(path, *new, overwrite=True)
    monkeypatch.undo()
    assert "untouched" in str(info.value) and str(path) in str(info.value)
    assert load_checkpoint(path, backend="numpy").epoch == 3
    assert leftovers(path.parent) == []


def test_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(CheckpointError, match="Input/output error"):
        save(tmp_path / "new.npz", *trained("sgd"))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


_KILLED_WRITER = """
import os, sys, time
import numpy as np
from bpcore.checkpoint import save_checkpoint

path = sys.argv[1]
# Block at the rename: whenever SIGKILL lands, it lands before the commit.
os.replace = lambda *a: time.sleep(120)
n = 1_000_000  # a 64 MB float64 W: the write takes a while
params = ({"W": np.ones((n, 8)), "b": np.ones(8)},)
cfg = {"name": "sequential", "layers": [{"name": "dense", "n_in": n, "n_out": 8}]}
print("writing", flush=True)
save_checkpoint(path, params=params, opt_state=None, model_config=cfg,
                optimizer_config={}, epoch=50, overwrite=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_during_large_save_keeps_previous(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, net, params = saved
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"writing"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill as soon as the temp file has data
            temps = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
            if temps and temps[0].stat().st_size > 0:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.005)
        else:
            pytest.fail("the writer never started its temporary file")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(path, backend="numpy", model_config=net.config)
    assert ck.epoch == 3
    assert_trees_equal(ck.params, params)
    killed = leftovers(path.parent)  # the killed writer's temp file, named for its pid
    assert len(killed) == 1 and f"-{proc.pid}-" in killed[0], killed
    assert sorted(p.name for p in path.parent.glob("*.npz")) == [path.name]  # never a checkpoint
    # the next save into the directory removes it, and is unaffected by it
    save(path, *trained("sgd"), overwrite=True, epoch=4)
    assert load_checkpoint(path, backend="numpy").epoch == 4
    assert leftovers(path.parent) == []


# --------------------------------------------------------------------------
# bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint") as info:
        load_checkpoint(path)
    assert isinstance(info.value, FileNotFoundError) and str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_checkpoint(saved: tuple[Path, bp.Layer, Any], keep: float) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated, corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("garbage", [b"", b"hello world, not a checkpoint", bytes(range(256)) * 4])
def test_garbage_bytes(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(garbage)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_corrupted_array_bytes(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    start = data.index(b"params/0/W.npy") + 200  # inside that member's data
    data[start:start + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_single_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.ones(3))
    with pytest.raises(CheckpointError, match=r"single \.npy array"):
        load_checkpoint(path)


def test_missing_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, W=np.ones((2, 2)))
    with pytest.raises(CheckpointError, match="no __header__") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a, h: h.update(format="something-else"), "not a bpcore checkpoint"),
        (lambda a, h: h.update(format_version=FORMAT_VERSION + 1), "newer bpcore"),
        (lambda a, h: h.update(format_version="1"), "bad format version"),
        (lambda a, h: h.update(dtype="float16"), "float16"),
        (lambda a, h: h.pop("model_config"), "model_config"),
        (lambda a, h: a.pop("params/2/W"), "'params/2/W' is missing"),
        (lambda a, h: a.pop("opt/v/0/b"), "'opt/v/0/b' is missing"),
        (lambda a, h: a.update({"params/0/W": np.ones((3, 5), np.float32)}), "header records"),
        (lambda a, h: h["structure"]["opt_state"].update(name="LionState"), "LionState"),
    ],
)
def test_bad_header_or_arrays(
    saved: tuple[Path, bp.Layer, Any], edit: Any, match: str
) -> None:
    path, _, _ = saved
    rewrite(path, edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_header_not_json(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, _ = saved

    def edit(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        header.clear()

    rewrite(path, edit)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[HEADER_KEY] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_shapes_that_do_not_fit_the_architecture(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, _ = saved

    def edit(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        for root in ("params", "opt/m", "opt/v"):
            arrays[f"{root}/2/W"] = np.ones((4, 3), np.float32)
        header["structure"]["params"]["items"][2]["items"]["W"]["shape"] = [4, 3]
        for f in ("m", "v"):
            fields = header["structure"]["opt_state"]["fields"]
            fields[f]["items"][2]["items"]["W"]["shape"] = [4, 3]

    rewrite(path, edit)
    with pytest.raises(CheckpointError, match=r"layer 2 \(dense 4->2\): W has shape \(4, 3\)"):
        load_checkpoint(path)


def test_opt_state_that_does_not_fit_the_parameters(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, _ = saved

    def edit(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        arrays["opt/m/0/b"] = np.ones(7, np.float32)
        header["structure"]["opt_state"]["fields"]["m"]["items"][0]["items"]["b"]["shape"] = [7]

    rewrite(path, edit)
    with pytest.raises(CheckpointError, match=r"AdamState\.m does not match"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (bp.mlp([3, 5, 2], "tanh"), r"layer 0 is dense\(3 -> 4\) in the checkpoint but "
                                    r"dense\(3 -> 5\)"),
        (bp.mlp([3, 4, 2], "relu"), r"layer 1 is tanh in the checkpoint but relu"),
        (bp.mlp([3, 4, 4, 2], "tanh"), r"layer 2 is dense\(4 -> 2\)"),
        (bp.mlp([3, 4, 2], "tanh", "sigmoid"), r"3 layers, the model 4"),
    ],
)
def test_model_config_mismatch(
    saved: tuple[Path, bp.Layer, Any], other: bp.Layer, match: str
) -> None:
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, model_config=other.config)
    assert str(path) in str(info.value) and "different architecture" in str(info.value)


def test_initializer_name_is_not_architecture(saved: tuple[Path, bp.Layer, Any]) -> None:
    path, _, params = saved
    other = bp.mlp([3, 4, 2], "tanh", init="he_normal")
    ck = load_checkpoint(path, backend="numpy", model_config=other.config)
    assert_trees_equal(ck.params, params)


# --------------------------------------------------------------------------
# bad input to save


def test_save_refuses_bad_input(tmp_path: Path) -> None:
    net, opt, params, state = trained("sgd")
    with pytest.raises(CheckpointError, match="JSON-able"):
        save(tmp_path / "a.npz", net, opt, params, state, meta={"f": object()})
    with pytest.raises(CheckpointError, match="epoch"):
        save(tmp_path / "a.npz", net, opt, params, state, epoch=-1)
    with pytest.raises(CheckpointError, match="is a directory"):
        save(tmp_path, net, opt, params, state)
    half = tree_map(lambda a: a.astype(np.float16), params)
    with pytest.raises(CheckpointError, match="float16"):
        save(tmp_path / "a.npz", net, opt, half, None)
    with pytest.raises(CheckpointError, match=r"cannot save a builtins\.object"):
        save(tmp_path / "a.npz", net, opt, params, object())
    with pytest.raises(CheckpointError, match="keys must be"):
        save(tmp_path / "a.npz", net, opt, ({"a/b": params[0]["W"]},), None)
    assert list(tmp_path.iterdir()) == []


def test_text_file_as_checkpoint_names_the_file_and_never_suggests_pickle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(bp.CheckpointError, match=r"metrics\.csv.*not a valid \.npz") as info:
        load_checkpoint(path)
    assert "pickle" not in str(info.value)


# --------------------------------------------------------------------------
# recurrent networks

RECURRENT = {
    "gru": "gru(3),flatten,dense(4)",
    "lstm_learned_state": "lstm(3, initial_state='learned', return_sequences=False),dense(4)",
    "rnn_reverse_truncated": "rnn(3, reverse=True, truncate=2),flatten,dense(4)",
    "bidirectional_gru": "bidirectional(gru(3)),flatten,dense(4)",
    "bidirectional_lstm": "bidirectional(lstm(2, return_sequences=False, "
                          "initial_state='learned')),dense(4)",
}


@pytest.mark.parametrize("spec", RECURRENT.values(), ids=RECURRENT.keys())
@pytest.mark.parametrize("in_shape", [(6, 2), (12,)], ids=["time_features", "flat"])
def test_recurrent_models_round_trip_bit_identically(
    tmp_path: Path, spec: str, in_shape: tuple[int, ...]
) -> None:
    """A Model of each recurrent kind (a standard scaler over time*features values,
    Adam state) saves, loads and trains on exactly as the one that never stopped."""
    from bpcore.layers.arch import build

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, *in_shape)), rng.integers(0, 4, 20)
    model = bp.Model(build(spec, in_shape), optimizer="adam", lr=1e-2, batch_size=10,
                     dtype="float64")
    model.fit(X, y, epochs=1, verbose=0)
    assert model.scaler is not None and model.scaler.shift.shape == (12,)
    path = model.save(tmp_path / "rnn.npz")
    loaded = bp.Model.load(path)
    assert loaded.net.config == model.net.config
    assert_trees_equal(loaded.params, model.params)
    assert_trees_equal(loaded.opt_state, model.opt_state)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    model.fit(X, y, epochs=2, verbose=0)
    loaded.fit(X, y, epochs=2, verbose=0)
    assert_trees_equal(loaded.params, model.params)


def test_recurrent_params_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    """The recurrent kinds are checked by their own shapes (W_ih/W_hh/b_ih/b_hh, the
    _reverse halves), before any array is read."""
    net = bp.sequential(bp.bidirectional(bp.gru(2, 3)), bp.flatten(), bp.dense(36, 4))
    opt = bp.adam(1e-2)
    params = net.init(0)
    save(tmp_path / "ok.npz", net, opt, params, opt.init(params))
    assert load_checkpoint(tmp_path / "ok.npz").model_config == net.config
    wrong = bp.sequential(bp.bidirectional(bp.gru(2, 4)), bp.flatten(), bp.dense(48, 4))
    bad = (params[0] | {"W_hh_reverse": np.zeros((12, 3), np.float32)}, *params[1:])
    with pytest.raises(CheckpointError, match=r"layer 0 \(bidirectional\): W_hh_reverse has "
                       r"shape \(12, 3\) but the architecture needs \(9, 3\)"):
        save(tmp_path / "bad.npz", net, opt, bad, None)
    with pytest.raises(CheckpointError, match=r"layer 0 .*needs arrays W_ih and W_hh"):
        save(tmp_path / "bad.npz", net, opt, (wrong.init(0)[0] | {"x": params[0]["W_ih"]},
                                              *params[1:]), None)
