"""Activation-based attention maps (Zagoruyko & Komodakis 2017, "Paying more attention to attention").

Per layer: F(A) = 1/K sum_k |A^k|^p, a spatial map of where the layer's activations are large;
p = 2 by default (the paper's choice for attention transfer; a larger p puts more weight on the
most active positions). No class, no gradients: one forward pass (without autograd) gives the
maps of every layer. The maps go through the same per-image normalise -> upsample -> normalise
as the CAMs (``gradcam.base.to_input_size``), so the two are directly comparable in a figure.

Example::

    from gradcam import attention_maps
    att = attention_maps(model, images, layers=("layer1", "layer2", "layer3", "layer4"), p=2)
    att.maps["layer2"].shape         # (N, 48, 48) in [0, 1]
    att.feature_sizes["layer2"]      # (6, 6) for 48 px input
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import nn

from .base import (UPSAMPLE_MODES, LayerHooks, LayerSpec, at_least_float32, prepare_images,
                   to_input_size)


@dataclass
class AttentionResult:
    """maps: layer -> (N,H,W) float32 in [0,1]; raw_maps: layer -> (N,h,w) mean |A|^p; CPU tensors."""
    maps: Dict[str, torch.Tensor]
    raw_maps: Dict[str, torch.Tensor]
    feature_sizes: Dict[str, Tuple[int, int]]
    logits: torch.Tensor
    probs: torch.Tensor
    p: float = 2.0
    layers: Tuple[str, ...] = field(default_factory=tuple)


def attention_map(activations: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(N,K,h,w) -> (N,h,w): mean over channels of |A|^p."""
    # Zagoruyko & Komodakis 2017, Sec. 3.1: F^p_sum(A) = sum_k |A_k|^p (here the mean, 1/K of it;
    # the constant disappears in the min-max normalisation but keeps raw values layer-comparable).
    return activations.abs().pow(p).mean(dim=1)


def attention_maps(model: nn.Module, images: torch.Tensor,
                   layers: LayerSpec = ("layer1", "layer2", "layer3", "layer4"),
                   p: float = 2.0, upsample: str = "bilinear") -> AttentionResult:
    """Attention maps of several layers from one forward pass; model in eval mode, hooks removed after.

    images: (N,C,H,W) or (C,H,W), preprocessed as the model expects. p > 0. upsample: as in
    ``gradcam.explain`` (bilinear with align_corners=False by default).
    """
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample mode {upsample!r}; valid: {', '.join(UPSAMPLE_MODES)}")
    x = prepare_images(model, images)
    size = tuple(x.shape[-2:])
    with LayerHooks(model, layers, gradients=False) as hooks, torch.no_grad():
        logits = hooks(x).float()
        maps, raw_maps, sizes = {}, {}, {}
        for layer in hooks.layers:
            acts = at_least_float32(hooks.activations[layer])
            sizes[layer] = tuple(acts.shape[-2:])
            raw_maps[layer] = attention_map(acts, p)
            maps[layer] = to_input_size(raw_maps[layer], size, upsample)
        hooks.clear()
    return AttentionResult(
        maps={k: v.float().cpu() for k, v in maps.items()},
        raw_maps={k: v.float().cpu() for k, v in raw_maps.items()},
        feature_sizes=sizes,
        logits=logits.cpu(),
        probs=torch.softmax(logits, dim=1).cpu(),
        p=float(p),
        layers=tuple(sizes),
    )
