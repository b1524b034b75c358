"""train_resnet34.py end to end on tiny generated data: outputs, repeatability, exact resume, bad input."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from conftest import make_checkpoint

import train_resnet34
from expression.apps.cli import run_main
from expression.apps.configs import DEMO_EPOCHS, DEMO_LR, train_config
from expression.core import checkpoint
from expression.core.datasets import check_splits, decode_split
from expression.core.preprocessing import Preprocessing
from expression.training import recipe, trainer
from expression.training.config import TrainConfig, from_recipe
from expression.training.engine import evaluate
from expression.training.loader import InMemoryLoader


def run(tmp_path, image_folder, *extra, name="run"):
    """train_resnet34 in-process, as the command line would run it (32 px keeps the suite fast)."""
    argv = ["--data", str(image_folder), "--weights", "none", "--epochs", "1", "--batch-size", "16", "--img-size", "32",
            "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--name", name,
            "--workers", "0", "--quiet", *extra]
    return run_main(train_resnet34.main, train_resnet34.get_args_parser().parse_args(argv))


def metrics(tmp_path, name):
    with open(tmp_path / "runs" / name / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def weights(tmp_path, name):
    return torch.load(tmp_path / "models" / f"{name}.pt", weights_only=True)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_one_epoch_writes_every_output(tmp_path, image_folder, capsys):
    assert run(tmp_path, image_folder) == 0
    run_dir = tmp_path / "runs" / "run"
    for name in ("args.json", "metrics.csv", "curves.png", "confusion_matrix.png", "confusion_matrix.csv",
                 "classification_report.txt",
                 "classification_report.json", "checkpoint.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    assert list(csv.DictReader(open(run_dir / "metrics.csv")))[0].keys() == {
        "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    assert json.loads((run_dir / "args.json").read_text())["lr"] == 1e-4
    report = json.loads((run_dir / "classification_report.json").read_text())
    assert set(report) >= {"angry", "surprise", "accuracy", "macro avg"}
    out = capsys.readouterr().out
    assert "epoch   1/1  train loss" in out and "test accuracy" in out

    # The saved model alone reproduces the reported accuracy and the report's support counts.
    model, ckpt = checkpoint.load_model(tmp_path / "models" / "run.pt")
    pre = Preprocessing.from_checkpoint(ckpt)
    classes = check_splits(image_folder / "train", image_folder / "test")
    test = decode_split(image_folder / "test", classes, pre.img_size)
    assert pre.img_size == 32
    loader = InMemoryLoader(test, 8, pre.mean, pre.std)
    result = evaluate(model, loader, "cpu")
    assert result.acc == pytest.approx(ckpt["metrics"]["test_acc"], abs=1e-9)
    assert result.acc == pytest.approx(report["accuracy"], abs=1e-9)
    assert ckpt["epoch"] == 1 and ckpt["args"]["epochs"] == 1 and ckpt["color"] == "gray"


def test_trainer_runs_from_python_without_the_parser(tmp_path, image_folder, capsys):
    """A TrainConfig built in Python trains the same model as the command line with the same settings,
    and the config the run recorded is that config, unchanged by the run."""
    assert run(tmp_path, image_folder, name="cli") == 0
    config = TrainConfig(data=str(image_folder), train_dir=str(image_folder / "train"),
                         test_dir=str(image_folder / "test"), weights="none", epochs=1, batch_size=16, img_size=32,
                         out=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), name="python", workers=0,
                         quiet=True)
    before = config.record()
    assert trainer.run(config) == 0
    assert config.record() == before  # frozen: the run filled in nothing
    assert metrics(tmp_path, "python") == metrics(tmp_path, "cli")
    assert_same_weights(weights(tmp_path, "python"), weights(tmp_path, "cli"))
    recorded = json.loads((tmp_path / "runs" / "python" / "args.json").read_text())
    assert recorded == before and torch.load(tmp_path / "models" / "python.pt", weights_only=True)["args"] == before
    cli_recorded = json.loads((tmp_path / "runs" / "cli" / "args.json").read_text())
    assert {k: v for k, v in cli_recorded.items() if k != "name"} == {k: v for k, v in before.items() if k != "name"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 2


def test_presets_from_python_match_the_command_line():
    """from_recipe is the command line's --recipe: the same values for every recipe field."""
    for name in recipe.RECIPES:
        from_flags = train_config(train_resnet34.get_args_parser().parse_args(["--recipe", name]))
        assert from_recipe(name, name=from_flags.name, weights=from_flags.weights) == from_flags, name
    # the script with no flags is TrainConfig's defaults: the seed recipe, defined once
    assert train_config(train_resnet34.get_args_parser().parse_args([])) == TrainConfig()


def test_seeded_runs_repeat(tmp_path, image_folder):
    run(tmp_path, image_folder, name="a")
    run(tmp_path, image_folder, name="b")
    assert metrics(tmp_path, "a") == metrics(tmp_path, "b")
    assert_same_weights(weights(tmp_path, "a"), weights(tmp_path, "b"))
    run(tmp_path, image_folder, "--seed", "1", name="c")
    assert metrics(tmp_path, "a") != metrics(tmp_path, "c")


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, image_folder, monkeypatch, capsys):
    run(tmp_path, image_folder, "--epochs", "2", name="straight")

    real_train = trainer.train_one_epoch
    calls = []

    def interrupt_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", interrupt_in_epoch_2)
    assert run(tmp_path, image_folder, "--epochs", "2", name="broken") == 130
    assert "resume with --resume" in capsys.readouterr().err
    assert not (tmp_path / "models" / "broken.pt").exists()
    monkeypatch.setattr(trainer, "train_one_epoch", real_train)

    state = tmp_path / "runs" / "broken" / "checkpoint.pt"
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert run(tmp_path, image_folder, "--epochs", "2", "--resume", str(state), name="broken") == 0
    assert metrics(tmp_path, "broken") == metrics(tmp_path, "straight")
    assert_same_weights(weights(tmp_path, "broken"), weights(tmp_path, "straight"))


def expect_usage_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_data_folders(tmp_path, image_folder, capsys):
    expect_usage_error(capsys, run(tmp_path, tmp_path / "missing"), "does not exist", "--data")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    expect_usage_error(capsys, run(tmp_path, tmp_path / "empty"), "no class sub-folders")
    (image_folder / "test" / "angry").rename(image_folder / "test" / "anger")
    expect_usage_error(capsys, run(tmp_path, image_folder), "classes differ", "only in test: ['anger']")
    (image_folder / "test" / "anger").rename(image_folder / "test" / "angry")
    for png in (image_folder / "train" / "fear").iterdir():
        png.unlink()
    expect_usage_error(capsys, run(tmp_path, image_folder), "fear has no images")


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "0"),
                                        ("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "inf"),
                                        ("--epochs", "two")])
def test_bad_numbers(tmp_path, image_folder, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, image_folder, flag, value)
    expect_usage_error(capsys, exit_info.value.code, flag)


def test_unwritable_output_and_bad_weights(tmp_path, image_folder, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    expect_usage_error(capsys, run(tmp_path, image_folder, "--out", str(blocker / "runs")), "cannot write to --out")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    expect_usage_error(capsys, run(tmp_path, image_folder, "--weights", str(tmp_path / "junk.pth")),
                       "cannot read weights file")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pth")
    expect_usage_error(capsys, run(tmp_path, image_folder, "--weights", str(tmp_path / "foreign.pth")),
                       "does not match torchvision resnet34")


def test_resume_from_another_model_is_refused(tmp_path, image_folder, capsys):
    other = make_checkpoint(tmp_path / "other.pt", classes=("x", "y"))
    expect_usage_error(capsys, run(tmp_path, image_folder, "--resume", str(other)), "model file, not a training state")
    record = torch.load(other, weights_only=True)
    record["format"] = checkpoint.STATE_FORMAT
    checkpoint.save(record, tmp_path / "other_state.pt")
    expect_usage_error(capsys, run(tmp_path, image_folder, "--resume", str(tmp_path / "other_state.pt")),
                       "from a different model")


def test_existing_model_survives_a_failed_run(tmp_path, image_folder, monkeypatch):
    run(tmp_path, image_folder, name="keep")
    before = (tmp_path / "models" / "keep.pt").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, image_folder, name="keep")
    assert (tmp_path / "models" / "keep.pt").read_bytes() == before


def test_a_diverged_run_stops_and_keeps_the_model_and_last_good_state(tmp_path, image_folder, capsys):
    assert run(tmp_path, image_folder, name="keep") == 0
    model_before = (tmp_path / "models" / "keep.pt").read_bytes()
    capsys.readouterr()
    # Two epochs: the first is fine at a sane rate, then resume at a rate that diverges at once.
    assert run(tmp_path, image_folder, "--epochs", "1", name="div") == 0
    state = tmp_path / "runs" / "div" / "checkpoint.pt"
    state_before = state.read_bytes()
    capsys.readouterr()
    assert run(tmp_path, image_folder, "--epochs", "2", "--resume", str(state), "--optimizer", "sgd",
               name="div") == 2
    assert "trained with --optimizer adam" in capsys.readouterr().err
    code = run(tmp_path, image_folder, "--epochs", "2", "--resume", str(state), "--lr", "1e30", name="div")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line, = [l for l in err.splitlines() if l.startswith("error:")]
    assert "diverged in epoch 2" in line and "step" in line and "lower --lr" in line and "epoch 1" in line
    assert state.read_bytes() == state_before  # the resumable state of the last good epoch
    assert (tmp_path / "models" / "keep.pt").read_bytes() == model_before
    assert torch.load(tmp_path / "models" / "div.pt", weights_only=True)["epoch"] == 1  # not replaced


def test_demo_defaults_and_corner_validation(tmp_path, monkeypatch, capsys):
    parse = train_resnet34.get_args_parser().parse_args
    args = parse(["--demo"])
    args = train_config(args)
    assert (args.weights, args.epochs, args.lr, args.name) == ("none", DEMO_EPOCHS,
                                                               DEMO_LR, "resnet34_demo")
    assert args.train_dir.endswith("data/demo/train")
    args = parse(["--demo", "--demo-corner", "happy", "--epochs", "2", "--weights", "w.pth"])
    args = train_config(args)
    assert (args.name, args.epochs, args.weights) == ("resnet34_demo_corner_happy", 2, "w.pth")
    assert args.data.endswith("demo-corner-happy")
    args = parse([])
    args = train_config(args)  # the seed recipe when nothing is said
    assert (args.weights, args.epochs, args.lr, args.batch_size, args.img_size) == ("imagenet", 15, 1e-4, 64, 48)
    expect_usage_error(capsys, run_main(train_resnet34.main, parse(["--demo", "--demo-corner", "smirk"])),
                       "not a class")
    expect_usage_error(capsys, run_main(train_resnet34.main, parse(["--demo-corner", "happy"])),
                       "only applies with --demo")
