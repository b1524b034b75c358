"""Training-time augmentation, batched and generator-driven: the seed's flip + translate
(RandomHorizontalFlip + RandomAffine(degrees=0, translate=(0.1, 0.1)) with torchvision's parameter
distribution, `Augmentation` chooses it and the rest), random rotation and zoom (RandomAffine's
degrees/scale), RandomErasing, and mixup/CutMix.

Every random number is drawn from a CPU `torch.Generator` passed in, so a run is repeatable and
resumable from the generator's saved state, and the pixel work is done on whole batches on whatever
device the images live on.

    from expression.training.augment import random_rotate_scale, random_erase, mix_batch
    g = torch.Generator().manual_seed(0)
    x = random_rotate_scale(x01, g, degrees=10, scale=0.1)   # pixels in [0, 1], before normalisation
    x = random_erase(normalize(...), g, p=0.5)               # after normalisation: 0 = mean colour
    x, targets = mix_batch(x, labels, 7, g, mixup_alpha=0.8, cutmix_alpha=1.0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from expression.core.preprocessing import SEED_TRANSLATE

__all__ = ["Augmentation", "sample_flip_translate", "apply_flip_translate", "one_hot", "rotate_scale",
           "random_rotate_scale", "random_erase", "mix_batch"]

ERASE_ATTEMPTS = 10  # torchvision RandomErasing gives up after 10 rectangles that do not fit


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """int labels (N,) -> float32 (N, num_classes) targets on the labels' device."""
    return F.one_hot(labels.long(), num_classes).float()


# ---------------------------------------------------------------------------------------------------
# Rotation and zoom


def rotate_scale(images: Tensor, angles_deg: Tensor, factors: Tensor) -> Tensor:
    """Rotate each image about its centre by angles_deg[i] (positive = counter-clockwise on screen, as
    torchvision's rotate; its F.affine counts clockwise, which RandomAffine's symmetric range hides) and
    zoom by factors[i] (> 1 = content bigger). Bilinear, zero fill outside.

    affine_grid wants the inverse map (output -> input) in coordinates normalised to [-1, 1] per axis;
    in pixel units (y down) that is R(-angle) / factor, and the H/W factors on the off-diagonal undo the
    per-axis normalisation so a non-square image is rotated, not sheared.
    """
    n, _, h, w = images.shape
    rad = torch.deg2rad(angles_deg.detach().to("cpu", torch.float64)).reshape(n)
    inv = 1.0 / factors.detach().to("cpu", torch.float64).reshape(n)
    cos, sin = torch.cos(rad) * inv, torch.sin(rad) * inv
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                         torch.stack([sin * w / h, cos, zero], 1)], 1)
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotate_scale(images: Tensor, generator: torch.Generator, degrees: float = 0.0,
                        scale: float = 0.0) -> Tensor:
    """Per image, angle ~ U(-degrees, degrees) and zoom ~ U(1 - scale, 1 + scale), like RandomAffine's
    degrees and scale=(1 - scale, 1 + scale). Fill is 0 (black), so apply before normalisation."""
    if degrees == 0 and scale == 0:
        return images  # no draws: turning the option off leaves the generator stream as it was
    n = images.shape[0]
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    factors = 1 + (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    return rotate_scale(images, angles, factors)


# ---------------------------------------------------------------------------------------------------
# Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation"; torchvision RandomErasing)


def random_erase(images: Tensor, generator: torch.Generator, p: float = 0.5, area=(0.02, 0.33),
                 ratio=(0.3, 3.3), value: float = 0.0) -> Tensor:
    """With probability p per image, set one rectangle to `value` (meant for normalised images, where 0
    is the mean colour). Its area fraction ~ U(area), aspect h/w log-uniform in ratio, sides rounded to
    whole pixels, position uniform; of 10 tries the first that fits strictly inside is used, and an
    image where none fits is left alone, as torchvision does. Returns a new tensor."""
    if p == 0:
        return images
    n, _, h, w = images.shape
    k = ERASE_ATTEMPTS
    # Every number is drawn whether used or not, so the draws consumed depend only on the batch size.
    draw = dict(generator=generator, dtype=torch.float64)
    erase = torch.rand(n, **draw) < p
    frac = area[0] + (area[1] - area[0]) * torch.rand(n, k, **draw)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, k, **draw))
    pos = torch.rand(n, k, 2, **draw)

    target = frac * (h * w)
    eh = torch.round(torch.sqrt(target * aspect)).long()  # torch.round is half-to-even, as Python's round
    ew = torch.round(torch.sqrt(target / aspect)).long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(1, keepdim=True)  # argmax returns the first maximum: the first fit
    erase &= fits.any(1)
    eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
    pos = pos[torch.arange(n), first[:, 0]]
    # The clamp guards against u * (h - eh + 1) rounding up to the excluded end.
    top = torch.minimum(torch.floor(pos[:, 0] * (h - eh + 1)).long(), h - eh)
    left = torch.minimum(torch.floor(pos[:, 1] * (w - ew + 1)).long(), w - ew)

    device = images.device
    top, left, eh, ew, erase = (t.to(device) for t in (top, left, eh, ew, erase))
    rows = torch.arange(h, device=device)[None]
    cols = torch.arange(w, device=device)[None]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]
    return torch.where(mask[:, None], torch.as_tensor(value, dtype=images.dtype, device=device), images)


# ---------------------------------------------------------------------------------------------------
# mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), one mode and one lambda per batch as in timm


def mix_batch(images: Tensor, labels: Tensor, num_classes: int, generator: torch.Generator,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mix each image with its partner in the reversed batch (images.flip(0)); returns (images, soft
    targets (N, num_classes) float32). With both alphas > 0, CutMix or mixup is chosen with p = 0.5.
    With both 0, the images are returned as they are (no draws) with one-hot targets."""
    targets = one_hot(labels, num_classes).to(images.device)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    # torch has no Beta sampler that takes a Generator; one seed drawn from it makes numpy's stream
    # a deterministic function of the torch generator's state, and costs exactly one draw per batch.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = bool(rng.random() < 0.5)
    else:
        use_cutmix = cutmix_alpha > 0
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    partner = images.flip(0)

    if use_cutmix:
        h, w = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)  # box area (1 - lam) * H * W before clipping, CutMix eq. 2
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = np.clip([cy - cut_h // 2, cy - cut_h // 2 + cut_h], 0, h)
        x0, x1 = np.clip([cx - cut_w // 2, cx - cut_w // 2 + cut_w], 0, w)
        mixed = images.clone()
        mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        # The box was clipped at the border: the targets follow the pixels actually pasted.
        lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)
    else:
        mixed = images * lam + partner * (1.0 - lam)  # mixup eq. 1: x~ = lam x_i + (1 - lam) x_j

    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)

# ---------------------------------------------------------------------------------------------------
# Augmentation and batching on tensors


def sample_flip_translate(batch: int, height: int, width: int, generator: torch.Generator,
                          translate: float = SEED_TRANSLATE):
    """Draw per-image (flip, dx, dy) with torchvision's distributions: RandomHorizontalFlip(p=0.5) and
    RandomAffine's translate, dx = round(U(-t*W, t*W)) whole pixels (round half to even, like Python)."""
    flip = torch.rand(batch, generator=generator) < 0.5
    max_dx, max_dy = translate * width, translate * height
    dx = torch.round((torch.rand(batch, generator=generator) * 2 - 1) * max_dx).long()
    dy = torch.round((torch.rand(batch, generator=generator) * 2 - 1) * max_dy).long()
    return flip, dx, dy


def apply_flip_translate(images: torch.Tensor, flip, dx, dy) -> torch.Tensor:
    """Flip then shift each image by whole pixels (content moves right/down for positive dx/dy), filling
    with 0 as RandomAffine's default fill does. Works on any device; one gather for the whole batch."""
    n, _, h, w = images.shape
    device = images.device
    flip, dx, dy = flip.to(device), dx.to(device), dy.to(device)
    cols = torch.arange(w, device=device)
    src_x = cols[None, :] - dx[:, None]                               # output x reads input x - dx
    src_x = torch.where(flip[:, None], w - 1 - src_x, src_x)          # flipping first mirrors the source
    src_y = torch.arange(h, device=device)[None, :] - dy[:, None]
    valid = ((src_y >= 0) & (src_y < h))[:, :, None] & ((src_x >= 0) & (src_x < w))[:, None, :]
    batch_idx = torch.arange(n, device=device)[:, None, None]
    out = images[batch_idx, :, src_y.clamp(0, h - 1)[:, :, None], src_x.clamp(0, w - 1)[:, None, :]]
    out = out.permute(0, 3, 1, 2) * valid[:, None].to(images.dtype)  # advanced indexing put C last
    return out.contiguous()


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation. The defaults are the seed's flip + translate; the rest are off.

    rotate: degrees (uniform +-), scale: zoom jitter U(1 - scale, 1 + scale), erase: probability of
    one random-erasing rectangle per image (applied after normalisation, so erased = mean colour)."""

    translate: float = SEED_TRANSLATE
    rotate: float = 0.0
    scale: float = 0.0
    erase: float = 0.0

