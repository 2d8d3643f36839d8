"""Data-parallel training over several processes (torchrun), one device per process.

The training loop draws the whole global batch on every rank from the same per-step
generators, and each rank trains on its contiguous share of it. Per-sample weights are
computed on each rank from its own predictions, before any reduction; the loss of a rank is
sum_b(s_b * mse_b) / global_batch, so that after the gradient all-reduce (a sum) the update
equals the one-process update of the global batch, up to fp32 summation order.

Launch: ``python -m torch.distributed.run --standalone --nproc-per-node N scripts/train.py ...``
(the finetune rule does this when ``train.gpus`` > 1). Without torchrun's environment the
context is a single process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of n."""
        if n % self.world_size:
            raise ValueError(
                f"train.batch_size={n} is not divisible by the {self.world_size} processes"
            )
        per_rank = n // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sums the gradients of params over ranks, in one flat buffer."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenates every rank's tensor along dim 0, in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def any(self, flag: bool) -> bool:
        """True on every rank when flag is true on any rank."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """cpu, cuda, or auto (cuda when available)."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda, but CUDA is not available")
    return torch.device("cuda", local_rank)


def init(preference: str = "auto") -> Context:
    """The context of this process: torchrun's environment, or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["Context", "init", "pick_device", "shutdown"]
