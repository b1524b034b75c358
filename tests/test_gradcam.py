"""gradcam library: hand-computed maps on a tiny network, batching, hooks, targets, attention, overlays.

Agreement with pytorch-grad-cam is in test_gradcam_reference.py.
"""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from gradcam import (GRADIENT_METHODS, METHODS, CAMResult, LayerHooks, attention_maps, explain,
                     overlay)
from gradcam.base import BaseCAM, normalize_per_image
from gradcam.overlay import colorize
from gradcam.scorecam import ScoreCAM

LAYERS = ("layer1", "layer2", "layer3", "layer4")


pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------------------------------------------
# A network whose activations and gradients are written down: the explained layer is an identity
# on a 2-channel 2x2 input (so A = the input), followed by a linear head (so dS/dA = head weights).

A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[0.0, 1.0], [2.0, 0.0]]
G_CLASS0 = [[[1.0, -1.0], [0.0, 2.0]], [[0.5, 0.5], [0.5, 0.5]]]      # dS_0/dA, channel by channel
G_CLASS1 = [[[-1.0, -1.0], [-1.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]  # every weight negative


class Tiny(nn.Module):
    """pool=True: the input is 4x4 and a 2x2 average pool gives A, to test upsampling by hand."""

    def __init__(self, pool: bool = False):
        super().__init__()
        self.pre = nn.AvgPool2d(2) if pool else nn.Identity()
        self.features = nn.Identity()
        self.head = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([G_CLASS0, G_CLASS1]).reshape(2, 8))

    def forward(self, x):
        return self.head(self.features(self.pre(x)).flatten(1))


def tiny_input(pool: bool = False) -> torch.Tensor:
    a = torch.tensor([[A0, A1]])                                  # (1, 2, 2, 2)
    return a.repeat_interleave(2, 2).repeat_interleave(2, 3) if pool else a


def hand_map(method: str, target: int = 0) -> np.ndarray:
    """The normalised 2x2 maps, worked out on paper for A and G_CLASS0 above."""
    assert target == 0
    if method == "gradcam":
        # w = mean(g) = (0.5, 0.5); cam = 0.5 A0 + 0.5 A1 = [[0.5, 1.5], [2.5, 2]]
        cam = [[0.5, 1.5], [2.5, 2.0]]
    elif method == "gradcampp":
        # eq. 19 with sum(A0) = 10, sum(A1) = 3: channel 0 alpha = 1/(2+10) at g=1, 4/(8+80) at g=2
        # (g=-1 and g=0 pixels add nothing after ReLU(g)); channel 1 alpha = .25/(.5+3*.125) = 2/7
        w0 = 1 / 12 * 1 + 4 / 88 * 2          # = 23/132
        w1 = 4 * (2 / 7) * 0.5                # = 4/7
        cam = [[w0 * 1, w0 * 2 + w1 * 1], [w0 * 3 + w1 * 2, w0 * 4]]
    elif method == "hirescam":
        # sum_k g*A = [[1, -2 + .5], [1, 8]] -> ReLU
        cam = [[1.0, 0.0], [1.0, 8.0]]
    elif method == "xgradcam":
        # w0 = (1 - 2 + 0 + 8)/10 = 0.7, w1 = 0.5 (0 + 1 + 2 + 0)/3 = 0.5
        cam = [[0.7, 1.9], [3.1, 2.8]]
    elif method == "layercam":
        # sum_k ReLU(g)*A = [[1, .5], [1, 8]]
        cam = [[1.0, 0.5], [1.0, 8.0]]
    else:
        raise KeyError(method)
    cam = np.array(cam)
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_hand_computed_maps(method):
    res = explain(Tiny(), tiny_input(), layers=("features",), methods=(method,), targets=[0])
    assert res.feature_sizes == {"features": (2, 2)}
    got = res.maps[f"{method}/features"][0].numpy()
    np.testing.assert_allclose(got, hand_map(method), atol=1e-6)


def test_gradcampp_raw_values():
    """The un-normalised Grad-CAM++ map. A denominator 2 g^2 + sum_ab A_ab g_ab^3 (= 2 g^2 + 31 for
    channel 0) or a dropped division would give other numbers here."""
    res = explain(Tiny(), tiny_input(), layers=("features",), methods=("gradcampp",), targets=[0])
    w0, w1 = 23 / 132, 4 / 7
    expected = [[w0 * 1, w0 * 2 + w1], [w0 * 3 + w1 * 2, w0 * 4]]
    np.testing.assert_allclose(res.raw_maps["gradcampp/features"][0].numpy(), expected, rtol=1e-5)


def test_upsampling_is_bilinear_half_pixel():
    """A 2x2 feature map on a 4x4 input: with align_corners=False the source coordinates of the
    output pixels are -0.25 (clamped), 0.25, 0.75, 1.25 (clamped), i.e. these 1-D weights."""
    m = hand_map("gradcam")  # [[0, .5], [1, .75]]
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    res = explain(Tiny(pool=True), tiny_input(pool=True), layers=("features",), methods=("gradcam",),
                  targets=[0])
    got = res.maps["gradcam/features"][0].numpy()
    np.testing.assert_allclose(got, up @ m @ up.T, atol=1e-6)
    near = explain(Tiny(pool=True), tiny_input(pool=True), layers=("features",), methods=("gradcam",),
                   targets=[0], upsample="nearest").maps["gradcam/features"][0].numpy()
    np.testing.assert_allclose(near, np.kron(m, np.ones((2, 2))), atol=1e-6)


@pytest.mark.parametrize("method", GRADIENT_METHODS)  # Score-CAM weights are probabilities, > 0
def test_all_zero_map_stays_zero(method):
    # class 1 has negative gradients everywhere: every method's map is 0 after the ReLU
    res = explain(Tiny(), tiny_input(), layers=("features",), methods=(method,), targets=[1])
    for maps in (res.maps, res.raw_maps):
        m = maps[f"{method}/features"]
        assert torch.isfinite(m).all() and m.abs().max() == 0


def test_normalize_eps():
    maps = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[2.0, 4.0], [6.0, 10.0]]])
    out = normalize_per_image(maps)
    assert torch.isfinite(out).all()
    assert out[0].abs().max() == 0 and out[1].abs().max() == 0  # constant maps -> 0, not NaN
    np.testing.assert_allclose(out[2].numpy(), [[0, 0.25], [0.5, 1]], atol=1e-6)


def test_scorecam_by_hand():
    """Masks are the min-max normalised channels; the score of a mask is the softmax probability of
    the target on the masked input (Wang et al. 2020, Algorithm 1)."""
    x = tiny_input()[0].numpy()                       # A = x
    w = np.array([G_CLASS0, G_CLASS1]).reshape(2, 8)
    weights = []
    for k in range(2):
        mask = (x[k] - x[k].min()) / (x[k].max() - x[k].min())
        logits = w @ (x * mask[None]).reshape(8)
        weights.append(np.exp(logits[0]) / np.exp(logits).sum())
    cam = np.maximum(weights[0] * x[0] + weights[1] * x[1], 0)
    expected = (cam - cam.min()) / (cam.max() - cam.min())
    for batch_size in (1, 64):  # chunking must not matter
        # with a gradient method in the same call: its hooks must not fire in Score-CAM's passes
        res = explain(Tiny(), tiny_input(), layers=("features",), methods=("scorecam", "gradcam"),
                      targets=[0], scorecam_batch_size=batch_size)
        np.testing.assert_allclose(res.maps["scorecam/features"][0].numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(res.maps["gradcam/features"][0].numpy(), hand_map("gradcam"), atol=1e-6)


def test_attention_by_hand():
    att = attention_maps(Tiny(), tiny_input(), layers=("features",))
    # mean_k A_k^2 = [[.5, 2.5], [6.5, 8]]
    np.testing.assert_allclose(att.raw_maps["features"][0].numpy(), [[0.5, 2.5], [6.5, 8.0]], atol=1e-6)
    np.testing.assert_allclose(att.maps["features"][0].numpy(), [[0, 2 / 7.5], [6 / 7.5, 1]], atol=1e-6)
    att1 = attention_maps(Tiny(), tiny_input(), layers=("features",), p=1)
    np.testing.assert_allclose(att1.raw_maps["features"][0].numpy(), [[0.5, 1.5], [2.5, 2.0]], atol=1e-6)
    with pytest.raises(ValueError):
        attention_maps(Tiny(), tiny_input(), layers=("features",), p=0)


# ---------------------------------------------------------------------------------------------------
# ResNet34 as in the project: 7 classes, random weights.

@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet34(weights=None, num_classes=7).eval()


def no_hooks(model: nn.Module) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                    or m._backward_pre_hooks) for m in model.modules())


def test_batch_equals_one_by_one(resnet):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 48)
    targets = [2, 6]
    res = explain(resnet, x, layers=LAYERS, methods=GRADIENT_METHODS, targets=targets)
    att = attention_maps(resnet, x, layers=LAYERS)
    assert isinstance(res, CAMResult) and res.targets.tolist() == targets
    assert len(res.maps) == len(LAYERS) * len(GRADIENT_METHODS)
    for i in range(2):
        one = explain(resnet, x[i], layers=LAYERS, methods=GRADIENT_METHODS, targets=[targets[i]])
        one_att = attention_maps(resnet, x[i:i + 1], layers=LAYERS)
        torch.testing.assert_close(one.logits[0], res.logits[i], atol=1e-5, rtol=1e-5)
        for key, maps in res.maps.items():
            # float32 conv round-off differs between batch sizes; min-max normalisation of a
            # nearly flat 2x2 layer4 map can magnify it to ~1e-5, a mix-up would be O(1)
            torch.testing.assert_close(one.maps[key][0], maps[i], atol=1e-4, rtol=0)
            torch.testing.assert_close(one.raw_maps[key][0], res.raw_maps[key][i], atol=1e-5, rtol=1e-4)
        for layer in LAYERS:
            torch.testing.assert_close(one_att.maps[layer][0], att.maps[layer][i], atol=1e-4, rtol=0)


def test_one_forward_one_backward(resnet):
    class Counting(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.forwards, self.backwards = net, 0, 0

        def forward(self, x):
            self.forwards += 1
            y = self.net(x)
            if y.requires_grad:
                y.register_hook(self._count)
            return y

        def _count(self, grad):
            self.backwards += 1

    model = Counting(resnet)
    res = explain(model, torch.randn(2, 3, 48, 48), layers=tuple(f"net.{l}" for l in LAYERS),
                  methods=GRADIENT_METHODS)
    assert (model.forwards, model.backwards) == (1, 1)
    assert len(res.maps) == 20 and set(res.feature_sizes) == {f"net.{l}" for l in LAYERS}
    assert all(p.grad is None for p in resnet.parameters())  # the caller's .grad untouched
    attention_maps(model, torch.randn(2, 3, 48, 48), layers=("net.layer1", "net.layer4"))
    assert (model.forwards, model.backwards) == (2, 1)


def test_result_contents(resnet):
    x = torch.randn(2, 3, 48, 48)
    res = explain(resnet, x, methods=("gradcam", "gradcampp"))
    assert set(res.maps) == {f"{m}/{l}" for m in ("gradcam", "gradcampp") for l in LAYERS}
    assert set(res.raw_maps) == set(res.maps)
    assert res.feature_sizes == {"layer1": (12, 12), "layer2": (6, 6), "layer3": (3, 3), "layer4": (2, 2)}
    for key, m in res.maps.items():
        layer = key.split("/")[1]
        assert m.shape == (2, 48, 48) and m.dtype == torch.float32 and m.device.type == "cpu"
        assert res.raw_maps[key].shape == (2, *res.feature_sizes[layer])
        assert m.min() >= 0 and m.max() <= 1 and (res.raw_maps[key] >= 0).all()
    with torch.no_grad():
        logits = resnet(x)
    torch.testing.assert_close(res.logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.probs, logits.softmax(1), atol=1e-6, rtol=1e-5)
    assert torch.equal(res.targets, logits.argmax(1))                   # default: predicted class


@pytest.mark.parametrize("kind,size", [("gray", (37, 53)), ("rgb", (61, 45))])
def test_gray_and_rgb_odd_sizes(resnet, kind, size):
    torch.manual_seed(2)
    if kind == "gray":
        x, n = torch.rand(2, 1, *size).expand(-1, 3, -1, -1), 2   # FER faces: one channel repeated
    else:
        x, n = torch.rand(3, *size), 1                            # a single (C,H,W) image
    res = explain(resnet, x, layers=("layer2", "layer4"), methods=("gradcampp", "layercam"))
    att = attention_maps(resnet, x, layers=("layer2", "layer4"))
    for m in list(res.maps.values()) + list(att.maps.values()):
        assert m.shape == (n, *size) and torch.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1


def test_targets(resnet):
    names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    x = torch.randn(2, 3, 48, 48)
    by_index = explain(resnet, x, layers=("layer4",), methods=("gradcam",), targets=torch.tensor([3, 6]))
    by_name = explain(resnet, x, layers=("layer4",), methods=("gradcam",), targets=["happy", "surprise"],
                      class_names=names)
    assert by_name.targets.tolist() == [3, 6]
    torch.testing.assert_close(by_name.maps, by_index.maps, atol=0, rtol=0)
    assert explain(resnet, x, layers=("layer4",), targets="fear", class_names=names).targets.tolist() == [2, 2]
    for bad in ([3], [3, 6, 1], []):   # never truncated or padded
        with pytest.raises(ValueError, match="2 images"):
            explain(resnet, x, layers=("layer4",), targets=bad)
    with pytest.raises(ValueError, match="class_names"):
        explain(resnet, x, layers=("layer4",), targets=["happy", "sad"])
    with pytest.raises(ValueError, match="joy"):
        explain(resnet, x, layers=("layer4",), targets=["happy", "joy"], class_names=names)
    with pytest.raises(ValueError, match="out of range"):
        explain(resnet, x, layers=("layer4",), targets=[0, 7])
    with pytest.raises(ValueError, match="class_names"):
        explain(resnet, x, layers=("layer4",), class_names=names[:3])


def test_unknown_layer_method_mode(resnet):
    assert METHODS == ("gradcam", "gradcampp", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam",
                       "ablationcam", "guidedbackprop", "guidedgradcam", "fullgrad")
    assert GRADIENT_METHODS == METHODS[:5]
    x = torch.randn(1, 3, 48, 48)
    with pytest.raises(ValueError, match=r"layer9.*conv1, layer1, layer2, layer3, layer4.*named_modules"):
        explain(resnet, x, layers=("layer4", "layer9"))
    with pytest.raises(ValueError, match="gradcam, gradcampp, hirescam, xgradcam, layercam, eigencam"):
        explain(resnet, x, methods=("gradcam", "eigen-cam"))
    with pytest.raises(ValueError, match="bilinear"):
        explain(resnet, x, upsample="cubic")
    with pytest.raises(ValueError, match="feature map"):
        explain(resnet, x, layers=("fc",))
    assert no_hooks(resnet)
    # any dotted module name works
    res = explain(resnet, x, layers=("layer4.2.conv2",), methods=("gradcam",))
    assert res.feature_sizes == {"layer4.2.conv2": (2, 2)}


def test_hooks_removed_and_mode_restored(resnet):
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    model.train()
    model.layer1.eval()  # a mixed mode must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    own = model.layer2.register_forward_hook(lambda *a: None)   # the caller's hook stays
    x = torch.randn(2, 3, 32, 32)
    explain(model, x, methods=GRADIENT_METHODS)
    attention_maps(model, x)
    with pytest.raises(ValueError, match="out of range"):   # raised inside the hooks' context
        explain(model, x, targets=[0, 5])
    with pytest.raises(RuntimeError, match="boom"):
        with LayerHooks(model, LAYERS) as hooks:
            assert not model.training and len(model.layer3._forward_hooks) == 1
            hooks(x)
            raise RuntimeError("boom")
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert list(model.layer2._forward_hooks) == [own.id]
    own.remove()
    assert no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_hooks_with_inplace_ops_after_layer(resnet):
    """layer4.2.bn2's output gets `out += identity` and an in-place ReLU in torchvision's BasicBlock.
    The recorded activation must be bn2's, and its gradient dS/d(bn2) = fc_w[t]/4 * [layer4 > 0]."""
    x = torch.randn(2, 3, 48, 48, requires_grad=True)
    with torch.no_grad():
        reference = resnet(x)
    t = 3
    with LayerHooks(resnet, ["layer4.2.bn2", "layer4"]) as hooks:
        logits = hooks(x)
        torch.autograd.grad(logits[:, t].sum(), [hooks.outputs["layer4.2.bn2"], hooks.outputs["layer4"]])
        bn2, out = hooks.activations["layer4.2.bn2"], hooks.activations["layer4"]
        grad = hooks.gradients["layer4.2.bn2"]
    torch.testing.assert_close(logits.detach(), reference)   # hooks do not change the output
    assert (bn2 < 0).any() and not torch.equal(bn2, out)       # not overwritten downstream
    expected = resnet.fc.weight[t][None, :, None, None].detach() / 4 * (out > 0)
    torch.testing.assert_close(grad, expected)


def test_single_method_object(resnet):
    from gradcam import GradCAMPlusPlus
    x = torch.randn(2, 3, 48, 48)
    a = GradCAMPlusPlus()(resnet, x, layers=("layer3",), targets=[1, 2])
    b = explain(resnet, x, layers=("layer3",), methods=("gradcampp",), targets=[1, 2])
    torch.testing.assert_close(a.maps, b.maps, atol=0, rtol=0)
    assert issubclass(ScoreCAM, BaseCAM)


# ---------------------------------------------------------------------------------------------------
# Overlays

def test_overlay():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    heat = rng.random((37, 53)).astype(np.float32)
    for image in (gray, gray[:, :, None], rgb):
        out = overlay(image, heat)
        assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(rgb, heat, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(gray, heat, alpha=0.0), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(overlay(rgb, heat, alpha=1.0), colorize(heat))
    # jet: 1 -> dark red (0.5, 0, 0), 0 -> dark blue (0, 0, 0.5); 0.5 * 100 + 0.5 * 128 = 114
    face = np.full((1, 2), 100, np.uint8)
    np.testing.assert_array_equal(overlay(face, np.array([[1.0, 0.0]])),
                                  [[[114, 50, 50], [50, 50, 114]]])
    assert not np.array_equal(colorize(heat, "viridis"), colorize(heat, "jet"))
    with pytest.raises(ValueError, match="uint8"):
        overlay(rgb.astype(np.float32), heat)
    with pytest.raises(ValueError, match="resize"):
        overlay(rgb, heat[:-1])
    with pytest.raises(ValueError, match="alpha"):
        overlay(rgb, heat, alpha=1.5)
    with pytest.raises(ValueError, match="colormap"):
        overlay(rgb, heat, colormap="nocolour")
