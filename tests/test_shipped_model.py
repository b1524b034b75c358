"""The FER2013 model shipped in models/shipped/: intact, strictly loadable, and usable on any input."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from PIL import Image

from expression.core import checkpoint
from expression.core.preprocessing import FER2013_CLASSES, Preprocessing

SHIPPED = checkpoint.SHIPPED_MODEL
MANIFEST = SHIPPED.with_suffix(".json")


def test_shipped_file_matches_its_manifest():
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["file"] == SHIPPED.name
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == manifest["sha256"]
    assert SHIPPED.stat().st_size == manifest["bytes"] < 50 * 2**20
    assert 0.5 < manifest["public_test_accuracy"] <= 1 and manifest["test_images"] == 3589


def test_shipped_model_loads_strictly_and_classifies():
    raw = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    model, ckpt = checkpoint.load_model(SHIPPED)  # strict keys, cast to float32
    assert ckpt["class_names"] == list(FER2013_CLASSES) and ckpt["args"].get("demo") is not True
    assert all(p.dtype == torch.float32 for p in model.parameters())
    prep = Preprocessing.from_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    inputs = [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), "L"),
              Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8), "RGB"),
              Image.fromarray(np.full((7, 9), 40000, np.uint16))]
    with torch.no_grad():
        probs = model(prep.to_tensor(inputs)).softmax(1)
    assert probs.shape == (3, 7) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(1), torch.ones(3))


def test_real_photos_default_to_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: nothing trained in models/
    assert checkpoint.choose_model(None, real_photos=True)[0] == SHIPPED


def test_photo_commands_work_out_of_the_box(tmp_path, monkeypatch, capsys):
    """`python predict_FER.py photo.jpg` and `python gradcam_FER.py --images photo.jpg` in a fresh clone."""
    import skimage.data

    import gradcam_FER
    import predict_FER
    from expression.apps.cli import run_main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "photo.jpg")
    assert run_main(predict_FER.main, predict_FER.get_args_parser().parse_args(["photo.jpg", "--quiet"])) == 0
    records = [json.loads(line) for line in (tmp_path / "runs" / "predict" / "predictions.jsonl").read_text().splitlines()]
    faces = [r for r in records if r.get("label")]
    assert faces and all(r["label"] in FER2013_CLASSES for r in faces)
    assert f"model: {SHIPPED}" in capsys.readouterr().err
    argv = ["--images", "photo.jpg", "--layers", "layer1", "--quiet"]
    assert run_main(gradcam_FER.main, gradcam_FER.get_args_parser().parse_args(argv)) == 0
    assert (tmp_path / "runs" / "explain" / SHIPPED.stem / "gradcam_grid.png").is_file()
    assert "the shipped FER2013 model" in capsys.readouterr().err


def test_docs_state_the_manifests_accuracy_sha256_and_lineage():
    """The README headline, models/README.md and the lineage say what the manifest measured."""
    from pathlib import Path

    manifest = json.loads(MANIFEST.read_text())
    root = Path(__file__).resolve().parents[1]
    readme, models_readme = (root / "README.md").read_text(), (root / "models" / "README.md").read_text()
    plain, flip = (f"**{100 * manifest[k]:.1f} %**" for k in ("public_test_accuracy", "public_test_accuracy_flip_tta"))
    assert plain in readme and flip in readme, (plain, flip)
    assert manifest["sha256"] in models_readme
    for entry in manifest["lineage"]:
        assert entry["sha256"] in models_readme and entry["command"], entry
    # the cycles add up: each cycle's curve, the epoch kept, and the epochs behind the weights
    cycles = manifest["cycles"]
    assert [c["cycle"] for c in cycles] == list(range(1, len(cycles) + 1))
    assert manifest["total_epochs"] == sum(c["epoch_saved"] for c in cycles)
    assert cycles[-1]["public_test_accuracy"] == manifest["public_test_accuracy"]
    assert all(len(c["curve"]) == c["epochs"] for c in cycles)


def test_the_default_map_is_trusted_in_the_shipped_models_committed_report():
    """One source of truth: the default explanation is one the report on the shipped model trusts."""
    import csv
    from pathlib import Path

    from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, SHIPPED_TRUSTED_MAPS, TRUSTED_MAPS

    folder = Path(__file__).resolve().parents[1] / "results" / "shipped_fer2013_publictest"
    about = json.loads((folder / "model.json").read_text())
    assert about["sha256"] == json.loads(MANIFEST.read_text())["sha256"], "re-run the report on the shipped model"
    with open(folder / "explanations_report.csv", newline="") as f:
        rows = {(r["method"], r["layer"]): r for r in csv.DictReader(f)}
    default = rows[(DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER)]
    assert default["trusted"] == "yes"
    assert float(default["deletion_auc"]) < float(rows[("centre", "")]["deletion_auc"])
    assert (DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER) in TRUSTED_MAPS[48]
    # the maps the app ticks are exactly those this report trusts
    trusted = {key for key, row in rows.items() if row["trusted"] == "yes"}
    assert trusted == set(SHIPPED_TRUSTED_MAPS)
