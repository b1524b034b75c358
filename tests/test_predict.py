"""predict_FER.py and expression.inference.faces on real photos shipped by scikit-image (no network).

skimage.data.astronaut() is NASA's public-domain portrait of Eileen Collins: the one face, located by
hand, spans about x 177..274, y 66..163 of the 512x512 image (brow to chin). coffee() has no face.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from expression.apps.cli import run_main
from expression.core.checkpoint import load_model
from expression.core.preprocessing import FER2013_CLASSES
from expression.inference.classifier import Classifier
from expression.inference.faces import FaceDetector, Region, crop_faces, crop_region, face_region, image_to_rgb
from predict_FER import get_args_parser, main

FACE_CENTRE = (225, 114)  # astronaut, 512 px
FIELDS = {"source", "frame", "face", "box", "label", "probabilities", "tta", "true_label", "annotated", "note"}


def predict(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def near_face(box, centre=FACE_CENTRE, scale=1.0, offset=(0, 0), tol=15):
    x, y, w, h = box
    cx, cy = offset[0] + centre[0] * scale, offset[1] + centre[1] * scale
    return abs(x + w / 2 - cx) <= tol * scale and abs(y + h / 2 - cy) <= tol * scale \
        and 70 * scale <= w <= 130 * scale


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    astro = skimage.data.astronaut()
    (root / "a").mkdir()
    (root / "b").mkdir()
    Image.fromarray(astro).save(root / "a" / "astronaut.png")
    Image.fromarray(astro).convert("L").save(root / "b" / "astronaut.png")  # same stem, grayscale
    rgba = np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    Image.fromarray(rgba, "RGBA").save(root / "astronaut_rgba.png")
    Image.fromarray(skimage.data.coffee()).save(root / "coffee.png")
    Image.fromarray(np.full((120, 160), 128, np.uint8)).save(root / "flat.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    # 4000x3000: the astronaut enlarged x4 pasted at (1500, 800); detection must downscale and map back
    huge = np.full((3000, 4000), 90, np.uint8)
    big = np.asarray(Image.fromarray(astro).convert("L").resize((2048, 2048), Image.BILINEAR))
    huge[800:2848, 1500:3548] = big
    Image.fromarray(huge).save(root / "huge.jpg", quality=85)
    return root


@pytest.fixture(scope="module")
def image_run(photos, random_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    names = ["a/astronaut.png", "b/astronaut.png", "astronaut_rgba.png", "coffee.png", "flat.png",
             "corrupt.jpg", "huge.jpg"]
    code = predict("--checkpoint", random_checkpoint, "--out", out, "--quiet", *(photos / n for n in names))
    records = read_jsonl(out / "predictions.jsonl")
    return code, out, {Path(r["source"]).relative_to(photos).as_posix(): r for r in records}


# ---------------------------------------------------------------------------------------------------
# Images


def test_astronaut_one_face_at_the_right_place(image_run):
    code, out, records = image_run
    assert code == 0
    record = records["a/astronaut.png"]
    assert set(record) == FIELDS
    assert record["frame"] is None and record["face"] == 0 and record["note"] is None
    assert near_face(record["box"]), record["box"]
    probs = record["probabilities"]
    assert list(probs) == list(FER2013_CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert record["label"] == max(probs, key=probs.get)
    assert record["tta"] == "flip"  # the default: the face and its mirror image averaged
    assert sum(1 for k in records if k == "a/astronaut.png") == 1


def test_grayscale_and_rgba_find_the_same_face(image_run):
    _, _, records = image_run
    for name in ("b/astronaut.png", "astronaut_rgba.png"):
        assert near_face(records[name]["box"]), (name, records[name]["box"])
        assert sum(records[name]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_no_face_images_have_a_null_record(image_run):
    _, out, records = image_run
    for name in ("coffee.png", "flat.png"):
        record = records[name]
        assert record["face"] is None and record["box"] is None and record["label"] is None
        assert record["probabilities"] is None and record["note"] == "no face found"
        assert (out / record["annotated"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(p).name for p in summary["no_face"]) == ["coffee.png", "flat.png"]


def test_corrupt_file_is_listed_and_skipped(image_run):
    code, out, records = image_run
    assert code == 0 and "corrupt.jpg" not in records
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(u["path"]).name for u in summary["unreadable"]] == ["corrupt.jpg"]
    assert summary["images"] == 6 and summary["faces"] == 4


def test_huge_image_box_is_mapped_back(image_run):
    _, _, records = image_run
    assert near_face(records["huge.jpg"]["box"], scale=4, offset=(1500, 800)), records["huge.jpg"]["box"]


def test_annotated_names_do_not_clash(image_run):
    _, out, records = image_run
    names = {records[n]["annotated"] for n in ("a/astronaut.png", "b/astronaut.png")}
    assert names == {"astronaut_annotated.jpg", "b_astronaut_annotated.jpg"}
    for name in names:
        assert cv2.imread(str(out / name)).shape == (512, 512, 3)
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temp files


def test_detection_downscales_big_images():
    seen = []

    class Spy:
        def __init__(self, cascade):
            self.cascade = cascade

        def detectMultiScale(self, gray, **kw):
            seen.append((gray.shape, kw["minSize"]))
            return self.cascade.detectMultiScale(gray, **kw)

    detector = FaceDetector("haar-alt2", min_face=200, max_side=500)
    detector.cascade = Spy(detector.cascade)
    detector(np.zeros((1500, 1000, 3), np.uint8))
    assert seen == [((500, 333), (66, 66))]  # longer side 500; min face 200 px * 1/3


def test_detector_none_is_the_whole_image():
    image = np.zeros((30, 40), np.uint8)
    boxes = FaceDetector("none")(image)
    crops, regions = crop_faces(image, boxes, margin=0.5, whole=True)
    assert boxes == [(0, 0, 40, 30)] and crops[0].shape == (30, 40)


def test_annotated_bars_are_as_long_as_the_probabilities():
    """A whole-image face (--detector none) gets its bars in a strip on the right: bar i is as long as
    class i's probability of the panel's bar room (inclusive ends: a bar of length L covers L + 1 px)."""
    from types import SimpleNamespace

    from expression.inference import drawing
    names, probs = list(FER2013_CLASSES), np.array([0.5, 0.25, 0, 0, 0.25, 0, 0])
    item = SimpleNamespace(image=np.full((300, 300, 3), 128, np.uint8), heats=None, regions=None, whole=True,
                           boxes=[(0, 0, 300, 300)], probs=probs[None])
    canvas = drawing.annotate(item, names)
    panel = canvas[:, 301:-1]  # right of the box's 1 px margin; the strip is the panel plus 2 px
    row = 40  # 300 px / 7 classes, at most 40 px a row
    _, name_w = drawing.bar_font(row, names, drawing.ON_PHOTO)
    room = panel.shape[1] - name_w - drawing.ON_PHOTO.right
    assert room > 50
    for i, p in enumerate(probs):
        middle = panel[i * row + row // 2]
        coloured = int((middle == drawing.PALETTE[i]).all(axis=1).sum())
        assert coloured == (round(room * p) + 1 if p else 0), (names[i], coloured)
        assert (middle[:name_w] != drawing.PALETTE[i]).any(axis=1).all()  # the name column has no bar


def test_crop_is_square_and_padded_at_the_edge():
    image = np.arange(100 * 100, dtype=np.int32).reshape(100, 100).astype(np.uint8)
    region = face_region((0, 10, 20, 20), margin=0.25, width=100, height=100)
    assert region == Region(-5, 5, 25, 35)
    crop = crop_region(image, region)
    assert crop.shape == (30, 30)
    np.testing.assert_array_equal(crop[:, 5:], image[5:35, 0:25])
    np.testing.assert_array_equal(crop[:, 0], image[5:35, 0])  # border column repeated


def test_image_to_rgb_modes(tmp_path):
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 0))  # fully transparent -> white
    assert (image_to_rgb(rgba) == 255).all()
    sixteen = Image.fromarray(np.full((3, 4), 65535, np.uint16))
    assert image_to_rgb(sixteen).shape == (3, 4, 3) and (image_to_rgb(sixteen) == 255).all()
    rotated = Image.new("RGB", (4, 2))
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = tmp_path / "r.jpg"
    rotated.save(buf, exif=exif)
    assert image_to_rgb(Image.open(buf)).shape == (4, 2, 3)


def test_batches_give_the_same_probabilities_as_one_by_one(random_checkpoint):
    model, ckpt = load_model(random_checkpoint)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (s, s, 3), dtype=np.uint8) for s in (40, 64, 97, 48, 120)]
    together, _ = Classifier(model, ckpt, "cpu", batch_size=64)(crops)
    alone, _ = Classifier(model, ckpt, "cpu", batch_size=1)(crops)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_flip_default_averages_the_face_and_its_mirror(random_checkpoint):
    import torch

    model, ckpt = load_model(random_checkpoint)
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (s, s, 3), dtype=np.uint8) for s in (48, 64, 97)]
    flipped, _ = Classifier(model, ckpt, "cpu")(crops)
    plain, _ = Classifier(model, ckpt, "cpu", tta="none")(crops)
    mirrored, _ = Classifier(model, ckpt, "cpu", tta="none")([np.ascontiguousarray(c[:, ::-1]) for c in crops])
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(flipped - plain).max() > 1e-4  # a random network is not mirror-symmetric
    # with a heat map: the same averaged probabilities, and the plain face's map of the class they pick
    with_map, heats = Classifier(model, ckpt, "cpu", cam="hirescam")(crops)
    np.testing.assert_allclose(with_map, flipped, atol=1e-5)
    from gradcam import explain
    x = Classifier(model, ckpt, "cpu").prep.to_tensor(crops)
    expected = explain(model, x, layers=("layer1",), methods=("hirescam",),
                       targets=torch.from_numpy(flipped.argmax(1))).maps["hirescam/layer1"].numpy()
    np.testing.assert_allclose(heats, expected, atol=1e-5)


def test_tta_none_records_say_so(photos, random_checkpoint, tmp_path):
    code = predict("--checkpoint", random_checkpoint, "--out", tmp_path, "--quiet", "--no-annotate",
                   "--tta", "none", "--format", "csv", photos / "a" / "astronaut.png")
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert rows[0]["tta"] == "none"


# ---------------------------------------------------------------------------------------------------
# Formats and explanations


def test_csv_one_row_per_face(photos, random_checkpoint, tmp_path):
    code = predict("--checkpoint", random_checkpoint, "--out", tmp_path, "--format", "csv", "--quiet",
                   "--no-annotate", photos / "a" / "astronaut.png", photos / "coffee.png")
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(rows) == 2
    face, empty = rows
    assert near_face([int(face[k]) for k in "xywh"])
    probs = {c: float(face[f"prob_{c}"]) for c in FER2013_CLASSES}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4) and face["label"] == max(probs, key=probs.get)
    assert empty["label"] == "" and empty["x"] == "" and empty["note"] == "no face found"
    assert not list(tmp_path.glob("*.jpg"))  # --no-annotate


def test_cam_changes_pixels_inside_the_box_only(photos, random_checkpoint, tmp_path):
    shots = {}
    for cam in ("none", "gradcam"):
        out = tmp_path / cam
        assert predict("--checkpoint", random_checkpoint, "--out", out, "--quiet", "--cam", cam,
                       photos / "a" / "astronaut.png") == 0
        shots[cam] = cv2.imread(str(out / "astronaut_annotated.jpg")).astype(int)
        box = read_jsonl(out / "predictions.jsonl")[0]["box"]
    x, y, w, h = box
    inside = np.abs(shots["gradcam"] - shots["none"])[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4]
    assert inside.mean() > 20
    far = np.abs(shots["gradcam"] - shots["none"])[300:, :150]  # the lower left, far from the face
    assert far.max() == 0


def test_unknown_cam_layer_is_a_usage_error(photos, random_checkpoint, tmp_path, capsys):
    args = get_args_parser().parse_args(["--checkpoint", str(random_checkpoint), "--out", str(tmp_path),
                                         "--cam", "gradcam", "--cam-layer", "layer9",
                                         str(photos / "coffee.png")])
    assert run_main(main, args) == 2
    assert "layer9" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    base = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.BILINEAR))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    for i in range(10):
        frame = np.roll(base, (i % 3 - 1) * 2, axis=1)  # slight shifts left and right
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def test_video_every_third_frame(video, random_checkpoint, tmp_path):
    assert predict("--checkpoint", random_checkpoint, "--out", tmp_path, "--every", "3", "--quiet", video) == 0
    records = read_jsonl(tmp_path / "predictions.jsonl")
    assert [r["frame"] for r in records] == [0, 3, 6, 9]
    for record in records:
        assert near_face(record["box"], scale=0.5, tol=20), record
        assert record["annotated"] == "clip_annotated.mp4"
    capture = cv2.VideoCapture(str(tmp_path / "clip_annotated.mp4"))
    assert capture.isOpened()
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["videos"] == 1 and summary["frames"] == 4 and summary["faces"] == 4


# ---------------------------------------------------------------------------------------------------
# Exit codes


def test_nothing_processed_exits_2(photos, random_checkpoint, tmp_path, capsys):
    args = get_args_parser().parse_args(["--checkpoint", str(random_checkpoint), "--out", str(tmp_path),
                                         str(photos / "corrupt.jpg")])
    assert run_main(main, args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing could be processed" in errors[0] and "corrupt.jpg" in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "predictions.jsonl").exists()


def test_missing_checkpoint_exits_2_with_a_hint(photos, tmp_path, monkeypatch, capsys):
    image = str(photos / "coffee.png")
    args = get_args_parser().parse_args(["--checkpoint", str(tmp_path / "nope.pt"), image])
    assert run_main(main, args) == 2
    assert "train_resnet34.py" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # no models/ here, and (as in a clone without it) no shipped model
    from expression.core import checkpoint
    monkeypatch.setattr(checkpoint, "SHIPPED_MODEL", tmp_path / "no_shipped_model.pt")
    assert run_main(main, get_args_parser().parse_args([image])) == 2
    assert "train_resnet34.py" in capsys.readouterr().err


def test_no_inputs_exit_2(tmp_path, capsys):
    assert run_main(main, get_args_parser().parse_args([str(tmp_path / "none*.png")])) == 2
    assert "no images or videos found" in capsys.readouterr().err


def test_class_folders_give_true_labels(random_checkpoint, tmp_path):
    data = tmp_path / "faces"
    for label in ("happy", "sad"):
        (data / label).mkdir(parents=True)
        Image.fromarray(np.full((48, 48), 100, np.uint8)).save(data / label / "001.png")
    out = tmp_path / "out"
    assert predict("--checkpoint", random_checkpoint, "--detector", "none", "--out", out, "--quiet", data) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["true_label"] for r in records] == ["happy", "sad"]
    assert [r["box"] for r in records] == [[0, 0, 48, 48]] * 2
    assert {r["annotated"] for r in records} == {"001_annotated.jpg", "sad_001_annotated.jpg"}
    assert json.loads((out / "summary.json").read_text())["accuracy"] in (0.0, 0.5, 1.0)


def test_webcam_loop_with_a_fake_camera(video, random_checkpoint, tmp_path, monkeypatch):
    """No camera here: the clip stands in for camera 0 and the window for a list; q after 3 frames."""
    real_capture, shown = cv2.VideoCapture, []
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: real_capture(str(video)))
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) == 3 else -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    assert predict("--checkpoint", random_checkpoint, "--webcam", 0, "--every", 2, "--out", tmp_path,
                   "--quiet") == 0
    assert shown == [(256, 256, 3)] * 3
    records = read_jsonl(tmp_path / "predictions.jsonl")
    assert [(r["source"], r["frame"]) for r in records] == [("webcam:0", 0), ("webcam:0", 2)]
    assert all(near_face(r["box"], scale=0.5, tol=20) for r in records)


def test_face_predictor_api_gives_the_records_the_script_writes(image_run, photos, random_checkpoint):
    from expression.inference.classifier import FacePredictor
    _, _, by_source = image_run
    predictor = FacePredictor.from_checkpoint(random_checkpoint)
    astro = image_to_rgb(Image.open(photos / "a" / "astronaut.png"))
    records = predictor.predict(astro, source=str(photos / "a" / "astronaut.png"))
    written = by_source["a/astronaut.png"]
    assert len(records) == 1 and records[0]["box"] == written["box"] and records[0]["label"] == written["label"]
    assert records[0]["probabilities"] == pytest.approx(written["probabilities"], abs=1e-5)  # other batch, rounded
    coffee = predictor.predict(image_to_rgb(Image.open(photos / "coffee.png")))
    assert coffee[0]["note"] == "no face found" and coffee[0]["box"] is None
