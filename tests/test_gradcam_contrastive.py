"""Contrastive targets ("class B rather than class A", score logit[B] - logit[A]): maps worked out by hand
with explicit autograd on a tiny network, linearity of the channel weights in the score, the text form
"happy-vs-neutral", per-image lists, test-time-augmentation views, the pixel methods and the extra-pass
methods (Score-CAM, Ablation-CAM)."""
import pytest
import torch
from torch import nn

from gradcam import (AblationCAM, BaseCAM, CAMResult, Contrast, GradCAM, HiResCAM, ScoreCAM, View, explain,
                     explain_views, parse_contrast)
from gradcam.base import parse_target_pairs, parse_targets

pytestmark = pytest.mark.usefixtures("single_thread")

FER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NAMES = ("neutral", "sad", "happy")  # the tiny network's three classes
LAYER = "act"


class ContrastNet(nn.Module):
    """x (N,1,4,4) -> 3x3 conv -> ReLU ("act", the explained layer, A) -> 1x1 conv -> ReLU -> spatial mean
    -> linear, 3 classes. The second ReLU switches pixels off per channel, so dS/dA varies over the
    pixels and HiResCAM (pixel-wise g A) differs from Grad-CAM (mean g per channel)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.mix = nn.Conv2d(3, 3, 1)
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            for p in self.parameters():
                # quarter steps: fixed, readable weights with both signs
                p.copy_((torch.randn(p.shape, generator=g) * 4).round() / 4)

    def after_act(self, a):
        return self.head(torch.relu(self.mix(a)).mean((2, 3)))

    def forward(self, x):
        return self.after_act(self.act(self.conv(x)))


def tiny_batch(n=2):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(5))


def minmax(m):
    """The library's per-image normalisation, written out: (m - min) / (max(m - min) + 1e-7)."""
    shifted = m - m.flatten(1).min(1).values[:, None, None]
    return shifted / (shifted.flatten(1).max(1).values[:, None, None] + 1e-7)


def hand_grads(model, x, b, a):
    """A and dS/dA with S = logit[b] - logit[a] per image, by explicit autograd on the layer's output."""
    rows = torch.arange(len(x))
    acts = model.act(model.conv(x)).detach().requires_grad_(True)
    logits = model.after_act(acts)
    score = (logits[rows, torch.as_tensor(b)] - logits[rows, torch.as_tensor(a)]).sum()
    grads, = torch.autograd.grad(score, acts)
    return acts.detach(), grads


@pytest.fixture(scope="module")
def net():
    return ContrastNet().eval()


# ---------------------------------------------------------------------------------------------------
# 1. Hand-computed contrastive maps


def test_contrastive_gradcam_and_hirescam_by_hand(net):
    x = tiny_batch()
    b, a = [2, 0], [0, 1]                              # image 0: 2 rather than 0; image 1: 0 rather than 1
    acts, grads = hand_grads(net, x, b, a)
    # the hand model is worth testing: gradients vary over the pixels (the mix ReLU) and are not all 0
    assert (grads != 0).any() and (grads.flatten(2).std(2) > 0).any()

    # Grad-CAM eq. 1-2: alpha_k = spatial mean of g^k, map = ReLU(sum_k alpha_k A^k), normalised twice
    # (normalise, upsample - the identity here, A being 4x4 like x - normalise)
    alpha = grads.mean((2, 3))
    gradcam_raw = torch.relu((alpha[:, :, None, None] * acts).sum(1))
    hirescam_raw = torch.relu((grads * acts).sum(1))
    assert (gradcam_raw > 0).any() and (hirescam_raw > 0).any()

    targets = [Contrast(2, 0), Contrast("neutral", "sad")]
    res = explain(net, x, layers=(LAYER,), methods=("gradcam", "hirescam"), targets=targets, class_names=NAMES)
    assert res.targets.tolist() == b and res.foils.tolist() == a
    torch.testing.assert_close(res.raw_maps["gradcam/act"], gradcam_raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.maps["gradcam/act"], minmax(minmax(gradcam_raw)), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.raw_maps["hirescam/act"], hirescam_raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.maps["hirescam/act"], minmax(minmax(hirescam_raw)), atol=1e-5, rtol=0)

    # the foil matters: explaining B alone gives another map
    plain = explain(net, x, layers=(LAYER,), methods=("gradcam", "hirescam"), targets=b)
    assert plain.foils.tolist() == [-1, -1]
    assert (plain.raw_maps["hirescam/act"] - res.raw_maps["hirescam/act"]).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------------
# 2. Linearity: a contrast's weights are B's weights minus A's


class Recorder:
    """Mixin: keeps what ``weights`` (or ``cam`` before the ReLU) returns in each run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []


class RecordedGradCAM(Recorder, GradCAM):
    def weights(self, activations, grads):
        self.seen.append(super().weights(activations, grads))
        return self.seen[-1]


class RecordedHiResCAM(Recorder, HiResCAM):
    def cam(self, activations, grads):
        self.seen.append(super().cam(activations, grads))  # before the ReLU: signed, so linear
        return self.seen[-1]


class RecordedScoreCAM(Recorder, ScoreCAM):
    def weights(self, activations, grads=None):
        self.seen.append(super().weights(activations, grads))
        return self.seen[-1]


class RecordedAblationCAM(Recorder, AblationCAM):
    def weights(self, activations, grads=None):
        self.seen.append(super().weights(activations, grads))
        return self.seen[-1]


def record(net, x, targets):
    methods = [RecordedGradCAM(), RecordedHiResCAM(), RecordedScoreCAM(batch_size=4), RecordedAblationCAM(batch_size=4)]
    res = BaseCAM.run(net, x, methods, (LAYER,), targets=targets)
    return res, [m.seen[0] for m in methods]


def test_contrast_weights_are_differences(net):
    x = tiny_batch(3)
    b, a = [2, 0, 1], [0, 1, 2]
    res_c, (gc_c, hr_c, sc_c, ab_c) = record(net, x, [Contrast(t, f) for t, f in zip(b, a)])
    res_b, (gc_b, hr_b, sc_b, ab_b) = record(net, x, b)
    res_a, (gc_a, hr_a, sc_a, ab_a) = record(net, x, a)
    # the gradient methods: dS/dA is linear in S, so Grad-CAM's weights and HiResCAM's signed map are too
    torch.testing.assert_close(gc_c, gc_b - gc_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hr_c, hr_b - hr_a, atol=1e-6, rtol=1e-5)
    assert (gc_c - gc_b).abs().max() > 1e-3
    # Score-CAM (paper): each channel's masked-image softmax[B] - softmax[A]
    torch.testing.assert_close(sc_c, sc_b - sc_a, atol=1e-6, rtol=1e-5)
    # Score-CAM (pytorch-grad-cam variant): a softmax over channels of logit[B] - logit[A]; the plain
    # weights' logs are the logits up to a per-image constant, which the softmax drops
    pgc = {}
    for name, targets in (("c", [Contrast(t, f) for t, f in zip(b, a)]), ("b", b), ("a", a)):
        method = RecordedScoreCAM(batch_size=4, variant="pytorch-grad-cam")
        BaseCAM.run(net, x, [method], (LAYER,), targets=targets)
        pgc[name] = method.seen[0]
    torch.testing.assert_close(pgc["c"], torch.softmax(pgc["b"].log() - pgc["a"].log(), 1), atol=1e-6, rtol=1e-5)
    # Ablation-CAM: plain weights are relative drops (y - y^k) / y, a contrast's the absolute drop of
    # y_B - y_A, i.e. w_B y_B - w_A y_A
    y_b = res_b.logits.gather(1, res_b.targets[:, None])
    y_a = res_a.logits.gather(1, res_a.targets[:, None])
    torch.testing.assert_close(ab_c, ab_b * y_b - ab_a * y_a, atol=1e-5, rtol=1e-4)


def test_ablationcam_contrast_by_hand_when_the_foil_wins(net):
    """When the model prefers A, y = logit_B - logit_A < 0: the relative drop (y - y^k) / y would turn
    every weight round, so a contrast's weight is the absolute drop y - y^k, worked out here by zeroing
    each channel of A and re-running the rest of the network."""
    x = tiny_batch(3)
    with torch.no_grad():
        logits = net(x)
        b, a = logits.argmin(1), logits.argmax(1)
        rows = torch.arange(len(x))
        acts = net.act(net.conv(x))
        y = logits[rows, b] - logits[rows, a]
        assert (y < 0).all()
        drops = []
        for k in range(acts.shape[1]):
            ablated = acts.clone()
            ablated[:, k] = 0
            out = net.after_act(ablated)
            drops.append(y - (out[rows, b] - out[rows, a]))
        drops = torch.stack(drops, 1)
    assert (drops > 0).any()                            # some channel supports B over A
    _, (_, _, _, w) = record(net, x, [Contrast(int(t), int(f)) for t, f in zip(b, a)])
    torch.testing.assert_close(w, drops, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# 3. Text form


@pytest.mark.parametrize("text, names, expected", [
    ("happy-vs-neutral", FER, Contrast(3, 6)),
    ("neutral-vs-happy", FER, Contrast(6, 3)),
    (" happy-vs-neutral ", FER, Contrast(3, 6)),
    ("3-vs-4", None, Contrast(3, 4)),
    ("3-vs-4", FER, Contrast(3, 4)),
    ("happy-vs-0", FER, Contrast(3, 0)),
])
def test_parse_contrast(text, names, expected):
    assert parse_contrast(text, names) == expected


@pytest.mark.parametrize("text, names, message", [
    ("sleepy-vs-happy", FER, "unknown class name 'sleepy'"),
    ("happy-vs-happy", FER, "same class twice"),
    ("happy-vs-3", FER, "same class twice"),
    ("4-vs-4", None, "same class twice"),
    ("3-vs-9", FER, "out of range"),
    ("happy-vs-neutral", None, "class_names was not given"),
    ("happy", FER, "TARGET-vs-FOIL"),
    ("happy-vs-", FER, "TARGET-vs-FOIL"),
    ("-vs-happy", FER, "TARGET-vs-FOIL"),
    ("happy-vs-sad-vs-fear", FER, "TARGET-vs-FOIL"),
    ("happy vs sad", FER, "TARGET-vs-FOIL"),
    ("", FER, "TARGET-vs-FOIL"),
    ("-1-vs-2", FER, "unknown class name '-1'"),
])
def test_parse_contrast_errors(text, names, message):
    with pytest.raises(ValueError, match=message):
        parse_contrast(text, names)


def test_contrast_object_and_target_errors(net):
    with pytest.raises(ValueError, match="with itself"):
        Contrast(1, 1)
    with pytest.raises(TypeError):
        Contrast(1.5, 0)
    assert Contrast(torch.tensor(2), torch.tensor(0)) == Contrast(2, 0)
    x = tiny_batch()
    with pytest.raises(ValueError, match="with itself"):         # same class, once by name, once by index
        explain(net, x, layers=(LAYER,), methods=("gradcam",), targets=Contrast("happy", 2), class_names=NAMES)
    with pytest.raises(ValueError, match="foil class"):
        explain(net, x, layers=(LAYER,), methods=("gradcam",), targets=Contrast(0, 3))
    with pytest.raises(ValueError, match="class_names was not given"):
        explain(net, x, layers=(LAYER,), methods=("gradcam",), targets=Contrast("happy", "sad"))
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        explain(net, x, layers=(LAYER,), methods=("gradcam",), targets=[Contrast(0, 1)] * 3)
    with pytest.raises(ValueError, match="parse_target_pairs"):   # not silently explained as B alone
        parse_targets(Contrast(0, 1), 2)
    assert parse_target_pairs([Contrast(0, 1), 2], 2) == ([0, 2], [1, -1])
    assert parse_target_pairs([0, 2], 2) == ([0, 2], None)


# ---------------------------------------------------------------------------------------------------
# 4. Per-image lists, views, methods without a target, pixel methods


def test_per_image_list_equals_one_by_one(net):
    x = tiny_batch(3)
    targets = [Contrast("happy", "neutral"), "sad", Contrast(0, 1)]
    methods = ("gradcam", "gradcampp", "hirescam", "xgradcam", "layercam", "scorecam", "ablationcam")
    # batch size 2: Score-CAM and Ablation-CAM chunks straddle images with different foils
    res = explain(net, x, layers=(LAYER,), methods=methods, targets=targets, class_names=NAMES,
                  scorecam_batch_size=2)
    assert res.targets.tolist() == [2, 1, 0] and res.foils.tolist() == [0, -1, 1]
    for i, target in enumerate(targets):
        one = explain(net, x[i:i + 1], layers=(LAYER,), methods=methods, targets=target, class_names=NAMES)
        for key in res.maps:
            torch.testing.assert_close(res.maps[key][i:i + 1], one.maps[key], atol=1e-5, rtol=0)


def test_views_pass_the_contrast_through(net):
    x = tiny_batch()
    contrast = Contrast(2, 0)
    views = [View(), View(flip=True)]
    kwargs = dict(layers=(LAYER,), methods=("gradcam", "hirescam"))
    res = explain_views(net, x, views, targets=contrast, **kwargs)
    assert res.targets.tolist() == [2, 2] and res.foils.tolist() == [0, 0]
    straight = explain(net, x, targets=contrast, **kwargs)
    mirrored = explain(net, x.flip(-1), targets=contrast, **kwargs)
    for key in res.maps:
        back = mirrored.maps[key].flip(-1)
        assert (back - straight.maps[key]).abs().max() > 0.05        # the net is not mirror-symmetric
        torch.testing.assert_close(res.maps[key], minmax((straight.maps[key] + back) / 2), atol=1e-5, rtol=0)
    plain = explain_views(net, x, views, targets=2, **kwargs)
    assert plain.foils.tolist() == [-1, -1]
    assert (plain.maps["hirescam/act"] - res.maps["hirescam/act"]).abs().max() > 0.05
    mixed = explain_views(net, x, views, targets=[contrast, 1], **kwargs)
    assert mixed.foils.tolist() == [0, -1]
    torch.testing.assert_close(mixed.maps["gradcam/act"][:1], res.maps["gradcam/act"][:1], atol=1e-5, rtol=0)


def test_eigencam_ignores_the_contrast(net):
    x = tiny_batch()
    res = explain(net, x, layers=(LAYER,), methods=("eigencam",), targets=Contrast(2, 0))
    plain = explain(net, x, layers=(LAYER,), methods=("eigencam",))
    assert res.foils.tolist() == [0, 0]
    torch.testing.assert_close(res.maps["eigencam/act"], plain.maps["eigencam/act"], atol=0, rtol=0)


def test_camresult_foils_default_to_none_marker():
    res = CAMResult(maps={}, raw_maps={}, logits=torch.zeros(2, 3), probs=torch.zeros(2, 3),
                    targets=torch.tensor([1, 2]))
    assert res.foils.tolist() == [-1, -1]


class FunctionalNet(nn.Module):
    """No nn.ReLU module (guided backprop changes only those) and no bias (FullGrad keeps its input
    term alone): both pixel maps are then plain functions of the input gradient."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_pixel_methods_backpropagate_the_contrast():
    net = FunctionalNet().eval()
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(8))
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    g, = torch.autograd.grad((logits[:, 1] - logits[:, 2]).sum(), xg)
    res = explain(net, x, layers=("conv",), methods=("gradcam", "guidedbackprop", "guidedgradcam", "fullgrad"),
                  targets=Contrast(1, 2))
    saliency = g.abs().amax(1)                          # Simonyan et al. 2014: max over channels of |g|
    torch.testing.assert_close(res.maps["guidedbackprop/input"], minmax(saliency), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.maps["guidedgradcam/conv"], minmax(saliency * res.maps["gradcam/conv"]),
                               atol=1e-5, rtol=0)
    # FullGrad's input term, paper variant: |g x| normalised over all channels of an image, summed
    # over channels, normalised again
    term = (g * x).abs()
    psi = minmax(term.reshape(2, -1, 5)).reshape(term.shape).sum(1)
    torch.testing.assert_close(res.maps["fullgrad/input"], minmax(psi), atol=1e-5, rtol=0)
    plain = explain(net, x, layers=("conv",), methods=("guidedbackprop",), targets=1)
    assert (plain.maps["guidedbackprop/input"] - res.maps["guidedbackprop/input"]).abs().max() > 0.05
