"""A checkpoint fuzzer: mutated checkpoints load bit-identical or raise CheckpointError.

A few small valid checkpoints (SGD, momentum, Adam, a Model's; float32 and
float64; a step count as an int and as a 0-D array) are mutated with a fixed
seed: bits flipped and bytes overwritten anywhere, truncation, splices, bits
flipped inside members with the zip's CRC recomputed, header fields replaced
with wrong types and ranges, members dropped, duplicated, renamed, added or
compressed, ``.npy`` headers and zip fields rewritten. Each mutant must either
raise :class:`~bpcore.errors.CheckpointError` or load exactly the original
(same types, shapes, dtypes, bytes, configs, meta) -- never another exception.

Forged mutants (header or array edits with the digest recomputed, as a buggy
or hostile writer would) must raise CheckpointError or load; ``Model.load``
of the Model's forged mutants likewise raises nothing else.

The suite runs ``BPCORE_FUZZ_CHECKPOINTS`` mutants (3,000 by default, about
five seconds); ``nox -s fuzz_checkpoints`` runs 10,000.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_checkpoint_hostile import (
    blobs,
    load_raw,
    npy,
    read_members,
    write_members,
    write_raw,
)

import bpcore as bp
from bpcore.checkpoint import HEADER_KEY, Checkpoint, load_checkpoint, save_checkpoint
from bpcore.errors import CheckpointError
from bpcore.model import Model
from bpcore.optim import AdamState
from bpcore.tree import map_arrays

SEED = 20240612
COUNT = int(os.environ.get("BPCORE_FUZZ_CHECKPOINTS", "3000"))

Members = list[tuple[str, bytes]]


class Base:
    """A valid checkpoint: its bytes, members, header, arrays and what it loads to."""

    def __init__(self, name: str, path: Path, model: bool = False) -> None:
        self.name, self.model = name, model
        self.raw = path.read_bytes()
        self.members = read_members(path)
        self.header, self.arrays = load_raw(path)
        self.loaded = load_checkpoint(path, backend="numpy")


def _save(path: Path, opt: bp.Optimizer | None, sizes: list[int], dtype: str, *,
          count_array: bool = False, meta: dict[str, Any] | None = None) -> Path:
    net = bp.mlp(sizes, "tanh")
    params = net.init(1, dtype=dtype)
    state = None
    if opt is not None:
        state = opt.init(params)
        grads = map_arrays(lambda a: a * 0.5 + 0.25, params)
        params, state = opt.update(grads, state, params)
        if count_array:
            state = AdamState(np.asarray(state.count, dtype=np.int64), state.m, state.v)
    return save_checkpoint(path, params=params, opt_state=state, model_config=net.config,
                           optimizer_config={} if opt is None else opt.config, epoch=4,
                           meta=meta)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    d = tmp_path_factory.mktemp("bases")
    with bp.use_backend("numpy"):
        model = Model([4, 8, 3], activation="tanh", lr=0.05, batch_size=8)
        model.fit(*blobs(), epochs=1, progress=False)
        return [
            Base("model", model.save(d / "model.npz"), model=True),
            Base("sgd32", _save(d / "sgd.npz", bp.sgd(lr=0.1), [3, 4, 2], "float32")),
            Base("momentum64", _save(d / "mom.npz", bp.momentum(lr=0.1), [2, 3, 1], "float64")),
            Base("adam64", _save(d / "adam.npz", bp.adam(), [3, 2], "float64",
                                 meta={"note": "x", "values": [1.5, -2.0]})),
            Base("adam32_count_array", _save(d / "adamc.npz", bp.adam(), [2, 2], "float32",
                                             count_array=True)),
            Base("no_optimizer", _save(d / "none.npz", None, [2, 3, 2], "float64")),
        ]


# --------------------------------------------------------------------------
# comparing loads bit for bit


def same_tree(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return bool(a == b)


def identical(a: Checkpoint, b: Checkpoint) -> bool:
    text = json.dumps  # NaN-safe, order-sensitive comparison of the JSON parts
    return (same_tree(a.params, b.params) and same_tree(a.opt_state, b.opt_state)
            and a.dtype == b.dtype and a.epoch == b.epoch and a.version == b.version
            and text(a.model_config) == text(b.model_config)
            and text(a.optimizer_config) == text(b.optimizer_config)
            and text(a.meta) == text(b.meta))


# --------------------------------------------------------------------------
# mutations: each returns the mutant's bytes (or writes it, for forged ones)

EVIL: list[Any] = [
    -5, -1, 0, 1, 2, 3, 2.5, 1e30, -0.0, 2**63, 2**64, -(2**63), "x", "", "three", None, True,
    False, [], {}, [1, 2], {"a": 1}, math.nan, math.inf, -math.inf, "float16", "float64",
    "float32", "adam", "sgd", "dense", "sequential", {"type": "none"},
    {"type": "int", "value": -1}, {"type": "array", "key": "params/0/W", "shape": [1],
                                   "dtype": "float32"},
    [[[[[[[[1]]]]]]]], list(range(40)), "params/0/W", [4, 8], [2**40, 2**40],
]


def paths(tree: Any) -> list[tuple[Any, Any]]:
    """Every ``(container, key)`` in a JSON tree, walked without recursion."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            stack.append(v)
    return out


def edit_header(rng: np.random.Generator, header: dict[str, Any]) -> None:
    """One random edit of one random node: a wrong value, a deletion, an addition."""
    container, key = paths(header)[rng.integers(len(paths(header)))]
    op = rng.random()
    if op < 0.7:
        value = EVIL[rng.integers(len(EVIL))]
        container[key] = json.loads(json.dumps(value))
    elif op < 0.85 and isinstance(container, dict):
        del container[key]
    elif op < 0.95 and isinstance(container[key], dict):
        container[key]["extra" + str(rng.integers(3))] = EVIL[rng.integers(len(EVIL))]
    elif isinstance(container, list):
        if rng.random() < 0.5:
            container.append(container[key])
        else:
            del container[key]
    else:
        container[key] = json.loads(json.dumps(EVIL[rng.integers(len(EVIL))]))


def zipped(members: Members, compression: int = zipfile.ZIP_STORED) -> bytes:
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def header_member(header: dict[str, Any]) -> tuple[str, bytes]:
    raw = json.dumps(header).encode()
    return f"{HEADER_KEY}.npy", npy(np.frombuffer(raw, dtype=np.uint8))


def flip_bits(rng: np.random.Generator, b: Base) -> bytes:
    data = bytearray(b.raw)
    for _ in range(rng.integers(1, 4)):
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    return bytes(data)


def set_bytes(rng: np.random.Generator, b: Base) -> bytes:
    data = bytearray(b.raw)
    at = int(rng.integers(len(data)))
    for i in range(int(rng.integers(1, 5))):
        if at + i < len(data):
            data[at + i] = int(rng.choice([0, 0xFF, int(rng.integers(256))]))
    return bytes(data)


def truncate(rng: np.random.Generator, b: Base) -> bytes:
    return b.raw[: int(rng.integers(len(b.raw)))]


def splice(rng: np.random.Generator, b: Base) -> bytes:
    at, n = int(rng.integers(len(b.raw))), int(rng.integers(1, 64))
    if rng.random() < 0.5:
        return b.raw[:at] + b.raw[at + n:]
    return b.raw[:at] + rng.bytes(n) + b.raw[at:]


def member_flip_crc(rng: np.random.Generator, b: Base) -> bytes:
    """A bit flipped inside one member (header, data or .npy header), the CRC recomputed."""
    members = list(b.members)
    i = int(rng.integers(len(members)))
    name, data = members[i]
    mutated = bytearray(data)
    at = int(rng.integers(len(data))) if rng.random() < 0.7 else int(rng.integers(min(128,
                                                                                 len(data))))
    mutated[at] ^= 1 << int(rng.integers(8))
    members[i] = (name, bytes(mutated))
    return zipped(members)


def header_edit(rng: np.random.Generator, b: Base) -> bytes:
    """A header field replaced, removed or added; the stale digest kept."""
    header = json.loads(json.dumps(b.header))
    edit_header(rng, header)
    members = [m for m in b.members if m[0] != f"{HEADER_KEY}.npy"]
    return zipped([*members, header_member(header)])


def header_text_flip_crc(rng: np.random.Generator, b: Base) -> bytes:
    members = list(b.members)
    i = next(j for j, m in enumerate(members) if m[0] == f"{HEADER_KEY}.npy")
    data = bytearray(members[i][1])
    at = 128 + int(rng.integers(len(data) - 128))
    data[at] ^= 1 << int(rng.integers(7))
    members[i] = (members[i][0], bytes(data))
    return zipped(members)


def zip_structure(rng: np.random.Generator, b: Base) -> bytes:
    members = list(b.members)
    i = int(rng.integers(len(members)))
    op = int(rng.integers(7))
    if op == 0:
        del members[i]
    elif op == 1:
        members.append(members[i])
    elif op == 2:
        members[i] = (members[i][0].replace("/", "_", 1) if "/" in members[i][0]
                      else members[i][0] + "x", members[i][1])
    elif op == 3:
        rng.shuffle(members)  # type: ignore[arg-type]
    elif op == 4:
        members.append((f"extra{i}.npy", npy(np.ones(3, np.float32))))
    elif op == 5:
        return zipped(members, zipfile.ZIP_DEFLATED)
    else:
        j = int(rng.integers(len(members)))
        members[i] = (members[i][0], members[j][1])  # one member's bytes under another name
    return zipped(members)


NPY_EDITS = [
    (b"'<f4'", [b"'>f4'", b"'<f8'", b"'<i4'", b"'|O'", b"'<f2'", b"'f4'"]),
    (b"'<f8'", [b"'>f8'", b"'<f4'", b"'<i8'", b"'<c16'", b"'V8'"]),
    (b"False", [b"True", b"0", b"None"]),
    (b"'shape': (", [b"'shape': (1, ", b"'shape': (0, ", b"'shape': (2**62, ", b"'shape': (-1, ",
                     b"'shape': [", b"'shape': ((", b"'shape': (9999999999, "]),
    (b"), }", [b",), }", b"), 'x': 1, }", b"), } '''", b"), }}", b"1), }"]),
]


def npy_header(rng: np.random.Generator, b: Base) -> bytes:
    members = list(b.members)
    i = int(rng.integers(len(members)))
    name, data = members[i]
    size = int.from_bytes(data[8:10], "little")
    text = data[10:10 + size]
    options = [(old, new) for old, news in NPY_EDITS if old in text for new in news]
    if not options:
        return zipped(members)
    old, new = options[int(rng.integers(len(options)))]
    text = text.replace(old, new, 1).rstrip(b" \n")[: size - 1].ljust(size - 1) + b"\n"
    members[i] = (name, data[:10] + text + data[10 + size:])
    return zipped(members)


def zip_fields(rng: np.random.Generator, b: Base) -> bytes:
    """A random value in a random field of a local header, the central directory or its end."""
    data = bytearray(b.raw)
    signature = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"][
        int(rng.integers(5))]
    starts, at = [], data.find(signature)
    while at >= 0:
        starts.append(at)
        at = data.find(signature, at + 1)
    if not starts:
        return bytes(data)
    start = starts[int(rng.integers(len(starts)))]
    field = start + int(rng.integers(4, 46))
    for k in range(int(rng.integers(1, 5))):
        if field + k < len(data):
            data[field + k] = int(rng.choice([0, 0xFF, 0x7F, int(rng.integers(256))]))
    return bytes(data)


MUTATIONS: dict[str, Callable[[np.random.Generator, Base], bytes]] = {
    "flip_bits": flip_bits,
    "set_bytes": set_bytes,
    "truncate": truncate,
    "splice": splice,
    "member_flip_crc": member_flip_crc,
    "header_edit": header_edit,
    "header_text_flip_crc": header_text_flip_crc,
    "zip_structure": zip_structure,
    "npy_header": npy_header,
    "zip_fields": zip_fields,
}


def forge(rng: np.random.Generator, b: Base, path: Path) -> None:
    """A header field or an array value edited and the digest recomputed."""
    header = json.loads(json.dumps(b.header))
    arrays = {k: a.copy() for k, a in b.arrays.items()}
    if rng.random() < 0.75:
        edit_header(rng, header)
    else:
        key = sorted(arrays)[int(rng.integers(len(arrays)))]
        a = arrays[key]
        flat = a.reshape(-1)
        if a.dtype.kind == "f":
            value: Any = [np.nan, np.inf, -np.inf, 0.0, 1e30, -1.0, 7.0][int(rng.integers(7))]
        else:
            value = [-1, 0, 7, 2**62][int(rng.integers(4))]
        flat[int(rng.integers(flat.size))] = value
    write_raw(path, header, arrays, redigest=True)


# --------------------------------------------------------------------------
# the fuzz run


def fuzz(bases: list[Base], count: int, path: Path) -> tuple[Counter[str], list[str]]:
    """Run ``count`` mutants; the tally of outcomes and a description of each failure."""
    rng = np.random.default_rng(SEED)
    tally: Counter[str] = Counter()
    failures: list[str] = []
    names = [*MUTATIONS, "forged"]
    weights = np.array([1.0] * len(MUTATIONS) + [2.0])
    for i in range(count):
        b = bases[i % len(bases)]
        kind = names[rng.choice(len(names), p=weights / weights.sum())]
        if kind == "forged":
            forge(rng, b, path)
        else:
            path.write_bytes(MUTATIONS[kind](rng, b))
        try:
            loaded = load_checkpoint(path, backend="numpy")
        except CheckpointError:
            tally[f"{kind}: CheckpointError"] += 1
            tally["CheckpointError"] += 1
            continue
        except Exception as exc:
            failures.append(f"#{i} {b.name} {kind}: {type(exc).__name__}: {exc}"[:300])
            tally["other exception"] += 1
            continue
        if kind == "forged":
            tally["forged: loaded"] += 1
            if b.model:
                try:
                    Model.load(path, backend="numpy")
                except CheckpointError:
                    tally["forged: Model.load CheckpointError"] += 1
                except Exception as exc:
                    failures.append(f"#{i} {b.name} forged Model.load: {type(exc).__name__}: "
                                    f"{exc}"[:300])
                    tally["other exception"] += 1
        elif identical(loaded, b.loaded):
            tally[f"{kind}: identical"] += 1
            tally["identical"] += 1
        else:
            failures.append(f"#{i} {b.name} {kind}: loaded, but not the original")
            tally["silently different"] += 1
    return tally, failures


def test_fuzz_checkpoints(bases: list[Base], tmp_path: Path) -> None:
    tally, failures = fuzz(bases, COUNT, tmp_path / "mutant.npz")
    print(f"\ncheckpoint fuzz, {COUNT} mutants, seed {SEED}:")
    for key in sorted(tally):
        print(f"  {key}: {tally[key]}")
    assert not failures, "\n".join(failures[:20])
    assert tally["CheckpointError"] + tally["identical"] + tally["forged: loaded"] == COUNT
    assert tally["CheckpointError"] > COUNT // 2  # the mutations do reach the checks


def test_bases_round_trip(bases: list[Base], tmp_path: Path) -> None:
    """The fuzzer's own helpers rebuild every base exactly (so mutants differ only as meant)."""
    for b in bases:
        path = tmp_path / f"{b.name}.npz"
        path.write_bytes(zipped(b.members))
        assert identical(load_checkpoint(path, backend="numpy"), b.loaded)
        write_raw(path, b.header, b.arrays)
        assert identical(load_checkpoint(path, backend="numpy"), b.loaded)
        write_members(path, b.members)
        assert identical(load_checkpoint(path, backend="numpy"), b.loaded)
