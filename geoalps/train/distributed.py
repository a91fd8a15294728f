"""Data-parallel training over ``torch.distributed``: which process this is, and the few collectives
the loop needs.

A run started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) joins the process group: nccl with one GPU a process
(``cuda:LOCAL_RANK``) on CUDA, gloo on CPU. The loop wraps its network in
``DistributedDataParallel`` (gradients averaged over processes in backward), reduces its metrics
with :func:`sum_over_ranks`, and lets only rank 0 write. A run without those variables is one
process, exactly as before: :func:`start` then returns a :class:`Ranks` of one and none of the
helpers communicates.

Failure: every collective waits at most ``timeout_s`` (the process group's timeout); an error
from one (a peer that died: gloo sees its sockets close at once; a peer that hangs: the
timeout) becomes one :class:`DistributedError` line instead of a hang or a C++ trace.

Cost: one all-reduce of the gradients per step (DDP overlaps it with backward), one small
all-reduce per epoch for the metrics, one gather of the random-generator states per epoch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from geoalps.errors import DistributedError, OptionError

#: Environment variables torchrun sets for each process it starts.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

#: True once this process, started by torchrun, has begun joining its group (see :func:`started`).
_started = False


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a data-parallel run (one process: rank 0 of 1, no backend)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: Any = None
    timeout_s: float = 0.0

    @property
    def distributed(self) -> bool:
        """A process group is running (torchrun started this process, even with one process)."""
        return self.backend is not None

    @property
    def main(self) -> bool:
        """This process writes checkpoints, logs and progress."""
        return self.rank == 0

    def describe(self) -> str:
        """The run's first line: ``data-parallel on 2 processes, gloo, cpu``."""
        plural = "process" if self.world_size == 1 else "processes"
        return f"data-parallel on {self.world_size} {plural}, {self.backend}, {self.device.type}"


def launched() -> bool:
    """True when torchrun (or anything setting its variables) started this process."""
    return all(os.environ.get(name) for name in LAUNCH_VARIABLES)


def is_main_process() -> bool:
    """This process prints and writes: the only process of a plain run, rank 0 under torchrun."""
    return not launched() or os.environ.get("RANK") == "0"


def start(device_name: str, timeout_s: float) -> Ranks:
    """Join the process group when launched by torchrun, else resolve the device as a one-process run.

    Under torchrun, ``--device auto`` or ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``);
    ``mps`` is refused (no torch.distributed backend for it). Joining an already started group
    (a second run in the same process) reuses it.

    Raises:
        OptionError: a device data-parallel runs cannot use.
        DistributedError: the rendezvous failed or timed out.
    """
    import datetime

    import torch

    from geoalps.devices import resolve_device

    if not launched():
        return Ranks(device=resolve_device(device_name))
    global _started
    _started = True  # from here on, failed rendezvous included, the process leaves without teardown
    try:
        rank, world, local = (int(os.environ[name]) for name in LAUNCH_VARIABLES)
    except ValueError:
        raise DistributedError(f"torchrun variables {', '.join(LAUNCH_VARIABLES)} are not whole numbers") from None
    device = resolve_device("cuda" if device_name == "auto" and torch.cuda.is_available() else
                            "cpu" if device_name == "auto" else device_name)
    if device.type == "mps":
        raise OptionError("--device mps: data-parallel runs need cuda (nccl) or cpu (gloo)")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        try:
            torch.distributed.init_process_group(
                backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s),
                **({"device_id": device} if device.type == "cuda" and _takes_device_id() else {}))
        except Exception as exc:  # noqa: BLE001 - store, socket and backend errors all mean "no rendezvous"
            raise DistributedError(
                f"rank {rank} of {world}: could not join the other processes at "
                f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} "
                f"({_first_line(exc)})") from None
    return Ranks(rank, world, local, backend, device, timeout_s)


def started() -> bool:
    """True once this process (started by torchrun) has begun joining its data-parallel group,
    whether the rendezvous worked, failed, or :func:`finish` has left the group since.

    Such a process must end without the interpreter's normal teardown: gloo's transport threads
    (and a broken or half-made group's) can outlive ``destroy_process_group``, and a C++
    ``terminate`` at exit (code -6, seen in CI on CPU) then turns a finished run into a failed
    worker for torchrun, or exit 11 into a crash. The ``geoalps`` command therefore leaves such
    processes with ``os._exit`` once their outputs are closed, on success and on error; a Python
    caller under torchrun can do the same."""
    return _started


def finish(ranks: Ranks) -> None:
    """Wait for every process (rank 0 has written the model), then leave the group."""
    import torch

    if ranks.distributed and torch.distributed.is_initialized():
        with guard(ranks, "finishing"):
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def guard(ranks: Ranks, doing: str) -> Iterator[None]:
    """Turn an error of a collective (a peer died, or waited past the timeout) into one
    :class:`DistributedError` line; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if ranks.distributed and _is_communication_error(exc):
            raise DistributedError(
                f"data-parallel rank {ranks.rank} of {ranks.world_size}, {doing}: another process failed or did "
                f"not answer within --timeout {ranks.timeout_s:g} s ({_first_line(exc)})") from None
        raise


def sum_over_ranks(ranks: Ranks, values: Any) -> np.ndarray:
    """Element-wise sum of a numeric array over all processes (itself for one process)."""
    import torch

    array = np.asarray(values)
    if not ranks.distributed:
        return array
    tensor = torch.as_tensor(array.astype(np.float64 if array.dtype.kind == "f" else np.int64)).to(ranks.device)
    with guard(ranks, "reducing metrics"):
        torch.distributed.all_reduce(tensor)
    return tensor.cpu().numpy()


def max_over_ranks(ranks: Ranks, value: float) -> float:
    import torch

    if not ranks.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ranks.device)
    with guard(ranks, "reducing metrics"):
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def gather(ranks: Ranks, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    import torch

    if not ranks.distributed:
        return [obj]
    out: list[Any] = [None] * ranks.world_size
    with guard(ranks, "gathering random-generator states"):
        torch.distributed.all_gather_object(out, obj)
    return out


def gather_to_main(ranks: Ranks, obj: Any) -> list[Any] | None:
    """Every process's ``obj`` at the first process, in rank order (None elsewhere)."""
    import torch

    if not ranks.distributed:
        return [obj]
    out: list[Any] | None = [None] * ranks.world_size if ranks.main else None
    with guard(ranks, "gathering results"):
        torch.distributed.gather_object(obj, out, dst=0)
    return out


def rank_seed(seed: int, stream: int, rank: int) -> int:
    """Seed of one random stream (tiles, flips, masks, ...) of one process.

    Rank 0 keeps ``seed + stream``, the one-process seed, so a 1-process run draws as before;
    rank r > 0 gets a stream mixed from (seed, stream, r) by numpy's SeedSequence, so streams
    of different ranks and seeds do not overlap."""
    if rank == 0:
        return seed + stream
    return int(np.random.SeedSequence([seed, stream, rank]).generate_state(1, np.uint64)[0] >> 1)


def wrap(module: Any, ranks: Ranks, find_unused: bool = True) -> Any:
    """``module`` in DistributedDataParallel for a data-parallel run, else ``module`` itself.

    Buffers are not broadcast each forward (the networks have no batch statistics: GroupNorm and
    LayerNorm only), so ranks may validate different numbers of batches."""
    if not ranks.distributed:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch >= 2.12 names it forward_sync_buffers (and warns about the old name).
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    with guard(ranks, "broadcasting the initial weights"):
        return DistributedDataParallel(
            module, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None,
            find_unused_parameters=find_unused, **{no_sync: False})


def shard(items: list, ranks: Ranks) -> list:
    """This process's share of ``items`` (every ``world_size``-th, from its rank)."""
    return list(items[ranks.rank::ranks.world_size])


def _takes_device_id() -> bool:
    """torch >= 2.3 binds a process group to one GPU at creation (eager nccl initialisation)."""
    import inspect

    import torch

    return "device_id" in inspect.signature(torch.distributed.init_process_group).parameters


def _is_communication_error(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:300]}" if text else exc.__class__.__name__
