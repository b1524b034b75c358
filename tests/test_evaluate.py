"""evaluate.py in-process on tiny generated data: reports per TTA mode, values equal to a hand-run
evaluation, classes matched by name, bad splits refused in one line."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_checkpoint, write_image_folder

import evaluate as evaluate_script
from expression.apps.cli import run_main
from expression.core import checkpoint
from expression.core.datasets import decode_split
from expression.core.preprocessing import FER2013_CLASSES, Preprocessing
from expression.training.engine import evaluate
from expression.training.loader import InMemoryLoader

pytestmark = pytest.mark.usefixtures("single_thread")
REPORT_FILES = ("confusion_matrix.png", "confusion_matrix.csv", "classification_report.txt",
                "classification_report.json", "metrics.json")


@pytest.fixture(scope="module")
def ckpt_32(tmp_path_factory):
    """A 32 px random ResNet34 whose linear head is fitted by least squares on the fixture's train split:
    a random head predicts one class for every face, which would make the accuracy checks vacuous."""
    root = tmp_path_factory.mktemp("models")
    path = make_checkpoint(root / "random_32.pt", img_size=32)
    model, record = checkpoint.load_model(path)
    pre = Preprocessing.from_checkpoint(record)
    train = decode_split(write_image_folder(root / "data") / "train", list(FER2013_CLASSES), pre.img_size)
    images, labels = next(iter(InMemoryLoader(train, len(train.labels), pre.mean, pre.std)))
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        features = torch.cat([model(images), torch.ones(len(images), 1)], 1)
    head = torch.linalg.lstsq(features, F.one_hot(labels, len(FER2013_CLASSES)).float()).solution
    record["model"].update({"fc.weight": head[:-1].T.contiguous(), "fc.bias": head[-1].contiguous()})
    return checkpoint.save(record, path)


def run(ckpt, split, out, *extra):
    argv = ["--checkpoint", str(ckpt), "--split", str(split), "--out", str(out), "--batch-size", "8",
            "--workers", "0", "--device", "cpu", "--quiet", *extra]
    return run_main(evaluate_script.main, evaluate_script.get_args_parser().parse_args(argv))


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def confusion_rows(path) -> dict:
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == list(FER2013_CLASSES)
    return {row[0]: list(map(int, row[1:])) for row in rows[1:]}


def test_every_mode_reports_what_a_hand_run_evaluation_gives(tmp_path, image_folder, ckpt_32, capsys):
    split, out = image_folder / "test", tmp_path / "eval"
    assert run(ckpt_32, split, out, "--tta", "none", "flip", "tencrop") == 0
    lines = json_lines(capsys.readouterr().out)  # stdout holds the JSON lines and nothing else
    assert [line["tta"] for line in lines] == ["none", "flip", "tencrop"]

    model, ckpt = checkpoint.load_model(ckpt_32)
    pre = Preprocessing.from_checkpoint(ckpt)
    data = decode_split(split, list(FER2013_CLASSES), pre.img_size, color=pre.color)
    loader = InMemoryLoader(data, 8, pre.mean, pre.std)
    summary = json.loads((out / "summary.json").read_text())
    assert [m["tta"] for m in summary["modes"]] == ["none", "flip", "tencrop"]
    for index, (line, views) in enumerate(zip(lines, (1, 2, 10))):
        mode = line["tta"]
        assert set(line) == {"checkpoint", "split", "tta", "images", "accuracy", "loss", "seconds"}
        for name in REPORT_FILES:
            assert (out / mode / name).stat().st_size > 0, (mode, name)
        expected = evaluate(model, loader, "cpu", tta=mode)
        assert line["images"] == len(data.labels) == 21
        assert line["accuracy"] == pytest.approx(expected.acc, abs=1e-12)
        assert line["loss"] == pytest.approx(expected.loss, rel=1e-5)
        report = json.loads((out / mode / "classification_report.json").read_text())
        assert report["accuracy"] == pytest.approx(line["accuracy"], abs=1e-12)
        assert set(FER2013_CLASSES) <= set(report)
        metrics = json.loads((out / mode / "metrics.json").read_text())
        assert metrics == {**line, "views_per_image": views} == summary["modes"][index]

    assert lines[0]["accuracy"] != lines[2]["accuracy"]  # this model's ten-crop changes some predictions
    # Without TTA the accuracy and confusion counts are those of the plain model's argmax.
    with torch.no_grad():
        preds = model(next(iter(InMemoryLoader(data, 100, pre.mean, pre.std)))[0]).argmax(1)
    assert len(set(preds.tolist())) > 1  # the fitted head predicts several classes
    assert lines[0]["accuracy"] == pytest.approx((preds == data.labels).float().mean().item(), abs=1e-6)
    counts = confusion_rows(out / "none" / "confusion_matrix.csv")
    for t, name in enumerate(FER2013_CLASSES):
        assert counts[name] == [int(((data.labels == t) & (preds == p)).sum()) for p in range(7)]


def test_split_missing_a_class_is_mapped_by_name(tmp_path, image_folder, ckpt_32, capsys):
    split = tmp_path / "no_disgust"
    shutil.copytree(image_folder / "test", split)
    shutil.rmtree(split / "disgust")
    assert run(ckpt_32, split, tmp_path / "eval", "--tta", "none") == 0
    line, = json_lines(capsys.readouterr().out)
    assert line["images"] == 18
    counts = confusion_rows(tmp_path / "eval" / "none" / "confusion_matrix.csv")
    assert len(counts) == 7 and counts["disgust"] == [0] * 7
    # Labels went to the checkpoint's indices: fear's faces are counted as fear, not as disgust (index 1).
    assert all(sum(counts[name]) == 3 for name in FER2013_CLASSES if name != "disgust")
    report = json.loads((tmp_path / "eval" / "none" / "classification_report.json").read_text())
    assert report["disgust"]["support"] == 0 and report["fear"]["support"] == 3
    assert report["accuracy"] == pytest.approx(line["accuracy"], abs=1e-12)


def test_tta_all_and_default_out(tmp_path, image_folder, ckpt_32, capsys, monkeypatch):
    args = evaluate_script.get_args_parser().parse_args(["--tta", "all", "flip"])
    assert args.tta == ["all", "flip"] and args.batch_size == 128 and args.split == "data/fer2013/test"
    monkeypatch.chdir(tmp_path)
    small = tmp_path / "small"
    for name in ("happy", "sad"):  # one image per class keeps the three passes quick
        (small / name).mkdir(parents=True)
        shutil.copy(next((image_folder / "test" / name).iterdir()), small / name)
    assert run_main(evaluate_script.main, evaluate_script.get_args_parser().parse_args(
        ["--checkpoint", str(ckpt_32), "--split", str(small), "--tta", "all", "--workers", "0", "--quiet"])) == 0
    assert [line["tta"] for line in json_lines(capsys.readouterr().out)] == ["none", "flip", "tencrop"]
    assert (tmp_path / "runs" / "eval" / "random_32_small" / "tencrop" / "metrics.json").is_file()


def expect_usage_error(capsys, code, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and captured.out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_splits_are_one_line_errors(tmp_path, image_folder, ckpt_32, capsys):
    out = tmp_path / "eval"
    expect_usage_error(capsys, run(ckpt_32, tmp_path / "missing", out), "does not exist", "--split")
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    expect_usage_error(capsys, run(ckpt_32, tmp_path / "empty", out), "holds no images")
    (image_folder / "test" / "angry").rename(image_folder / "test" / "anger")
    expect_usage_error(capsys, run(ckpt_32, image_folder / "test", out), "anger", "angry, disgust")
    with pytest.raises(SystemExit) as exit_info:
        run(ckpt_32, image_folder / "test", out, "--tta", "fivecrop")
    expect_usage_error(capsys, exit_info.value.code, "--tta")
    assert not out.exists() or not any(out.iterdir())
