"""One training epoch and one evaluation pass, as in torchvision's references/classification.

Losses are averaged per sample (sum of per-sample losses / number of samples), so a short last batch
does not weigh as much as a full one. The recipe extras (mixup/cutmix, a per-step learning-rate
schedule, an EMA of the weights, mixed precision) are optional arguments: with none of them this is
the seed's plain loop.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from expression.core.tta import tta_probs


class NonFiniteLoss(ArithmeticError):
    """Training diverged: the loss of step `step` (1-based, within the epoch) is inf or nan."""

    def __init__(self, step: int, value: float):
        super().__init__(f"the loss became {value} at step {step}")
        self.step, self.value = step, value


@dataclass
class EpochResult:
    loss: float
    acc: float
    seen: int


@dataclass
class Evaluation:
    loss: float
    acc: float
    targets: np.ndarray  # (N,) int
    preds: np.ndarray    # (N,) int
    probs: np.ndarray    # (N, C) float32 softmax


CHECK_EVERY = 25


def autocast(device, dtype):
    """Mixed precision when a dtype is given (bf16/fp16), else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def train_one_epoch(model, loader, criterion, optimizer, device, progress=False, desc="train", *,
                    mix=None, schedule=None, ema=None, amp_dtype=None, scaler=None) -> EpochResult:
    """mix(images, labels) -> (images, soft targets); schedule.step() and ema.update(model) run after
    every optimizer step; scaler is a torch.amp.GradScaler (fp16 only). Accuracy is against the true
    labels, also when the loss sees mixed targets."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # A diverged loss must stop the run before its step writes inf/nan into the weights. Checking is a
    # device sync, free on CPU; on a GPU it runs every CHECK_EVERY steps so the queue keeps flowing.
    check_every = 1 if torch.device(device).type == "cpu" else CHECK_EVERY
    with tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        for step, (images, labels) in enumerate(bar, start=1):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            targets = labels
            if mix is not None:
                images, targets = mix(images, labels)
            with autocast(device, amp_dtype):
                logits = model(images)
                loss = criterion(logits.float(), targets)
            if step % check_every == 0 and not torch.isfinite(loss):
                raise NonFiniteLoss(step, float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if schedule is not None:
                schedule.step()
            if ema is not None:
                ema.update(model)
            # Accumulate on the device: a .item() per step would stall a GPU every batch.
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if progress:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if not torch.isfinite(loss_sum):  # a GPU run between checks, or gradients that overflowed
        raise NonFiniteLoss(step, float(loss_sum))
    return EpochResult(loss_sum.item() / seen, correct.item() / seen, seen)


@torch.no_grad()
def evaluate(model, loader, device, progress=False, desc="test", tta="none", amp_dtype=None) -> Evaluation:
    """Accuracy and plain cross-entropy (whatever loss training used), with optional test-time
    augmentation (see expression.core.tta): the loss is then that of the averaged probabilities."""
    model.eval()
    loss_sum, all_targets, all_probs = 0.0, [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            if tta == "none":
                logits = model(images).float()
                probs = logits.softmax(1)
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            else:
                probs = tta_probs(model, images, tta)
                loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item()
        all_probs.append(probs.cpu())
        all_targets.append(labels.cpu())
    probs = torch.cat(all_probs).numpy()
    targets = torch.cat(all_targets).numpy()
    preds = probs.argmax(1)
    return Evaluation(loss_sum / len(targets), float((preds == targets).mean()), targets, preds, probs)
