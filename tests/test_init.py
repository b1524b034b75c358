"""train_resnet34.py --init: a warm restart from a project model's weights, and the lineage it records."""
from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import write_image_folder

import train_resnet34
from bench.ship_model import half_record
from expression.apps.cli import run_main
from expression.core import checkpoint


def train(tmp_path, data, name, *extra):
    """One tiny epoch in-process, without --weights (--init supplies the weights)."""
    argv = ["--data", str(data), "--epochs", "1", "--batch-size", "16", "--img-size", "32",
            "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--name", name,
            "--workers", "0", "--quiet", *extra]
    return run_main(train_resnet34.main, train_resnet34.get_args_parser().parse_args(argv))


def model_file(tmp_path, name):
    return tmp_path / "models" / f"{name}.pt"


def load(tmp_path, name):
    return torch.load(model_file(tmp_path, name), weights_only=True)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def parent(tmp_path, image_folder):
    assert train(tmp_path, image_folder, "parent", "--weights", "none") == 0
    return model_file(tmp_path, "parent")


def test_child_starts_from_the_parent_weights_and_records_its_lineage(tmp_path, image_folder, parent, capsys):
    # A rate of 1e-12 leaves the weights where they started: the child's convolutions must be the parent's.
    assert train(tmp_path, image_folder, "child", "--init", str(parent), "--lr", "1e-12") == 0
    assert f"starting from {parent}" in capsys.readouterr().out
    before, after = load(tmp_path, "parent"), load(tmp_path, "child")
    for key in ("conv1.weight", "layer2.0.conv1.weight", "fc.weight"):
        torch.testing.assert_close(after["model"][key], before["model"][key], atol=1e-8, rtol=0)
    fresh = train(tmp_path, image_folder, "fresh", "--weights", "none", "--seed", "1", "--lr", "1e-12")
    assert fresh == 0 and not torch.allclose(load(tmp_path, "fresh")["model"]["conv1.weight"],
                                             before["model"]["conv1.weight"])

    assert after["lineage"] == [{"file": "parent.pt", "sha256": sha256(parent), "epoch": 1, "total_epochs": 1,
                                 "command": before["command"]}]
    assert before["lineage"] == [] and before["total_epochs"] == 1
    assert after["total_epochs"] == 2 and after["args"]["init"] == str(parent)
    assert "--init" in after["command"] and after["command"].startswith("python train_resnet34.py")

    # A grandchild, started from a float16 copy (what ships): the whole line, oldest first.
    half = checkpoint.save(half_record(after), tmp_path / "child_fp16.pt")
    assert train(tmp_path, image_folder, "grandchild", "--init", str(half)) == 0
    lineage = load(tmp_path, "grandchild")["lineage"]
    assert [entry["file"] for entry in lineage] == ["parent.pt", "child_fp16.pt"]
    assert lineage[1]["sha256"] == sha256(half) and lineage[1]["total_epochs"] == 2
    assert load(tmp_path, "grandchild")["total_epochs"] == 3


def test_a_resumed_cycle_keeps_its_lineage(tmp_path, image_folder, parent):
    assert train(tmp_path, image_folder, "child", "--init", str(parent)) == 0
    state = tmp_path / "runs" / "child" / "checkpoint.pt"
    assert torch.load(state, weights_only=True)["lineage"][0]["sha256"] == sha256(parent)
    assert train(tmp_path, image_folder, "child", "--resume", str(state), "--epochs", "2", "--weights",
                 "none") == 0
    resumed = load(tmp_path, "child")
    assert resumed["lineage"][0]["sha256"] == sha256(parent) and resumed["total_epochs"] == 1 + resumed["epoch"]


def expect_one_line(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_a_parent_that_does_not_match_the_run_is_refused(tmp_path, image_folder, parent, capsys):
    expect_one_line(capsys, train(tmp_path, image_folder, "x", "--init", str(parent), "--img-size", "40"),
                    "--init", "image size: 32 in the file, 40 in this run")
    expect_one_line(capsys, train(tmp_path, image_folder, "x", "--init", str(parent), "--norm", "imagenet"),
                    "--init", "normalisation mean")
    fewer = write_image_folder(tmp_path / "five", classes=("angry", "fear", "happy", "sad", "surprise"))
    expect_one_line(capsys, train(tmp_path, fewer, "x", "--init", str(parent)), "--init", "class names")
    expect_one_line(capsys, train(tmp_path, image_folder, "x", "--init", str(parent), "--weights", "none"),
                    "--init and --weights both choose the starting weights")
    expect_one_line(capsys, train(tmp_path, image_folder, "x", "--init", str(tmp_path / "missing.pt")),
                    "--init", "no checkpoint at")
    assert not model_file(tmp_path, "x").exists()


@pytest.mark.parametrize("argv", [[], ["--demo", "--epochs", "3"],
                                  ["--data", "my data", "--recipe", "cpu", "--init", "m.pt", "--lr", "4e-4",
                                   "--no-nesterov", "--quiet", "--ema", "0.999"],
                                  ["--recipe", "strong", "--nesterov", "--val-split", "0.1"]])
def test_the_recorded_command_parses_back_to_the_same_options(argv):
    import shlex

    from expression.apps.cli import command_line

    parser = train_resnet34.get_args_parser()
    args = parser.parse_args(argv)
    command = command_line(parser, args, "train_resnet34.py")
    words = shlex.split(command)
    assert words[:2] == ["python", "train_resnet34.py"]
    assert vars(parser.parse_args(words[2:])) == vars(args)
    assert len(words) - 2 <= len(argv)  # only what differs from the defaults
