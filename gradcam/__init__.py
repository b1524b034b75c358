"""Explanation library: class activation maps, attention maps and overlays (pure torch).

Does not depend on the training code: any ``nn.Module`` that maps (N,C,H,W) images to (N,classes)
logits works; layers are named as in ``model.named_modules()`` ("layer4", "layer4.2.conv2").

Example::

    import torch, torchvision
    from gradcam import Contrast, explain, attention_maps, overlay, parse_contrast
    model = torchvision.models.resnet34(weights=None, num_classes=7)
    x = torch.rand(8, 3, 48, 48)
    res = explain(model, x, methods=("gradcam", "gradcampp"))      # one forward + one backward
    res.maps["gradcam/layer4"]        # (8, 48, 48) float32 in [0, 1]
    res.feature_sizes["layer4"]       # (2, 2): 48 px input leaves layer4 coarse
    att = attention_maps(model, x)    # att.maps["layer2"]: (8, 48, 48)
    face = (x[0, 0] * 255).byte().numpy()
    rgb = overlay(face, res.maps["gradcam/layer3"][0].numpy(), colormap="jet", alpha=0.5)
    # why class 3 rather than class 6: the score is logit[3] - logit[6]; res.foils reports the 6
    why = explain(model, x, methods=("gradcam",), targets=Contrast(3, 6))
    names = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    why = explain(model, x, methods=("gradcam",), targets=parse_contrast("happy-vs-neutral", names))

Targets (``targets=`` of every method): None for the predicted class, a class index or name, a
``Contrast(target, foil)`` ("target rather than foil", text form "happy-vs-neutral" read by
``parse_contrast``), or a list of these with one per image. Eigen-CAM and attention maps have no
target, so a contrast leaves them unchanged.

Modules: ``base`` (hooks, pass, normalisation), ``methods`` (Grad-CAM family, Eigen-CAM, fusion,
``explain``), ``scorecam`` and ``ablationcam`` (extra forward passes), ``pixel`` (guided backprop,
Guided Grad-CAM, FullGrad: their own backward pass), ``views`` (maps averaged over test-time
augmentation views), ``attention``, ``overlay``.
"""
from .ablationcam import AblationCAM
from .attention import AttentionResult, attention_maps
from .base import UPSAMPLE_MODES, BaseCAM, CAMResult, Contrast, LayerHooks, parse_contrast
from .methods import (EXTRA_PASSES, FUSED, GRADIENT_METHODS, INPUT_LAYER, METHODS, PIXEL_METHODS, EigenCAM, GradCAM,
                      GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM, explain, fuse_layers, map_keys)
from .overlay import colorize, overlay
from .pixel import fullgrad, guided_backprop, guided_gradcam
from .scorecam import ScoreCAM
from .views import View, apply_view, average_views, explain_views, map_back

__all__ = [
    "explain", "attention_maps", "overlay", "colorize", "METHODS", "GRADIENT_METHODS",
    "UPSAMPLE_MODES", "CAMResult", "AttentionResult", "LayerHooks", "BaseCAM", "GradCAM",
    "GradCAMPlusPlus", "HiResCAM", "XGradCAM", "LayerCAM", "ScoreCAM", "EigenCAM", "AblationCAM",
    "PIXEL_METHODS", "EXTRA_PASSES", "FUSED", "INPUT_LAYER", "map_keys", "fuse_layers", "guided_backprop",
    "guided_gradcam", "fullgrad", "View", "apply_view", "map_back", "average_views", "explain_views",
    "Contrast", "parse_contrast",
]
