"""Data-parallel training under torchrun (gloo on CPU, nccl on GPU).

Why not DistributedDataParallel's hooks: one optimizer step runs up to 12 sub-networks, each with its
own forward/backward, and a dropped layer or sliced-off heads get no gradient. DDP would need
no_sync() for 11 of them and find_unused_parameters; instead each process accumulates its gradients
over all sub-networks and we all-reduce them ONCE per step in a single flat buffer (zeros where a
parameter got no gradient). That is what DDP computes, with one collective per step.

Each process takes a strided share of every global batch and scales its loss by
(local examples / global examples) * world, so the averaged gradient equals the single-process one
even when the shares differ in size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group (so we destroy it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes in the environment; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, owns)


def device_for(info: DistInfo) -> torch.device:
    return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def allreduce_grads(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients across processes in one collective (missing gradients count as 0)."""
    if not info.enabled:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def broadcast_params(module: torch.nn.Module, info: DistInfo) -> None:
    """Start every process from rank 0's weights."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
