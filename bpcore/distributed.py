"""Data-parallel training over MPI (mpi4py) and, for GPU arrays, NCCL.

The scheme is the one of ChainerMN and Horovod, on their proven engines
rather than a protocol of our own: every rank (one process, one GPU per
*local* rank) holds a full copy of the parameters; rank 0's initial
parameters are broadcast to all; each step every rank computes the gradient
of its own shard of the global batch, and an all-reduce averages the
gradients *between backward and the optimizer update*, so every rank applies
the same update and any optimizer works unchanged.

- :class:`Communicator` wraps an ``mpi4py`` communicator (``MPI.COMM_WORLD``
  by default): ``rank``, ``size``, ``local_rank``; :meth:`~Communicator.bcast`
  of a tree of arrays; :meth:`~Communicator.allreduce` of a tree of arrays.
- Trees are flattened into a few *buckets* (contiguous buffers of at most
  ``bucket_bytes``, 25 MiB by default as in PyTorch DDP), so one all-reduce
  moves all the gradients of a small network, not one call per parameter.
- NumPy buffers (and PyTorch CPU tensors, viewed as NumPy) go through MPI's
  buffer protocol in place. CuPy arrays (and PyTorch CUDA tensors, viewed
  through DLPack) go through NCCL (``cupy.cuda.nccl``; the unique id is
  broadcast over MPI), or through CUDA-aware MPI when asked for. Other
  backends (JAX, array-api-strict) are staged through host memory.
- An optional float16 or bfloat16 all-reduce halves the bytes on the wire
  (Horovod's fp16 compression): the buffer is scaled, rounded, summed in the
  low precision and widened again.
- :class:`GradientAllReduce` is the ``grad_transform`` of
  :func:`bpcore.train_step`; :func:`shard_batches` gives each rank its
  disjoint shard of every epoch's shuffled order.
- Batch norm is *synchronised* (:func:`sync_batch_norm`, which
  :meth:`bpcore.Model.distribute` applies): its training statistics are
  those of the global batch, from one small all-reduce per layer in the
  forward pass and one in the backward (:class:`BatchStatSync`), so N ranks
  compute what one process computes on the whole batch and their running
  statistics stay identical. We chose this over per-rank statistics (plain
  PyTorch DDP), whose results change with the number of ranks and whose
  running statistics drift apart between ranks; the price is two
  latency-bound all-reduces of ``2C + 1`` values per batch norm layer per step.

Nothing here imports ``mpi4py`` until a communicator is made, so the module
imports (and its CPU-side logic is testable) without MPI installed. The NCCL
and CUDA-aware paths are written to the documented ``cupy.cuda.nccl`` and
mpi4py APIs but have not been run on a GPU in this project's tests.

Examples
--------
Run with ``mpiexec -n 2 python train.py``::

    import numpy as np, bpcore as bp
    from bpcore.distributed import communicator, shard_batches

    comm = communicator()                      # MPI.COMM_WORLD
    net, opt = bp.mlp([64, 128, 10]), bp.adam(lr=1e-3)
    params = comm.bcast(net.init(seed=comm.rank))   # every rank starts from rank 0's
    state = opt.init(params)
    allreduce = comm.grad_transform()          # averages gradients over the ranks
    step = bp.train_step(net, "softmax_cross_entropy", opt, grad_transform=allreduce)
    for epoch in range(10):
        for idx, share in shard_batches(len(X), 32, rank=comm.rank, size=comm.size,
                                        seed=0, epoch=epoch):
            allreduce.scale = share            # this rank's share of the global batch
            params, state, loss = step(params, state, X[idx], y[idx])
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import tree as tree_
from .backend import Array, backend_name, device_of, dtype_name, namespace, to_numpy
from .errors import BpcoreError, SettingError
from .layers.core import Layer

__all__ = [
    "BUCKET_BYTES",
    "MPI_SIZE_VARIABLES",
    "BatchStatSync",
    "Communicator",
    "DistributedError",
    "GradientAllReduce",
    "abort_on_error",
    "bf16_decode",
    "bf16_encode",
    "bucket_plan",
    "communicator",
    "mpi_available",
    "mpi_world_size",
    "shard_batches",
    "shard_range",
    "sync_batch_norm",
]

#: Default bucket size: the all-reduce moves gradients in flat buffers of at
#: most this many bytes (PyTorch DDP's default ``bucket_cap_mb=25``).
BUCKET_BYTES = 25 * 2**20

#: Environment variables in which MPI launchers publish the world size:
#: Open MPI, MPICH/Intel MPI (Hydra, PMI), MVAPICH2, PMIx-based launchers.
MPI_SIZE_VARIABLES = (
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "PMIX_SIZE",
)

_INSTALL = 'pip install "bpcore[mpi]"  (mpi4py and the mpich wheel, which provides mpiexec)'

#: Reduced precisions for the all-reduce, by the names accepted in ``dtype=``.
_LOW_PRECISION = {"float16": "float16", "fp16": "float16", "half": "float16",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}


class DistributedError(BpcoreError, RuntimeError):
    """MPI is missing, or the ranks of a data-parallel job disagree."""


# --------------------------------------------------------------------------
# launch detection


def mpi_world_size(environ: Mapping[str, str] | None = None) -> int:
    """The world size an MPI launcher announced in the environment, else 0.

    ``mpiexec -n 4 ...`` sets one of :data:`MPI_SIZE_VARIABLES` (``PMI_SIZE``
    for MPICH and Intel MPI, ``OMPI_COMM_WORLD_SIZE`` for Open MPI). ``bpcore
    train`` trains data-parallel when this is greater than 1.

    Examples
    --------
    >>> mpi_world_size({"PMI_SIZE": "4"}), mpi_world_size({})
    (4, 0)
    """
    env = os.environ if environ is None else environ
    for name in MPI_SIZE_VARIABLES:
        text = env.get(name, "").strip()
        if text.isdigit():
            return int(text)
    return 0


def mpi_available() -> str | None:
    """``None`` if mpi4py can be imported here, else the reason and how to install it."""
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return f"mpi4py is not installed; install it with: {_INSTALL}"
    return None


def _import_mpi() -> ModuleType:
    reason = mpi_available()
    if reason is not None:
        raise DistributedError(f"data-parallel training needs MPI: {reason}")
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # mpi4py present, but no MPI library to load
        raise DistributedError(
            f"mpi4py is installed but cannot load an MPI library ({exc}); install one "
            f"with: {_INSTALL}"
        ) from None
    return MPI


# --------------------------------------------------------------------------
# trees of arrays: flatten to a list of leaves and back


def _signature(leaves: list[Array]) -> tuple[tuple[tuple[int, ...], str], ...]:
    return tuple((tuple(int(d) for d in a.shape), dtype_name(a.dtype)) for a in leaves)


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


class _Bucket(NamedTuple):
    """Leaves packed into one flat buffer: their indices, shapes and sizes."""

    dtype: str
    leaves: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]


def bucket_plan(
    signature: tuple[tuple[tuple[int, ...], str], ...], bucket_bytes: int = BUCKET_BYTES
) -> list[_Bucket]:
    """Group leaves ``(shape, dtype)`` into flat buckets of at most ``bucket_bytes``.

    Leaves keep their order; a bucket holds one dtype; a leaf larger than
    ``bucket_bytes`` gets a bucket of its own. The gradients of a small
    network fit one bucket, so one all-reduce moves them all.

    Examples
    --------
    >>> sig = (((64, 128), "float32"), ((128,), "float32"), ((128, 10), "float32"))
    >>> [b.leaves for b in bucket_plan(sig)]
    [(0, 1, 2)]
    >>> [b.leaves for b in bucket_plan(sig, bucket_bytes=4 * 64 * 128)]
    [(0,), (1, 2)]
    """
    buckets: list[_Bucket] = []
    open_: dict[str, tuple[list[int], list[tuple[int, ...]], list[int], int]] = {}

    def close(dtype: str) -> None:
        index, shapes, sizes, _ = open_.pop(dtype)
        buckets.append(_Bucket(dtype, tuple(index), tuple(shapes), tuple(sizes)))

    for i, (shape, dtype) in enumerate(signature):
        size = int(np.prod(shape, dtype=np.int64))
        nbytes = size * _ITEMSIZE.get(dtype, 8)
        if dtype in open_ and open_[dtype][3] + nbytes > bucket_bytes:
            close(dtype)
        index, shapes, sizes, used = open_.get(dtype, ([], [], [], 0))
        index.append(i)
        shapes.append(shape)
        sizes.append(size)
        open_[dtype] = (index, shapes, sizes, used + nbytes)
    for dtype in list(open_):
        close(dtype)
    buckets.sort(key=lambda b: b.leaves[0])
    return buckets


def _pack(xp: ModuleType, leaves: list[Array], bucket: _Bucket) -> Array:
    """A fresh flat buffer holding the bucket's leaves (never a view of them)."""
    parts = [xp.reshape(leaves[i], (-1,)) for i in bucket.leaves]
    if len(parts) == 1:
        return xp.asarray(parts[0], copy=True)
    return xp.concat(parts)


def _unpack(xp: ModuleType, flat: Array, bucket: _Bucket, out: list[Array | None]) -> None:
    """Views of ``flat`` in the bucket's shapes, stored at the leaves' indices."""
    at = 0
    for i, shape, size in zip(bucket.leaves, bucket.shapes, bucket.sizes):
        out[i] = xp.reshape(flat[at:at + size], shape)
        at += size


# --------------------------------------------------------------------------
# reduced-precision encodings (host: NumPy; device: CuPy; same bit arithmetic)


def bf16_encode(x: Any, mod: ModuleType = np) -> Any:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even.

    ``mod`` is NumPy (host) or CuPy (device): bfloat16 is the upper half of a
    float32, so the encoding is a shift of the bits after rounding.

    Examples
    --------
    >>> import numpy as np
    >>> bf16_decode(bf16_encode(np.array([1.0, 3.140625, -2.5], dtype=np.float32)))
    array([ 1.      ,  3.140625, -2.5     ], dtype=float32)
    """
    bits = mod.ascontiguousarray(x, dtype=mod.float32).view(mod.uint32)
    rounding = (bits >> 16) & 1
    rounding += 0x7FFF
    rounded = ((bits + rounding) >> 16).astype(mod.uint16)
    # NaN stays NaN (rounding could carry a NaN's payload into the sign bit)
    return mod.where(mod.isnan(x), mod.uint16(0x7FC0), rounded)


def bf16_decode(bits: Any, mod: ModuleType = np) -> Any:
    """bfloat16 bits (uint16) -> float32 (exact)."""
    return (bits.astype(mod.uint32) << 16).view(mod.float32)


def _f16_sum(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
    """MPI user op: ``inout += in`` on float16 values carried as uint16."""
    a = np.frombuffer(inbuf, dtype=np.float16)
    b = np.frombuffer(inoutbuf, dtype=np.float16)
    np.add(b, a, out=b)


def _bf16_sum(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
    """MPI user op: ``inout += in`` on bfloat16 values carried as uint16,
    added in float32 and rounded back."""
    a = np.frombuffer(inbuf, dtype=np.uint16)
    b = np.frombuffer(inoutbuf, dtype=np.uint16)
    b[...] = bf16_encode(bf16_decode(a) + bf16_decode(b))


def _low_precision(dtype: Any) -> str | None:
    if dtype is None:
        return None
    name = dtype_name(dtype) if not isinstance(dtype, str) else dtype
    if name in ("float32", "float64"):
        return None
    try:
        return _LOW_PRECISION[name]
    except KeyError:
        raise SettingError(
            f"all-reduce dtype {name!r} is not supported; use None (the gradients' own "
            "dtype), 'float16' or 'bfloat16'"
        ) from None


# --------------------------------------------------------------------------
# NCCL (CuPy), written to cupy.cuda.nccl's API; unverified without a GPU


class _Nccl:
    """An NCCL communicator over the same ranks as an MPI one, made lazily.

    ``nccl`` is ``cupy.cuda.nccl``; the unique id is made on rank 0 and
    broadcast over MPI, then every rank joins (a collective call).
    """

    def __init__(self, mpi_comm: Any, rank: int, size: int, nccl: Any) -> None:
        self.nccl = nccl
        uid = nccl.get_unique_id() if rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(size, uid, rank)

    def datatype(self, name: str) -> Any:
        """The NCCL datatype constant of a dtype name."""
        key = {"float16": "NCCL_FLOAT16", "bfloat16": "NCCL_BFLOAT16",
               "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}[name]
        try:
            return getattr(self.nccl, key)
        except AttributeError:
            raise DistributedError(
                f"this CuPy's NCCL bindings have no {key}; use another all-reduce dtype"
            ) from None

    def allreduce_(self, ptr: int, count: int, name: str, stream: int) -> None:
        """Sum ``count`` values of type ``name`` at device address ``ptr``, in place."""
        self.comm.allReduce(ptr, ptr, count, self.datatype(name), self.nccl.NCCL_SUM, stream)

    def bcast_(self, ptr: int, count: int, name: str, root: int, stream: int) -> None:
        """Overwrite ``count`` values at ``ptr`` with those of rank ``root``."""
        self.comm.bcast(ptr, count, self.datatype(name), root, stream)


# --------------------------------------------------------------------------
# the communicator


class Communicator:
    """Rank, size, broadcast and all-reduce for data-parallel training.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The MPI communicator; ``MPI.COMM_WORLD`` by default.
    bucket_bytes : int
        Largest flat buffer one all-reduce moves (25 MiB by default).
    gpu : {"auto", "nccl", "mpi", "host"}
        How GPU arrays (CuPy, PyTorch CUDA) are reduced: ``nccl`` through
        ``cupy.cuda.nccl``; ``mpi`` hands device buffers to a CUDA-aware MPI;
        ``host`` copies through host memory. ``auto`` takes NCCL where CuPy
        has it, else CUDA-aware MPI if ``BPCORE_CUDA_AWARE_MPI=1`` is set,
        else the host.

    Attributes
    ----------
    rank, size : int
        This process's rank in ``comm`` and the number of ranks.
    local_rank, local_size : int
        Rank and number of ranks on this machine (shared-memory node): the
        GPU of this rank is ``cuda:{local_rank % n_gpus}``.
    comm : mpi4py.MPI.Comm

    Examples
    --------
    Under ``mpiexec -n 2``::

        comm = bpcore.distributed.communicator()
        params = comm.bcast(params)                 # rank 0's values everywhere
        mean = comm.allreduce(grads)                # the average over the ranks
    """

    def __init__(
        self, comm: Any = None, *, bucket_bytes: int = BUCKET_BYTES, gpu: str = "auto"
    ) -> None:
        self.MPI = _import_mpi()
        if gpu not in ("auto", "nccl", "mpi", "host"):
            raise SettingError(f"gpu must be one of auto, nccl, mpi, host; got {gpu!r}")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) \
                or bucket_bytes < 1:
            raise SettingError(f"bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank: int = local.Get_rank()
        self.local_size: int = local.Get_size()
        local.Free()
        self.bucket_bytes = bucket_bytes
        self.gpu = gpu
        self._plans: dict[Any, list[_Bucket]] = {}
        self._ops: dict[str, Any] = {}
        self._nccl: _Nccl | None = None

    def __repr__(self) -> str:
        return (f"Communicator(rank={self.rank}, size={self.size}, "
                f"local_rank={self.local_rank}, local_size={self.local_size})")

    # ------------------------------------------------------------------
    # small collectives on host values

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now, with exit status ``code`` (``MPI_Abort``)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object), in rank order."""
        return list(self.comm.allgather(value))

    def sum(self, values: Any) -> np.ndarray:
        """The element-wise sum over the ranks of host numbers (float64), e.g.
        ``[loss_sum, correct, count]`` for metrics gathered from every rank."""
        buf = np.array(values, dtype=np.float64, copy=True)
        if self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def device(self, backend: str) -> str | None:
        """This rank's GPU for a CUDA backend (``cuda:{local_rank % n_gpus}``), else ``None``.

        One GPU per local rank, as Horovod and ChainerMN assign them.
        """
        count = 0
        try:
            if backend == "cupy":
                import cupy

                count = cupy.cuda.runtime.getDeviceCount()
            elif backend == "torch":
                import torch

                count = torch.cuda.device_count()
        except Exception:  # no driver, no device
            count = 0
        return f"cuda:{self.local_rank % count}" if count else None

    # ------------------------------------------------------------------
    # trees of arrays

    def bcast(self, tree: Any, root: int = 0) -> Any:
        """Every rank gets ``root``'s tree: arrays by value, in flat buckets;
        other leaves (ints such as Adam's step count, ``None``) by pickle.

        The arrays must have the same shapes and dtypes on every rank (the
        same network); otherwise every rank raises :class:`DistributedError`
        instead of exchanging mismatched buffers. The result is new arrays on
        each rank's own backend and device; ``tree`` is not modified.

        Parameters
        ----------
        tree : nest of arrays
            e.g. ``(params, opt_state)``.
        root : int
            The rank whose values everyone gets.
        """
        leaves, skeleton = tree_.flatten(tree, only_arrays=True)
        if self.size == 1:
            return tree
        signature = _signature(leaves)
        theirs = self.comm.bcast((signature, skeleton) if self.rank == root else None, root=root)
        agree = self.allgather(theirs[0] == signature)
        if not all(agree):
            bad = [r for r, fine in enumerate(agree) if not fine]
            raise DistributedError(
                f"rank {root} and rank(s) {bad} hold different parameter shapes or dtypes "
                "(a different network, dtype or checkpoint): every rank must build the "
                "same model before the broadcast"
            )
        out: list[Array | None] = [None] * len(leaves)
        for bucket in self._plan(signature):
            ref = leaves[bucket.leaves[0]]
            xp = namespace(ref)
            flat = _pack(xp, leaves, bucket)
            flat = self._transport(flat, xp, "bcast", root=root)
            _unpack(xp, flat, bucket, out)
        return tree_.unflatten(theirs[1], out)

    def allreduce(
        self, tree: Any, *, op: str = "mean", scale: float | None = None, dtype: Any = None
    ) -> Any:
        """The sum over the ranks of ``scale * tree``, leaf by leaf, in flat buckets.

        Parameters
        ----------
        tree : nest of arrays
            e.g. the gradients (a tuple of ``{"W": (n_in, n_out), "b": (n_out,)}``
            dicts). Every rank must pass the same shapes and dtypes.
        op : {"mean", "sum"}
            ``mean`` (``scale = 1 / size``: the average gradient) or ``sum``.
        scale : float, optional
            This rank's factor instead, e.g. ``rows_here / rows_in_global_batch``
            when the ranks' batches differ in size (the exact weighted mean).
        dtype : {None, "float16", "bfloat16"}
            Send in a reduced precision (half the bytes of float32). The
            scaled values are rounded, summed in that precision and widened
            back to the leaves' dtype; keep the default for exact results.

        Returns
        -------
        tree
            New arrays of the leaves' backend, device, shapes and dtypes
            (views of a fresh buffer per bucket); ``tree`` is not modified.
        """
        if op not in ("mean", "sum"):
            raise SettingError(f"op must be 'mean' or 'sum', got {op!r}")
        low = _low_precision(dtype)
        factor = float(scale) if scale is not None else (1.0 / self.size if op == "mean" else 1.0)
        leaves, skeleton = tree_.flatten(tree, only_arrays=True)
        if self.size == 1 and factor == 1.0:
            return tree
        out: list[Array | None] = [None] * len(leaves)
        for bucket in self._plan(_signature(leaves)):
            xp = namespace(leaves[bucket.leaves[0]])
            flat = _pack(xp, leaves, bucket)
            if factor != 1.0:
                flat = _scale_owned(xp, flat, factor)
            if self.size > 1:
                flat = self._transport(flat, xp, "allreduce", low=low)
            _unpack(xp, flat, bucket, out)
        return tree_.unflatten(skeleton, out)

    def grad_transform(self, *, op: str = "mean", dtype: Any = None) -> GradientAllReduce:
        """A :class:`GradientAllReduce` over this communicator, for
        ``bpcore.train_step(..., grad_transform=...)``."""
        return GradientAllReduce(self, op=op, dtype=dtype)

    # ------------------------------------------------------------------
    # moving one flat buffer

    def _plan(self, signature: Any) -> list[_Bucket]:
        plan = self._plans.get(signature)
        if plan is None:
            plan = self._plans[signature] = bucket_plan(signature, self.bucket_bytes)
        return plan

    def _transport(
        self, flat: Array, xp: ModuleType, what: str, *, root: int = 0, low: str | None = None
    ) -> Array:
        """Broadcast (from ``root``) or sum-reduce one flat buffer we own."""
        name = backend_name(xp)
        on_gpu = name == "cupy" or (name == "torch" and getattr(flat, "is_cuda", False))
        if on_gpu and self._gpu_route() == "nccl":
            return self._nccl_transport(flat, name, what, root, low)
        if on_gpu and self._gpu_route() == "mpi":
            return self._device_mpi(flat, name, what, root, low)
        return self._host_mpi(flat, xp, name, what, root, low)

    def _gpu_route(self) -> str:
        if self.gpu != "auto":
            return self.gpu
        try:
            from cupy.cuda import nccl

            if getattr(nccl, "available", False):  # False when libnccl cannot be loaded
                return "nccl"
        except Exception:  # no CuPy here
            pass
        if os.environ.get("BPCORE_CUDA_AWARE_MPI") == "1" or \
                os.environ.get("OMPI_MCA_opal_cuda_support", "").lower() == "true":
            return "mpi"
        return "host"

    def _host_mpi(
        self, flat: Array, xp: ModuleType, name: str, what: str, root: int, low: str | None
    ) -> Array:
        MPI = self.MPI
        host = to_numpy(flat)  # NumPy: the array itself; torch CPU: a view
        if not (host.flags.writeable and host.flags.c_contiguous):
            host = np.array(host, copy=True)
        if what == "bcast":
            self.comm.Bcast(host, root=root)
        elif low is None:
            self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        else:
            wire = (host.astype(np.float16) if low == "float16"
                    else bf16_encode(host)).view(np.uint16)
            self.comm.Allreduce(MPI.IN_PLACE, [wire, MPI.UINT16_T], op=self._op(low))
            wide = wire.view(np.float16) if low == "float16" else bf16_decode(wire)
            np.copyto(host, wide, casting="unsafe")
        if name == "numpy" and host is flat:
            return flat
        if name == "numpy":
            return xp.asarray(host)
        return xp.asarray(host, device=device_of(flat))

    def _op(self, low: str) -> Any:
        op = self._ops.get(low)
        if op is None:
            fn = _f16_sum if low == "float16" else _bf16_sum
            op = self._ops[low] = self.MPI.Op.Create(fn, commute=True)
        return op

    def _nccl_transport(
        self, flat: Array, name: str, what: str, root: int, low: str | None
    ) -> Array:  # pragma: no cover - needs a GPU
        import cupy
        from cupy.cuda import nccl

        if self._nccl is None:
            self._nccl = _Nccl(self.comm, self.rank, self.size, nccl)
        buf = cupy.from_dlpack(flat) if name == "torch" else flat
        if name == "torch":
            import torch

            stream = torch.cuda.current_stream().cuda_stream
        else:
            stream = cupy.cuda.get_current_stream().ptr
        if what == "bcast":
            self._nccl.bcast_(buf.data.ptr, buf.size, dtype_name(buf.dtype), root, stream)
            return flat
        if low is None:
            self._nccl.allreduce_(buf.data.ptr, buf.size, dtype_name(buf.dtype), stream)
            return flat
        if low == "float16":
            wire = buf.astype(cupy.float16)
        else:
            wire = bf16_encode(buf, cupy)
        self._nccl.allreduce_(wire.data.ptr, wire.size, low, stream)
        wide = wire if low == "float16" else bf16_decode(wire, cupy)
        buf[...] = wide.astype(buf.dtype)
        return flat

    def _device_mpi(
        self, flat: Array, name: str, what: str, root: int, low: str | None
    ) -> Array:  # pragma: no cover - needs a GPU and a CUDA-aware MPI
        import cupy

        MPI = self.MPI
        buf = cupy.from_dlpack(flat) if name == "torch" else flat
        cupy.cuda.get_current_stream().synchronize()  # MPI reads the memory directly
        if what == "bcast":
            self.comm.Bcast(buf, root=root)
        elif low is None:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:  # MPI has no float16 sum on device buffers: reduce on the host
            host = cupy.asnumpy(buf)
            host = self._host_mpi(host, np, "numpy", what, root, low)
            buf[...] = cupy.asarray(host)
        return flat


def _scale_owned(xp: ModuleType, flat: Array, factor: float) -> Array:
    """``flat * factor``, in place when ``flat`` is a NumPy buffer we own."""
    if array_api_compat.is_numpy_namespace(xp):
        np.multiply(flat, flat.dtype.type(factor), out=flat)
        return flat
    return xp.multiply(flat, factor)


class GradientAllReduce:
    """``grads -> average over the ranks``: the ``grad_transform`` of a train step.

    :func:`bpcore.train_step` calls it between backward and the optimizer
    update, so every rank updates with the same gradient and any optimizer
    works unchanged.

    Parameters
    ----------
    comm : Communicator
    op : {"mean", "sum"}
        ``mean`` for losses that average over the batch (the cross-entropies,
        ``mse``); ``sum`` for ``half_sse``, whose gradient is a sum.
    dtype : {None, "float16", "bfloat16"}
        Reduced-precision all-reduce (see :meth:`Communicator.allreduce`).

    Attributes
    ----------
    scale : float or None
        Set before a step when the ranks' batches differ in size: this rank's
        rows over the global batch's rows (``op="mean"``) makes the result the
        exact mean over the global batch. ``None``: ``1 / size`` (mean) or 1.
    """

    def __init__(self, comm: Communicator, *, op: str = "mean", dtype: Any = None) -> None:
        if op not in ("mean", "sum"):
            raise SettingError(f"op must be 'mean' or 'sum', got {op!r}")
        _low_precision(dtype)
        self.comm, self.op, self.dtype = comm, op, dtype
        self.scale: float | None = None

    def __call__(self, grads: Any) -> Any:
        scale = self.scale
        if scale is not None and self.op == "sum":
            scale = 1.0
        return self.comm.allreduce(grads, op=self.op, scale=scale, dtype=self.dtype)


class BatchStatSync:
    """Sums over the ranks for synchronised batch norm (a
    :class:`bpcore.layers.norm.BatchSync`).

    :meth:`sum` all-reduces the forward pass's per-channel sums and counts;
    :meth:`grad_sum` the backward pass's sums of gradient terms, weighted as
    ``grads`` (the step's :class:`GradientAllReduce`) weights each rank's
    gradients: with unequal shards (``grads.scale`` set to this rank's share)
    the result is still the gradient of the loss over the global batch.

    Parameters
    ----------
    comm : Communicator
    grads : GradientAllReduce, optional
        The gradient all-reduce of the same step; ``None``: every rank weighs alike.
    """

    def __init__(self, comm: Communicator, grads: GradientAllReduce | None = None) -> None:
        self.comm, self.grads = comm, grads

    def sum(self, parts: list[Array]) -> list[Array]:
        """Each array summed over the ranks."""
        return list(self.comm.allreduce(list(parts), op="sum"))

    def grad_sum(self, parts: list[Array]) -> list[Array]:
        """``Σ_r w_r a_r / w_self``, ``w_r`` rank ``r``'s factor in the gradient all-reduce."""
        g = self.grads
        w = None if g is None or g.op == "sum" else g.scale
        if w is None:  # the same factor on every rank: it cancels
            return self.sum(parts)
        if not w > 0:
            raise DistributedError(f"this rank's share of the global batch is {w}; it must "
                                   "be > 0 for synchronised batch norm")
        total = self.comm.allreduce(list(parts), op="sum", scale=float(w))
        return [a / w for a in total]


def sync_batch_norm(net: Layer, comm: Communicator | BatchStatSync,
                    grads: GradientAllReduce | None = None) -> Layer:
    """``net`` with every batch norm synchronised over the ranks of ``comm``.

    The batch statistics of training become those of the global batch (every
    rank's shard), as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does;
    ``grads`` is the step's gradient all-reduce (its weights carry over to the
    backward pass, see :class:`BatchStatSync`). The network is rebuilt from
    its config, which does not change: parameters, layer state and
    checkpoints are those of ``net``. A network without batch norm is
    returned as it is.

    Examples
    --------
    Under ``mpiexec -n 2``::

        comm = communicator()
        allreduce = comm.grad_transform()
        net = sync_batch_norm(bp.sequential(bp.dense(8, 16), bp.batch_norm(16), bp.relu(),
                                            bp.dense(16, 3)), comm, allreduce)
        step = bp.train_step(net, "softmax_cross_entropy", opt, grad_transform=allreduce)
    """
    from .layers import from_config
    from .layers.norm import batch_norm

    if not _has_batch_norm(net.config):
        return net
    sync = comm if isinstance(comm, BatchStatSync) else BatchStatSync(comm, grads)

    def synced(**kwargs: Any) -> Layer:
        return batch_norm(**kwargs, sync=sync)

    try:
        return from_config(net.config, layers={"batch_norm": synced})
    except BpcoreError as exc:
        raise SettingError(
            f"cannot synchronise this network's batch norm: it is not rebuilt from its "
            f"config ({exc}); build its batch_norm layers with sync=BatchStatSync(comm)"
        ) from None


def _has_batch_norm(config: Any) -> bool:
    if isinstance(config, dict):
        return config.get("name") == "batch_norm" or any(
            _has_batch_norm(v) for v in config.values())
    if isinstance(config, (list, tuple)):
        return any(_has_batch_norm(v) for v in config)
    return False


_WORLD: Communicator | None = None


def communicator(comm: Any = None, **kwargs: Any) -> Communicator:
    """A :class:`Communicator` over ``comm`` (``MPI.COMM_WORLD``, made once, by default).

    Raises
    ------
    DistributedError
        If mpi4py (or an MPI library) is missing, with the command that installs them.
    """
    global _WORLD
    if comm is not None or kwargs:
        return Communicator(comm, **kwargs)
    if _WORLD is None:
        _WORLD = Communicator()
    return _WORLD


# --------------------------------------------------------------------------
# data sharding


def shard_batches(
    n: int, batch_size: int, *, rank: int, size: int, seed: int, epoch: int,
    shuffle: bool = True,
) -> list[tuple[np.ndarray, float]]:
    """This rank's part of each global batch of one epoch, and its share.

    The epoch's shuffled order is the one of
    :func:`bpcore.data.batch_indices` with ``batch_size * size`` (seeded
    identically on every rank); each global batch is cut into ``size``
    consecutive parts, of ``batch_size`` rows when full (the last one as
    evenly as possible), and rank ``r`` takes part ``r``. So the ranks' shards
    are disjoint, every rank runs the same number of steps (a collective
    all-reduce each), and 2 ranks × ``batch_size`` see exactly the batches one
    process sees with ``2 * batch_size``. A last global batch with fewer rows
    than ranks is left out of the epoch (at most ``size - 1`` samples; a
    different few each epoch).

    Parameters
    ----------
    n : int
        Samples in the (whole) training set.
    batch_size : int
        Rows per rank per step; the global batch is ``batch_size * size``.
    rank, size : int
        This rank and the number of ranks.
    seed, epoch : int
        As for :func:`bpcore.data.batch_indices`.

    Returns
    -------
    list of (numpy.ndarray of int64, float)
        Per step: this rank's row indices and its share of the global batch
        (``rows / global rows``: the ``scale`` of a weighted-mean all-reduce).

    Examples
    --------
    >>> [(i.tolist(), s) for i, s in shard_batches(
    ...     6, 2, rank=1, size=2, seed=0, epoch=0, shuffle=False)]
    [([2, 3], 0.5), ([5], 0.5)]
    """
    from .data import batch_indices

    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise SettingError(f"size must be an int >= 1, got {size!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
            or not 0 <= rank < size:
        raise SettingError(f"rank must be an int in [0, {size}), got {rank!r}")
    out = []
    for chunk in batch_indices(n, batch_size * size, seed=seed, epoch=epoch, shuffle=shuffle):
        m = len(chunk)
        if m < size:
            continue
        part = np.array_split(chunk, size)[rank]
        out.append((part, len(part) / m))
    return out


def shard_range(n: int, *, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of this rank's contiguous shard of ``n`` rows
    (sizes differ by at most one), e.g. for evaluation gathered from all ranks.

    Examples
    --------
    >>> [shard_range(5, rank=r, size=2) for r in range(2)]
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# --------------------------------------------------------------------------
# failure: one rank's exception ends the whole job


_USER_ERRORS = (BpcoreError, ValueError, TypeError, OSError)


@contextmanager
def abort_on_error(comm: Communicator | None = None, *, code: int = 1) -> Iterator[None]:
    """Turn an exception on any rank into ``MPI_Abort`` of the whole job.

    Without it, one rank that raises would leave the others waiting forever
    in their next all-reduce. The exception is printed first (one line for
    an error a user can fix, the traceback otherwise), naming the rank; the
    job then exits with status ``code`` (``mpiexec`` passes it on). In a
    single-process run the exception propagates as usual.

    Examples
    --------
    ::

        with bpcore.distributed.abort_on_error(comm, code=2):
            model.fit(X, y)
    """
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        world = comm if comm is not None else _WORLD
        if world is None or world.size == 1:
            raise
        where = f"rank {world.rank} of {world.size}"
        if isinstance(exc, _USER_ERRORS):
            report = f"bpcore: error on {where}: {exc}\n"
        else:
            report = f"bpcore: unexpected error on {where}:\n" + "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))
        # one write, flushed before MPI_Abort kills the job (a second write could be lost)
        sys.stderr.write(report + f"bpcore: aborting all {world.size} ranks "
                         f"(MPI_Abort, exit status {code})\n")
        sys.stderr.flush()
        world.abort(code)
        os._exit(code)  # MPI_Abort ends the job; never let this rank run on
