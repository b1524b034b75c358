"""expression.core.tta: the views each mode builds and the probabilities averaged over them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from expression.core.tta import (TENCROP_SCALE, TTA_MODES, ten_crop_offsets, tta_geometry, tta_probs, tta_views,
                                 views_per_image)
from gradcam.views import apply_view

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(seed=0, mirror_invariant=False) -> nn.Module:
    """Conv -> ReLU -> global average pool -> linear: mirror-invariant when the kernels are symmetric."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    if mirror_invariant:
        with torch.no_grad():
            conv.weight.copy_((conv.weight + conv.weight.flip(3)) / 2)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()


class CountingModel(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x):
        self.batches.append(len(x))
        return self.inner(x)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_views_shapes_and_counts(mode):
    images = torch.randn(2, 3, 48, 48)
    views = tta_views(images, mode)
    assert len(views) == views_per_image(mode) == {"none": 1, "flip": 2, "tencrop": 10}[mode]
    assert all(v.shape == images.shape for v in views)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown TTA mode"):
        tta_views(torch.zeros(1, 3, 8, 8), "fivecrop")


def test_none_and_flip_views_are_the_face_and_its_exact_mirror():
    images = torch.randn(3, 3, 16, 16)
    assert torch.equal(tta_views(images, "none")[0], images)
    face, mirror = tta_views(images, "flip")
    assert torch.equal(face, images)
    assert torch.equal(mirror, images[..., torch.arange(15, -1, -1)])  # column j shows column 15 - j


def test_ten_crop_offsets_are_corners_and_centre():
    assert math.ceil(48 * TENCROP_SCALE) == 54
    assert ten_crop_offsets(48, 54) == [(0, 0), (0, 6), (6, 0), (6, 6), (3, 3)]
    assert ten_crop_offsets(32, 36) == [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]


def test_ten_crop_views_of_a_constant_face_are_constant():
    for view in tta_views(torch.full((2, 3, 48, 48), 0.7), "tencrop"):
        torch.testing.assert_close(view, torch.full_like(view, 0.7))


def test_ten_crops_are_crops_of_the_bilinear_upscale_and_their_mirrors():
    # A horizontal ramp x[.., j] = j stays linear under bilinear resizing (align_corners=False): output
    # column j' samples source position (j' + 0.5) * 48 / 54 - 0.5, clamped to the image.
    ramp = torch.arange(48.0).expand(1, 3, 48, 48).contiguous()
    views = tta_views(ramp, "tencrop")
    source = ((torch.arange(54.0) + 0.5) * 48 / 54 - 0.5).clamp(0, 47)
    for view, (top, left) in zip(views[:5], ten_crop_offsets(48, 54)):
        torch.testing.assert_close(view, source[left:left + 48].expand(1, 3, 48, 48))
    centre = F.interpolate(ramp * ramp.transpose(2, 3), size=(54, 54), mode="bilinear", align_corners=False)
    torch.testing.assert_close(tta_views(ramp * ramp.transpose(2, 3), "tencrop")[4], centre[..., 3:51, 3:51])
    for crop, mirrored in zip(views[:5], views[5:]):
        assert torch.equal(mirrored, crop.flip(3))


def reference_views(images, mode):
    """The views written out by hand: one bilinear upscale for all ten crops, then slices and mirrors."""
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, images.flip(3)]
    size = images.shape[-1]
    big = math.ceil(size * TENCROP_SCALE)
    upscaled = F.interpolate(images, size=(big, big), mode="bilinear", align_corners=False)
    crops = [upscaled[..., top:top + size, left:left + size] for top, left in ten_crop_offsets(size, big)]
    return crops + [crop.flip(3) for crop in crops]


@pytest.mark.parametrize("size", [48, 44, 17])
@pytest.mark.parametrize("mode", TTA_MODES)
def test_views_and_geometry_agree_bit_for_bit(mode, size):
    """The classifier's views, the maps' View geometry and views written out by hand are the same
    pixels, exactly, on random faces of any size."""
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    views, geometry = tta_views(images, mode), tta_geometry(mode, size)
    assert len(views) == len(geometry) == views_per_image(mode)
    for view, by_geometry, by_hand in zip(views, [apply_view(images, g) for g in geometry],
                                          reference_views(images, mode)):
        assert torch.equal(view, by_geometry) and torch.equal(view, by_hand)


def test_non_square_faces_are_refused():
    with pytest.raises(ValueError, match="square"):
        tta_views(torch.zeros(1, 3, 8, 10), "none")


def test_none_probs_are_the_plain_softmax():
    model, x = tiny_model(), torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(tta_probs(model, x, "none"), model(x).softmax(1))


def test_flip_probs_average_the_face_and_its_mirror():
    model, x = tiny_model(), torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
        probs, plain = tta_probs(model, x, "flip"), tta_probs(model, x, "none")
    torch.testing.assert_close(probs, expected)
    assert not torch.allclose(probs, plain)  # the mirror does matter for this model


def test_flip_changes_nothing_for_a_mirror_invariant_model():
    model, x = tiny_model(mirror_invariant=True), torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(tta_probs(model, x, "flip"), tta_probs(model, x, "none"))


def test_tencrop_is_one_forward_pass_averaging_each_face_own_views():
    model, x = CountingModel(tiny_model(seed=1)), torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        probs = tta_probs(model, x, "tencrop")
        assert model.batches == [30]
        expected = torch.stack([model.inner(v).softmax(1) for v in tta_views(x, "tencrop")]).mean(0)
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_probs_are_distributions(mode):
    with torch.no_grad():
        probs = tta_probs(tiny_model(), torch.randn(5, 3, 16, 16) * 10, mode)
    assert probs.shape == (5, 5) and probs.dtype == torch.float32 and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
