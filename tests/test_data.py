"""Data path: the in-memory pipeline must reproduce the seed's torchvision transforms exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from expression.core.datasets import check_splits, decode_split, find_images
from expression.core.errors import InputError
from expression.core.model import build_model
from expression.core.preprocessing import Preprocessing, normalize
from expression.training.augment import apply_flip_translate, sample_flip_translate
from expression.training.loader import InMemoryLoader


def seed_test_transform(size):
    """The seed's test transform, applied to what ImageFolder's loader gives (an RGB PIL image)."""
    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def odd_images():
    rng = np.random.default_rng(1)
    gray = Image.fromarray(rng.integers(0, 256, (53, 37), dtype=np.uint8), mode="L")
    rgb = Image.fromarray(rng.integers(0, 256, (61, 47, 3), dtype=np.uint8), mode="RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), mode="RGBA")
    palette = rgb.convert("P")
    return {"gray": gray, "rgb": rgb, "rgba": rgba, "palette": palette}


@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba", "palette"])
def test_rgb_preprocessing_equals_seed_transforms(kind):
    img = odd_images()[kind]
    ours = Preprocessing(48, color="rgb").to_tensor([img])[0]
    seed = seed_test_transform(48)(img.convert("RGB"))
    torch.testing.assert_close(ours, seed, rtol=0, atol=1e-6)


def test_gray_preprocessing_equals_seed_on_gray_files():
    img = odd_images()["gray"]
    ours = Preprocessing(48, color="gray").to_tensor([img])[0]
    seed = seed_test_transform(48)(img.convert("RGB"))  # ImageFolder turns gray files into 3 equal channels
    torch.testing.assert_close(ours, seed, rtol=0, atol=1e-6)


def test_decoded_split_equals_seed_test_transform(tmp_path):
    folder = tmp_path / "split" / "happy"
    folder.mkdir(parents=True)
    for name, img in odd_images().items():
        img.save(folder / f"{name}.png")
    split = decode_split(tmp_path / "split", ["happy"], 48)
    assert split.color == "rgb"  # one colour file makes the split colour
    ours = normalize(split.images, (0.5,) * 3, (0.5,) * 3)
    for tensor, path in zip(ours, split.paths):
        seed = seed_test_transform(48)(Image.open(path).convert("RGB"))
        torch.testing.assert_close(tensor, seed, rtol=0, atol=1e-6)


def test_gray_split_stays_one_channel(image_folder):
    classes = check_splits(image_folder / "train", image_folder / "test")
    split = decode_split(image_folder / "train", classes, 48, workers=2)
    assert split.images.shape == (42, 1, 48, 48) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == [i for i in range(7) for _ in range(6)]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shift", [(0, 0), (3, -2), (-5, 5), (5, 4)])
def test_flip_translate_equals_torchvision(flip, shift):
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(1, 256, (48, 48), dtype=np.uint8), mode="L").convert("RGB")
    expected = TF.hflip(img) if flip else img
    expected = TF.affine(expected, angle=0.0, translate=list(shift), scale=1.0, shear=[0.0, 0.0])
    expected = torch.from_numpy(np.array(expected)).permute(2, 0, 1)
    batch = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
    ours = apply_flip_translate(batch, torch.tensor([flip]), torch.tensor([shift[0]]), torch.tensor([shift[1]]))
    assert torch.equal(ours[0], expected)


def test_augmentation_parameters_follow_torchvision_distribution():
    gen = torch.Generator().manual_seed(0)
    flip, dx, dy = sample_flip_translate(20000, 48, 48, gen)
    torch.manual_seed(0)
    ref = torch.tensor([T.RandomAffine.get_params((0.0, 0.0), (0.1, 0.1), None, None, [48, 48])[1]
                        for _ in range(20000)])
    for ours, theirs in ((dx, ref[:, 0]), (dy, ref[:, 1])):
        assert ours.min() == theirs.min() == -5 and ours.max() == theirs.max() == 5
        ours_freq = torch.bincount(ours + 5, minlength=11).float() / len(ours)
        theirs_freq = torch.bincount(theirs + 5, minlength=11).float() / len(theirs)
        assert (ours_freq - theirs_freq).abs().max() < 0.015
    assert abs(flip.float().mean().item() - 0.5) < 0.015


def test_loader_is_repeatable_and_augments():
    images = torch.arange(10 * 48 * 48, dtype=torch.int64).remainder(251).to(torch.uint8).view(10, 1, 48, 48)
    split_type = type("S", (), {})
    split = split_type()
    split.images, split.labels = images, torch.arange(10)

    def run(seed):
        loader = InMemoryLoader(split, 4, (0.5,) * 3, (0.5,) * 3, shuffle=True, augment=True,
                                order_generator=torch.Generator().manual_seed(seed),
                                augment_generator=torch.Generator().manual_seed(seed + 1))
        return [(x.clone(), y.clone()) for x, y in loader]

    first, again, other = run(0), run(0), run(1)
    assert len(first) == 3 and sum(len(y) for _, y in first) == 10
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    assert first[0][0].shape == (4, 3, 48, 48)


def test_training_folds_a_last_batch_of_one_image():
    split_type = type("S", (), {})
    split = split_type()
    split.images, split.labels = torch.zeros(9, 1, 32, 32, dtype=torch.uint8), torch.arange(9)
    training = InMemoryLoader(split, 4, (0.5,) * 3, (0.5,) * 3, pad=True)
    assert [len(y) for _, y in training] == [4, 5] and len(training) == 2
    evaluation = InMemoryLoader(split, 4, (0.5,) * 3, (0.5,) * 3)
    assert [len(y) for _, y in evaluation] == [4, 4, 1] and len(evaluation) == 3
    # Why it matters: at 32 px layer4 is 1x1, where BatchNorm refuses a training batch of one image.
    model = build_model("resnet34", 9).train()
    for x, y in training:
        model(x).sum().backward()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.zeros(1, 3, 32, 32))


def test_sharded_evaluation_covers_every_image_once():
    split_type = type("S", (), {})
    split = split_type()
    split.images, split.labels = torch.zeros(11, 1, 4, 4, dtype=torch.uint8), torch.arange(11)
    shards = [InMemoryLoader(split, 2, (0.5,) * 3, (0.5,) * 3, rank=r, world_size=3).indices() for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))
    padded = [InMemoryLoader(split, 2, (0.5,) * 3, (0.5,) * 3, rank=r, world_size=3, pad=True).indices()
              for r in range(3)]
    assert {len(p) for p in padded} == {4} and set(torch.cat(padded).tolist()) == set(range(11))


def test_check_splits_errors(tmp_path, image_folder):
    with pytest.raises(InputError, match="does not exist"):
        check_splits(tmp_path / "nope" / "train", tmp_path / "nope" / "test")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(InputError, match="no class sub-folders"):
        check_splits(tmp_path / "empty" / "train", tmp_path / "empty" / "test")
    (image_folder / "test" / "contempt").mkdir()
    with pytest.raises(InputError, match="only in test: \\['contempt'\\]"):
        check_splits(image_folder / "train", image_folder / "test")
    (image_folder / "train" / "contempt").mkdir()
    with pytest.raises(InputError, match="contempt has no images"):
        check_splits(image_folder / "train", image_folder / "test")


def test_unreadable_files_are_listed_and_skipped(image_folder):
    happy = image_folder / "train" / "happy"
    (happy / "broken.jpg").write_bytes(b"not a jpeg at all")
    (happy / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*broken.jpg \(unreadable\).*notes.txt \(not an image"):
        split = decode_split(image_folder / "train", sorted(p.name for p in (image_folder / "train").iterdir()), 48)
    assert len(split.labels) == 42


def test_mostly_unreadable_split_is_an_error(tmp_path):
    folder = tmp_path / "train" / "sad"
    folder.mkdir(parents=True)
    Image.new("L", (48, 48)).save(folder / "ok.png")
    for i in range(3):
        (folder / f"bad{i}.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning), pytest.raises(InputError, match="3 of 4 files are unreadable"):
        decode_split(tmp_path / "train", ["sad"], 48)


def test_find_images_labels_and_globs(image_folder, tmp_path):
    entries = find_images([str(image_folder / "test")])
    assert len(entries) == 21 and {e.label for e in entries} == {"angry", "disgust", "fear", "happy", "neutral",
                                                                 "sad", "surprise"}
    single = next((image_folder / "test" / "sad").iterdir())
    globbed = find_images([str(image_folder / "test" / "sad" / "*.png"), str(single)])
    assert len(globbed) == 3 and all(e.label is None for e in globbed)
    assert find_images([str(tmp_path / "missing")]) == []
