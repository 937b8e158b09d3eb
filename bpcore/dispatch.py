"""Backend specializations of portable kernels, and the step driver's workspace.

Every kernel in bpcore is written once against the Array API standard. Where
one backend has a faster way to compute the same kernel (an ``out=`` NumPy
update that allocates nothing, a fused CUDA elementwise kernel), that way is
written *beside* the portable kernel, in the same module, and registered
with :func:`specializes`::

    def relu_forward(x, *, xp=None):                 # the formula, for every backend
        ...

    @specializes(relu_forward, "numpy")
    def _relu_forward_numpy(x, *, xp=None, ws=None):  # the same result, written for NumPy
        ...

A specialization takes the portable kernel's arguments plus ``ws``, a
:class:`Workspace` (or ``None``), and returns what the portable kernel
returns, to rounding — including a cache with the same meaning, so that a
specialized forward may be paired with a portable backward and the other
way round. It never writes into its arguments unless its docstring says so
(the optimizer updates, which work in place by design). The test suite runs
every specialization against its portable kernel on the same inputs.

The step driver (:mod:`bpcore.step`) chooses, once per namespace when a step
is built, each kernel's specialization for that backend
(:func:`specialization`); ``train_step(..., fast=False)`` keeps the portable
kernels everywhere.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from .backend import Array, backend_name

__all__ = [
    "Binding",
    "Workspace",
    "cupy_kernels_enabled",
    "output",
    "output_like",
    "specialization",
    "specializations",
    "specializes",
]

_Fn = Callable[..., Any]


def cupy_kernels_enabled() -> bool:
    """Whether bpcore's CUDA kernels for CuPy are switched on (``BPCORE_CUPY_FAST=1``).

    Off by default: they have been checked on the CPU (their C bodies compiled
    on the host and run against the portable kernels) but not yet compiled by
    NVRTC and run on a GPU, so CuPy runs the portable kernels unless this is
    set. A GPU session runs the ``gpu`` tests with it set.
    """
    return os.environ.get("BPCORE_CUPY_FAST", "") == "1"


class _Entry(NamedTuple):
    fn: _Fn
    enabled: Callable[[], bool] | None


def specializes(
    portable: _Fn, *backends: str, enabled: Callable[[], bool] | None = None
) -> Callable[[_Fn], _Fn]:
    """Register the decorated function as ``portable``'s specialization for ``backends``.

    Parameters
    ----------
    portable : callable
        The portable kernel it replaces (it keeps a ``specializations`` dict).
    *backends : str
        bpcore backend names (``"numpy"``, ``"cupy"``, ``"torch"``, ...).
    enabled : callable, optional
        Asked when a step is built; a specialization whose ``enabled()`` is
        false is not used (the CuPy kernels: :func:`cupy_kernels_enabled`).
    """

    def register(fn: _Fn) -> _Fn:
        table: dict[str, _Entry] = portable.__dict__.setdefault("specializations", {})
        for name in backends:
            table[name] = _Entry(fn, enabled)
        fn.__dict__["specializes"] = portable
        return fn

    return register


def specializations(portable: _Fn) -> dict[str, _Fn]:
    """``backend name -> specialization`` registered for ``portable`` (enabled or not)."""
    table: dict[str, _Entry] = getattr(portable, "specializations", {})
    return {name: entry.fn for name, entry in table.items()}


def specialization(portable: _Fn, xp: ModuleType) -> _Fn | None:
    """``portable``'s enabled specialization for namespace ``xp``, or ``None``."""
    entry = getattr(portable, "specializations", {}).get(backend_name(xp))
    if entry is None or (entry.enabled is not None and not entry.enabled()):
        return None
    fn: _Fn = entry.fn
    return fn


class Workspace:
    """Buffers a step reuses from one call to the next (mutable backends only).

    A specialization asks for a buffer by name (``ws.buffer("z", shape,
    dtype)``) and writes its result there instead of allocating: large
    allocations cost page faults whenever the allocator hands memory back to
    the operating system, and a GPU graph needs fixed addresses. Buffers are
    keyed by the layer's position (:meth:`scope`) and by the thread, so
    concurrent calls of one step do not share them.

    A buffer is overwritten by the next call of the same step: the step
    driver gives a workspace only to steps whose intermediates never leave
    them (``train_step``), never to ``value_and_grad`` or ``predict``, whose
    results the caller keeps.

    **Lending** (NumPy on CPython): a functional update returns new arrays,
    and the caller drops the old ones at the next call. Where a workspace
    :attr:`lends`, an array handed to the caller is *lent* (:meth:`lend`; a
    workspace buffer lent so leaves the workspace, whose next ``buffer()``
    call under that name takes another), and :meth:`buffer` and :meth:`outputs`
    take a lent array back once nothing but the workspace refers to it: no
    variable, container, view (a NumPy view refers to its base), memoryview
    or weak reference. So the functional SGD update writes ``p − ηg`` into
    the gradient's buffer, still in cache, and returns it as the new
    parameter, while the buffer of the parameter before it (dropped by the
    caller) receives the next gradient: two buffers per parameter, as the
    in-place update has, instead of a fresh one per step. Arrays the caller
    passed in are never lent, so never written to.
    """

    def __init__(self, xp: ModuleType, *, _root: Workspace | None = None) -> None:
        self.xp = xp
        self._local = threading.local()  # this scope's buffers, one dict per thread
        self._scopes: dict[Any, Workspace] = {}
        self._root = self if _root is None else _root
        #: whether arrays handed to the caller are taken back once the caller drops them
        self.lends: bool = self._root.lends if _root is not None else (
            _CAN_LEND and backend_name(xp) == "numpy")
        if _root is None and self.lends:
            self._empty = sys.modules["numpy"].empty  # NumPy's own: no wrapper per call
            self._lending = threading.local()

    def scope(self, name: Any) -> Workspace:
        """The workspace of a part (a layer's position): its own buffer names."""
        child = self._scopes.get(name)
        if child is None:
            child = self._scopes[name] = Workspace(self.xp, _root=self._root)
        return child

    def buffer(self, name: str, shape: tuple[int, ...], dtype: Any, device: Any = None) -> Array:
        """The buffer ``name`` of this scope, (re)allocated when its shape or dtype changes
        (or, where the workspace lends, after it was lent)."""
        try:
            store: dict[str, Array] = self._local.buffers
        except AttributeError:
            store = self._local.buffers = {}
        buf = store.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            if self.lends:
                return self._root._own(store, name, buf, shape, dtype)
            kwargs = {} if device is None else {"device": device}
            buf = store[name] = self.xp.empty(shape, dtype=dtype, **kwargs)
        return buf

    # lending (NumPy): the state lives in the root, one set per thread

    def _lent(self) -> _Lent:
        try:
            lent: _Lent = self._lending.state
        except AttributeError:
            lent = self._lending.state = _Lent({}, {})
        return lent

    def _own(self, store: dict[str, Array], name: str, old: Array | None,
             shape: tuple[int, ...], dtype: Any) -> Array:
        """A new buffer ``name`` of ``store``: a lent array taken back, or a new one."""
        lent = self._lent()
        if old is not None:
            lent.owned.pop(id(old), None)
        buf = self._reclaim(lent, shape, dtype)
        if buf is None:
            buf = self._empty(shape, dtype=dtype)
        store[name] = buf
        lent.owned[id(buf)] = (store, name)
        return buf

    def _reclaim(self, lent: _Lent, shape: tuple[int, ...], dtype: Any) -> Array | None:
        """The oldest lent array of this shape and dtype if nothing else refers to it."""
        queue = lent.arrays.get((shape, dtype))
        if queue and _free(queue):
            return queue.popleft()
        return None

    def outputs(self, rows: list[tuple[Array, ...]], into: bool) -> list[tuple[Array, ...]]:
        """Arrays for the results of an update, which the step will :meth:`lend`:
        for each row ``(p, g, *slots)``, arrays shaped as ``p`` and the slots,
        the first of them ``g`` itself when ``into`` is true and ``g`` is one
        of this workspace's buffers (the gradient a functional update may
        overwrite), each other a lent array taken back where one is free, else
        a new one. Without lending, new arrays."""
        if not self.lends:
            empty_like = self.xp.empty_like
            return [tuple(empty_like(a) for a in (r[0], *r[2:])) for r in rows]
        root = self._root
        lent = root._lent()
        empty = root._empty
        result = []
        for row in rows:
            out = []
            if into and _buffer_of(lent, row[1]) is not None:
                out.append(row[1])
            for a in (row[0], *row[2:])[len(out):]:
                buf = root._reclaim(lent, a.shape, a.dtype)
                out.append(empty(a.shape, a.dtype) if buf is None else buf)
            result.append(tuple(out))
        return result

    def lend(self, *arrays: Any) -> None:
        """Hand ``arrays``, results of the step, to the caller (a no-op where the
        workspace does not lend; ``None`` and views are skipped). A workspace
        buffer among them leaves the workspace."""
        if not self.lends:
            return
        lent = self._root._lent()
        owned, queues = lent.owned, lent.arrays
        for a in arrays:
            if a is None or a.base is not None:
                continue
            entry = _buffer_of(lent, a)
            owned.pop(id(a), None)
            if entry is not None:
                del entry[0][entry[1]]
            key = (a.shape, a.dtype)
            queue = queues.get(key)
            if queue is None:
                queue = queues[key] = collections.deque()
            elif len(queue) >= _KEEP and not _free(queue):
                queue.popleft()  # kept by the caller: forget it (it stays the caller's)
            queue.append(a)


class _Lent(NamedTuple):
    """A lending workspace's arrays in one thread: ``owned`` maps ``id`` of
    each buffer to ``(store, name)``; ``arrays`` holds, per ``(shape, dtype)``,
    the arrays lent to the caller, oldest first."""

    owned: dict[int, tuple[dict[str, Array], str]]
    arrays: dict[tuple[tuple[int, ...], Any], collections.deque[Array]]


def _buffer_of(lent: _Lent, a: Any) -> tuple[dict[str, Array], str] | None:
    """``(store, name)`` where ``a`` is a workspace buffer, else ``None`` (an ``id``
    no longer in its store is another object's)."""
    entry = lent.owned.get(id(a))
    return entry if entry is not None and entry[0].get(entry[1]) is a else None


#: Lending needs reference counts that see every holder: CPython with its GIL.
_CAN_LEND = sys.implementation.name == "cpython" and getattr(sys, "_is_gil_enabled",
                                                             lambda: True)()

#: Lent arrays of one shape and dtype remembered while the caller keeps the oldest.
_KEEP = 8


def _refs(queue: collections.deque[Any]) -> int:
    return sys.getrefcount(queue[0])


#: The count :func:`_refs` sees for an array held by the queue alone (its slot
#: and the call's argument), measured here so that it is this interpreter's.
_UNHELD = _refs(collections.deque([object()]))


def _free(queue: collections.deque[Any]) -> bool:
    """Whether the oldest array of ``queue`` is held by the queue alone: no
    reference (a view's base included) and no weak reference, and still writeable."""
    a = queue[0]
    return (_refs(queue) <= _UNHELD + 1  # + 1: the local name `a`
            and not weakref.getweakrefcount(a) and a.flags.writeable)


def output(
    ws: Workspace | None, name: str, shape: tuple[int, ...], dtype: Any,
    empty: Callable[..., Array],
) -> Array:
    """Where a specialization writes its result: the workspace's buffer
    ``name``, or, without a workspace, a new ``empty(shape, dtype)``."""
    return empty(shape, dtype) if ws is None else ws.buffer(name, tuple(shape), dtype)


def output_like(
    ws: Workspace | None, name: str, like: Array, shape: tuple[int, ...], dtype: Any,
    empty: Callable[..., Array],
) -> Array:
    """:func:`output`, laid out in memory as ``like`` (a NumPy array) is: batch
    last when ``like`` is batch last (the layout of the NumPy convolution's
    output), so that an elementwise pass over both runs along the batch; else
    C order. ``shape`` has ``like``'s number of axes."""
    n = like.ndim
    if n > 1 and not like.flags.c_contiguous and like.transpose(*range(1, n), 0).flags.c_contiguous:
        buf = output(ws, name, (*shape[1:], shape[0]), dtype, empty)
        return buf.transpose(n - 1, *range(n - 1))
    return output(ws, name, shape, dtype, empty)


class Binding(NamedTuple):
    """How a network's kernels run in one step: the namespace, the workspace
    (``None``: allocate as the portable kernels do) and whether
    specializations are used at all."""

    xp: ModuleType
    ws: Workspace | None = None
    fast: bool = True

    def scope(self, name: Any) -> Binding:
        """The binding of a part (a layer's position) with its own workspace keys."""
        return self if self.ws is None else self._replace(ws=self.ws.scope(name))

    def kernel(self, portable: _Fn) -> _Fn:
        """``portable``, or its specialization for this namespace with the workspace bound."""
        spec = specialization(portable, self.xp) if self.fast else None
        if spec is None:
            return portable
        return functools.partial(spec, ws=self.ws)
