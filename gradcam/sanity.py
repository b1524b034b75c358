"""Sanity check for saliency maps: cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018).

On a deep copy of the model the top-level stages are re-initialised one after another from the
output end (for a torchvision ResNet: fc, layer4, layer3, layer2, layer1, bn1, conv1), each time
cumulatively, and the maps are recomputed for the *same* target classes. If a map still looks the
same once the weights it is supposed to explain are random, it shows the input (edges, the face
outline), not the model. The agreement is the Spearman rank correlation between the original and
the randomised map, per image; a method passes when the correlation is low once its layer has been
randomised. Maps that do not depend on the model (the random and centre baselines) stay at 1.

A constant map has no ranking, so Spearman is undefined (NaN in scipy). ``map_correlation`` scores
it 0 against a non-constant map (they share no ranking) and 1 against another constant map (they
are identical), so an all-zero randomised Grad-CAM counts as "changed", not as missing data.

Re-initialisation calls each sub-module's ``reset_parameters`` (the layer's default init; BatchNorm
also resets its running statistics) on a CPU copy under a fixed seed, so the random weights are the
same on every device and every batch.

Example::

    from gradcam import explain
    from gradcam.sanity import cascading_randomization
    res = explain(model, x, layers=("layer4",), methods=("gradcam",))
    cascade = cascading_randomization(model, x, res.maps, res.targets, ("layer4",), ("gradcam",))
    cascade.stages                                 # ['fc', 'layer4', 'layer3', ...]
    cascade.correlation["gradcam/layer4"]          # (stages, N) Spearman per image
    cascade.at_layer("gradcam/layer4")             # (N,) once fc and layer4 are random
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import spearman


def randomization_stages(model: nn.Module) -> list:
    """Top-level children that hold parameters, output end first: the cascade's order."""
    names = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    return names[::-1]


def reinitialize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every sub-module of `module` that has `reset_parameters`, in place, from `seed`.

    The draw happens on a CPU copy with a forked CPU generator: the caller's random state is left
    alone and the result does not depend on the device.
    """
    fresh = copy.deepcopy(module).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        for sub in fresh.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    module.load_state_dict(fresh.state_dict())
    return module


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman per image (N,); a constant map scores 0 against a varying one, 1 against a constant one."""
    rho = spearman(a, b)
    const_a = (a.reshape(a.shape[0], -1) == a.reshape(a.shape[0], -1)[:, :1]).all(1).cpu()
    const_b = (b.reshape(b.shape[0], -1) == b.reshape(b.shape[0], -1)[:, :1]).all(1).cpu()
    fill = (const_a & const_b).double()
    return torch.where(torch.isnan(rho), fill, rho)


@dataclass
class Cascade:
    stages: list       # stage names in the order they were randomised (cumulatively)
    correlation: dict  # "method/layer" -> (len(stages), N) float64

    def stage_of(self, layer: str) -> int | None:
        """Index of the cascade step at which `layer` (a dotted name) has been randomised."""
        for i, stage in enumerate(self.stages):
            if layer == stage or layer.startswith(stage + "."):
                return i
        return None

    def at_layer(self, key: str) -> torch.Tensor:
        """(N,) correlation once the explained layer of `key` ("method/layer") is random; NaN if the
        layer is in no stage (the layer-free "input" maps, the multi-layer "fused" ones)."""
        corr = self.correlation[key]
        index = self.stage_of(key.split("/", 1)[1]) if "/" in key else None
        return corr[index] if index is not None else torch.full(corr.shape[1:], float("nan"), dtype=corr.dtype)


def cascading_randomization(model: nn.Module, images: torch.Tensor, reference: dict, targets, layers, methods,
                            stages=None, seed: int = 0, explain_fn=None, **explain_kwargs) -> Cascade:
    """Correlation of `reference` maps ("method/layer" -> (N,H,W), from the trained model) with the
    maps of the cumulatively randomised copies, stage by stage; the model itself is not touched.

    `targets` must be the classes the reference maps explain (the randomised model predicts
    something else). `explain_fn` defaults to ``gradcam.explain``; extra keyword arguments
    (upsample=..., scorecam_batch_size=..., fuse=...) are passed on. Every key of `reference` is
    compared, so an `explain_fn` that returns more than method x layer maps (fused maps, maps averaged
    over views) is checked on all of them.
    """
    if explain_fn is None:
        from .methods import explain as explain_fn
    stages = list(randomization_stages(model) if stages is None else stages)
    children = dict(model.named_children())
    unknown = [s for s in stages if s not in dict(model.named_modules())]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; top-level children: {', '.join(children)}")
    targets = torch.as_tensor(targets, dtype=torch.long).cpu().tolist()
    randomized = copy.deepcopy(model)
    modules = dict(randomized.named_modules())
    keys = list(reference)
    correlation = {key: torch.empty(len(stages), images.shape[0], dtype=torch.float64) for key in keys}
    for i, stage in enumerate(stages):
        reinitialize_(modules[stage], seed=seed * 1000 + i)
        res = explain_fn(randomized, images, layers=tuple(layers), methods=tuple(methods), targets=targets,
                         **explain_kwargs)
        for key in keys:
            correlation[key][i] = map_correlation(reference[key], res.maps[key])
    return Cascade(stages, correlation)
