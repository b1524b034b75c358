"""Maps averaged over test-time-augmentation views, each mapped back to the original face's pixels.

A ``View`` of an S x S input is: resize to ``frame`` x ``frame`` (bilinear, align_corners=False; no
resize when ``frame`` is None), take the S x S crop at (``top``, ``left``), mirror it if ``flip``. The
classifier's own views (``expression.core.tta``: flip, ten-crop at 1.125x) are built from these by the
caller, so this module stays free of the application.

Back to the original frame, a view's S x S map is un-mirrored, pasted into its box of a zero
frame x frame canvas beside a coverage mask (1 inside the box), and both are resized back to S x S
with the same bilinear rule. The average over views is sum(canvas) / sum(coverage) wherever some view
covers the pixel (partly covered pixels get the coverage-weighted mean), 0 where none does; the result
is min-max normalised per image like every other map.

Example::

    from gradcam.views import View, explain_views
    views = [View(), View(flip=True)]
    res = explain_views(model, images, views, layers=("layer1",), methods=("layercam",))
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .base import (CAMResult, eval_mode, normalize_per_image, parse_target_pairs, prepare_images, resize_maps,
                   target_spec)

COVER_EPS = 1e-6


@dataclass(frozen=True)
class View:
    frame: Optional[int] = None  # side the input is resized to before cropping; None = unchanged
    top: int = 0
    left: int = 0
    flip: bool = False


def _frame(view: View, size: int) -> int:
    frame = size if view.frame is None else view.frame
    if view.top < 0 or view.left < 0 or view.top + size > frame or view.left + size > frame:
        raise ValueError(f"view {view} does not fit a {size} px crop into a {frame} px frame")
    return frame


def apply_view(images: torch.Tensor, view: View) -> torch.Tensor:
    """(N,C,S,S) -> the view (N,C,S,S)."""
    size = images.shape[-1]
    frame = _frame(view, size)
    x = images if frame == size else F.interpolate(images, size=(frame, frame), mode="bilinear",
                                                   align_corners=False)
    x = x[..., view.top:view.top + size, view.left:view.left + size]
    return x.flip(-1) if view.flip else x


def map_back(maps: torch.Tensor, view: View, size: int):
    """(N,S,S) maps of a view -> (values, coverage), both (N,S,S) in the original frame."""
    frame = _frame(view, size)
    m = maps.flip(-1) if view.flip else maps
    canvas = m.new_zeros(m.shape[0], frame, frame)
    cover = torch.zeros_like(canvas)
    canvas[:, view.top:view.top + size, view.left:view.left + size] = m
    cover[:, view.top:view.top + size, view.left:view.left + size] = 1
    if frame != size:
        canvas, cover = resize_maps(canvas, (size, size)), resize_maps(cover, (size, size))
    return canvas, cover


def average_views(per_view: Sequence[torch.Tensor], views: Sequence[View], size: int) -> torch.Tensor:
    """Maps of each view (list of (N,S,S)) -> their average in the original frame, normalised to [0, 1]."""
    total = cover = None
    for maps, view in zip(per_view, views):
        values, weight = map_back(maps, view, size)
        total = values if total is None else total + values
        cover = weight if cover is None else cover + weight
    mean = torch.where(cover > COVER_EPS, total / cover.clamp_min(COVER_EPS), torch.zeros_like(total))
    return normalize_per_image(mean)


def explain_views(model, images: torch.Tensor, views: Sequence[View], targets=None, class_names=None,
                  explain_fn=None, **explain_kwargs) -> CAMResult:
    """Every map of ``explain_fn`` (default ``gradcam.explain``) averaged over ``views``.

    All views of the batch go through one ``explain_fn`` call (one forward and one backward pass for
    the gradient methods). Without ``targets`` each face's target is the class of its view-averaged
    softmax, the prediction the classifier reports with the same test-time augmentation. A
    ``Contrast`` target is explained as a contrast in every view. Returns a CAMResult with the
    averaged maps, the view-averaged probabilities, the targets and foils; ``raw_maps`` is empty
    (the views' feature maps live in different frames) and logits are the mean view logits.
    """
    if explain_fn is None:
        from .methods import explain as explain_fn
    views = list(views)
    if not views:
        raise ValueError("at least one view is needed")
    if images.dim() == 3:
        images = images[None]
    n, size = images.shape[0], images.shape[-1]
    if images.shape[-2] != size:
        raise ValueError(f"views need square images, got {tuple(images.shape[-2:])}")
    batch = torch.cat([apply_view(images, v) for v in views])
    foils = None
    if targets is None:
        with torch.no_grad(), eval_mode(model):
            logits = model(prepare_images(model, batch)).float().cpu()
        targets = logits.softmax(1).view(len(views), n, -1).mean(0).argmax(1).cpu()
    else:
        wanted, wanted_foils = parse_target_pairs(targets, n, class_names)
        targets = torch.tensor(wanted, dtype=torch.long)
        foils = None if wanted_foils is None else torch.tensor(wanted_foils, dtype=torch.long)
    view_foils = None if foils is None else foils.repeat(len(views))
    res = explain_fn(model, batch, targets=target_spec(targets.repeat(len(views)), view_foils),
                     class_names=class_names, **explain_kwargs)
    maps = {key: average_views(list(m.view(len(views), n, size, size)), views, size)
            for key, m in res.maps.items()}
    return CAMResult(maps=maps, raw_maps={},
                     logits=res.logits.view(len(views), n, -1).mean(0),
                     probs=res.probs.view(len(views), n, -1).mean(0),
                     targets=targets, feature_sizes=res.feature_sizes, foils=foils)
