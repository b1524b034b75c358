"""The browser app's handlers (expression/apps/webapp.py, app.py) without a browser: the same records as
predict_FER.py, the chosen explanation and the attention map, concurrent requests, bad input.

Only the tests that build the gradio page need gradio (requirements-app.txt); they skip without it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

import app as app_script
import predict_FER
from expression.apps import webapp
from expression.apps.webapp import BadInput, WebApp, read_image
from expression.core import cam_policy
from expression.core.preprocessing import FER2013_CLASSES
from expression.demo.synthetic import png_claiming
from expression.inference import classifier as prediction
from expression.inference.classifier import FacePredictor
from gradcam import attention_maps, explain

FIELDS = {"source", "frame", "face", "box", "label", "probabilities", "true_label", "annotated", "note", "tta"}
FACE_CENTRE = (225, 114)  # the astronaut's face in the 512 px photo (see tests/test_predict.py)

pytestmark = pytest.mark.usefixtures("single_thread")


def files_under(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    astro = skimage.data.astronaut()
    Image.fromarray(astro).save(root / "astronaut.png")
    Image.fromarray(astro).convert("L").resize((300, 300)).save(root / "astronaut_small_gray.jpg")
    Image.fromarray(skimage.data.coffee()).save(root / "coffee.png")
    Image.new("RGB", (1, 1), (200, 180, 160)).save(root / "one_pixel.png")
    (root / "notes.txt").write_text("not a picture\n")
    (root / "empty.png").write_bytes(b"")
    full = (root / "astronaut.png").read_bytes()
    (root / "truncated.png").write_bytes(full[:len(full) // 3])
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))  # 10 gigapixels: PIL refuses at open
    (root / "big_header.png").write_bytes(png_claiming(8000, 6000))  # 48 MP: under PIL's limit, over ours
    return root


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("app_out")


@pytest.fixture(scope="module")
def app(random_checkpoint, out_dir):
    return WebApp.from_checkpoint(random_checkpoint, out_dir=out_dir, workers=2)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
# One pipeline with predict_FER.py


def test_astronaut_gives_predict_FER_records(app, photos, random_checkpoint, tmp_path):
    result = app.analyse(str(photos / "astronaut.png"))
    assert len(result.records) == 1
    record = result.records[0]
    assert set(record) == FIELDS and record["source"] == "astronaut.png" and record["note"] is None
    x, y, w, h = record["box"]
    assert abs(x + w / 2 - FACE_CENTRE[0]) <= 15 and abs(y + h / 2 - FACE_CENTRE[1]) <= 15
    assert list(record["probabilities"]) == list(FER2013_CLASSES)
    assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
    assert read_jsonl(result.records_path) == result.records  # the download is these records
    assert (app.out_dir / record["annotated"]).is_file()

    out = tmp_path / "predict"
    assert predict_FER.main(predict_FER.get_args_parser().parse_args(
        ["--checkpoint", str(random_checkpoint), "--out", str(out), "--quiet", str(photos / "astronaut.png")])) == 0
    written = read_jsonl(out / "predictions.jsonl")[0]
    assert set(written) == set(record)
    assert written["box"] == record["box"] and written["label"] == record["label"]
    assert written["probabilities"] == pytest.approx(record["probabilities"], abs=1e-5)


def test_the_photo_is_numbered_in_reading_order_and_the_panels_follow(app):
    from expression.inference.faces import reading_order

    # two rows, the second face of the top row a little lower than the first: rows, then left to right
    boxes = [(300, 40, 80, 80), (20, 200, 90, 90), (10, 10, 90, 90), (400, 190, 70, 70), (150, 30, 80, 80)]
    assert reading_order(boxes) == [(10, 10, 90, 90), (150, 30, 80, 80), (300, 40, 80, 80), (20, 200, 90, 90),
                                    (400, 190, 70, 70)]
    result = app.analyse(str(app.examples[1]), method="none", attention=False)
    xs = [r["box"][0] for r in result.records]
    assert xs == sorted(xs) and [r["face"] for r in result.records] == [0, 1, 2]
    assert [caption.split(":")[0] for _, caption in result.panels] == ["face 1", "face 2", "face 3"]
    assert "1: **" in result.summary and "3: **" in result.summary
    # nothing but a box and a number tag is drawn: outside the boxes and tags the photo is untouched
    photo = np.asarray(Image.open(app.examples[1]).convert("RGB"))
    changed = np.any(result.annotated != photo, axis=2)
    inside = np.zeros_like(changed)
    for x, y, w, h in (r["box"] for r in result.records):
        inside[max(0, y - 70):y + h + 4, max(0, x - 4):x + w + 4] = True
    assert changed.any() and not (changed & ~inside).any()


def test_defaults_come_from_the_prediction_module(app):
    assert webapp.DEFAULT_CAM_LAYER == cam_policy.DEFAULT_CAM_LAYER
    assert webapp.DEFAULT_CAM_METHOD == cam_policy.DEFAULT_CAM_METHOD
    assert webapp.DEFAULT_CAM_METHOD in app.methods and webapp.DEFAULT_CAM_LAYER in app.layers
    assert app.stages == ["layer1", "layer2", "layer3", "layer4"]
    assert app.layers == app.stages + (["fused"] if hasattr(prediction, "FUSED_LAYERS") else [])
    assert app.methods == tuple(cam_policy.CAMS)


def test_a_fused_map_takes_the_attention_of_the_finest_stage(app, photos):
    if "fused" not in app.layers:
        pytest.skip("expression.inference.classifier has no fused maps (FUSED_LAYERS) in this version")
    result = app.analyse(str(photos / "astronaut.png"), method="gradcam", layer="fused")
    assert result.heats.shape == (1, 48, 48) and 0 <= result.heats.min() and result.heats.max() <= 1
    assert app.attention_layer("fused") == "layer1" and app.attention_layer("layer3") == "layer3"


@pytest.mark.parametrize("method,layer", [("gradcampp", "layer2"), ("gradcam", "layer4")])
def test_explanation_and_attention_are_the_librarys_maps(app, photos, method, layer):
    result = app.analyse(str(photos / "astronaut.png"), method=method, layer=layer, attention=True)
    item = FacePredictor(app.model, app.ckpt).analyse(skimage.data.astronaut())
    x = app.classifier("none", layer).prep.to_tensor(item.crops)
    expected = explain(app.model, x, layers=(layer,), methods=(method,)).maps[f"{method}/{layer}"].numpy()
    np.testing.assert_allclose(result.heats, expected, atol=1e-5)
    np.testing.assert_allclose(result.attention, attention_maps(app.model, x, layers=(layer,)).maps[layer].numpy(),
                               atol=1e-6)
    panel, caption = result.panels[0]
    assert caption.startswith(f"face 1: {result.records[0]['label']} ")
    plain = app.analyse(str(photos / "astronaut.png"), method="none", attention=False)
    assert plain.heats is None and plain.attention is None
    assert panel.shape[1] == plain.panels[0][0].shape[1] + 2 * (webapp.TILE + 8)  # two more tiles


def test_examples_are_written_at_start_up(app):
    names = [p.name for p in app.examples]
    assert names == ["astronaut.png", "demo_faces.png"]
    assert all(p.parent == app.out_dir / "examples" for p in app.examples)
    counts = [len(app.analyse(str(p), method="none", attention=False).records) for p in app.examples]
    assert counts == [1, 3]


def test_whole_image_mode_is_one_face(app, photos):
    result = app.analyse(str(photos / "astronaut_small_gray.jpg"), method="none", attention=False, whole_image=True)
    assert [r["box"] for r in result.records] == [[0, 0, 300, 300]]


# ---------------------------------------------------------------------------------------------------
# Concurrency


def test_simultaneous_requests_give_what_each_gives_alone(app, photos):
    paths = [str(photos / "astronaut.png"), str(app.examples[1])]
    alone = [app.analyse(p) for p in paths]
    for _ in range(3):
        barrier, results, errors = threading.Barrier(len(paths)), [None] * len(paths), []

        def work(i):
            try:
                barrier.wait()
                results[i] = app.analyse(paths[i])
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(paths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for mine, reference in zip(results, alone):
            assert [r["box"] for r in mine.records] == [r["box"] for r in reference.records]
            assert [r["probabilities"] for r in mine.records] == [r["probabilities"] for r in reference.records]
            np.testing.assert_allclose(mine.heats, reference.heats, atol=1e-6)
            np.testing.assert_allclose(mine.attention, reference.attention, atol=1e-6)
            assert mine.records_path != reference.records_path
    assert len(alone[1].records) == 3


def test_the_model_work_holds_its_engines_lock(app, photos, monkeypatch):
    seen = []
    real = prediction.classify

    def spy(items, classifier):
        engine = next(e for e in app.pool if e.model is classifier.model)
        seen.append((engine.lock.locked(), app.engines.qsize()))
        return real(items, classifier)

    monkeypatch.setattr(prediction, "classify", spy)
    app.analyse(str(photos / "astronaut.png"))
    assert seen == [(True, app.workers - 1)]  # one engine checked out and locked, the others free
    assert app.engines.qsize() == app.workers and not any(e.lock.locked() for e in app.pool)
    assert app.pool[0].model is not app.pool[1].model  # each worker its own copy: its own hooks
    assert app.pool[0].detector.cascade is not app.pool[1].detector.cascade


# ---------------------------------------------------------------------------------------------------
# Bad input: a message in the page, the server goes on, nothing written outside --out


BAD = [
    ("notes.txt", "is not an image"),
    ("empty.png", "is empty"),
    ("truncated.png", "damaged"),
    ("bomb.png", "too large"),
    ("big_header.png", "too large (8000x6000 px)"),
]


@pytest.mark.parametrize("name,words", BAD)
def test_bad_files_are_a_message(app, photos, name, words):
    before_inputs, before_requests = files_under(photos), sorted(app.requests_dir.iterdir())
    photo, panels, records_file, status, warning = app.respond(str(photos / name))
    assert photo is None and panels is None and records_file is None
    assert words in warning and status.startswith("**Could not analyse this file:**") and name in warning
    assert files_under(photos) == before_inputs  # nothing written beside the upload
    assert sorted(app.requests_dir.iterdir()) == before_requests  # and nothing for the refused request
    assert app.respond(str(photos / "astronaut.png"))[0] is not None  # the next request is served


@pytest.mark.parametrize("name,words", [("one_pixel.png", "1x1 px, smaller than the smallest face"),
                                        ("coffee.png", "no face found")])
def test_no_face_is_a_message_and_a_record(app, photos, name, words):
    photo, panels, records_file, status, warning = app.respond(str(photos / name))
    assert words in status and words in warning and panels is None
    assert photo.shape[0] >= 256  # the annotated copy, enlarged like predict_FER.py's
    assert read_jsonl(records_file) == [{"source": name, "frame": None, "face": None, "box": None, "label": None,
                                         "probabilities": None, "tta": None, "true_label": None,
                                         "annotated": read_jsonl(records_file)[0]["annotated"],
                                         "note": "no face found"}]
    assert Path(records_file).resolve().is_relative_to(app.out_dir.resolve())


def test_pixel_limit_and_bad_choices(photos, random_checkpoint, tmp_path):
    small = WebApp.from_checkpoint(random_checkpoint, out_dir=tmp_path / "out", max_pixels=100_000)
    with pytest.raises(BadInput, match="too large .512x512 px.; the limit is 0.1 megapixels"):
        small.analyse(str(photos / "astronaut.png"))
    assert small.analyse(str(photos / "one_pixel.png")).records[0]["note"] == "no face found"
    with pytest.raises(BadInput, match="unknown layer 'fc'"):
        small.analyse(str(photos / "one_pixel.png"), method="gradcam", layer="fc")
    with pytest.raises(BadInput, match="unknown explanation"):
        small.analyse(str(photos / "one_pixel.png"), method="magic")
    assert small.respond(None)[3] == webapp.WAITING
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"examples", "requests"}


def test_an_internal_error_is_a_message_too(app, photos, monkeypatch):
    monkeypatch.setattr(app, "_attention", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    status, warning = app.respond(str(photos / "astronaut.png"))[3:]
    assert "internal error \\(RuntimeError: boom\\)" in status and "internal error (RuntimeError: boom)" in warning
    assert app.engines.qsize() == app.workers and not any(e.lock.locked() for e in app.pool)


def test_read_image_any_mode(photos, tmp_path):
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(tmp_path / "sixteen.png")
    assert read_image(tmp_path / "rgba.png").shape == (512, 512, 3)
    assert (read_image(tmp_path / "sixteen.png") == 255).all()
    assert read_image(photos / "astronaut_small_gray.jpg").shape == (300, 300, 3)
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    rgb, animated = webapp.read_upload(tmp_path / "anim.gif")
    assert animated and rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50  # the first frame, red
    assert webapp.read_upload(tmp_path / "rgba.png")[1] is False
    with pytest.raises(BadInput, match="no longer on the server"):
        read_image(tmp_path / "gone.png")


def test_an_animation_says_only_its_first_frame_was_used(app, photos, tmp_path):
    astro = Image.fromarray(skimage.data.astronaut())
    astro.save(tmp_path / "astro.gif", save_all=True, append_images=[astro.rotate(180)])
    result = app.analyse(str(tmp_path / "astro.gif"), method="none", attention=False)
    assert result.first_frame_only and "Only the first frame of this animation was analysed." in result.summary
    assert "first frame" not in app.analyse(str(photos / "astronaut.png"), method="none", attention=False).summary


def test_names_and_messages_are_shown_as_text(app, photos, tmp_path):
    odd = tmp_path / "**bold** [x](y) _it_.png"
    odd.write_bytes((photos / "one_pixel.png").read_bytes())
    status = app.respond(str(odd))[3]
    assert r"\*\*bold\*\* \[x\]\(y\) \_it\_\.png" in status
    fake = tmp_path / "<b>fake<b>.png"
    fake.write_text("text")
    assert r"\<b\>fake\<b\>\.png is not an image" in app.respond(str(fake))[3]


def test_panel_bars_are_as_long_as_the_probabilities():
    """The app's bars come from the same drawing as the annotated copies' (inference.drawing.draw_bars),
    in the page's style: bar lengths follow the probabilities, the top class is framed."""
    from expression.inference import drawing
    names, probs = list(FER2013_CLASSES), np.array([0.25, 0, 0, 0.5, 0.25, 0, 0])
    bars = webapp.probability_bars(probs, names)
    assert bars.shape == (7 * 22, webapp.BARS_WIDTH, 3)
    _, name_w = drawing.bar_font(22, names, drawing.ON_PAGE)
    room = webapp.BARS_WIDTH - name_w - drawing.ON_PAGE.right
    for i, p in enumerate(probs):
        middle = bars[i * 22 + 11]
        coloured = int((middle == drawing.PALETTE[i]).all(axis=1).sum())
        assert coloured == (round(room * p) + 1 if p else 0), (names[i], coloured)
    frame = (bars[:, 0] == (60, 60, 60)).all(axis=1)  # the frame's left edge, in the top class's row only
    assert frame[3 * 22 + 1:3 * 22 + 21].all() and not frame[:3 * 22].any() and not frame[4 * 22:].any()
    assert (bars[3 * 22 + 4:3 * 22 + 18, -44:] < 100).any()  # its percentage, in dark type


def test_a_non_square_crop_keeps_its_proportions():
    crop = np.zeros((60, 120, 3), np.uint8)  # a wide whole-image face
    panel = webapp.face_panel(crop, np.full(7, 1 / 7), list(FER2013_CLASSES), heat=np.ones((48, 48)),
                              attention=None, titles=("face crop", "a very long explanation name at layerX", "x"))
    tile = panel[22:22 + webapp.TILE, :webapp.TILE]
    dark = np.argwhere(tile.max(axis=2) < 40)
    (y0, x0), (y1, x1) = dark.min(axis=0), dark.max(axis=0)
    assert (x1 - x0 + 1, y1 - y0 + 1) == (webapp.TILE, webapp.TILE // 2)  # 2:1, letterboxed, not squashed
    assert panel[22 + webapp.TILE + 4:22 + webapp.TILE + 13, webapp.TILE + 8:2 * webapp.TILE + 8].std() > 20  # scale


def test_old_and_excess_files_are_deleted(photos, random_checkpoint, tmp_path):
    import os
    import time
    cache = tmp_path / "cache"
    small = WebApp.from_checkpoint(random_checkpoint, out_dir=tmp_path, keep_seconds=600, max_out_mb=1,
                                   cache_dir=cache)
    now = time.time()
    for i, age in enumerate((3600, 30, 20)):  # uploads in gradio's cache: one old, two recent ones of 600 KB
        upload = cache / f"hash{i}" / "photo.png"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(b"x" * 600_000)
        os.utime(upload, (now - age, now - age))
        os.utime(upload.parent, (now - age, now - age))
    folder = small.analyse(str(photos / "one_pixel.png")).records_path.parent
    # the old upload went for its age, the older recent one for the 1 MB cap; the request's own folder stays
    assert sorted(p.name for p in cache.iterdir()) == ["hash2"]
    assert [p.name for p in small.requests_dir.iterdir()] == [folder.name]
    assert small.sweep(now=now + 601) == 0  # everything, once old enough
    assert not any(cache.iterdir()) and not any(small.requests_dir.iterdir())
    assert (tmp_path / "examples" / "astronaut.png").is_file()  # the examples are not swept


def test_request_folders_have_unguessable_names_and_records_relative_paths(app, photos):
    results = [app.analyse(str(photos / "astronaut.png"), method="none", attention=False) for _ in range(2)]
    names = [r.records_path.parent.name for r in results]
    assert len(set(names)) == 2 and all(len(n) >= 24 and "astronaut" not in n for n in names)
    assert not any(n[:8].isdigit() for n in names)  # no date (nor counter) to count from
    for result in results:
        text = result.records_path.read_text()
        assert str(app.out_dir.resolve()) not in text and str(photos) not in text
        assert not Path(result.records[0]["annotated"]).is_absolute()


def test_upload_names_cannot_leave_the_output_folder(app, photos):
    result = app.analyse(skimage.data.astronaut(), method="none", attention=False, name="../../etc/pass wd.png")
    annotated = (app.out_dir / result.records[0]["annotated"]).resolve()
    assert annotated.is_relative_to(app.requests_dir.resolve()) and annotated.name == "pass_wd_annotated.jpg"


# ---------------------------------------------------------------------------------------------------
# app.py and the gradio page


def test_app_flags():
    args = app_script.get_args_parser().parse_args([])
    assert (args.host, args.port, args.share, args.checkpoint, args.out) == ("127.0.0.1", 7860, False, None, "runs/app")
    assert "--checkpoint" in app_script.get_args_parser().format_help()
    assert args.workers == webapp.default_workers() >= 1 and args.root_path is None
    assert args.max_out_mb == webapp.DEFAULT_MAX_OUT_MB


def test_page_builds_and_passes_any_upload_on(app, photos, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio", reason="the page needs gradio: pip install -r requirements-app.txt")
    from gradio.data_classes import FileData
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    demo, theme = webapp.build_interface(app)
    assert isinstance(demo, gr.Blocks) and demo.analytics_enabled is False
    upload = next(b for b in demo.blocks.values() if type(b).__name__ == "UploadImage")
    assert upload.get_block_name() == "image" and upload.sources == ["upload", "webcam"]
    assert upload.preprocess(FileData(path=str(photos / "notes.txt"), orig_name="notes.txt")) == \
        str(photos / "notes.txt")  # gr.Image alone would raise PIL's UnidentifiedImageError here
    # the file as uploaded, not a converted copy: a 16-bit PNG keeps its 16 bits, a .jpg its name
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp_path / "deep.png")
    deep = FileData(path=str(tmp_path / "deep.png"), orig_name="deep.png")
    assert upload.preprocess(deep) == str(tmp_path / "deep.png")
    assert upload.image_mode is None  # and no converted copy was written to gradio's cache:
    assert {p.name for p in (tmp_path / "cache").rglob("*.png")} <= {"astronaut.png", "demo_faces.png"}
    images = [b for b in demo.blocks.values() if isinstance(b, gr.Image)]
    assert len(images) == 3 and all("share" not in (b.buttons or []) for b in images)  # Share can only fail
    analyse = next(f for f in demo.fns.values() if f.api_name == "analyse")
    assert analyse.concurrency_limit == app.workers == 2
    assert "googleapis" not in json.dumps(theme._get_theme_css() if hasattr(theme, "_get_theme_css") else "")
    fonts = [f.name if hasattr(f, "name") else str(f) for f in theme._font]
    assert fonts == ["system-ui", "sans-serif"]



def test_the_sweep_spares_gradios_copies_of_the_examples(app, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the page needs gradio: pip install -r requirements-app.txt")
    import time
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(app, "cache_dir", tmp_path / "cache")  # as app.py sets it
    monkeypatch.setattr(app, "protected", set())
    webapp.build_interface(app)
    copies = sorted(p.name for p in (tmp_path / "cache").rglob("*.png"))
    assert copies == ["astronaut.png", "demo_faces.png"] and len(app.protected) == 2
    (tmp_path / "cache" / "an_upload").mkdir()
    app.sweep(now=time.time() + 10 * app.keep_seconds)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.png")) == copies  # the examples still work
    assert not (tmp_path / "cache" / "an_upload").exists()
