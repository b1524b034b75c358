"""Training and evaluation batches from a decoded split: shuffled or class-balanced order, the
augmentation applied to whole batches of tensors, torchrun sharding, all randomness from CPU generators.

    from expression.training.loader import InMemoryLoader
    loader = InMemoryLoader(split, batch_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
"""
from __future__ import annotations

import torch

from expression.core.datasets import DecodedSplit
from expression.core.preprocessing import normalize
from expression.training.augment import (Augmentation, apply_flip_translate, random_erase, random_rotate_scale,
                                         sample_flip_translate)


def balanced_indices(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(labels) indices drawn with replacement, each class equally likely (probability of an image
    is 1 / (classes * its class count)): the rare `disgust` faces are seen as often as `happy` ones."""
    counts = torch.bincount(labels.cpu())
    weights = 1.0 / counts[labels.cpu()].double()
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


class InMemoryLoader:
    """Batches of normalised float tensors from a decoded split, optionally shuffled and augmented.

    All randomness comes from CPU `torch.Generator`s (one for the order, one for flips and shifts), so a
    run is repeatable and resumable from their saved states on any device.

    With `world_size > 1` (torchrun) each rank takes every world_size-th index of the shared order.
    Training (`pad=True`) wraps the order around so every rank gets the same number of batches, as
    DistributedSampler does, and folds a last batch of one image into the batch before it (BatchNorm
    in training mode cannot normalise one image whose feature map is 1x1, e.g. layer4 at 32 px);
    evaluation (`pad=False`) never pads, so each image is counted exactly once.
    `augment` is False, True (the seed's flip + translate) or an Augmentation; `balanced` replaces the
    shuffle by class-balanced sampling with replacement.
    """

    def __init__(self, split: DecodedSplit, batch_size: int, mean, std, device="cpu", shuffle=False,
                 augment: bool | Augmentation = False, order_generator: torch.Generator | None = None,
                 augment_generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                 pad: bool = False, balanced: bool = False):
        if ((shuffle or balanced) and order_generator is None) or (augment and augment_generator is None):
            raise ValueError("shuffle/augment need a torch.Generator for repeatable runs")
        self.images = split.images.to(device)  # the whole uint8 split lives on the device: tiny for FER
        self.labels = split.labels.to(device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.shuffle, self.balanced = shuffle, balanced
        self.augment = Augmentation() if augment is True else (augment or None)
        self.order_generator, self.augment_generator = order_generator, augment_generator
        self.rank, self.world_size, self.pad = rank, world_size, pad

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the next pass (draws the shuffle, so call once per pass)."""
        n = len(self.labels)
        if self.balanced:
            order = balanced_indices(self.labels, self.order_generator)
        else:
            order = torch.randperm(n, generator=self.order_generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            if self.pad and n % self.world_size:
                order = torch.cat([order, order[: self.world_size - n % self.world_size]])
            order = order[self.rank::self.world_size]
        return order

    def _batch_starts(self, count: int) -> list[int]:
        starts = list(range(0, count, self.batch_size))
        if self.pad and len(starts) > 1 and count - starts[-1] == 1:
            starts.pop()  # the lone last image joins the batch before it
        return starts

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = -(-n // self.world_size) if self.pad else len(range(self.rank, n, self.world_size))
        return len(self._batch_starts(per_rank))

    def __iter__(self):
        order = self.indices().to(self.images.device)
        starts = self._batch_starts(len(order))
        for start, end in zip(starts, [*starts[1:], len(order)]):
            idx = order[start:end]
            x = self.images[idx]
            aug, gen = self.augment, self.augment_generator
            if aug is not None:
                x = apply_flip_translate(x, *sample_flip_translate(len(idx), x.shape[2], x.shape[3], gen,
                                                                  translate=aug.translate))
                if aug.rotate or aug.scale:  # on [0, 1] floats so the zero fill is black, as in RandomAffine
                    x = random_rotate_scale(x.float().div_(255.0), gen, degrees=aug.rotate, scale=aug.scale)
            x = normalize(x, self.mean, self.std)
            if aug is not None and aug.erase:
                x = random_erase(x, gen, p=aug.erase)
            yield x, self.labels[idx]
