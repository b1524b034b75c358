"""One table of bad or unusual inputs over every script, run in-process as the command line would.

Each case must end with a non-zero exit, exactly one `error:` line on stderr, no traceback, and the
working folder unchanged (no file written, changed or left behind)."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image_folder
from PIL import Image

import attentionMap_FER
import evaluate
import evaluate_explanations
import export
import gradcam_FER
import import_seed_model
import onnx_predict
import predict_FER
import train_resnet34
from expression.apps.cli import run_main

prepare_fer2013 = importlib.import_module("data.prepare_fer2013")

# (script, argv with {placeholders}, words the error line must contain)
CASES = [
    (train_resnet34, ["--data", "{work}/nowhere"], "does not exist"),
    (train_resnet34, ["--data", "{data}", "--lr", "inf"], "--lr"),
    (train_resnet34, ["--data", "{data}", "--lr", "-1e-3"], "--lr"),
    (train_resnet34, ["--data", "{data}", "--weight-decay", "nan"], "--weight-decay"),
    (train_resnet34, ["--data", "{data}", "--val-split", "1.5"], "--val-split"),
    (train_resnet34, ["--data", "{data}", "--val-dir", "{work}/no_val"], "--val-dir"),
    (train_resnet34, ["--data", "{data}", "--epochs", "1e9x"], "--epochs"),
    (train_resnet34, ["--data", "{data}", "--resume", "{empty}"], "empty"),
    (train_resnet34, ["--data", "{data}", "--resume", "{model}"], "not a training state"),
    (gradcam_FER, ["--checkpoint", "{empty}"], "empty"),
    (gradcam_FER, ["--checkpoint", "{garbage}"], "cannot read checkpoint"),
    (gradcam_FER, ["--checkpoint", "{model}", "--images", "{data}/test", "--alpha", "2"], "--alpha"),
    (gradcam_FER, ["--checkpoint", "{model}", "--images", "{data}/test", "--save-maps", "{work}"], "is a folder"),
    (gradcam_FER, ["--checkpoint", "{model}", "--images", "{work}/none.png"], "no images found"),
    (gradcam_FER, ["--checkpoint", "{model}", "--images", "{data}/test", "--layers", "fc"], "fc"),
    (attentionMap_FER, ["--checkpoint", "{model}", "--images", "{data}/test", "--p", "1e30"], "--p"),
    (attentionMap_FER, ["--checkpoint", "{model}", "--images", "{data}/test", "--p", "nan"], "--p"),
    (evaluate, ["--checkpoint", "{model}", "--split", "{work}/nowhere"], "does not exist"),
    (evaluate, ["--checkpoint", "{whole}", "--split", "{data}/test"], "import_seed_model.py"),
    (evaluate, ["--checkpoint", "{model}", "--split", "{data}/test", "--batch-size", "0"], "--batch-size"),
    (evaluate_explanations, ["--checkpoint", "{model}", "--images", "{data}/test", "--blur-sigma", "inf"],
     "--blur-sigma"),
    (evaluate_explanations, ["--checkpoint", "{model}", "--images", "{data}/test", "--steps", "100000"], "--steps"),
    (predict_FER, ["--checkpoint", "{model}", "{photo}", "--margin", "1e9"], "--margin"),
    (predict_FER, ["--checkpoint", "{model}", "{photo}", "--margin", "-0.1"], "--margin"),
    (predict_FER, ["--checkpoint", "{model}", "{work}/nothing.jpg"], "no images or videos"),
    (predict_FER, ["--checkpoint", "{garbage}", "{photo}"], "cannot read checkpoint"),
    (predict_FER, ["--checkpoint", "{model}"], "nothing to do"),
    (export, ["--checkpoint", "{model}", "--out", "{work}"], "is a folder"),
    (export, ["--checkpoint", "{empty}"], "empty"),
    (onnx_predict, ["--model", "{work}/missing.onnx", "{photo}"], "missing.onnx"),
    (import_seed_model, ["{work}/nothing.pth"], "no file"),
    (import_seed_model, ["{garbage}", "--out", "{work}/new.pt"], "not a PyTorch file"),
    (import_seed_model, ["{model}", "--out", "{work}"], "is a folder"),
    (import_seed_model, ["{model}", "--out", "{work}/new.pt"], "not a whole torchvision ResNet"),
    (prepare_fer2013, ["{work}/missing.csv", "--out", "{work}/out"], "missing.csv"),
    (prepare_fer2013, ["{photo}", "--out", "{work}/out"], ""),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory, random_checkpoint):
    root = tmp_path_factory.mktemp("bad_inputs")
    write_image_folder(root / "data", per_class=(2, 2))
    (root / "models").mkdir()
    os.symlink(random_checkpoint, root / "models" / "model.pt")
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_bytes(b"\x80\x02 not a checkpoint")
    import torch

    from expression.core.model import build_model
    torch.save(build_model("resnet34", 7), root / "whole.pt")
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / "photo.jpg")
    return root


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if not p.is_dir()}


def entry_point(module):
    if module is onnx_predict:  # standalone file with its own run_main(args)
        return lambda argv: onnx_predict.run_main(onnx_predict.get_args_parser().parse_args(argv))
    return lambda argv: run_main(module.main, module.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("script, argv, words", CASES,
                         ids=[f"{m.__name__.split('.')[-1]}:{' '.join(a)[-40:]}" for m, a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(work, script, argv, words, capsys, monkeypatch):
    monkeypatch.chdir(work)
    values = dict(work=work, data=work / "data", model=work / "models" / "model.pt", empty=work / "empty.pt",
                  garbage=work / "garbage.pt", whole=work / "whole.pt", photo=work / "photo.jpg")
    argv = [a.format(**values) for a in argv] + (["--quiet"] if script not in (import_seed_model, onnx_predict,
                                                                              export) else [])
    if script is prepare_fer2013 or script is train_resnet34:
        argv = [a for a in argv if a != "--quiet"] + (["--quiet"] if script is train_resnet34 else [])
    before = snapshot(work)
    try:
        code = entry_point(script)(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    captured = capsys.readouterr()
    assert code not in (0, None), captured
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith(("error:", f"{Path(sys.argv[0]).name}"))
              or ": error:" in line]
    assert len(errors) == 1, captured.err
    assert words in errors[0], errors[0]
    assert snapshot(work) == before


def test_library_errors_become_one_line_naming_the_flag(capsys):
    from expression.apps.cli import UsageError, run_main
    from expression.core.errors import InputError

    def library_failure(args):
        raise InputError("the held-out fraction must be between 0 and 1", option="val_split")

    assert run_main(library_failure, None) == 2
    assert capsys.readouterr().err == "error: --val-split: the held-out fraction must be between 0 and 1\n"
    assert issubclass(InputError, ValueError)  # ordinary for library callers: `except ValueError` works

    def script_failure(args):  # script code names its flags itself: no prefix added
        raise UsageError("--val-dir and --val-split both choose the validation images: give one")

    assert run_main(script_failure, None) == 2
    assert capsys.readouterr().err.startswith("error: --val-dir and --val-split")
