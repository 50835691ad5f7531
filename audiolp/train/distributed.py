"""Process-group plumbing: torchrun env vars -> NCCL (GPU) or gloo (CPU), and local CPU spawning for tests."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but no CUDA device is visible; use device='cpu' or 'auto'")
        return torch.device("cuda", local_rank)
    return torch.device(pref)


def init_distributed(device: str = "auto") -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun or :func:`spawn_local`) and join the group.

    Without those variables (or with WORLD_SIZE=1) this is a single process and no group is created.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistInfo(0, 1, 0, dev, None, False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {var} is not set; launch with torchrun "
                                   "or audiolp.train.distributed.spawn_local")
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
        owns = True
    return DistInfo(rank, world_size, local_rank, dev, backend, owns)


def cleanup(info: DistInfo, wait_for_others: bool = True) -> None:
    if info.owns_group and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few Python floats over ranks (for logging); float64 keeps step counts and seconds exact."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(rank: int, fn: Callable, nprocs: int, port: int, threads: int, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nprocs)})
    torch.set_num_threads(threads)
    fn(*args)


def spawn_local(fn: Callable, nprocs: int, *args, threads_per_proc: int | None = None) -> None:
    """Run ``fn(*args)`` in ``nprocs`` local processes that form a gloo group on a free loopback port.

    ``fn`` must be importable (a module-level function); it sees torchrun-style env vars, so
    ``fn = audiolp.train.trainer.train`` runs DDP exactly as under torchrun, on CPU.
    """
    import torch.multiprocessing as mp

    threads = threads_per_proc or max(1, (os.cpu_count() or 1) // nprocs)
    mp.spawn(_spawn_entry, args=(fn, nprocs, find_free_port(), threads, args), nprocs=nprocs, join=True)
