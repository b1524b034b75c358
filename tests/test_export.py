"""ONNX export (export.py) and the torch-free predictor (onnx_predict.py).

One export of the random-weight checkpoint is shared by the module (an export takes seconds); the
parity bound is the issue's: max |logit difference| < 1e-4 against PyTorch and identical classes.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import export
import onnx_predict
from expression.apps.cli import run_main
from expression.core.checkpoint import load_model
from expression.core.preprocessing import Preprocessing
from expression.inference import onnx_export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(random_checkpoint, tmp_path_factory):
    """(onnx path, what `export.py --check` printed, its exit code)."""
    out = tmp_path_factory.mktemp("onnx") / "random.onnx"
    args = export.get_args_parser().parse_args(
        ["--checkpoint", str(random_checkpoint), "--out", str(out), "--check", "--check-samples", "5"])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_main(export.main, args)
    return out, buffer.getvalue(), code


@pytest.fixture(scope="module")
def torch_model(random_checkpoint):
    return load_model(random_checkpoint, "cpu")


@pytest.fixture(scope="module")
def session(exported):
    return ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])


def generated_faces(n: int) -> list[np.ndarray]:
    """Demo faces when the generator is there, else gray noise: either way 48 px uint8, seeded."""
    try:
        from expression.demo.synthetic import make_split
    except ImportError:
        return list(np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8))
    return list(make_split(1, seed=3, split="test").images[:n])


def test_export_cli_writes_a_valid_model_with_dynamic_batch(exported):
    path, printed, code = exported
    assert code == 0
    assert f"wrote {path}" in printed
    assert "5 generated faces (batch sizes 5, 1)" in printed and "identical: ok" in printed  # --check
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "input" and outp.name == "logits"
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].HasField("dim_value")  # symbolic batch axis
    assert [d.dim_value for d in in_dims[1:]] == [3, 48, 48]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outp.type.tensor_type.shape.dim[1].dim_value == 7
    assert model.opset_import[0].version == onnx_export.DEFAULT_OPSET
    leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name]
    assert leftovers == []  # the atomic writer's temp file is gone


@pytest.mark.parametrize("batch", [1, 5])
def test_parity_with_pytorch(session, torch_model, batch):
    model, ckpt = torch_model
    x = Preprocessing.from_checkpoint(ckpt).to_tensor(generated_faces(7)[:batch])
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(["logits"], {"input": x.numpy()})[0]
    assert got.shape == (batch, 7)
    diff = float(np.abs(got - expected).max())
    print(f"batch {batch}: max |logit diff| {diff:.2e}")
    assert diff < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_metadata_round_trip(exported, random_checkpoint, torch_model):
    path, _, _ = exported
    _, ckpt = torch_model
    meta = onnx_export.read_metadata(path)
    assert meta["class_names"] == list(ckpt["class_names"])
    assert meta["img_size"] == ckpt["img_size"] == 48
    assert meta["mean"] == list(ckpt["mean"]) and meta["std"] == list(ckpt["std"])
    assert meta["color"] == ckpt["color"] and meta["arch"] == "resnet34"
    assert meta["source_checkpoint"] == random_checkpoint.name
    # the torch-free reader sees the same values through onnxruntime
    _, ort_meta = onnx_predict.load_session(path)
    for key in ("class_names", "img_size", "mean", "std", "color", "arch", "source_checkpoint"):
        assert ort_meta[key] == meta[key]


def _odd_images():
    rng = np.random.default_rng(1)
    gray = Image.fromarray(rng.integers(0, 256, (37, 53), dtype=np.uint8))
    rgb = Image.fromarray(rng.integers(0, 256, (61, 29, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (45, 47, 4), dtype=np.uint8))
    palette = rgb.convert("P")
    exact = rng.integers(0, 256, (48, 48), dtype=np.uint8)  # already SxS: no resize on either side
    return [gray, rgb, rgba, palette, exact]


@pytest.mark.parametrize("pre", [
    Preprocessing(48),
    Preprocessing(48, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "rgb"),
    Preprocessing(64, (0.2, 0.3, 0.4), (0.7, 0.6, 0.5), "gray"),
], ids=["seed-gray", "imagenet-rgb", "gray-64"])
def test_onnx_predict_preprocessing_equals_project_preprocessing(pre):
    meta = {"img_size": pre.img_size, "mean": list(pre.mean), "std": list(pre.std), "color": pre.color}
    images = _odd_images()
    ours = onnx_predict.preprocess(images, meta)
    reference = pre.to_tensor(images).numpy()
    assert ours.dtype == np.float32 and ours.shape == reference.shape == (5, 3, pre.img_size, pre.img_size)
    assert float(np.abs(ours - reference).max()) < 1e-6


def test_onnx_predict_cli_without_torch(exported, torch_model, tmp_path, capsys):
    path, _, _ = exported
    model, ckpt = torch_model
    faces = generated_faces(3)
    files = []
    for i, face in enumerate(faces):
        files.append(tmp_path / f"face{i}.png")
        Image.fromarray(face).save(files[-1])
    with torch.inference_mode():
        probs = torch.softmax(model(Preprocessing.from_checkpoint(ckpt).to_tensor(faces)), 1).numpy()

    cmd = [sys.executable, "-X", "importtime", str(ROOT / "onnx_predict.py"), "--model", str(path)]
    run = subprocess.run(cmd + [str(f) for f in files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    for line, file, p in zip(lines, files, probs):
        shown_path, label, probability = line.split("\t")
        assert shown_path == str(file)
        assert label == ckpt["class_names"][int(p.argmax())]
        assert abs(float(probability) - float(p.max())) < 1e-3
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "numpy" in imported  # the import log is really there
    banned = sorted(m for m in imported if m.split(".")[0] in ("torch", "torchvision", "expression"))
    assert banned == []

    # --json on the folder, in-process this time (a second interpreter start buys nothing)
    args = onnx_predict.get_args_parser().parse_args(["--model", str(path), "--json", str(tmp_path)])
    assert onnx_predict.run_main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files]  # the folder, sorted
    for row, p in zip(rows, probs):
        got = np.array([row["probabilities"][c] for c in ckpt["class_names"]])
        assert np.abs(got - p).max() < 1e-4 and row["probability"] == max(row["probabilities"].values())


def test_onnx_predict_bad_input_is_one_line_exit_2(exported, tmp_path, capsys):
    path, _, _ = exported
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"nonsense")
    parser = onnx_predict.get_args_parser()
    cases = [["--model", str(path), str(bad)],
             ["--model", str(path), str(tmp_path / "missing.png")],
             ["--model", str(tmp_path / "missing.onnx"), str(bad)],
             ["--model", str(not_onnx), str(bad)],
             ["--models-dir", str(tmp_path / "empty"), str(bad)]]
    for argv in cases:
        assert onnx_predict.run_main(parser.parse_args(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_export_missing_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    parser = export.get_args_parser()
    for argv in (["--checkpoint", str(tmp_path / "nope.pt")],
                 ["--models-dir", str(tmp_path / "empty")]):
        assert run_main(export.main, parser.parse_args(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_export_bad_opset_is_refused_before_exporting(random_checkpoint, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    args = export.get_args_parser().parse_args(
        ["--checkpoint", str(random_checkpoint), "--out", str(out), "--opset", "99"])
    assert run_main(export.main, args) == 2
    assert "--opset: opset 99 is outside" in capsys.readouterr().err and not out.exists()


def test_dynamo_exporter_matches(random_checkpoint, torch_model, tmp_path):
    pytest.importorskip("onnxscript")  # optional: the default exporter needs only onnx
    out = tmp_path / "dynamo.onnx"
    model, ckpt = torch_model
    onnx_export.export_onnx(model, ckpt, out, source=random_checkpoint.name, exporter="dynamo")
    assert [p.name for p in tmp_path.iterdir()] == ["dynamo.onnx"]  # weights inside, no .data file
    assert onnx_export.read_metadata(out)["class_names"] == list(ckpt["class_names"])
    assert onnx_export.check_parity(model, ckpt, out, n=5).ok
