"""One training epoch and one evaluation pass, as in torchvision's references/classification.

Losses are averaged per sample (sum of per-sample losses / number of samples), so a short last batch
does not weigh as much as a full one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm


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


def train_one_epoch(model, loader, criterion, optimizer, device, progress=False, desc="train") -> EpochResult:
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    with tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        for images, labels in bar:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Accumulate on the device: a .item() per step would stall a GPU every batch.
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if progress:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return EpochResult(loss_sum.item() / seen, correct.item() / seen, seen)


@torch.no_grad()
def evaluate(model, loader, criterion, device, progress=False, desc="test") -> Evaluation:
    model.eval()
    loss_sum, all_targets, all_probs = 0.0, [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images)
        loss_sum += criterion(logits, labels).item() * len(labels)
        all_probs.append(logits.float().softmax(1).cpu())
        all_targets.append(labels.cpu())
    probs = torch.cat(all_probs).numpy()
    targets = torch.cat(all_targets).numpy()
    preds = probs.argmax(1)
    return Evaluation(loss_sum / len(targets), float((preds == targets).mean()), targets, preds, probs)
