"""gradcam_FER.py and attentionMap_FER.py end to end, in-process, on a random-weight checkpoint.

Inputs are tiny files written here: a class-folder layout (true labels) and loose files of every
awkward kind (grayscale, odd-sized RGB JPEG, RGBA PNG, a corrupt PNG).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_checkpoint
from PIL import Image

import attentionMap_FER
import gradcam_FER
from expression.apps.cli import run_main
from expression.core.checkpoint import TRAIN_HINT
from expression.core.preprocessing import FER2013_CLASSES

FAST = ["--layers", "layer3,layer4", "--quiet", "--device", "cpu"]  # two layers keep each run ~1 s


def run(script, argv):
    return run_main(script.main, script.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    labelled = {"sad": ("a.png", "L", (48, 48)), "angry": ("b.png", "RGB", (61, 47)),
                "happy": ("c.png", "RGBA", (50, 70))}
    for label, (name, mode, size) in labelled.items():
        (root / "faces" / label).mkdir(parents=True)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
        Image.fromarray(pixels, mode).save(root / "faces" / label / name)
    loose = root / "loose"
    loose.mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), "L").save(loose / "gray.png")
    Image.fromarray(rng.integers(0, 256, (47, 61, 3), dtype=np.uint8), "RGB").save(loose / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (70, 50, 4), dtype=np.uint8), "RGBA").save(loose / "rgba.png")
    (loose / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_gradcam_grids_maps_and_skipped_file(random_checkpoint, inputs, tmp_path, capsys):
    out, npz = tmp_path / "out", tmp_path / "maps" / "cams.npz"
    (out).mkdir()
    (out / "gradcam_grid.png").write_bytes(b"stale")  # from an earlier run with fewer images
    code = run(gradcam_FER, ["--checkpoint", random_checkpoint, "--images", inputs / "faces", inputs / "loose",
                             "--limit", 0, "--rows-per-file", 4, "--out", out, "--save-maps", npz, *FAST])
    captured = capsys.readouterr()
    assert code == 0
    grids = sorted(out.glob("gradcam_grid*.png"))
    assert [g.name for g in grids] == ["gradcam_grid_001.png", "gradcam_grid_002.png"]  # 6 rows, 4 per file
    for grid in grids:
        with Image.open(grid) as img:
            assert img.width > 500 and img.height > 150
    warnings = [line for line in captured.err.splitlines() if "broken.png" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped 1 unreadable")
    assert str(grids[0]) in captured.out and str(npz) in captured.out

    maps = np.load(npz)  # plain arrays: no allow_pickle needed
    keys = {f"{m}/{layer}" for m in ("gradcam", "gradcampp") for layer in ("layer3", "layer4")}
    assert set(maps.files) == keys | {"files", "pred", "probs", "targets", "foils", "labels", "class_names"}
    for key in keys:
        assert maps[key].shape == (6, 48, 48) and maps[key].dtype == np.float32
        assert maps[key].min() >= 0 and maps[key].max() <= 1
    files = [p.replace("\\", "/").split("/")[-1] for p in maps["files"]]
    # Class folders first, round-robin in the checkpoint's class order; the corrupt file is gone.
    assert files == ["b.png", "c.png", "a.png", "gray.png", "rgb.jpg", "rgba.png"]
    assert maps["labels"].tolist() == [0, 3, 5, -1, -1, -1]
    assert maps["probs"].shape == (6, 7) and np.allclose(maps["probs"].sum(1), 1, atol=1e-5)
    assert (maps["pred"] == maps["probs"].argmax(1)).all()
    assert (maps["targets"] == maps["pred"]).all()  # --target predicted
    assert (maps["foils"] == -1).all()  # no contrast
    assert maps["class_names"].tolist() == list(FER2013_CLASSES)


@pytest.mark.parametrize("target", ["true", "happy"])
def test_gradcam_target(random_checkpoint, inputs, tmp_path, target):
    npz = tmp_path / "maps.npz"
    code = run(gradcam_FER, ["--checkpoint", random_checkpoint, "--images", inputs / "faces", "--out", tmp_path,
                             "--target", target, "--methods", "gradcam", "--save-maps", npz, *FAST[2:],
                             "--layers", "layer4"])
    assert code == 0 and (tmp_path / "gradcam_grid.png").stat().st_size > 0
    maps = np.load(npz)
    expected = maps["labels"] if target == "true" else [FER2013_CLASSES.index("happy")] * 3
    assert maps["targets"].tolist() == list(expected)


def test_gradcam_contrastive_target(random_checkpoint, inputs, tmp_path):
    """--target happy-vs-neutral explains logit happy minus logit neutral for every face, as
    gradcam.Contrast does, and the npz records both classes."""
    import torch

    from expression.core.checkpoint import load_model
    from expression.core.preprocessing import Preprocessing, load_pil
    from gradcam import Contrast, explain

    npz = tmp_path / "maps.npz"
    code = run(gradcam_FER, ["--checkpoint", random_checkpoint, "--images", inputs / "faces", "--out", tmp_path,
                             "--target", "happy-vs-neutral", "--methods", "hirescam", "--layers", "layer1",
                             "--save-maps", npz, "--quiet", "--device", "cpu"])
    assert code == 0 and (tmp_path / "gradcam_grid.png").stat().st_size > 0
    maps = np.load(npz)
    happy, neutral = FER2013_CLASSES.index("happy"), FER2013_CLASSES.index("neutral")
    assert maps["targets"].tolist() == [happy] * 3 and maps["foils"].tolist() == [neutral] * 3
    model, ckpt = load_model(random_checkpoint)
    x = Preprocessing.from_checkpoint(ckpt).to_tensor([load_pil(f) for f in maps["files"]])
    by_hand = explain(model, x, layers=("layer1",), methods=("hirescam",), targets=Contrast(happy, neutral))
    np.testing.assert_allclose(maps["hirescam/layer1"], by_hand.maps["hirescam/layer1"].numpy(), atol=1e-5)
    plain = explain(model, x, layers=("layer1",), methods=("hirescam",), targets=happy).maps["hirescam/layer1"]
    assert not torch.allclose(plain, by_hand.maps["hirescam/layer1"], atol=1e-3)


def test_attention_maps_at_checkpoint_size(tmp_path, inputs, capsys):
    """A 32 px checkpoint: preprocessing comes from it, maps are 32x32, all four stages by default."""
    checkpoint = make_checkpoint(tmp_path / "small.pt", img_size=32)
    npz = tmp_path / "att.npz"
    code = run(attentionMap_FER, ["--checkpoint", checkpoint, "--images", inputs / "loose" / "*.*",
                                  "--out", tmp_path / "out", "--save-maps", npz, "--p", 4, "--quiet"])
    assert code == 0
    assert (tmp_path / "out" / "attention_grid.png").stat().st_size > 0
    maps = np.load(npz)
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        assert maps[f"attention/{layer}"].shape == (3, 32, 32)
        assert maps[f"attention/{layer}"].dtype == np.float32
        assert 0 <= maps[f"attention/{layer}"].min() and maps[f"attention/{layer}"].max() <= 1
    assert maps["targets"].tolist() == [-1, -1, -1]  # attention maps explain no class
    assert "broken.png" in capsys.readouterr().err


def test_defaults_newest_model_and_test_split(random_checkpoint, tmp_path, monkeypatch, capsys):
    """Without those flags: newest models/*.pt, data/fer2013/test, runs/explain/<checkpoint name>/."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.pt").symlink_to(random_checkpoint)
    for index, name in enumerate(FER2013_CLASSES):
        folder = tmp_path / "data" / "fer2013" / "test" / name
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((48, 48), 30 * index + i, np.uint8), "L").save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert run(attentionMap_FER, ["--quiet", "--layers", "layer4", "--limit", 7]) == 0
    assert (tmp_path / "runs" / "explain" / "mine" / "attention_grid.png").is_file()
    assert "runs/explain/mine/attention_grid.png" in capsys.readouterr().out.replace("\\", "/")


@pytest.mark.parametrize("script, argv, message", [
    (gradcam_FER, ["--layers", "layer9"], "layer9"),
    (attentionMap_FER, ["--layers", "layer4,fc9"], "fc9"),
    (gradcam_FER, ["--methods", "gradcam,bogus"], "bogus"),
    (gradcam_FER, ["--target", "joy"], "joy"),
    (gradcam_FER, ["--target", "joy-vs-sad"], "joy"),
    (gradcam_FER, ["--target", "sad-vs-sad"], "same class"),
    (gradcam_FER, ["--target", "true", "--images", "{loose}"], "--target true"),
    (gradcam_FER, ["--colormap", "nocolour"], "nocolour"),
    (gradcam_FER, ["--checkpoint", "{tmp}/missing.pt"], TRAIN_HINT),
    (attentionMap_FER, ["--images", "{tmp}/nothing-here"], "no images found"),
    (attentionMap_FER, ["--images", "{loose}/broken.png"], "could be read"),
])
def test_bad_input_is_one_line_exit_2(random_checkpoint, inputs, tmp_path, capsys, script, argv, message):
    values = dict(loose=inputs / "loose", tmp=tmp_path)
    argv = [a.format(**values) for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(random_checkpoint)]
    if "--images" not in argv:
        argv += ["--images", str(inputs / "faces")]
    assert run(script, argv + ["--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], err
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("script", [gradcam_FER, attentionMap_FER])
def test_help_shows_defaults(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.get_args_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "(default: 16)" in text and "(default: 64)" in text and "(default: None)" not in text


def test_default_images_follow_the_checkpoint(tmp_path):
    from expression.reports.explain_figures import default_images
    assert default_images({"args": {"demo": True}}) == ["data/demo/test"]
    assert default_images({"args": {}}) == ["data/fer2013/test"]
    assert default_images({"args": {"test_dir": str(tmp_path)}}) == [str(tmp_path)]
    assert default_images({"args": {"demo": True, "test_dir": str(tmp_path / "gone")}}) == ["data/demo/test"]
