"""The seed's whole-model file is imported without running its pickle; foreign code is refused."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torchvision import models

import import_seed_model
from expression.core import checkpoint
from expression.core.preprocessing import Preprocessing
from expression.core.seed_model import SEED_CLASS_NAMES, SeedModelError, load_whole_resnet34, seed_record


def run(argv) -> int:
    from expression.apps.cli import run_main
    return run_main(import_seed_model.main, import_seed_model.get_args_parser().parse_args(list(map(str, argv))))


def seed_style_file(path):
    """What the seed did: a torchvision ResNet34, fc replaced by a 7-way Linear, torch.save(model)."""
    torch.manual_seed(1)
    model = models.resnet34()
    model.fc = nn.Linear(model.fc.in_features, 7)
    for module in model.modules():  # non-trivial BatchNorm statistics, so the import must carry them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(model.eval(), path)
    return model


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_seed_file_imports_to_an_equivalent_checkpoint(tmp_path, capsys):
    original = seed_style_file(tmp_path / "model_res34.pth")
    out = tmp_path / "models" / "seed.pt"
    assert run([tmp_path / "model_res34.pth", "--out", out]) == 0
    assert str(out) in capsys.readouterr().out
    model, ckpt = checkpoint.load_model(out)  # weights_only, strict
    assert ckpt["class_names"] == SEED_CLASS_NAMES
    assert Preprocessing.from_checkpoint(ckpt) == Preprocessing(48, (0.5,) * 3, (0.5,) * 3, "rgb")
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-6)


def test_malicious_pickle_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"model": _RunsCode(marker)}, tmp_path / "evil.pth")
    out = tmp_path / "seed.pt"
    assert run([tmp_path / "evil.pth", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "system" in err and "weights_only=False" not in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


def test_other_modules_and_wrong_heads_are_refused(tmp_path):
    torch.save(models.resnet18(num_classes=7), tmp_path / "r18.pth")  # allowed classes, other depth
    with pytest.raises(SeedModelError, match="not a ResNet34"):
        seed_record(load_whole_resnet34(tmp_path / "r18.pth"), tmp_path / "r18.pth")
    torch.save(models.resnet34(), tmp_path / "fc1000.pth")
    assert run([tmp_path / "fc1000.pth", "--out", tmp_path / "x.pt"]) == 2
    torch.save(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), tmp_path / "tanh.pth")  # Tanh is not allowed
    with pytest.raises(SeedModelError, match="Tanh"):
        load_whole_resnet34(tmp_path / "tanh.pth")
    torch.save(models.resnet34().state_dict(), tmp_path / "state.pth")
    with pytest.raises(SeedModelError, match="not a whole torchvision ResNet"):
        load_whole_resnet34(tmp_path / "state.pth")


def test_existing_output_is_kept_unless_forced(tmp_path):
    seed_style_file(tmp_path / "m.pth")
    out = tmp_path / "seed.pt"
    out.write_bytes(b"keep me")
    assert run([tmp_path / "m.pth", "--out", out]) == 2
    assert out.read_bytes() == b"keep me"
    assert run([tmp_path / "m.pth", "--out", out, "--force"]) == 0
    assert checkpoint.load_model(out)[1]["img_size"] == 48
