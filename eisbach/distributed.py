"""Data-parallel training over any number of processes (torchrun), one device per process.

The global batch is fixed by the config (``train.batch_size``), whatever the world size. Every
rank draws the whole global batch of a step from the same per-step generators, and
``BatchPlan`` deals it out: rank r trains on a contiguous share (shares differ by at most one
sample, so 4 samples on 3 ranks are 2 + 1 + 1), in micro-batches of at most
``train.micro_batch_size`` samples whose gradients accumulate before the optimizer step. When
ranks outnumber the samples (a batch of 4 on 8 ranks) the ranks without a share run one
stand-in pass whose loss is multiplied by zero: torch's DistributedDataParallel needs every rank
in each gradient all-reduce, and a zero gradient leaves the sum as it is. Those ranks only wait:
more ranks than samples buys no speed.

Gradients are summed by DistributedDataParallel (bucketed all-reduce overlapped with backward;
``no_sync`` on every micro-batch but a rank's last). DDP averages over ranks, so a rank's loss
is world_size * sum_b(s_b * mse_b) / global_batch over its own samples, and the update equals
the one-process update of the global batch, up to fp32 summation order.

Launch (the finetune rule does this when a job has more than one GPU):

    torchrun --standalone --nproc-per-node N scripts/train.py adapter ...
    python -m torch.distributed.run --standalone --nproc-per-node N scripts/train.py adapter ...

Without torchrun's environment the context is a single process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class BatchPlan:
    """How one step's global batch of ``batch_size`` is split over ``world_size`` ranks and,
    on each rank, into micro-batches of at most ``micro_batch_size`` samples (default: a
    rank's whole share, i.e. no accumulation)."""

    batch_size: int
    world_size: int = 1
    micro_batch_size: int | None = None

    def __post_init__(self):
        if self.batch_size < 1 or self.world_size < 1:
            raise ValueError(f"batch_size {self.batch_size}, world_size {self.world_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"train.micro_batch_size={self.micro_batch_size} must be >= 1")

    @property
    def counts(self) -> list[int]:
        """Samples of each rank: the first batch_size % world_size ranks take one more."""
        base, extra = divmod(self.batch_size, self.world_size)
        return [base + (r < extra) for r in range(self.world_size)]

    def share(self, rank: int) -> range:
        """The global-batch indices rank trains on (empty when ranks outnumber samples)."""
        start = sum(self.counts[:rank])
        return range(start, start + self.counts[rank])

    @property
    def micro(self) -> int:
        return self.micro_batch_size or max(1, max(self.counts))

    def micro_batches(self, rank: int) -> list[range]:
        """The rank's share cut into consecutive micro-batches; [] for a rank without one."""
        share = self.share(rank)
        return [
            range(i, min(i + self.micro, share.stop))
            for i in range(share.start, share.stop, self.micro)
        ]

    @property
    def accumulation(self) -> int:
        """Micro-batches of the busiest rank per optimizer step."""
        return max(1, math.ceil(max(self.counts) / self.micro))

    @property
    def idle_ranks(self) -> int:
        return sum(1 for c in self.counts if c == 0)

    def describe(self) -> dict:
        return {
            "global_batch": self.batch_size,
            "world_size": self.world_size,
            "per_rank": self.counts,
            "micro_batch_size": self.micro,
            "accumulation_steps": self.accumulation,
            "idle_ranks": self.idle_ranks,
        }


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

    def plan(self, batch_size: int, micro_batch_size: int | None = None) -> BatchPlan:
        return BatchPlan(batch_size, self.world_size, micro_batch_size)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to run forward through: DistributedDataParallel over the process group,
        or the model itself in one process. The adapter may target modules that a step does not
        reach, hence find_unused_parameters; every rank holds the same base, so no buffers are
        broadcast."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=True,
        )

    def gather_rows(self, tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Every rank's first counts[rank] rows, concatenated in rank order (all_gather needs
        equal shapes, so each rank's rows are padded to the largest count first)."""
        if not self.distributed:
            return tensor[: counts[0]]
        rows = max(max(counts), 1)
        own = tensor[: counts[self.rank]]
        padded = own.new_zeros((rows, *tensor.shape[1:]))
        padded[: own.shape[0]] = own
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])

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
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: this job sees {torch.cuda.device_count()} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                "start as many processes per node as the job has GPUs"
            )
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["BatchPlan", "Context", "init", "pick_device", "shutdown"]
