"""The gradient-based CAM methods, the method registry and ``explain``.

Each method is the few lines that differ between papers; the forward/backward pass, ReLU,
normalisation and upsampling are in ``gradcam.base``. Notation: A = activations (N,K,h,w) of the
layer, g = dS/dA with S the raw target logit (N,K,h,w).

Example::

    import torch, torchvision
    from gradcam import explain
    model = torchvision.models.resnet34(weights=None, num_classes=7)
    res = explain(model, torch.rand(4, 3, 48, 48), layers=("layer3", "layer4"),
                  methods=("gradcam", "gradcampp", "layercam"))
    res.maps["gradcampp/layer4"].shape   # (4, 48, 48), values in [0, 1]
"""
from typing import Dict, Optional, Sequence, Type, Union

import torch
from torch import nn

from .base import BaseCAM, CAMResult, LayerSpec, TargetSpec
from .scorecam import ScoreCAM

# Epsilons as in pytorch-grad-cam, so results agree to float round-off.
GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7


class GradCAM(BaseCAM):
    """Grad-CAM, Selvaraju et al. 2017."""
    name = "gradcam"

    def weights(self, activations, grads):
        # Grad-CAM eq. 1, Selvaraju et al. 2017: alpha_k = 1/Z sum_ij dS/dA^k_ij
        return grads.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++, Chattopadhyay et al. 2018, with the closed form of eq. 19.

    With Y = exp(S) the second and third derivatives of Y are powers of g = dS/dA (times exp(S),
    which cancels in alpha and only scales w, undone by the normalisation), so raw logits suffice.
    Note the denominator: sum_ab A_ab is the per-channel spatial sum of the *activations*,
    multiplied by g^3 at the pixel (i, j) itself - not sum_ab A_ab g_ab^3.
    """
    name = "gradcampp"

    def weights(self, activations, grads):
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        # Grad-CAM++ eq. 19, Chattopadhyay et al. 2018: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3);
        # the eps (pytorch-grad-cam's value) only guards the 0/0 of a zero gradient.
        alpha = g2 / (2 * g2 + sum_a * g3 + GRADCAMPP_EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        # Grad-CAM++ weights, Chattopadhyay et al. 2018: w_k = sum_ij alpha_ij ReLU(dY/dA^k_ij)
        return (alpha * torch.relu(grads)).sum(dim=(2, 3))


class HiResCAM(BaseCAM):
    """HiResCAM, Draelos & Carin 2020: the gradient multiplies the activation pixel by pixel."""
    name = "hirescam"

    def cam(self, activations, grads):
        # HiResCAM: sum_k g^k (.) A^k, no spatial averaging of the gradient.
        return (grads * activations).sum(dim=1)


class XGradCAM(BaseCAM):
    """XGrad-CAM, Fu et al. 2020 (axiom-based Grad-CAM)."""
    name = "xgradcam"

    def weights(self, activations, grads):
        # XGrad-CAM, Fu et al. 2020: w_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        return (grads * activations / (sum_a + XGRADCAM_EPS)).sum(dim=(2, 3))


class LayerCAM(BaseCAM):
    """LayerCAM, Jiang et al. 2021 (IEEE TIP): a pixel-wise weight ReLU(g) on each activation."""
    name = "layercam"

    def cam(self, activations, grads):
        # LayerCAM, Jiang et al. 2021: sum_k ReLU(g^k) (.) A^k
        return (torch.relu(grads) * activations).sum(dim=1)


_CLASSES: Dict[str, Type[BaseCAM]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM, LayerCAM, ScoreCAM)
}
METHODS = tuple(_CLASSES)
GRADIENT_METHODS = tuple(name for name, cls in _CLASSES.items() if cls.uses_gradients)


def make_method(name: str, scorecam_batch_size: int = 64) -> BaseCAM:
    """Method name -> a fresh method object; ValueError listing METHODS if unknown."""
    if name not in _CLASSES:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    if name == ScoreCAM.name:
        return ScoreCAM(batch_size=scorecam_batch_size)
    return _CLASSES[name]()


def explain(model: nn.Module, images: torch.Tensor,
            layers: LayerSpec = ("layer1", "layer2", "layer3", "layer4"),
            methods: Union[str, Sequence[str]] = ("gradcam", "gradcampp"),
            targets: TargetSpec = None, class_names: Optional[Sequence[str]] = None,
            upsample: str = "bilinear", scorecam_batch_size: int = 64) -> CAMResult:
    """Explain a batch with several methods at several layers from one forward and one backward pass.

    images: (N,C,H,W) or (C,H,W) tensor, preprocessed as the model expects; moved to the model's
        device. targets: None (each image's predicted class), one class index/name for all images,
        or one per image (names need ``class_names``); any other length raises ValueError.
    upsample: mode for resizing maps to (H, W): "bilinear" (default, align_corners=False),
        "bicubic", "nearest" or "nearest-exact".
    scorecam_batch_size: masked images per extra forward pass of Score-CAM (the only method
        that needs more passes: one per channel and image, run without gradients).

    Returns a CAMResult whose ``maps["method/layer"]`` are (N,H,W) float32 in [0, 1] on the CPU.
    The model is run in eval mode and its mode and hooks are restored afterwards.
    """
    if isinstance(methods, str):
        methods = (methods,)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError(f"at least one method is needed; valid: {', '.join(METHODS)}")
    cams = [make_method(name, scorecam_batch_size) for name in methods]
    return BaseCAM.run(model, images, cams, layers, targets, class_names, upsample)
