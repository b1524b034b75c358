"""Pixel-resolution explanations, each from its own backward pass: guided backpropagation, Guided
Grad-CAM and FullGrad.

* ``guided_backprop`` (Springenberg et al. 2015): the input gradient of the target logit with every
  ``nn.ReLU`` module's backward replaced by R_in = [x > 0] [R_out > 0] R_out, i.e. only positive
  gradients pass through positive units. A forward hook on each ReLU module wraps its output in
  that rule; ReLUs called as functions (``F.relu``) are not changed, as in pytorch-grad-cam, which
  swaps ``nn.ReLU`` modules. Cost: one forward and one backward pass of its own.
* Guided Grad-CAM (Selvaraju et al. 2017, sec. 3): guided backprop times the Grad-CAM map upsampled
  to the input, at any layer. Both are shown as one value per pixel, the maximum over colour
  channels of the absolute value (Simonyan et al. 2014, sec. 3.1); the Grad-CAM map is >= 0, so
  max_c |G_c * cam| = cam * max_c |G_c|. No extra pass beyond guided backprop and the usual one.
* ``fullgrad`` (Srinivas & Fleuret, NeurIPS 2019, the FullGrad saliency map): psi(|dS/dx (.) x|) + sum over every conv
  and BatchNorm layer of sum_c psi(|dS/dz (.) b|), with b the layer's bias (a BatchNorm in eval mode
  is the affine map with bias beta - mu gamma / sqrt(var + eps)) and psi = min-max then upsample.
  ``variant="paper"`` (default) normalises each layer's bias-gradient over all its channels at once,
  as the authors' code does; ``variant="pytorch-grad-cam"`` normalises channel by channel, as
  pytorch-grad-cam 1.5 does (the tests compare it). Cost: one forward and one backward pass of its
  own, with a gradient hook on every conv/BatchNorm layer (36 BatchNorms in a ResNet34).

All three take the targets of ``gradcam.explain``, ``Contrast`` included: the score they backpropagate
is then logit[target] - logit[foil] (guided backprop's rule and FullGrad's absolute values apply to
that score's gradients as to any other).

Example::

    from gradcam.pixel import guided_backprop, fullgrad
    gb = guided_backprop(model, images)            # .grads (N,C,H,W), .maps (N,H,W) in [0, 1]
    fg = fullgrad(model, images, targets=gb.targets)
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .base import (LayerHooks, TargetSpec, at_least_float32, check_foils, check_targets, eval_mode, normalize_per_image,
                   parse_target_pairs, prepare_images, resize_maps, target_scores)

FULLGRAD_VARIANTS = ("paper", "pytorch-grad-cam")


@dataclass
class PixelResult:
    maps: torch.Tensor      # (N,H,W) float in [0, 1]
    logits: torch.Tensor    # (N,classes)
    targets: torch.Tensor   # (N,) long
    grads: Optional[torch.Tensor] = None  # (N,C,H,W): guided backprop's modified input gradient
    foils: Optional[torch.Tensor] = None  # (N,) long: each image's contrast foil, -1 for a plain target


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out):
        ctx.save_for_backward(out)
        return out.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensors
        # Guided backpropagation, Springenberg et al. 2015: R_in = [f > 0] [R_out > 0] R_out;
        # `out` is the ReLU's output, positive exactly where its input is.
        return grad * (out > 0).to(grad.dtype) * (grad > 0).to(grad.dtype)


def _guided_hook(module, inputs, output):
    return _GuidedReLU.apply(output)


def channel_saliency(grads: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) input gradients -> (N,H,W): max over channels of |g| (Simonyan et al. 2014 sec. 3.1)."""
    return grads.abs().amax(dim=1)


def _targets_and_input(model, images, targets, class_names):
    x = prepare_images(model, images)
    return (x, *parse_target_pairs(targets, x.shape[0], class_names))


def _check(wanted, wanted_foils, logits, class_names):
    return check_targets(wanted, logits, class_names), check_foils(wanted_foils, logits)


def guided_backprop(model: nn.Module, images: torch.Tensor, targets: TargetSpec = None,
                    class_names: Optional[Sequence[str]] = None) -> PixelResult:
    """Guided backpropagation of sum_i logit_i[target_i] (minus logit_i[foil_i] for a ``Contrast``) to
    the input; hooks removed afterwards."""
    x, wanted, wanted_foils = _targets_and_input(model, images, targets, class_names)
    handles = []
    try:
        with eval_mode(model), torch.enable_grad():
            for module in model.modules():
                if isinstance(module, nn.ReLU):
                    handles.append(module.register_forward_hook(_guided_hook))
            x = x.requires_grad_(True)
            logits = model(x)
            target_idx, foil_idx = _check(wanted, wanted_foils, logits.detach(), class_names)
            score = target_scores(logits, target_idx, foil_idx).sum()
            grads, = torch.autograd.grad(score, [x])
    finally:
        for handle in handles:
            handle.remove()
    grads = at_least_float32(grads.detach())
    return PixelResult(normalize_per_image(channel_saliency(grads)), logits.detach(), target_idx, grads, foil_idx)


def guided_gradcam(guided_grads: torch.Tensor, cam_maps: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) guided-backprop gradients and (N,H,W) Grad-CAM maps at input size -> (N,H,W) in [0, 1]."""
    # Guided Grad-CAM, Selvaraju et al. 2017 sec. 3: the element-wise product of the two.
    return normalize_per_image(channel_saliency(guided_grads) * cam_maps.to(guided_grads))


def bias_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Named conv layers with a bias and affine BatchNorm layers: FullGrad's bias terms."""
    return [(name, m) for name, m in model.named_modules()
            if (isinstance(m, nn.modules.conv._ConvNd) and m.bias is not None)
            or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine)]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias of the layer's affine map; for BatchNorm in eval mode beta - mu gamma / sqrt(var + eps)
    (Srinivas & Fleuret 2019; BatchNorm folded into an affine layer, as the authors' code does)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.bias - module.running_mean * module.weight / torch.sqrt(module.running_var + module.eps)
    return module.bias


def fullgrad(model: nn.Module, images: torch.Tensor, targets: TargetSpec = None,
             class_names: Optional[Sequence[str]] = None, variant: str = "paper",
             upsample: str = "bilinear") -> PixelResult:
    """FullGrad saliency (Srinivas & Fleuret 2019) of sum_i logit_i[target_i] (minus logit_i[foil_i] for a
    ``Contrast``): one forward, one backward."""
    if variant not in FULLGRAD_VARIANTS:
        raise ValueError(f"unknown FullGrad variant {variant!r}; valid: {', '.join(FULLGRAD_VARIANTS)}")
    x, wanted, wanted_foils = _targets_and_input(model, images, targets, class_names)
    layers = bias_layers(model)
    names = [name for name, _ in layers]
    n, _, h, w = x.shape
    per_channel = variant == "pytorch-grad-cam"

    def psi(t: torch.Tensor) -> torch.Tensor:
        """|t| (N,K,h,w) -> min-max normalised (per channel, or per image over all channels), upsampled,
        summed over channels: (N,H,W)."""
        t = t.abs()
        if per_channel:
            flat = normalize_per_image(t.flatten(0, 1))
        else:
            k = t.shape[1]
            flat = normalize_per_image(t.reshape(n, k * t.shape[2], t.shape[3])).reshape(n * k, *t.shape[2:])
        return resize_maps(flat, (h, w), upsample).view(n, -1, h, w).sum(dim=1)

    if not names:  # no bias anywhere: FullGrad is the input-gradient term alone
        with eval_mode(model), torch.enable_grad():
            x = x.requires_grad_(True)
            logits = model(x)
            target_idx, foil_idx = _check(wanted, wanted_foils, logits.detach(), class_names)
            x_grad, = torch.autograd.grad(target_scores(logits, target_idx, foil_idx).sum(), [x])
        layer_grads = {}
    else:
        with LayerHooks(model, names, gradients=True) as hooks, torch.enable_grad():
            x = x.requires_grad_(True)
            logits = hooks(x)
            target_idx, foil_idx = _check(wanted, wanted_foils, logits.detach(), class_names)
            live = [hooks.outputs[name] for name in names]
            x_grad, *_ = torch.autograd.grad(target_scores(logits, target_idx, foil_idx).sum(), [x] + live,
                                             allow_unused=True)
            layer_grads = dict(hooks.gradients)
    with torch.no_grad():
        xd = at_least_float32(x.detach())
        total = psi(at_least_float32(x_grad) * xd)      # FullGrad (Srinivas & Fleuret 2019): the input-gradient term
        for name, module in layers:
            if name not in layer_grads:  # a layer that does not reach the output contributes nothing
                continue
            bias = at_least_float32(effective_bias(module).detach())
            # FullGrad: the bias-gradient f^b = dS/dz (.) b of every channel of every layer
            total = total + psi(at_least_float32(layer_grads[name]) * bias.view(1, -1, 1, 1))
    return PixelResult(normalize_per_image(total), logits.detach(), target_idx, foils=foil_idx)
