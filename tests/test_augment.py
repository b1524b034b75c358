"""Batched augmentations: exact geometry against torch.rot90 and torchvision, RandomErasing rectangles,
mixup/CutMix targets that match the pixels, and repeatability from a generator."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from expression.training.augment import mix_batch, one_hot, random_erase, random_rotate_scale, rotate_scale


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n=4, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed))


# ---------------------------------------------------------------------------------------------------
# Rotation and zoom


def test_zero_angle_unit_scale_is_identity():
    x = images(3, 3, 7, 10)
    torch.testing.assert_close(rotate_scale(x, torch.zeros(3), torch.ones(3)), x, rtol=0, atol=1e-6)
    g = gen()
    state = g.get_state()
    assert random_rotate_scale(x, g, degrees=0, scale=0) is x
    assert torch.equal(g.get_state(), state)  # no draws consumed


@pytest.mark.parametrize("channels", [1, 3])
def test_90_degrees_is_rot90_counter_clockwise(channels):
    x = images(2, channels, 6, 6)
    ours = rotate_scale(x, torch.tensor([90.0, -90.0]), torch.ones(2))
    # torch.rot90 with k=1 over (H, W) turns the picture counter-clockwise on screen.
    torch.testing.assert_close(ours[0], torch.rot90(x[0], 1, (1, 2)), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours[1], torch.rot90(x[1], -1, (1, 2)), rtol=0, atol=1e-5)


def test_matches_torchvision_rotate_and_affine_per_image():
    x = images(3, 2, 9, 13)  # non-square: the aspect correction must rotate, not shear
    angles, factors = torch.tensor([17.0, -40.0, 90.0]), torch.tensor([1.0, 0.7, 1.25])
    ours = rotate_scale(x, angles, factors)
    for i in range(3):
        # torchvision's F.affine counts the angle clockwise, F.rotate counter-clockwise.
        ref = TF.affine(x[i], angle=-float(angles[i]), translate=[0, 0], scale=float(factors[i]),
                        shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(ours[i], ref, rtol=0, atol=1e-5)
    ref = TF.rotate(x[0], 17.0, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours[0], ref, rtol=0, atol=1e-5)


def test_scale_two_doubles_a_centred_pattern():
    size = 16
    offset = torch.arange(size, dtype=torch.float32) - (size - 1) / 2  # pixel centre minus image centre
    ramp = offset.view(1, 1, 1, size).expand(1, 1, size, size)
    out = rotate_scale(ramp, torch.zeros(1), torch.tensor([2.0]))
    # Output pixel at offset d reads the input at d / 2; bilinear is exact on a linear ramp.
    torch.testing.assert_close(out[0, 0], ramp[0, 0] / 2, rtol=0, atol=1e-5)

    block = torch.zeros(1, 1, size, size)
    block[..., 6:10, 6:10] = 1.0  # 4x4 centred
    out = rotate_scale(block, torch.zeros(1), torch.tensor([2.0]))[0, 0]
    bright = (out > 0.5).nonzero()
    assert bright[:, 0].min() == 4 and bright[:, 0].max() == 11  # 8x8 centred
    assert bright[:, 1].min() == 4 and bright[:, 1].max() == 11
    assert len(bright) == 64


@pytest.mark.parametrize("channels", [1, 3])
def test_random_rotate_scale_repeatable_and_drawn_per_image(channels):
    x = images(1, channels, 8, 8).expand(4, -1, -1, -1)  # the same picture four times
    a = random_rotate_scale(x, gen(5), degrees=30, scale=0.2)
    b = random_rotate_scale(x, gen(5), degrees=30, scale=0.2)
    assert a.shape == x.shape
    assert torch.equal(a, b)
    for i in range(1, 4):
        assert not torch.allclose(a[0], a[i])  # each image got its own angle and zoom
    assert not torch.equal(a, random_rotate_scale(x, gen(6), degrees=30, scale=0.2))


def test_random_rotate_scale_batch_equals_one_by_one():
    x = images(3, 1, 8, 8)
    g = gen(2)
    angles = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * 20
    factors = 1 + (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * 0.1
    batch = random_rotate_scale(x, gen(2), degrees=20, scale=0.1)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], rotate_scale(x[i:i + 1], angles[i:i + 1], factors[i:i + 1]))


# ---------------------------------------------------------------------------------------------------
# Random erasing


def test_erase_p0_is_identity_without_draws():
    x = images()
    g = gen()
    state = g.get_state()
    assert random_erase(x, g, p=0) is x
    assert torch.equal(g.get_state(), state)


def test_erase_p1_one_rectangle_per_image_within_area_and_ratio():
    n, c, h, w = 64, 3, 12, 16
    x = images(n, c, h, w) + 1.0  # no pixel equals the fill value
    before = x.clone()
    area, ratio, value = (0.05, 0.3), (0.5, 2.0), -7.0
    out = random_erase(x, gen(1), p=1.0, area=area, ratio=ratio, value=value)
    assert torch.equal(x, before)  # the input is not modified
    erased = out == value
    assert torch.equal(erased, erased[:, :1].expand_as(erased))  # the same rectangle in every channel
    assert torch.equal(out[~erased], x[~erased])  # everything else untouched
    heights, widths = [], []
    for mask in erased[:, 0]:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert len(rows) > 0, "p=1: every image is erased (a fitting rectangle is found within 10 tries)"
        eh, ew = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(mask.sum()) == eh * ew  # one solid axis-aligned rectangle
        assert eh < h and ew < w
        # Sides are rounded to whole pixels, so the drawn area and aspect are within half a pixel.
        assert (eh - 0.5) * (ew - 0.5) <= area[1] * h * w and (eh + 0.5) * (ew + 0.5) >= area[0] * h * w
        assert (eh - 0.5) / (ew + 0.5) <= ratio[1] and (eh + 0.5) / (ew - 0.5) >= ratio[0]
        heights.append(eh)
        widths.append(ew)
    assert len(set(zip(heights, widths))) > 5  # sizes are drawn per image


def test_erase_rate_is_p():
    x = torch.ones(2000, 1, 8, 8)
    out = random_erase(x, gen(3), p=0.5)
    fraction = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.45 <= fraction <= 0.55


def test_erase_repeatable():
    x = images(16, 1, 8, 8)
    a = random_erase(x, gen(4), p=0.5)
    assert torch.equal(a, random_erase(x, gen(4), p=0.5))
    assert not torch.equal(a, random_erase(x, gen(9), p=0.5))


def test_erase_gives_up_when_nothing_fits():
    x = images(8, 1, 4, 4) + 1.0
    out = random_erase(x, gen(0), p=1.0, area=(0.9, 0.99), ratio=(1.0, 1.0))  # 4x4 sides never < 4
    assert torch.equal(out, x)


# ---------------------------------------------------------------------------------------------------
# mixup and CutMix


def test_one_hot():
    t = one_hot(torch.tensor([2, 0]), 3)
    assert t.dtype == torch.float32
    assert torch.equal(t, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_mix_off_gives_one_hot_and_same_images():
    x, labels = images(), torch.tensor([0, 3, 1, 1])
    g = gen()
    state = g.get_state()
    mixed, targets = mix_batch(x, labels, 4, g)
    assert mixed is x
    assert torch.equal(targets, one_hot(labels, 4))
    assert torch.equal(g.get_state(), state)


def constant_batch(n=4, h=10, w=12):
    """Image i is the constant i + 1, so every output pixel tells which source it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_targets_equal_pixel_fractions(seed):
    n, h, w = 4, 10, 12
    x, labels = constant_batch(n, h, w), torch.tensor([2, 0, 3, 1])
    mixed, targets = mix_batch(x, labels, 5, gen(seed), cutmix_alpha=1.0)
    torch.testing.assert_close(targets.sum(1), torch.ones(n))
    for i in range(n):
        own, partner = mixed[i] == i + 1, mixed[i] == n - i
        assert torch.all(own | partner)
        pasted = partner[0]
        if pasted.any():  # the pasted region is one rectangle
            rows, cols = pasted.any(1).nonzero()[:, 0], pasted.any(0).nonzero()[:, 0]
            assert int(pasted.sum()) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert targets[i, labels[i]].item() == pytest.approx(own[0].float().mean().item(), abs=1e-6)
        assert targets[i, labels[n - 1 - i]].item() == pytest.approx(pasted.float().mean().item(), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_mixup_pixels_use_the_target_lambda(seed):
    x, labels = images(4, 3, 6, 6), torch.tensor([0, 1, 2, 3])
    mixed, targets = mix_batch(x, labels, 4, gen(seed), mixup_alpha=0.4)
    lam = targets[0, 0].item()
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(targets, one_hot(labels, 4) * lam + one_hot(labels.flip(0), 4) * (1 - lam))
    torch.testing.assert_close(mixed, x * lam + x.flip(0) * (1 - lam))


def test_mix_targets_sum_to_one_with_shared_labels_and_odd_batch():
    x, labels = images(5, 1, 6, 6), torch.tensor([1, 1, 0, 2, 1])
    for seed in range(4):
        mixed, targets = mix_batch(x, labels, 3, gen(seed), mixup_alpha=0.5, cutmix_alpha=1.0)
        torch.testing.assert_close(targets.sum(1), torch.ones(5))
        torch.testing.assert_close(targets[0], one_hot(labels, 3)[0])  # partner has the same label
        torch.testing.assert_close(mixed[2], x[2])  # the middle image is its own partner


def test_mix_switches_between_cutmix_and_mixup_and_is_repeatable():
    x, labels = constant_batch(4, 8, 8), torch.tensor([0, 1, 2, 3])
    modes = set()
    for seed in range(20):
        mixed, targets = mix_batch(x, labels, 4, gen(seed), mixup_alpha=1.0, cutmix_alpha=1.0)
        again = mix_batch(x, labels, 4, gen(seed), mixup_alpha=1.0, cutmix_alpha=1.0)
        assert torch.equal(mixed, again[0]) and torch.equal(targets, again[1])
        whole = torch.all((mixed[0] == 1) | (mixed[0] == 4))
        modes.add("cutmix" if whole else "mixup")
    assert modes == {"cutmix", "mixup"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, labels = images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    cpu = random_erase(random_rotate_scale(x, gen(1), 15, 0.1), gen(2), p=1.0)
    gpu = random_erase(random_rotate_scale(x.cuda(), gen(1), 15, 0.1), gen(2), p=1.0)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    mixed, targets = mix_batch(x.cuda(), labels.cuda(), 4, gen(3), cutmix_alpha=1.0)
    assert mixed.device.type == targets.device.type == "cuda"
    torch.testing.assert_close(mixed.cpu(), mix_batch(x, labels, 4, gen(3), cutmix_alpha=1.0)[0])
