"""How far to trust a saliency map: faithfulness, localisation and rank-correlation metrics, plus the
two trivial maps every comparison must include.

All functions take batches: ``images`` (N,C,H,W) as the model expects them (normalised), ``maps``
(N,H,W) at input resolution (higher = more important), ``targets`` (N,) class indices, ``masks``
(N,H,W) bool. They are deterministic: ranking ties are broken by a stable sort (raster order), the
random baseline map and the ROAD noise come from explicit seeds.

Faithfulness (the model is queried on perturbed inputs):

* ``perturbation_curves`` - deletion and insertion (Petsiuk et al., RISE, BMVC 2018). The pixels are
  ranked by the map; at step k the first round(k P / steps) of them are replaced by the baseline
  image (deletion) or copied from the image into the baseline (insertion), and the target-class
  probability is recorded. All N images at step k go through the model in one forward pass.
  ``auc`` integrates a curve by the trapezoid rule over the fraction of pixels in [0, 1]. Lower
  deletion AUC and higher insertion AUC are better.
* ``confidence_change`` - average drop % and increase in confidence % (Chattopadhyay et al. 2018,
  Grad-CAM++, sec. 6.1). The explanation image is E = image * map in *pixel space* ([0, 1], before
  normalisation), then normalised as the model expects: a map of zeros gives a black image, which
  is exactly the ``"zeros"`` baseline below, so the two metrics share one notion of "removed".
* ``road`` - ROAD (Rong et al., ICML 2022): remove the most (MoRF) or least (LeRF) relevant p% of
  pixels and fill them by noisy linear imputation instead of a fixed baseline, so the model cannot
  detect the removal pattern from the inpainted values. The imputation solves the sparse linear
  system "every removed pixel is the weighted mean of its 8 neighbours" (weights 1/6 for the four
  direct and 1/12 for the four diagonal neighbours, as in the paper) by batched conjugate gradient,
  whose operator is a 3x3 convolution, so it runs on the GPU with everything else.

Localisation (a mask says where the class evidence is):

* ``pointing_game`` (Zhang et al., ECCV 2016) - a hit if the map's maximum lies in the mask. Ties
  for the maximum (plateaus of coarse upsampled maps) count as a hit if any maximal pixel is inside
  (ties="any", default) or score the share of maximal pixels inside (ties="share"); a constant map
  scores the mask's area fraction (chance), never a free hit. No tolerance radius (48 px input).
* ``energy_pointing_game`` (Wang et al., Score-CAM, CVPRW 2020) - the share of the map's mass inside
  the mask. A map with no mass is treated as uniform, consistent with the pointing game above.

Both give NaN for an image whose mask is empty (nothing to point at); average with ``nanmean``.

Agreement between maps (for the model-randomisation sanity check in ``gradcam.sanity``):

* ``rank_average`` / ``spearman`` - Spearman rank correlation per row with average ranks for ties,
  as ``scipy.stats.spearmanr``; NaN for a constant row, also as scipy.

Baselines: ``random_maps`` (uniform noise, seeded per image) and ``centre_gaussian_maps`` (a blob in
the middle: FER faces are centred, so this map is strong, and a method should beat it).

Example::

    from gradcam import explain
    from gradcam.metrics import perturbation_curves, auc, make_baseline
    res = explain(model, x, layers=("layer3",), methods=("gradcam",))
    base = make_baseline(x, "blur", mean, std)
    curves = perturbation_curves(model, x, res.maps["gradcam/layer3"], res.targets, base, steps=16)
    auc(curves.fractions, curves.deletion).mean()    # lower is better
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import eval_mode, model_device  # eval_mode: BatchNorm must not see perturbed batches

BASELINES = ("blur", "zeros", "mean")
DEFAULT_STEPS = 16
DEFAULT_BLUR_SIGMA = 4.0  # px at 48 px input: erases brows/eyes/mouth detail, keeps the head's layout
ROAD_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01  # std of the noise added to imputed pixels, in model-input (normalised) units
SCORES = ("probability", "logit")


# ---------------------------------------------------------------------------------------------------
# Shared helpers


def _check_maps(images: torch.Tensor, maps: torch.Tensor, targets) -> torch.Tensor:
    """Shapes agree; returns the targets as a CPU long tensor (N,)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N,C,H,W), got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(maps.shape) != (n, h, w):
        raise ValueError(f"maps must be (N,H,W) = {(n, h, w)} to match the images, got {tuple(maps.shape)}")
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images")
    return targets


@torch.no_grad()
def target_scores(model: nn.Module, images: torch.Tensor, targets, score: str = "probability") -> torch.Tensor:
    """(N,) softmax probability (default) or raw logit of each image's target class, one forward."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
    device = model_device(model, images.device)
    logits = model(images.to(device)).float()
    targets = torch.as_tensor(targets, dtype=torch.long).to(logits.device)
    values = torch.softmax(logits, dim=1) if score == "probability" else logits
    return values.gather(1, targets[:, None])[:, 0].cpu()


def rank_pixels(maps: torch.Tensor) -> torch.Tensor:
    """(N,H,W) -> (N,H*W) position of each pixel in the ranking, 0 = most important.

    Stable descending sort: equal values keep raster order (top-left first), so plateaus (ReLU
    zeros, an upsampled 2x2 map's flat corners) are removed in the same order on every run/device.
    """
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return position


def step_counts(num_pixels: int, steps: int) -> list:
    """Pixels removed after each of `steps` steps, from 0 to all: equal counts when P % steps == 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [round(k * num_pixels / steps) for k in range(steps + 1)]


def auc(fractions, curves) -> torch.Tensor:
    """Area under curve(s) (..., K) over `fractions` (K,) in [0, 1] by the trapezoid rule."""
    fractions = torch.as_tensor(fractions, dtype=torch.float64)
    curves = torch.as_tensor(curves, dtype=torch.float64)
    return torch.trapezoid(curves, fractions, dim=-1)


# ---------------------------------------------------------------------------------------------------
# Baseline images


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, radius ceil(3 sigma) (capped to fit the image).

    Blur is affine-equivariant with reflect padding (kernel sums to 1), so blurring the normalised
    input equals normalising the blurred pixels: no round trip to pixel space is needed.
    """
    if sigma <= 0:
        return images.clone()
    n, c, h, w = images.shape
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    out = images.reshape(n * c, 1, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return out.reshape(n, c, h, w)


def make_baseline(images: torch.Tensor, kind: str, mean, std, sigma: float = DEFAULT_BLUR_SIGMA) -> torch.Tensor:
    """The image that "removed" pixels take, in the model's normalised input space.

    blur: the image blurred with `sigma` px (RISE's insertion baseline; it removes detail without
    inventing a black hole the network never saw). zeros: black pixels (0 in pixel space, i.e.
    (0 - mean) / std). mean: the normalisation mean the checkpoint records (0 after normalising),
    the dataset mean as far as the model knows it.
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINES)}")
    if kind == "blur":
        return gaussian_blur(images, sigma)
    if kind == "mean":
        return torch.zeros_like(images)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return ((0 - mean) / std).expand_as(images).clone()


# ---------------------------------------------------------------------------------------------------
# Deletion / insertion (RISE)


@dataclass
class Curves:
    fractions: torch.Tensor  # (steps+1,) fraction of pixels removed (deletion) or inserted
    deletion: torch.Tensor   # (N, steps+1) target score after removing the top fraction
    insertion: torch.Tensor  # (N, steps+1) target score after inserting the top fraction

    def deletion_auc(self) -> torch.Tensor:
        return auc(self.fractions, self.deletion)

    def insertion_auc(self) -> torch.Tensor:
        return auc(self.fractions, self.insertion)


def perturbation_curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets,
                        baseline: torch.Tensor, steps: int = DEFAULT_STEPS, score: str = "probability",
                        which=("deletion", "insertion")) -> Curves:
    """Deletion and insertion curves (RISE, Petsiuk et al. 2018) for a batch; one forward per step.

    A "pixel" is a spatial position: all channels move together. `baseline` has the images' shape
    (see ``make_baseline``). Scores are softmax probabilities of the target class unless
    score="logit" (handy for checking values on a linear model). `which` may drop one of the two.
    """
    targets = _check_maps(images, maps, targets)
    if baseline.shape != images.shape:
        raise ValueError(f"baseline shape {tuple(baseline.shape)} differs from images {tuple(images.shape)}")
    n, _, h, w = images.shape
    device = model_device(model, images.device)
    images, baseline = images.to(device), baseline.to(device)
    position = rank_pixels(maps.to(device)).view(n, 1, h, w)
    counts = step_counts(h * w, steps)
    curves = {kind: torch.full((n, steps + 1), float("nan")) for kind in ("deletion", "insertion")}
    kinds = [kind for kind in ("deletion", "insertion") if kind in which]
    with eval_mode(model):
        for k, count in enumerate(counts):
            top = position < count  # the `count` highest-ranked pixels
            batch = [torch.where(top, baseline, images) if kind == "deletion" else torch.where(top, images, baseline)
                     for kind in kinds]
            # Deletion and insertion inputs of step k share one forward pass.
            scores = target_scores(model, torch.cat(batch), targets.repeat(len(kinds)), score)
            for i, kind in enumerate(kinds):
                curves[kind][:, k] = scores[i * n:(i + 1) * n]
    fractions = torch.tensor(counts, dtype=torch.float64) / (h * w)
    return Curves(fractions, curves["deletion"], curves["insertion"])


# ---------------------------------------------------------------------------------------------------
# Average drop / increase in confidence (Grad-CAM++)


@dataclass
class ConfidenceChange:
    full: torch.Tensor      # (N,) Y_c: target score on the image
    masked: torch.Tensor    # (N,) O_c: target score on the explanation image E = image * map
    drop: torch.Tensor      # (N,) max(0, Y - O) / Y
    increase: torch.Tensor  # (N,) bool, Y < O

    def average_drop(self) -> float:
        """Average drop %, Chattopadhyay et al. 2018 sec. 6.1: 100/N sum max(0, Y - O)/Y (lower is better)."""
        return float(self.drop.double().mean() * 100)

    def increase_in_confidence(self) -> float:
        """% increase in confidence, Chattopadhyay et al. 2018 sec. 6.1: 100/N sum [Y < O] (higher is better)."""
        return float(self.increase.double().mean() * 100)


def explanation_images(images: torch.Tensor, maps: torch.Tensor, mean, std) -> torch.Tensor:
    """E = image * map in pixel space, normalised again: a zero map gives the black "zeros" baseline."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    pixels = images * std + mean
    return (pixels * maps.to(images.device, images.dtype)[:, None] - mean) / std


def confidence_change(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets, mean, std,
                      score: str = "probability", full: torch.Tensor | None = None) -> ConfidenceChange:
    """Scores on the image and on E = image * map (pixel space); `full` reuses known image scores.

    Probabilities, not logits: Y - O over Y needs positive scores, and the paper's Y is the
    softmax confidence.
    """
    targets = _check_maps(images, maps, targets)
    device = model_device(model, images.device)
    images = images.to(device)
    with eval_mode(model):
        if full is None:
            full = target_scores(model, images, targets, score)
        masked = target_scores(model, explanation_images(images, maps, mean, std), targets, score)
    full = full.float().cpu()
    drop = torch.clamp(full - masked, min=0) / full
    return ConfidenceChange(full, masked, drop, full < masked)


# ---------------------------------------------------------------------------------------------------
# ROAD: remove and debias with noisy linear imputation


# Neighbour weights of ROAD's imputation (Rong et al. 2022, sec. 4): direct 1/6, diagonal 1/12.
_ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """sum_j w_j x_j over the 8 neighbours; zero padding = no neighbour outside the image."""
    n, c, h, w = x.shape
    kernel = _ROAD_KERNEL.to(x.device, x.dtype).view(1, 1, 3, 3)
    return F.conv2d(x.reshape(n * c, 1, h, w), kernel, padding=1).reshape(n, c, h, w)


def linear_imputation(images: torch.Tensor, removed: torch.Tensor, tol: float = 1e-5,
                      max_iter: int = 2000) -> torch.Tensor:
    """Fill `removed` (N,H,W bool) pixels so each is the weighted mean of its neighbours.

    For removed pixel i: d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij img_j, d_i = sum_j w_ij
    over neighbours inside the image. The matrix D - W restricted to removed pixels is symmetric and,
    as long as one pixel is kept, strictly diagonally dominant on every connected component's edge,
    hence positive definite: conjugate gradient converges, batched over images and channels.
    """
    if images.shape[1] > 1 and bool((images == images[:, :1]).all()):
        # Gray faces repeated to 3 channels: solve one channel, a third of the work.
        return linear_imputation(images[:, :1], removed, tol, max_iter).expand_as(images).clone()
    x_img = images.float()
    u = removed.to(x_img.device, x_img.dtype)[:, None].expand_as(x_img)
    if bool((removed.flatten(1).all(dim=1)).any()):
        raise ValueError("cannot impute an image with every pixel removed")
    d = _neighbour_sum(torch.ones_like(x_img[:1, :1])).expand_as(x_img)

    def apply(v):  # A v on the removed pixels (v is zero elsewhere)
        return u * (d * v - _neighbour_sum(u * v))

    b = u * _neighbour_sum((1 - u) * x_img)
    # Start from the normalised-convolution estimate: a fair low-frequency guess cuts CG iterations.
    x = u * _smooth_fill(x_img, u)
    r = b - apply(x)
    p = r.clone()
    rs = (r * r).sum(dim=(2, 3), keepdim=True)
    stop = (tol ** 2) * (b * b).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
    for _ in range(max_iter):
        active = rs > stop
        if not bool(active.any()):
            break
        ap = apply(p)
        # Converged systems get a zero step, so they stay where they are while the others finish.
        alpha = torch.where(active, rs / (p * ap).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30),
                            torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(dim=(2, 3), keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return (x_img * (1 - u) + x * u).to(images.dtype)


def _smooth_fill(images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Kept pixels spread into the holes by a wide normalised Gaussian (CG's starting point only)."""
    keep = 1 - u
    sigma = max(images.shape[-1], images.shape[-2]) / 8
    num, den = gaussian_blur(images * keep, sigma), gaussian_blur(keep, sigma)
    fallback = (images * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), fallback)


def noisy_linear_imputation(images: torch.Tensor, removed: torch.Tensor, noise: float = ROAD_NOISE,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """ROAD's imputation: linear imputation plus Gaussian noise (std `noise`) on the removed pixels.

    The noise is drawn on the CPU from `generator`, so a seed gives the same images on any device.
    """
    filled = linear_imputation(images, removed)
    if noise > 0:
        eps = torch.randn(images.shape, generator=generator, dtype=torch.float32).to(images.device, images.dtype)
        filled = filled + noise * eps * removed[:, None].to(images.dtype)
    return filled


@dataclass
class RoadCurves:
    percentages: tuple       # fractions of pixels removed
    morf: torch.Tensor       # (N, L) target score after removing the most relevant fraction (lower is better)
    lerf: torch.Tensor       # (N, L) ... the least relevant fraction (higher is better)


def road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets,
         percentages=ROAD_PERCENTAGES, noise: float = ROAD_NOISE, seed: int = 0,
         score: str = "probability") -> RoadCurves:
    """ROAD MoRF and LeRF scores (Rong et al. 2022) at each removal percentage; one forward each.

    ROAD reports the curves; the scalar summaries used here are their means over the percentages.
    """
    targets = _check_maps(images, maps, targets)
    n, _, h, w = images.shape
    device = model_device(model, images.device)
    images = images.to(device)
    position = rank_pixels(maps.to(device)).view(n, h, w)
    generator = torch.Generator().manual_seed(seed)
    morf = torch.empty(n, len(percentages))
    lerf = torch.empty(n, len(percentages))
    both = torch.cat([images, images])
    with eval_mode(model):
        for k, pct in enumerate(percentages):
            count = round(pct * h * w)
            removed = torch.cat([position < count, position >= h * w - count])  # MoRF then LeRF
            # One imputation solve and one forward pass for both orders.
            scores = target_scores(model, noisy_linear_imputation(both, removed, noise, generator),
                                   targets.repeat(2), score)
            morf[:, k], lerf[:, k] = scores[:n], scores[n:]
    return RoadCurves(tuple(percentages), morf, lerf)


# ---------------------------------------------------------------------------------------------------
# Localisation against ground-truth masks


def _check_masks(maps: torch.Tensor, masks: torch.Tensor):
    if maps.dim() != 3 or tuple(maps.shape) != tuple(masks.shape):
        raise ValueError(f"maps (N,H,W) and masks must have one shape, got {tuple(maps.shape)} "
                         f"and {tuple(masks.shape)}")


POINTING_TIES = ("any", "share")


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, ties: str = "any") -> torch.Tensor:
    """(N,) 1 if the map's maximum lies inside the mask, else 0; NaN where the mask is empty.

    Exact equality defines the maximum (no tolerance). Ties for the maximum are real on coarse maps
    (a 2x2 layer4 map upsampled to 48 px has a 12x12 plateau at its peak): with ties="any" a hit is
    any maximal pixel inside the mask (the coarse cell overlaps the evidence), with ties="share" the
    score is the share of maximal pixels inside (the expected hit of breaking the tie at random). A
    constant map points nowhere and scores the mask's area fraction (chance) under both rules.
    """
    if ties not in POINTING_TIES:
        raise ValueError(f"unknown ties rule {ties!r}; valid: {', '.join(POINTING_TIES)}")
    _check_masks(maps, masks)
    flat = maps.reshape(maps.shape[0], -1).float()
    inside = masks.reshape(masks.shape[0], -1).to(flat.device, torch.bool)
    is_max = flat == flat.max(dim=1, keepdim=True).values
    share = (is_max & inside).sum(1).double() / is_max.sum(1).double()
    constant = is_max.all(1)
    score = share if ties == "share" else torch.where(constant, share, (share > 0).double())
    return torch.where(inside.any(1), score, torch.full_like(score, float("nan"))).cpu()


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) sum(map * mask) / sum(map); a map with no mass counts as uniform; NaN for an empty mask."""
    _check_masks(maps, masks)
    flat = maps.reshape(maps.shape[0], -1).double().clamp_min(0)
    inside = masks.reshape(masks.shape[0], -1).to(flat.device, torch.bool)
    total = flat.sum(1)
    flat = torch.where((total > 0)[:, None], flat, torch.ones_like(flat))
    score = (flat * inside).sum(1) / flat.sum(1)
    return torch.where(inside.any(1), score, torch.full_like(score, float("nan"))).cpu()


# ---------------------------------------------------------------------------------------------------
# Rank correlation


def rank_average(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..K along the last dim, ties get the mean of their ranks (scipy's method="average")."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    rows, k = flat.shape
    values, order = torch.sort(flat, dim=1, stable=True)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(rows, device=x.device)[:, None] * k
    positions = torch.arange(1, k + 1, device=x.device, dtype=torch.float64).expand(rows, k)
    zeros = torch.zeros(rows * k, dtype=torch.float64, device=x.device)
    sums = zeros.index_add(0, group.flatten(), positions.flatten())
    sizes = zeros.index_add(0, group.flatten(), torch.ones_like(positions).flatten())
    mean_rank = (sums / sizes.clamp_min(1))[group]  # a tie group's ranks share their mean
    ranks = torch.empty_like(mean_rank).scatter_(1, order, mean_rank)
    return ranks.reshape(shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair (flattened after dim 0): (N,) float64, NaN if constant."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    ra = rank_average(a.reshape(a.shape[0], -1).double())
    rb = rank_average(b.reshape(b.shape[0], -1).to(a.device).double())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    out = (ra * rb).sum(1) / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).cpu()


# ---------------------------------------------------------------------------------------------------
# Baseline maps


def random_maps(n: int, size, seed: int = 0, start: int = 0) -> torch.Tensor:
    """(n,H,W) uniform noise in [0,1); image i's map is seeded by (seed, start + i), so it does not
    depend on how the images were batched."""
    h, w = (size, size) if isinstance(size, int) else size
    return torch.from_numpy(np.stack([np.random.default_rng([seed, start + i]).random((h, w), dtype=np.float32)
                                      for i in range(n)]))


def centre_gaussian_maps(n: int, size, sigma_frac: float = 0.25) -> torch.Tensor:
    """(n,H,W) Gaussian blob at the image centre, sigma = sigma_frac * side, peak 1."""
    h, w = (size, size) if isinstance(size, int) else size
    y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    blob = torch.exp(-(y[:, None] ** 2 / (2 * (sigma_frac * h) ** 2) + x[None, :] ** 2 / (2 * (sigma_frac * w) ** 2)))
    return (blob / blob.max()).expand(n, h, w).clone()


BASELINE_MAPS = ("random", "centre")


def baseline_maps(kind: str, n: int, size, seed: int = 0, start: int = 0) -> torch.Tensor:
    if kind == "random":
        return random_maps(n, size, seed, start)
    if kind == "centre":
        return centre_gaussian_maps(n, size)
    raise ValueError(f"unknown baseline map {kind!r}; valid: {', '.join(BASELINE_MAPS)}")
