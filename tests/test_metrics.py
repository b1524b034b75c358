"""gradcam.metrics and gradcam.sanity: exact values on toy models, hand-made maps and masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradcam import explain
from gradcam.metrics import (auc, centre_gaussian_maps, confidence_change, energy_pointing_game,
                             explanation_images, gaussian_blur, linear_imputation, make_baseline,
                             noisy_linear_imputation, perturbation_curves, pointing_game, random_maps,
                             rank_average, rank_pixels, road, spearman, step_counts)
from gradcam.sanity import cascading_randomization, map_correlation, randomization_stages, reinitialize_


pytestmark = pytest.mark.usefixtures("single_thread")


class Linear2Class(nn.Module):
    """logit_0 = sum_ij w_ij x_0ij (channel 0), logit_1 = 0: a linear score with a known answer."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)

    def forward(self, x):
        score = (x[:, 0] * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def region_model(size=8, scale=10.0):
    """logit_0 = scale * mean of the top-left quadrant: the evidence region is known exactly."""
    weight = torch.zeros(size, size)
    weight[: size // 2, : size // 2] = scale / (size // 2) ** 2
    return Linear2Class(weight)


# ---------------------------------------------------------------------------------------------------
# Deletion / insertion


def test_exact_auc_on_four_pixels():
    # 2x2 image of ones, zero baseline, logit = 4a + 3b + 2c + 1d, one pixel per step.
    model = Linear2Class(torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    x = torch.ones(1, 1, 2, 2)
    base = torch.zeros_like(x)
    best = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    curves = perturbation_curves(model, x, best, [0], base, steps=4, score="logit")
    assert curves.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curves.deletion[0].tolist() == [10, 6, 3, 1, 0]
    assert curves.insertion[0].tolist() == [0, 4, 7, 9, 10]
    # Trapezoids of width 1/4: (8 + 4.5 + 2 + 0.5) / 4 and (2 + 5.5 + 8 + 9.5) / 4.
    assert curves.deletion_auc().item() == pytest.approx(3.75)
    assert curves.insertion_auc().item() == pytest.approx(6.25)
    worst = perturbation_curves(model, x, -best, [0], base, steps=4, score="logit")
    assert worst.deletion_auc().item() == pytest.approx(6.25)
    assert worst.insertion_auc().item() == pytest.approx(3.75)


def test_ties_are_broken_in_raster_order():
    maps = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 2.0, 1.0]]])
    # Values 2,2,2 at flat 1,2,4 keep that order; then 1,1 at 0,5; then 0 at 3.
    assert rank_pixels(maps)[0].tolist() == [3, 0, 1, 5, 2, 4]
    model = Linear2Class(torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    flat = perturbation_curves(model, torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2), [0],
                               torch.zeros(1, 1, 2, 2), steps=4, score="logit")
    assert flat.deletion[0].tolist() == [10, 6, 3, 1, 0]  # a constant map deletes top-left first


def test_region_first_map_is_best_and_reversed_worst():
    model = region_model()
    x = torch.ones(3, 1, 8, 8) + 0.1 * torch.arange(3.0).view(3, 1, 1, 1)
    region = torch.zeros(8, 8)
    region[:4, :4] = 1
    maps = {"region": region.expand(3, 8, 8), "reversed": (1 - region).expand(3, 8, 8),
            "random": random_maps(3, 8, seed=0)}
    base = make_baseline(x, "zeros", (0.0,), (1.0,))
    res = {k: perturbation_curves(model, x, m, [0, 0, 0], base, steps=8) for k, m in maps.items()}
    dele = {k: r.deletion_auc().mean().item() for k, r in res.items()}
    ins = {k: r.insertion_auc().mean().item() for k, r in res.items()}
    assert dele["region"] < dele["random"] < dele["reversed"]
    assert ins["region"] > ins["random"] > ins["reversed"]
    # The region is the first quarter of the ranking: after 2 of 8 steps the logit is 0, p = 1/2.
    assert res["region"].deletion[:, 2].tolist() == pytest.approx([0.5] * 3)


def test_curves_batched_equal_one_by_one():
    model = region_model()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = random_maps(4, 8, seed=3)
    base = make_baseline(x, "blur", (0.5,), (0.5,), sigma=1.0)
    batch = perturbation_curves(model, x, maps, [0, 1, 0, 1], base, steps=5)
    for i in range(4):
        one = perturbation_curves(model, x[i:i + 1], maps[i:i + 1], [[0, 1, 0, 1][i]], base[i:i + 1], steps=5)
        torch.testing.assert_close(one.deletion[0], batch.deletion[i])
        torch.testing.assert_close(one.insertion[0], batch.insertion[i])


def test_step_counts_and_auc():
    counts = step_counts(48 * 48, 16)
    assert counts[0] == 0 and counts[-1] == 2304 and set(np.diff(counts)) == {144}
    assert step_counts(10, 4) == [0, 2, 5, 8, 10]
    assert auc([0, 0.5, 1], [1, 1, 1]).item() == pytest.approx(1.0)
    assert auc([0, 1], [[0, 1], [1, 1]]).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError):
        step_counts(4, 0)


def test_baselines():
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    zeros = make_baseline(x, "zeros", mean, std)
    torch.testing.assert_close(zeros[0, :, 0, 0], torch.tensor([-2.5, -1.6, -1.0]))
    assert make_baseline(x, "mean", mean, std).abs().max() == 0
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 6, 6), 0.3), 2.0), torch.full((1, 1, 6, 6), 0.3))
    # Blur commutes with normalisation: blurring the model input is blurring the pixels.
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(make_baseline((x - m) / s, "blur", mean, std, 1.5), (gaussian_blur(x, 1.5) - m) / s)
    with pytest.raises(ValueError):
        make_baseline(x, "noise", mean, std)


# ---------------------------------------------------------------------------------------------------
# Average drop / increase in confidence


def test_average_drop_and_increase_by_hand():
    model = Linear2Class(torch.ones(2, 2))  # logit_0 = sum of pixels, p_0 = sigmoid(sum)
    x = torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2)])
    half = torch.full((2, 2, 2), 0.5)
    change = confidence_change(model, x, half, [0, 0], mean=(0.0,), std=(1.0,))
    sig = torch.sigmoid
    assert change.full.tolist() == pytest.approx([sig(torch.tensor(4.0)).item(), sig(torch.tensor(-4.0)).item()])
    assert change.masked.tolist() == pytest.approx([sig(torch.tensor(2.0)).item(), sig(torch.tensor(-2.0)).item()])
    drop_a = (sig(torch.tensor(4.0)) - sig(torch.tensor(2.0))) / sig(torch.tensor(4.0))
    assert change.drop.tolist() == pytest.approx([drop_a.item(), 0.0])  # image b gains: no drop
    assert change.average_drop() == pytest.approx(100 * drop_a.item() / 2)
    assert change.increase_in_confidence() == pytest.approx(50.0)


def test_explanation_image_is_in_pixel_space():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(explanation_images(x, torch.ones(2, 4, 4), mean, std), x)
    # A zero map gives black pixels: the "zeros" baseline of deletion/insertion.
    torch.testing.assert_close(explanation_images(x, torch.zeros(2, 4, 4), mean, std),
                               make_baseline(x, "zeros", mean, std))


# ---------------------------------------------------------------------------------------------------
# ROAD


def test_linear_imputation_reproduces_a_ramp_and_matches_a_sparse_solve():
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramp = (i + 2 * j)[None, None]
    hole = torch.zeros(1, 8, 8, dtype=torch.bool)
    hole[0, 2:6, 3:6] = True
    # Symmetric neighbour weights average an affine function to itself: an interior hole is exact.
    torch.testing.assert_close(linear_imputation(ramp, hole), ramp, atol=1e-4, rtol=0)

    sparse = pytest.importorskip("scipy.sparse")
    splinalg = pytest.importorskip("scipy.sparse.linalg")
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 7, 7, generator=gen)
    removed = torch.rand(1, 7, 7, generator=gen) < 0.6
    unknown = [tuple(p) for p in removed[0].nonzero().tolist()]
    index = {p: k for k, p in enumerate(unknown)}
    a = sparse.lil_matrix((len(unknown), len(unknown)))
    b = np.zeros(len(unknown))
    for k, (r, c) in enumerate(unknown):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) == (0, 0) or not (0 <= rr < 7 and 0 <= cc < 7):
                    continue
                w = 1 / 12 if dr and dc else 1 / 6
                a[k, k] += w
                if (rr, cc) in index:
                    a[k, index[(rr, cc)]] -= w
                else:
                    b[k] += w * img[0, 0, rr, cc].item()
    expected = img.clone()
    for k, value in enumerate(splinalg.spsolve(a.tocsc(), b)):
        expected[0, 0, unknown[k][0], unknown[k][1]] = float(value)
    torch.testing.assert_close(linear_imputation(img, removed), expected, atol=1e-4, rtol=0)


def test_noisy_imputation_touches_only_removed_pixels_and_is_seeded():
    img = torch.rand(2, 3, 6, 6)
    removed = torch.zeros(2, 6, 6, dtype=torch.bool)
    removed[:, 1:4, 2:5] = True
    a = noisy_linear_imputation(img, removed, 0.05, torch.Generator().manual_seed(7))
    b = noisy_linear_imputation(img, removed, 0.05, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    keep = ~removed[:, None].expand_as(img)
    assert torch.equal(a[keep], img[keep])


def test_road_prefers_the_region_first_map():
    model = region_model()
    x = torch.ones(2, 1, 8, 8)
    region = torch.zeros(8, 8)
    region[:4, :4] = 1
    x[:, :, 4:, 4:] = -1.0  # the rest of the image differs, so imputing the region changes the score
    good = road(model, x, region.expand(2, 8, 8), [0, 0], percentages=(0.25,), noise=0.0)
    bad = road(model, x, (1 - region).expand(2, 8, 8), [0, 0], percentages=(0.25,), noise=0.0)
    assert (good.morf < bad.morf).all() and (good.lerf >= bad.lerf - 1e-6).all()


# ---------------------------------------------------------------------------------------------------
# Pointing game and energy


def test_pointing_game_by_hand():
    mask = torch.tensor([[[True, False], [False, False]]]).expand(5, 2, 2)
    maps = torch.tensor([
        [[1.0, 0.0], [0.0, 0.0]],   # unique max inside: hit
        [[0.0, 1.0], [0.0, 0.0]],   # unique max outside: miss
        [[1.0, 1.0], [0.0, 0.0]],   # tie, one of two maxima inside: hit, or 1/2 of one
        [[0.0, 0.0], [0.0, 0.0]],   # constant: chance = mask area 1/4
        [[0.2, 0.9], [0.9, 0.9]],   # tie of three, all outside: 0
    ])
    assert pointing_game(maps, mask).tolist() == [1.0, 0.0, 1.0, 0.25, 0.0]
    assert pointing_game(maps, mask, ties="share").tolist() == [1.0, 0.0, 0.5, 0.25, 0.0]
    empty = pointing_game(maps[:1], torch.zeros(1, 2, 2, dtype=torch.bool))
    assert math.isnan(empty.item())


def test_energy_pointing_game_by_hand():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[True, False], [False, True]], [[True, True], [True, False]]])
    assert energy_pointing_game(maps, mask).tolist() == pytest.approx([0.5, 0.75])  # 5/10; zero map: area
    assert math.isnan(energy_pointing_game(maps[:1], torch.zeros(1, 2, 2, dtype=torch.bool)).item())


# ---------------------------------------------------------------------------------------------------
# Rank correlation


def test_average_ranks_and_spearman():
    assert rank_average(torch.tensor([[10.0, 20.0, 20.0, 5.0], [1.0, 1.0, 1.0, 1.0]])).tolist() == \
        [[2.0, 3.5, 3.5, 1.0], [2.5, 2.5, 2.5, 2.5]]
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    b = torch.tensor([[2.0, 4.0, 6.0, 9.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman(a, b)
    assert rho[:2].tolist() == pytest.approx([1.0, -1.0]) and math.isnan(rho[2].item())


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 40), generator=gen).float()   # many ties
    b = torch.randint(0, 7, (6, 40), generator=gen).float()
    ours = spearman(a, b)
    for i in range(6):
        assert ours[i].item() == pytest.approx(stats.spearmanr(a[i].numpy(), b[i].numpy())[0], abs=1e-12)


def test_baseline_maps():
    torch.testing.assert_close(random_maps(4, 8, seed=0)[2], random_maps(1, 8, seed=0, start=2)[0])
    assert not torch.equal(random_maps(1, 8, seed=0)[0], random_maps(1, 8, seed=1)[0])
    blob = centre_gaussian_maps(2, 6)
    assert blob.max() == 1 and torch.equal(blob[0], blob[0].flip(0)) and torch.equal(blob[0], blob[0].T)
    assert blob[0, 2:4, 2:4].min() == 1  # even side: the four central pixels tie for the peak


# ---------------------------------------------------------------------------------------------------
# Cascading randomisation


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def test_reinitialize_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    a, b = TinyNet(), TinyNet()
    state = torch.random.get_rng_state()
    reinitialize_(a.conv2, seed=5)
    reinitialize_(b.conv2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.conv2.weight, b.conv2.weight)
    assert randomization_stages(a) == ["fc", "conv2", "conv1"]


def test_randomising_the_explained_layer_changes_the_maps():
    torch.manual_seed(0)
    model = TinyNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    ref = explain(model, x, layers=("conv2",), methods=("gradcam",))
    same = explain(model, x, layers=("conv2",), methods=("gradcam",), targets=ref.targets)
    assert map_correlation(ref.maps["gradcam/conv2"], same.maps["gradcam/conv2"]).tolist() == [1.0] * 6
    cascade = cascading_randomization(model, x, ref.maps, ref.targets, ("conv2",), ("gradcam",), seed=0)
    assert cascade.stages == ["fc", "conv2", "conv1"] and cascade.stage_of("conv2") == 1
    rho = cascade.at_layer("gradcam/conv2")
    assert rho.shape == (6,) and rho.mean() < 0.5  # well below the unrandomised 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was randomised

    def edge_detector(model, images, layers, methods, targets):  # ignores the model: must stay at 1
        edges = (images[:, 0, 1:, :] - images[:, 0, :-1, :]).abs()
        maps = torch.nn.functional.pad(edges, (0, 0, 0, 1))
        return type("R", (), {"maps": {f"{m}/{l}": maps for m in methods for l in layers}})()

    fake_ref = edge_detector(model, x, ("conv2",), ("gradcam",), None).maps
    blind = cascading_randomization(model, x, fake_ref, ref.targets, ("conv2",), ("gradcam",),
                                    explain_fn=edge_detector)
    assert torch.all(blind.correlation["gradcam/conv2"] == 1)


def test_map_correlation_of_constant_maps():
    flat, varied = torch.zeros(1, 3, 3), torch.arange(9.0).view(1, 3, 3)
    assert map_correlation(flat, flat).item() == 1.0
    assert map_correlation(varied, flat).item() == 0.0
