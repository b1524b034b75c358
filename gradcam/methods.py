"""The gradient-based CAM methods, the method registry and ``explain``.

Each method is the few lines that differ between papers; the forward/backward pass, ReLU,
normalisation and upsampling are in ``gradcam.base``. Notation: A = activations (N,K,h,w) of the
layer, g = dS/dA with S the raw target logit (N,K,h,w), or logit[B] - logit[A] for a
``Contrast(B, A)``: every gradient method below takes g as it comes, so each explains a contrast
without change (Grad-CAM++'s closed form only needs S piecewise linear in A, which the difference
is). Eigen-CAM has no target and ignores it.

Example::

    import torch, torchvision
    from gradcam import Contrast, explain
    model = torchvision.models.resnet34(weights=None, num_classes=7)
    res = explain(model, torch.rand(4, 3, 48, 48), layers=("layer3", "layer4"),
                  methods=("gradcam", "gradcampp", "layercam"))
    res.maps["gradcampp/layer4"].shape   # (4, 48, 48), values in [0, 1]
    why = explain(model, torch.rand(4, 3, 48, 48), methods=("gradcam",), targets=Contrast(3, 6))  # 3, not 6
"""
from typing import Dict, Optional, Sequence, Type, Union

import torch
from torch import nn

from .ablationcam import AblationCAM
from .base import BaseCAM, CAMResult, LayerSpec, TargetSpec, normalize_per_image, resize_maps, target_spec
from .pixel import fullgrad, guided_backprop, guided_gradcam
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


class EigenCAM(BaseCAM):
    """Eigen-CAM, Muhammad & Yeasin 2020: the activations projected on their first principal component.

    Gradient-free and class-agnostic (the same map for every target, a ``Contrast`` too). The SVD's
    sign is arbitrary (pytorch-grad-cam leaves it to LAPACK, so its maps may come out inverted); here
    it is fixed so that the projection correlates positively with the centred channel sum, i.e. the
    component points the way most channels fire.
    """
    name = "eigencam"
    uses_gradients = False

    def cam(self, activations, grads=None):
        n, k, h, w = activations.shape
        x = activations.flatten(2).transpose(1, 2)              # (N, hw, K): pixels as samples
        x = x - x.mean(dim=1, keepdim=True)                     # centre each channel over the pixels
        # Eigen-CAM, Muhammad & Yeasin 2020: L = A V_1, V_1 the first right singular vector of A
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        projection = (x @ vh[:, 0, :, None])[..., 0]            # (N, hw)
        sign = torch.where((projection * x.sum(dim=2)).sum(dim=1) < 0, -1.0, 1.0).to(x.dtype)
        return (projection * sign[:, None]).view(n, h, w)


_CLASSES: Dict[str, Type[BaseCAM]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM, LayerCAM, EigenCAM,
                              ScoreCAM, AblationCAM)
}
# Methods whose maps are at input resolution and need their own backward pass. guidedbackprop and
# fullgrad have no layer (key "guidedbackprop/input", "fullgrad/input"); guidedgradcam has one.
PIXEL_METHODS = ("guidedbackprop", "guidedgradcam", "fullgrad")
LAYER_FREE_METHODS = ("guidedbackprop", "fullgrad")  # one map per image, at INPUT_LAYER
INPUT_LAYER = "input"
METHODS = tuple(_CLASSES) + PIXEL_METHODS
GRADIENT_METHODS = tuple(name for name, cls in _CLASSES.items() if cls.uses_gradients)
# Methods that need more than explain's one forward and one backward pass, and what they add.
EXTRA_PASSES = {
    "scorecam": "one forward per channel and image (no gradients)",
    "ablationcam": "one forward per channel and image (no gradients)",
    "guidedbackprop": "one forward + backward with guided ReLUs",
    "guidedgradcam": "one forward + backward with guided ReLUs (shared with guidedbackprop)",
    "fullgrad": "one forward + backward with hooks on every conv/BatchNorm layer",
}
FUSED = "fused"  # layer name of the multi-layer fusion of a method's maps


def map_keys(methods: Sequence[str], layers: Sequence[str], fuse: bool = False) -> list:
    """The keys ``explain`` returns, in its order: method/layer for every layer (layer-major), then the
    layer-free pixel methods at "input", then method/fused for every CAM method when ``fuse`` and more
    than one layer."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    layered = [m for m in methods if m not in LAYER_FREE_METHODS]
    keys = [f"{m}/{l}" for l in layers for m in layered]
    keys += [f"{m}/{INPUT_LAYER}" for m in methods if m in LAYER_FREE_METHODS]
    if fuse and len(layers) > 1:
        keys += [f"{m}/{FUSED}" for m in methods if m in _CLASSES]
    return keys


def make_method(name: str, scorecam_batch_size: int = 64) -> BaseCAM:
    """Method name -> a fresh method object; ValueError listing METHODS if unknown."""
    if name not in _CLASSES:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    if name in (ScoreCAM.name, AblationCAM.name):
        return _CLASSES[name](batch_size=scorecam_batch_size)
    return _CLASSES[name]()


def fuse_layers(raw_maps: Sequence[torch.Tensor], size, upsample: str = "bilinear") -> torch.Tensor:
    """One method's raw maps at several layers -> one (N,H,W) map at input resolution.

    Each layer's map is min-max normalised at its own resolution and upsampled, the layers are
    averaged and the mean normalised again: how pytorch-grad-cam 1.5 combines several target layers
    (``aggregate_multi_layers``), so a fused LayerCAM over layer1..layer4 is the multi-stage LayerCAM
    of Jiang et al. 2021 in that library's form. The finest layer contributes the detail, the deeper
    ones the class-specific emphasis.
    """
    ups = [resize_maps(normalize_per_image(m), size, upsample) for m in raw_maps]
    return normalize_per_image(torch.stack(ups).mean(dim=0))


def explain(model: nn.Module, images: torch.Tensor,
            layers: LayerSpec = ("layer1", "layer2", "layer3", "layer4"),
            methods: Union[str, Sequence[str]] = ("gradcam", "gradcampp"),
            targets: TargetSpec = None, class_names: Optional[Sequence[str]] = None,
            upsample: str = "bilinear", scorecam_batch_size: int = 64, fuse: bool = False,
            fullgrad_variant: str = "paper") -> CAMResult:
    """Explain a batch with several methods at several layers from one forward and one backward pass.

    images: (N,C,H,W) or (C,H,W) tensor, preprocessed as the model expects; moved to the model's
        device. targets: None (each image's predicted class), one class index/name for all images,
        or one per image (names need ``class_names``); any other length raises ValueError. A
        ``Contrast(B, A)`` in their place explains "B rather than A" with the score logit[B] - logit[A]
        (every method but Eigen-CAM, which has no target; see ``gradcam.scorecam`` and
        ``gradcam.ablationcam`` for how they score one); ``CAMResult.foils`` reports each image's A.
    upsample: mode for resizing maps to (H, W): "bilinear" (default, align_corners=False),
        "bicubic", "nearest" or "nearest-exact".
    scorecam_batch_size: images per extra forward pass of Score-CAM and Ablation-CAM (one per
        channel and image, run without gradients).
    fuse: also return "method/fused" for every CAM method, its layers fused into one map
        (``fuse_layers``).
    Pixel methods (``PIXEL_METHODS``) take their own backward pass: guided backpropagation (key
    "guidedbackprop/input"), Guided Grad-CAM at every layer ("guidedgradcam/layer") and FullGrad
    ("fullgrad/input", ``fullgrad_variant`` "paper" or "pytorch-grad-cam"); ``EXTRA_PASSES`` lists the
    cost of each method beyond the shared pass.

    Returns a CAMResult whose ``maps["method/layer"]`` are (N,H,W) float32 in [0, 1] on the CPU.
    The model is run in eval mode and its mode and hooks are restored afterwards.
    """
    if isinstance(methods, str):
        methods = (methods,)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError(f"at least one method is needed; valid: {', '.join(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    layers = (layers,) if isinstance(layers, str) else tuple(dict.fromkeys(layers))
    cam_names = [m for m in methods if m in _CLASSES]
    # Guided Grad-CAM needs Grad-CAM's map from the shared pass, and every result needs the targets.
    need_gradcam = "guidedgradcam" in methods or not cam_names
    helper = ["gradcam"] if need_gradcam and "gradcam" not in cam_names else []
    cams = [make_method(name, scorecam_batch_size) for name in cam_names + helper]
    res = BaseCAM.run(model, images, cams, layers, targets, class_names, upsample)
    maps, raw = dict(res.maps), dict(res.raw_maps)
    size = tuple(maps[next(iter(maps))].shape[-2:])
    pixel_targets = target_spec(res.targets, res.foils)  # the same targets and foils as the shared pass
    if "guidedbackprop" in methods or "guidedgradcam" in methods:
        gb = guided_backprop(model, images, pixel_targets)
        maps["guidedbackprop/" + INPUT_LAYER] = gb.maps.float().cpu()
        for layer in (layers if "guidedgradcam" in methods else ()):
            maps[f"guidedgradcam/{layer}"] = guided_gradcam(gb.grads.cpu(), maps[f"gradcam/{layer}"]).float()
    if "fullgrad" in methods:
        fg = fullgrad(model, images, pixel_targets, variant=fullgrad_variant, upsample=upsample)
        maps["fullgrad/" + INPUT_LAYER] = fg.maps.float().cpu()
    if fuse and len(layers) > 1:
        for name in cam_names:
            maps[f"{name}/{FUSED}"] = fuse_layers([raw[f"{name}/{l}"] for l in layers], size, upsample).float()
    keys = map_keys(methods, layers, fuse)
    return CAMResult(maps={k: maps[k] for k in keys}, raw_maps={k: v for k, v in raw.items() if k in keys},
                     logits=res.logits, probs=res.probs, targets=res.targets, feature_sizes=res.feature_sizes,
                     foils=res.foils)
