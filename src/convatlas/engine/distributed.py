"""Distributed data parallel helpers: the same :class:`~convatlas.engine.trainer.Trainer` runs under ``torchrun``.

``torchrun --nproc_per_node=N -m convatlas.cli.main train ...`` (or any script calling the trainer) sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` then creates the process group (``gloo`` on
CPU, ``nccl`` on CUDA). The trainer wraps the model in ``DistributedDataParallel``, shards each global batch
with ``DistributedSampler`` (so N processes with ``batch_size`` B see exactly the same global batches as one
process with B) and all-reduces evaluation metrics through ``MetricAccumulator.state()``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from convatlas.tasks.base import MetricAccumulator

__all__ = [
    "DistInfo",
    "init_distributed",
    "get_dist_info",
    "is_main_process",
    "all_reduce_sum",
    "all_reduce_metrics",
    "barrier",
    "cleanup_distributed",
    "launch_local",
    "free_port",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def get_dist_info() -> DistInfo:
    """Rank/world size of the current process group (``DistInfo()`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def is_main_process() -> bool:
    return get_dist_info().is_main


def init_distributed(device: str = "auto") -> DistInfo:
    """Create the process group from torchrun's environment when ``WORLD_SIZE > 1``; no-op otherwise.

    Backend: ``nccl`` when training on CUDA, ``gloo`` on CPU. An existing process group is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return get_dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():  # pragma: no cover
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return get_dist_info()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op when not distributed); returns ``t``."""
    if get_dist_info().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_metrics(acc: MetricAccumulator, device: torch.device | str = "cpu") -> dict[str, float]:
    """Sum an accumulator's ``state()`` over ranks, load it back, and return ``compute()``."""
    if get_dist_info().distributed:
        backend = dist.get_backend()
        st = acc.state().to(torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu")
        dist.all_reduce(st, op=dist.ReduceOp.SUM)
        acc.load_state(st.cpu())
    return acc.compute()


def barrier() -> None:
    if get_dist_info().distributed:
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(rank: int, world: int, store: str, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    # rendezvous through a file, not a TCP port: no race with other processes picking the same free port
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        # Leave together: a rank tearing down gloo while its peer still talks to it can abort the peer.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_local(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` CPU processes (gloo, file rendezvous in a fresh
    temporary folder); for tests and quick experiments. ``fn`` must be importable (a module-level function)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="convatlas-dist-") as tmp:
        store = os.path.join(tmp, "rendezvous")
        mp.spawn(_spawn_entry, args=(world_size, store, fn, args), nprocs=world_size, join=True)
