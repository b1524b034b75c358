"""torchrun support: process-group setup from the environment and exact gathering of evaluations.

`torchrun --nproc_per_node=N train_resnet34.py ...` sets RANK, LOCAL_RANK and WORLD_SIZE; a plain
`python train_resnet34.py` has none of them and runs as a single process with world size 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from expression.training.engine import Evaluation


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    # NCCL only speaks CUDA; gloo serves CPU runs (and the tests).
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def device_for(device: torch.device, info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if device.type == "cuda" and info.enabled else device


def gather_evaluation(result: Evaluation, indices: torch.Tensor, num_samples: int, info: DistInfo) -> Evaluation:
    """Put every rank's unpadded shard back in dataset order: each test image counted exactly once."""
    if not info.enabled:
        return result
    shard = (indices.cpu().numpy(), result.targets, result.preds, result.probs, result.loss * len(indices))
    shards = [None] * info.world_size
    dist.all_gather_object(shards, shard)
    order = np.concatenate([s[0] for s in shards])
    if len(order) != num_samples or len(np.unique(order)) != num_samples:
        raise RuntimeError("distributed evaluation did not cover every test image exactly once")
    position = np.argsort(order)
    targets = np.concatenate([s[1] for s in shards])[position]
    preds = np.concatenate([s[2] for s in shards])[position]
    probs = np.concatenate([s[3] for s in shards])[position]
    loss = sum(s[4] for s in shards) / num_samples
    return Evaluation(loss, float((preds == targets).mean()), targets, preds, probs)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def reduce_epoch(loss: float, acc: float, seen: int, info: DistInfo, device) -> tuple[float, float]:
    """Sample-weighted train loss and accuracy over all ranks (padded duplicates included, as trained on)."""
    if not info.enabled:
        return loss, acc
    totals = torch.tensor([loss * seen, acc * seen, float(seen)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last training step every rank holds
    its own running statistics; evaluating with them would score a model nobody saves.
    """
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
