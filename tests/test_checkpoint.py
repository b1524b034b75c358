"""Checkpoints: strict, weights_only round trips; every malformed file is a clear InputError."""
from __future__ import annotations

import urllib.error

import pytest
import torch
from conftest import make_checkpoint
from torchvision import models

from expression.apps.cli import flag_message
from expression.core import checkpoint
from expression.core.errors import InputError
from expression.core.model import build_model
from expression.core.preprocessing import Preprocessing


def test_round_trip_is_strict_and_weights_only(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt", classes=("a", "b", "c"), img_size=40)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain types only
    model, ckpt = checkpoint.load_model(path)
    assert ckpt["class_names"] == ["a", "b", "c"] and model.fc.out_features == 3
    assert Preprocessing.from_checkpoint(ckpt) == Preprocessing(40, (0.5,) * 3, (0.5,) * 3, "gray")
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw["model"][key])
    assert not model.training


def test_pickled_whole_model_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(build_model("resnet34", 7), path)
    with pytest.raises(InputError, match="pickles Python objects"):
        checkpoint.load_model(path)


def test_bare_state_dict_and_garbage_are_refused(tmp_path):
    torch.save(build_model("resnet34", 7).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(InputError, match="not an Expression-Deciphered checkpoint"):
        checkpoint.load_model(tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        checkpoint.load_model(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="no checkpoint at .*train one with"):
        checkpoint.load_model(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    record = torch.load(path, weights_only=True)
    record["class_names"] = record["class_names"][:5]  # claims 5 classes, holds a 7-way head
    checkpoint.save(record, path)
    with pytest.raises(InputError, match=r"fc.weight has shape \(7, 512\), \(5, 512\) for 5 class names"):
        checkpoint.load_model(path)


@pytest.mark.parametrize("field, value, message", [
    ("img_size", 0, "img_size 0"),
    ("img_size", 10 ** 6, "img_size 1000000"),
    ("img_size", "48", "img_size '48'"),
    ("color", "cmyk", "color 'cmyk'"),
    ("class_names", ["happy"], "at least two"),
    ("class_names", ["a", "a", "b", "c", "d", "e", "f"], "repeat a name"),
    ("class_names", ["a", "", "b", "c", "d", "e", "f"], "non-empty"),
    ("mean", [0.5, float("nan"), 0.5], "mean"),
    ("mean", [0.5], "mean"),
    ("std", [0.5, 0.0, 0.5], "above 0"),
    ("model", {"fc.weight": [1.0]}, "state dict of tensors"),
])
def test_invalid_metadata_is_refused_on_load(tmp_path, field, value, message):
    path = make_checkpoint(tmp_path / "m.pt")
    record = torch.load(path, weights_only=True)
    record[field] = value
    checkpoint.save(record, path)
    with pytest.raises(InputError, match="invalid metadata") as error:
        checkpoint.load_model(path)
    assert message in str(error.value)


def test_a_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = make_checkpoint(tmp_path / "m.pt")
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")  # checkpoint.save hands torch a file object
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(InputError, match="disk full.*the previous m.pt is unchanged"):
        checkpoint.save({"anything": 1}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_newest_model(tmp_path):
    with pytest.raises(InputError, match="no model in"):
        checkpoint.newest_model(tmp_path)
    older = make_checkpoint(tmp_path / "older.pt")
    newer = make_checkpoint(tmp_path / "newer.pt")
    import os
    os.utime(older, (1, 1))
    assert checkpoint.newest_model(tmp_path) == newer


def test_local_torchvision_weights(tmp_path):
    torch.manual_seed(3)
    reference = models.resnet34(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet34.pth")
    model = build_model("resnet34", 7, weights=str(tmp_path / "resnet34.pth"))
    assert torch.equal(model.conv1.weight, reference.conv1.weight) and model.fc.out_features == 7
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(InputError, match="does not match torchvision resnet34"):
        build_model("resnet34", 7, weights=str(tmp_path / "foreign.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read weights file"):
        build_model("resnet34", 7, weights=str(tmp_path / "junk.pth"))


def test_imagenet_weights_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(models.ResNet34_Weights, "get_state_dict", offline)
    with pytest.raises(InputError, match="use 'none' to train from scratch") as error:
        build_model("resnet34", 7, weights="imagenet")
    # the script boundary names the flag: python train_resnet34.py prints this line
    assert flag_message(error.value).startswith("--weights: could not get ImageNet weights for resnet34")


def _demo_checkpoint(path):
    record = torch.load(make_checkpoint(path), weights_only=True)
    record["args"] = {"demo": True}
    return checkpoint.save(record, path)


def test_default_model_never_gives_real_photos_to_a_demo_model(tmp_path, monkeypatch):
    import os
    models_dir = tmp_path / "models"
    shipped = make_checkpoint(tmp_path / "shipped" / "fer.pt")
    monkeypatch.setattr(checkpoint, "SHIPPED_MODEL", shipped)
    real = make_checkpoint(models_dir / "fer_own.pt")
    os.utime(real, (1, 1))
    demo = _demo_checkpoint(models_dir / "resnet34_demo.pt")  # the newest
    assert checkpoint.choose_model(None, models_dir)[0] == demo  # its own demo test faces: fine
    path, why = checkpoint.choose_model(None, models_dir, real_photos=True)
    assert path == real and "newest" in why
    real.unlink()
    path, why = checkpoint.choose_model(None, models_dir, real_photos=True)
    assert path == shipped and "resnet34_demo.pt" in why and "demo" in why
    monkeypatch.setattr(checkpoint, "SHIPPED_MODEL", tmp_path / "absent.pt")
    with pytest.raises(InputError, match="name .*resnet34_demo.pt as the checkpoint") as error:
        checkpoint.choose_model(None, models_dir, real_photos=True)
    assert flag_message(error.value).startswith("--checkpoint: only demo-face models")
    assert checkpoint.choose_model(str(demo), models_dir, real_photos=True) == (demo, "--checkpoint")
    demo.unlink()
    with pytest.raises(InputError, match="no model in"):
        checkpoint.choose_model(None, models_dir)


def test_float16_weights_load_as_float32(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    full, _ = checkpoint.load_model(path)
    record = torch.load(path, weights_only=True)
    record["model"] = {k: v.half() if v.is_floating_point() else v for k, v in record["model"].items()}
    checkpoint.save(record, tmp_path / "half.pt")
    half, _ = checkpoint.load_model(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(half(x), full(x), atol=2e-2, rtol=2e-2)
