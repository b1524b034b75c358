"""Eigen-CAM, Ablation-CAM, guided backprop, Guided Grad-CAM, FullGrad, multi-layer fusion and maps
averaged over test-time-augmentation views: hand computations on tiny networks here, agreement with
pytorch-grad-cam at the end (skipped without it)."""
import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from expression.core.tta import TTA_MODES, tta_geometry, tta_views
from gradcam import EXTRA_PASSES, METHODS, PIXEL_METHODS, View, average_views, explain, explain_views, map_back
from gradcam.pixel import effective_bias, fullgrad, guided_backprop

pytestmark = pytest.mark.usefixtures("single_thread")


class Head(nn.Module):
    """`features` is an identity on the input (so A = the input); a linear head without bias reads it."""

    def __init__(self, weight):
        super().__init__()
        self.features = nn.Identity()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.head = nn.Linear(weight[0].numel(), len(weight), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(weight.reshape(len(weight), -1))

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[0.0, 1.0], [2.0, 0.0]]
G0 = [[[1.0, -1.0], [0.0, 2.0]], [[0.5, 0.5], [0.5, 0.5]]]


def normalised(a):
    a = np.asarray(a, dtype=np.float64)
    return (a - a.min()) / (a.max() - a.min())


def test_eigencam_rank_one_by_hand():
    """A^k = c_k P with c = (3, 4): centred, the pixels are (P - mean P) c, whose first principal
    direction is c / 5, so the projection is 5 (P - 3) = [[-10, -5], [0, 15]]; the sign rule keeps it
    (it correlates with the channel sum 7 (P - 3)) and the ReLU leaves [[0, 0], [0, 15]]. A sign
    error would give [[10, 5], [0, 0]]."""
    p = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    x = torch.stack([3 * p, 4 * p])[None]
    model = Head(torch.ones(1, 2, 2, 2))
    for target in (None, 0):  # class-agnostic: the target does not matter
        res = explain(model, x, layers=("features",), methods=("eigencam",), targets=target)
        np.testing.assert_allclose(res.raw_maps["eigencam/features"][0].numpy(), [[0, 0], [0, 15]], atol=1e-4)
        np.testing.assert_allclose(res.maps["eigencam/features"][0].numpy(), [[0, 0], [0, 1]], atol=1e-6)


def test_ablationcam_by_hand():
    """Linear head: S = sum G0 (.) A = 7 (channel 0) + 1.5 (channel 1) = 8.5. Zeroing channel 0 leaves
    1.5, channel 1 leaves 7: w = (7 / 8.5, 1.5 / 8.5), map = (7 A0 + 1.5 A1) / 8.5."""
    model = Head([G0, [[[-1.0] * 2] * 2] * 2])
    x = torch.tensor([[A0, A1]])
    res = explain(model, x, layers=("features",), methods=("ablationcam",), targets=[0], scorecam_batch_size=1)
    raw = (7 * np.array(A0) + 1.5 * np.array(A1)) / 8.5
    np.testing.assert_allclose(res.raw_maps["ablationcam/features"][0].numpy(), raw, rtol=1e-5)
    # the same with every pair in one chunk, and two images: image-major bookkeeping
    two = explain(model, torch.cat([x, x.flip(-1)]), layers=("features",), methods=("ablationcam",),
                  targets=[0, 0], scorecam_batch_size=64)
    np.testing.assert_allclose(two.raw_maps["ablationcam/features"][0].numpy(), raw, rtol=1e-5)
    assert all(not m._forward_hooks for m in model.modules())


class ReLUNet(nn.Module):
    """x (1,1,1,2) -> h = ReLU(x) -> S = 3 h_0 - h_1: plain gradient (3, -1), guided (3, 0)."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.head = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[3.0, -1.0]]))

    def forward(self, x):
        return self.head(self.relu(x).flatten(1))


def test_guided_backprop_by_hand():
    model = ReLUNet()
    x = torch.tensor([[[[1.0, 2.0]]]])
    res = guided_backprop(model, x)
    np.testing.assert_allclose(res.grads[0, 0].numpy(), [[3.0, 0.0]])
    np.testing.assert_allclose(res.maps[0].numpy(), [[1.0, 0.0]])
    assert not model.relu._forward_hooks
    x.requires_grad_(True)
    model(x).sum().backward()   # the ordinary gradient is back once the hooks are gone
    np.testing.assert_allclose(x.grad[0, 0].numpy(), [[3.0, -1.0]])


def test_guided_gradcam_is_product():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    res = explain(model, x, layers=("layer2",), methods=("gradcam", "guidedgradcam", "guidedbackprop"))
    gb = guided_backprop(model, x, res.targets)
    product = gb.grads.abs().amax(1) * res.maps["gradcam/layer2"]
    product = (product - product.amin((1, 2), keepdim=True)) / product.amax((1, 2), keepdim=True)
    torch.testing.assert_close(res.maps["guidedgradcam/layer2"], product, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.maps["guidedbackprop/input"], gb.maps, atol=1e-6, rtol=0)


class BiasNet(nn.Module):
    """z = 2 x + 1 (a 1x1 conv with bias), S = sum v (.) z."""

    def __init__(self, v):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.head = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(2.0)
            self.conv.bias.fill_(1.0)
            self.head.weight.copy_(torch.tensor(v).reshape(1, 4))

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


@pytest.mark.parametrize("variant", ("paper", "pytorch-grad-cam"))
def test_fullgrad_by_hand(variant):
    """dS/dx = 2 v and dS/dz = v: input term |2 v x| = [[2, 4], [12, 0]] -> [[1/6, 1/3], [1, 0]]; bias
    term |v b| = [[1, 1], [2, 0]] -> [[1/2, 1/2], [1, 0]]; sum [[2/3, 5/6], [2, 0]] -> normalised."""
    v = [[1.0, -1.0], [2.0, 0.0]]
    res = fullgrad(BiasNet(v), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), variant=variant)
    np.testing.assert_allclose(res.maps[0].numpy(), normalised([[2 / 3, 5 / 6], [2, 0]]), atol=1e-6)


def test_batchnorm_effective_bias():
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        # in eval mode BN(z) = a z + b: the bias is BN(0)
        torch.testing.assert_close(effective_bias(bn), bn(torch.zeros(1, 3, 1, 1)).flatten())


def test_pixel_methods_keys_and_registry():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    res = explain(model, torch.randn(1, 3, 32, 32), layers=("layer1", "layer2"),
                  methods=("fullgrad", "guidedbackprop", "layercam"), fuse=True)
    assert list(res.maps) == ["layercam/layer1", "layercam/layer2", "fullgrad/input", "guidedbackprop/input",
                              "layercam/fused"]
    assert set(PIXEL_METHODS) <= set(METHODS) and {"scorecam", "ablationcam"} <= set(EXTRA_PASSES)
    only = explain(model, torch.randn(1, 3, 32, 32), layers=("layer1",), methods=("fullgrad",))
    assert list(only.maps) == ["fullgrad/input"]


# ---------------------------------------------------------------------------------------------------
# Test-time-augmentation views


class MirrorNet(nn.Module):
    """Mirror-symmetric 3x3 kernels and a global average pool: features are flip-equivariant and the
    logits flip-invariant, so map(flip x) = flip(map x) for every CAM."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            w = self.features.weight
            w.copy_((w + w.flip(-1)) / 2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.features(x)).mean((2, 3)))


def test_flip_average_of_equivariant_network_is_unchanged():
    model = MirrorNet()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 12, 12)
    plain = explain(model, x, layers=("features",), methods=("gradcam", "layercam"))
    both = explain_views(model, x, [View(), View(flip=True)], layers=("features",), methods=("gradcam", "layercam"))
    assert torch.equal(both.targets, plain.targets)
    for key in plain.maps:
        torch.testing.assert_close(both.maps[key], plain.maps[key], atol=1e-5, rtol=0)
        # the test can fail: a forgotten un-flip would average the map with its mirror image
        assert (plain.maps[key] - plain.maps[key].flip(-1)).abs().max() > 0.05


def test_crop_map_back_by_hand():
    """A 4 px crop at (0, 0) of the input upscaled to 8 px covers the top-left 2x2 of the original;
    bilinear half-pixel downscaling by 2 is the mean of each 2x2 block."""
    m = torch.arange(16.0).view(1, 4, 4)
    values, cover = map_back(m, View(frame=8, top=0, left=0), 4)
    blocks = m.view(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(2, 2, 4).mean(-1)   # [[2.5, 4.5], [10.5, 12.5]]
    expected = torch.zeros(4, 4)
    expected[:2, :2] = blocks
    torch.testing.assert_close(values[0], expected)
    covered = torch.zeros(4, 4)
    covered[:2, :2] = 1
    torch.testing.assert_close(cover[0], covered)
    flipped, _ = map_back(m, View(frame=8, top=4, left=4, flip=True), 4)
    torch.testing.assert_close(flipped[0, 2:, 2:], blocks.flip(-1))
    # two crops: each covers its own corner, the rest stays 0; the mean is then normalised
    avg = average_views([m, m.flip(-1)], [View(frame=8, top=0, left=0), View(frame=8, top=4, left=4, flip=True)], 4)
    expected[2:, 2:] = blocks
    torch.testing.assert_close(avg[0], expected / expected.max())


def test_overlapping_crops_are_averaged_where_covered():
    """4 px crops of an 8 px frame (each original pixel is a 2x2 block of the frame). Crops at (0, 0)
    and (2, 2) carrying 1 and 3: block (1, 1) is covered by both (mean 2), (0, 0) and (0, 1) by the
    first (1), (2, 2) by the second (3), (3, 3) by none (0). With the second crop at (1, 1) instead,
    block (0, 0) has 4 frame pixels of the first and 1 of the second: (4 * 1 + 1 * 3) / 5 = 1.4."""
    one, three = torch.ones(1, 4, 4), 3 * torch.ones(1, 4, 4)
    avg = average_views([one, three], [View(frame=8, top=0, left=0), View(frame=8, top=2, left=2)], 4)[0] * 3
    for (i, j), value in {(1, 1): 2.0, (0, 0): 1.0, (0, 1): 1.0, (2, 2): 3.0, (3, 3): 0.0}.items():
        assert abs(float(avg[i, j]) - value) < 1e-6, (i, j, float(avg[i, j]))
    avg = average_views([one, three], [View(frame=8, top=0, left=0), View(frame=8, top=1, left=1)], 4)[0] * 3
    assert abs(float(avg[0, 0]) - 1.4) < 1e-6


@pytest.mark.parametrize("mode", TTA_MODES)
def test_geometry_reproduces_classifier_views(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    from gradcam import apply_view
    ours = [apply_view(x, v) for v in tta_geometry(mode, 48)]
    theirs = tta_views(x, mode)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_tencrop_targets_are_the_tta_prediction():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    x = torch.randn(3, 3, 48, 48)
    res = explain_views(model, x, tta_geometry("tencrop", 48), layers=("layer1",), methods=("gradcam",))
    from expression.core.tta import tta_probs
    with torch.no_grad():
        probs = tta_probs(model, x, "tencrop")
    assert torch.equal(res.targets, probs.argmax(1))
    torch.testing.assert_close(res.probs, probs, atol=1e-5, rtol=1e-4)
    assert res.maps["gradcam/layer1"].shape == (3, 48, 48)


# ---------------------------------------------------------------------------------------------------
# Agreement with pytorch-grad-cam (test-only reference)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    # Fresh BatchNorms have beta = mean = 0, i.e. no bias for FullGrad to see: give them some.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
    return model


def _pgc():
    return pytest.importorskip("pytorch_grad_cam")


def test_eigencam_matches_reference_up_to_sign(resnet):
    pgc = _pgc()
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    model = copy.deepcopy(resnet).double()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    layers = ("layer1", "layer2", "layer3", "layer4")
    ours = explain(model, x, layers=layers, methods=("eigencam",))
    checked = 0
    with torch.no_grad():
        acts = {}
        hooks = [model.get_submodule(l).register_forward_hook(
            lambda m, i, o, l=l: acts.__setitem__(l, o.numpy().copy())) for l in layers]
        model(x)
        for h in hooks:
            h.remove()
    for layer in layers:
        proj = get_2d_projection(acts[layer])
        centred = acts[layer] - acts[layer].mean(axis=(2, 3), keepdims=True)
        sign = np.sign((proj * centred.sum(1)).sum((1, 2)))[:, None, None]
        ref = scale_cam_image(np.maximum(sign * proj, 0), (48, 48))
        ref = scale_cam_image(ref)  # the library's final per-image normalisation (as for one layer)
        np.testing.assert_allclose(ours.maps[f"eigencam/{layer}"].numpy(), ref, atol=1e-4, rtol=0)
        with pgc.EigenCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
            theirs = cam(input_tensor=x, targets=None)
        # the library itself, wherever its LAPACK sign agrees with ours
        same = sign[:, 0, 0] > 0
        if same.any():
            np.testing.assert_allclose(ours.maps[f"eigencam/{layer}"].numpy()[same], theirs[same], atol=1e-4)
            checked += int(same.sum())
    assert checked > 0  # the library's own output was compared at least once


def test_ablationcam_matches_reference(resnet):
    pgc = _pgc()
    torch.manual_seed(4)
    x = torch.randn(1, 3, 48, 48)
    ours = explain(resnet, x, layers=("layer3", "layer4"), methods=("ablationcam",), scorecam_batch_size=128)
    for layer in ("layer3", "layer4"):
        model = copy.deepcopy(resnet)
        with pgc.AblationCAM(model=model, target_layers=[model.get_submodule(layer)], batch_size=128) as cam:
            ref = cam(input_tensor=x, targets=None)
        np.testing.assert_allclose(ours.maps[f"ablationcam/{layer}"].numpy(), ref, atol=2e-4, rtol=0)


def test_fullgrad_matches_reference_variant(resnet):
    pgc = _pgc()
    torch.manual_seed(5)
    x = torch.randn(2, 3, 48, 48)
    res = explain(resnet, x, layers=("layer4",), methods=("fullgrad",), fullgrad_variant="pytorch-grad-cam")
    model = copy.deepcopy(resnet)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with pgc.FullGrad(model=model, target_layers=[]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in res.targets])
    np.testing.assert_allclose(res.maps["fullgrad/input"].numpy(), ref, atol=1e-4, rtol=0)
    paper = explain(resnet, x, layers=("layer4",), methods=("fullgrad",)).maps["fullgrad/input"]
    assert np.abs(paper.numpy() - ref).max() > 1e-2  # the two normalisations do differ


def test_guided_backprop_matches_reference(resnet):
    pgc = _pgc()
    torch.manual_seed(6)
    x = torch.randn(1, 3, 48, 48)
    ours = guided_backprop(resnet, x, targets=[2])
    ref = pgc.GuidedBackpropReLUModel(copy.deepcopy(resnet), device="cpu")(x.clone(), target_category=2)
    np.testing.assert_allclose(ours.grads[0].permute(1, 2, 0).numpy(), ref, atol=1e-6, rtol=1e-4)


def test_layer_fusion_matches_reference_multi_layer(resnet):
    pgc = _pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model = copy.deepcopy(resnet).double()
    torch.manual_seed(7)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    layers = ("layer1", "layer2", "layer3", "layer4")
    ours = explain(model, x, layers=layers, methods=("layercam", "gradcampp"), fuse=True)
    for method, cls in (("layercam", pgc.LayerCAM), ("gradcampp", pgc.GradCAMPlusPlus)):
        with cls(model=model, target_layers=[model.get_submodule(l) for l in layers]) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets])
        np.testing.assert_allclose(ours.maps[f"{method}/fused"].numpy(), ref, atol=1e-5, rtol=0)
