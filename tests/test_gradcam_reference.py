"""Agreement of the gradcam library with pytorch-grad-cam (test-only reference, `grad-cam` on PyPI).

Same formulas, same post-processing (ReLU, normalise, cv2 bilinear resize, normalise, eps 1e-7), so
maps agree to round-off. Why two precisions: in float32 both libraries carry ~1e-6 relative
round-off in the channel sums, in different summation orders, and min-max normalisation divides by
the map's range; a nearly flat 2x2 layer4 map of a random network (values 9.2..9.8) magnifies that
to ~1e-5 in either library (measured against a float64 run). In float64 the only float32 step
left is pytorch-grad-cam's cast before cv2.resize, so the strict 1e-5 bound holds with margin.

Deliberate difference: Score-CAM. The library follows the paper (softmax over classes of each
masked forward, weight = target probability; masks upsampled in the chosen mode);
pytorch-grad-cam softmaxes the raw target logits over the channels and upsamples masks with
align_corners=True. ``ScoreCAM(variant="pytorch-grad-cam")`` reproduces the latter and is
compared here.
"""
import copy

import numpy as np
import pytest
import torch
import torchvision

from gradcam import GRADIENT_METHODS, explain
from gradcam.base import BaseCAM
from gradcam.scorecam import ScoreCAM

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

LAYERS = ("layer1", "layer2", "layer3", "layer4")
REFERENCE = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
             "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet34(weights=None, num_classes=7).eval()


def reference_map(cls, model, layer, x, targets):
    """pytorch-grad-cam used as documented: one object per method and layer, as a context manager."""
    wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with cls(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=wanted)


def reference_maps_per_layer(cls, model, layers, x, targets):
    """Single-layer pytorch-grad-cam maps of several layers from one of its passes (keeps the test
    fast). With one target layer its ``forward`` returns ``aggregate_multi_layers([m])`` =
    ``scale_cam_image(m)`` for the layer's ``compute_cam_per_layer`` output m, so this is the same
    computation as ``reference_map`` layer by layer (checked in the float32 test below)."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    wanted = [ClassifierOutputTarget(int(t)) for t in targets]
    with cls(model=model, target_layers=[model.get_submodule(l) for l in layers]) as cam:
        cam(input_tensor=x, targets=wanted)
        per_layer = cam.compute_cam_per_layer(x, wanted, False)
    return {layer: scale_cam_image(m[:, 0]) for layer, m in zip(layers, per_layer)}


@pytest.mark.parametrize("shape,targets", [((2, 3, 48, 48), [4, 1]), ((1, 3, 37, 53), None)])
def test_gradient_methods_match_float64(resnet, shape, targets):
    model = copy.deepcopy(resnet).double()
    torch.manual_seed(3)
    x = torch.randn(*shape, dtype=torch.float64)
    ours = explain(model, x, layers=LAYERS, methods=GRADIENT_METHODS, targets=targets)
    for method, cls in REFERENCE.items():
        ref = reference_maps_per_layer(cls, model, LAYERS, x, ours.targets.tolist())
        for layer in LAYERS:
            diff = np.abs(ours.maps[f"{method}/{layer}"].numpy() - ref[layer]).max()
            assert diff < 1e-5, (method, layer, diff)


def test_gradient_methods_match_float32(resnet):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 48, 48)
    ours = explain(resnet, x, layers=("layer1", "layer4"), methods=("gradcam", "gradcampp"))
    for method in ("gradcam", "gradcampp"):
        many = reference_maps_per_layer(REFERENCE[method], resnet, ("layer1", "layer4"), x,
                                        ours.targets.tolist())
        for layer in ("layer1", "layer4"):
            ref = reference_map(REFERENCE[method], resnet, layer, x, None)
            np.testing.assert_array_equal(many[layer], ref)
            # float32 round-off magnified by normalising nearly flat maps (see module docstring)
            np.testing.assert_allclose(ours.maps[f"{method}/{layer}"].numpy(), ref, atol=1e-4, rtol=0)


def test_scorecam_matches_reference_variant(resnet):
    torch.manual_seed(5)
    x = torch.randn(1, 3, 48, 48)
    # layer2: 128 channels = 128 masked forwards per library, 6x6 masks upsampled 8x (which
    # would show an align_corners mismatch)
    ours = BaseCAM.run(resnet, x, [ScoreCAM(batch_size=128, variant="pytorch-grad-cam")], ("layer2",))
    with pgc.ScoreCAM(model=resnet, target_layers=[resnet.layer2]) as cam:
        cam.batch_size = 128   # its chunk size; does not change the result
        ref = cam(input_tensor=x, targets=None)
    np.testing.assert_allclose(ours.maps["scorecam/layer2"].numpy(), ref, atol=1e-5, rtol=0)
    paper = explain(resnet, x, layers=("layer2",), methods=("scorecam",)).maps["scorecam/layer2"]
    assert np.abs(paper.numpy() - ref).max() > 1e-3   # the deliberate difference is real
