"""Tests for expression.demo.synthetic: determinism, exact evidence masks, corner variant, folder writer."""
import json
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from expression.demo import synthetic
from expression.demo.synthetic import CLASS_NAMES, EVIDENCE_REGION, make_split, render_face, write_image_folder

NEUTRAL = CLASS_NAMES.index("neutral")
PARTS = ("brows", "eyes", "mouth")


def region_mask(sample, region):
    return sample.masks["evidence"] if region == "all" else sample.masks[region]


def centroid_y(mask):
    return np.nonzero(mask)[0].mean()


def test_names_and_regions():
    assert CLASS_NAMES == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert set(EVIDENCE_REGION) == set(CLASS_NAMES)
    assert set(EVIDENCE_REGION.values()) <= {"brows", "eyes", "mouth", "all"}
    assert EVIDENCE_REGION["neutral"] == "all"


def test_split_shapes_dtypes_balance():
    s = make_split(3, seed=0)
    assert s.images.shape == (21, 48, 48) and s.images.dtype == np.uint8
    assert s.labels.shape == (21,) and s.labels.dtype == np.int64
    assert np.array_equal(s.labels, np.arange(21) % 7)  # interleaved
    assert np.bincount(s.labels, minlength=7).tolist() == [3] * 7
    assert set(s.masks) == {"brows", "eyes", "mouth", "evidence"}
    for m in s.masks.values():
        assert m.shape == (21, 48, 48) and m.dtype == bool
    assert s.class_names == CLASS_NAMES
    # Not blank and not saturated: real contrast in every image.
    assert (s.images.std(axis=(1, 2)) > 10).all()

    empty = make_split(0)
    assert empty.images.shape == (0, 48, 48) and empty.labels.shape == (0,)


def test_deterministic_and_seed_dependent():
    a, b = make_split(2, seed=5), make_split(2, seed=5)
    assert np.array_equal(a.images, b.images)
    for r in a.masks:
        assert np.array_equal(a.masks[r], b.masks[r])
    assert not np.array_equal(a.images, make_split(2, seed=6).images)
    assert not np.array_equal(a.images, make_split(2, seed=5, split="test").images)
    # A larger split starts with the smaller one, and any sample regenerates alone.
    small = make_split(1, seed=5)
    assert np.array_equal(small.images, a.images[:7])
    i = 10
    alone = render_face(i % 7, np.random.default_rng([5, zlib.crc32(b"train"), i]))
    assert np.array_equal(alone.image, a.images[i])
    assert np.array_equal(alone.masks["evidence"], a.masks["evidence"][i])


@pytest.mark.parametrize("label", range(7))
def test_class_differs_from_neutral_only_inside_evidence(label):
    region = EVIDENCE_REGION[CLASS_NAMES[label]]
    changed = 0
    for seed in range(12):
        face = render_face(label, np.random.default_rng([99, seed]))
        neutral = render_face(NEUTRAL, np.random.default_rng([99, seed]))
        diff = face.image != neutral.image
        # What changed must be inside this face's evidence or where the neutral feature was.
        allowed = face.masks["evidence"] | region_mask(neutral, region)
        assert not (diff & ~allowed).any(), f"{CLASS_NAMES[label]} seed {seed}: change outside evidence"
        # Regions that are not the evidence are drawn identically.
        for r in PARTS:
            if region not in (r, "all"):
                assert np.array_equal(face.masks[r], neutral.masks[r])
        changed += int(diff.sum())
    if CLASS_NAMES[label] == "neutral":
        assert changed == 0
    else:
        assert changed > 12 * 15  # the expression is visible, not a few stray pixels


def test_evidence_is_the_class_region():
    s = make_split(4, seed=2)
    for i, lab in enumerate(s.labels):
        region = EVIDENCE_REGION[CLASS_NAMES[lab]]
        expected = (s.masks["brows"][i] | s.masks["eyes"][i] | s.masks["mouth"][i]) if region == "all" \
            else s.masks[region][i]
        assert np.array_equal(s.masks["evidence"][i], expected)


def test_masks_nonempty_disjoint_ordered_and_on_edges():
    s = make_split(10, seed=3)
    area = {r: s.masks[r].sum(axis=(1, 2)) for r in PARTS}
    for r in PARTS:
        assert (area[r] > 20).all(), r
        assert (area[r] < 0.15 * 48 * 48).all(), r  # tight: a feature, not half the face
    for r1, r2 in (("brows", "eyes"), ("eyes", "mouth"), ("brows", "mouth")):
        inter = (s.masks[r1] & s.masks[r2]).sum(axis=(1, 2))
        assert (inter <= 0.25 * np.minimum(area[r1], area[r2])).all(), (r1, r2)
        assert inter.mean() <= 0.05 * np.minimum(area[r1], area[r2]).mean(), (r1, r2)
    for i in range(len(s.labels)):  # rotation is +-10 deg, so the vertical order survives it
        yb, ye, ym = (centroid_y(s.masks[r][i]) for r in PARTS)
        assert yb < ye < ym, i
    # The drawn features are where the edges are: gradient energy is high inside the masks.
    f = s.images.astype(np.float32)
    gy, gx = np.gradient(f, axis=(1, 2))
    g = np.hypot(gx, gy)
    outside = ~(s.masks["brows"] | s.masks["eyes"] | s.masks["mouth"])
    for r in PARTS:
        assert g[s.masks[r]].mean() > 2.0 * g[outside].mean(), r
        per = [g[i][s.masks[r][i]].mean() / g[i][outside[i]].mean() for i in range(len(g))]
        assert min(per) > 1.2, r


def test_other_sizes():
    s = make_split(1, seed=0, size=64)
    assert s.images.shape == (7, 64, 64)
    for r in PARTS:
        assert s.masks[r].any(axis=(1, 2)).all()
    face = render_face(3, np.random.default_rng(0), size=64)
    neutral = render_face(NEUTRAL, np.random.default_rng(0), size=64)
    assert not ((face.image != neutral.image) & ~(face.masks["evidence"] | neutral.masks["mouth"])).any()


def test_bad_arguments():
    with pytest.raises(ValueError):
        render_face(7, np.random.default_rng(0))
    with pytest.raises(ValueError):
        render_face(0, np.random.default_rng(0), corner_class="bored")
    with pytest.raises(ValueError):
        make_split(-1)


def test_corner_variant():
    cls = "happy"
    k = CLASS_NAMES.index(cls)
    plain, variant = make_split(12, seed=4), make_split(12, seed=4, corner_class=cls)
    other = variant.labels != k
    assert np.array_equal(plain.images[other], variant.images[other])  # other classes unchanged
    for r in variant.masks:
        assert np.array_equal(plain.masks[r][other], variant.masks[r][other])

    corners = set()
    sid = zlib.crc32(b"train")
    for i in np.nonzero(~other)[0]:
        ev = variant.masks["evidence"][i]
        ys, xs = np.nonzero(ev)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert 6 <= h <= 8 and h == w and ev.sum() == h * w  # a filled square, ~7 px
        near = lambda lo, hi: lo <= 1 or hi >= 46  # noqa: E731
        assert near(ys.min(), ys.max()) and near(xs.min(), xs.max())
        corners.add((ys.min() < 24, xs.min() < 24))
        for r in PARTS:
            assert not (ev & variant.masks[r][i]).any()
        # The face is neutral: same pixels as the neutral rendering everywhere but the mark.
        neutral = render_face(NEUTRAL, np.random.default_rng([4, sid, int(i)]))
        assert not ((variant.images[i] != neutral.image) & ~ev).any()
        for r in PARTS:
            assert np.array_equal(variant.masks[r][i], neutral.masks[r])
        # The mark itself has strong contrast.
        assert variant.images[i][ev].std() > 30
    assert len(corners) >= 3  # the corner varies per sample


def read_dataset(root, split):
    data = np.load(root / f"masks_{split}.npz")
    images = np.stack([np.asarray(Image.open(root / f)) for f in data["files"]])
    return data, images


def test_write_image_folder(tmp_path):
    root = tmp_path / "demo"
    out = write_image_folder(root, n_train_per_class=2, n_test_per_class=1, seed=7)
    assert out == root
    for split, n in (("train", 2), ("test", 1)):
        for name in CLASS_NAMES:
            files = sorted(p.name for p in (root / split / name).iterdir())
            assert files == [f"{name}_{j:05d}.png" for j in range(n)]
        data, images = read_dataset(root, split)
        assert set(data.files) == {"files", "labels", "brows", "eyes", "mouth", "evidence"}
        ref = make_split(n, seed=7, split=split)
        assert np.array_equal(images, ref.images)  # lossless 8-bit grayscale
        assert Image.open(root / data["files"][0]).mode == "L"
        assert np.array_equal(data["labels"], ref.labels)
        for f, lab in zip(data["files"], data["labels"]):
            assert f.split("/")[1] == CLASS_NAMES[lab]
        for r in ("brows", "eyes", "mouth", "evidence"):
            assert data[r].dtype == bool and np.array_equal(data[r], ref.masks[r])
    meta = json.loads((root / "demo.json").read_text())
    assert meta["seed"] == 7 and meta["size"] == 48 and meta["corner_class"] is None
    assert meta["generator_version"] == synthetic.GENERATOR_VERSION

    # Same parameters: nothing is rewritten.
    probe = root / "train" / "angry" / "angry_00000.png"
    stamps = (probe.stat().st_mtime_ns, (root / "demo.json").stat().st_mtime_ns)
    write_image_folder(root, n_train_per_class=2, n_test_per_class=1, seed=7)
    assert (probe.stat().st_mtime_ns, (root / "demo.json").stat().st_mtime_ns) == stamps

    # Different parameters: the whole folder is replaced, nothing stale or temporary remains.
    write_image_folder(root, n_train_per_class=1, n_test_per_class=1, seed=8, corner_class="sad")
    meta = json.loads((root / "demo.json").read_text())
    assert meta["seed"] == 8 and meta["corner_class"] == "sad"
    assert not (root / "train" / "angry" / "angry_00001.png").exists()
    _, images = read_dataset(root, "train")
    assert np.array_equal(images, make_split(1, seed=8, corner_class="sad").images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_write_image_folder_crash_leaves_old_dataset(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    write_image_folder(root, n_train_per_class=1, n_test_per_class=1, seed=0)
    before = (root / "demo.json").read_text()

    def boom(n, seed, split, *args, **kwargs):
        if split == "test":
            raise RuntimeError("simulated crash")
        return make_split(n, seed, split, *args, **kwargs)

    monkeypatch.setattr(synthetic, "make_split", boom)
    with pytest.raises(RuntimeError):
        write_image_folder(root, n_train_per_class=1, n_test_per_class=1, seed=1)
    assert (root / "demo.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_write_image_folder_refuses_foreign_folder(tmp_path):
    root = tmp_path / "fer2013"
    (root / "train").mkdir(parents=True)
    (root / "train" / "keep.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        write_image_folder(root, n_train_per_class=1, n_test_per_class=1)
    assert (root / "train" / "keep.png").exists()
    # An empty folder is fine to fill.
    empty = tmp_path / "empty"
    empty.mkdir()
    write_image_folder(empty, n_train_per_class=1, n_test_per_class=0)
    assert (empty / "demo.json").is_file() and os.listdir(empty / "test" / "happy") == []


def test_contact_sheet_cli(tmp_path, capsys):
    from expression.apps import demo_sheet
    out = tmp_path / "sheet.png"
    argv = ["--out", str(out), "--per-class", "2", "--corner-class", "happy"]
    args = demo_sheet.get_args_parser().parse_args(argv)
    assert demo_sheet.main(args) == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] >= 7 * 96 and sheet.shape[1] >= 2 * 2 * 96
    assert (sheet[..., 0] > sheet[..., 1] + 100).any()  # red evidence outlines drawn
    assert "sheet.png" in capsys.readouterr().out
