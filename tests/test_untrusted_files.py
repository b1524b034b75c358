"""Trust no file (issue 24): one table per class of damage, over every script that reads the thing.

- metadata: .pt records and .onnx exports whose fields are out of bounds or contradict the weights/graph;
- non-finite weights: records, seed pickles and ONNX graphs holding nan;
- damaged training states: weights or optimizer moments of another shape;
- the seed importer's pickle: oversized constructor calls, 0-byte files, nn.DataParallel.
Every case is one `error:` line, exit 2, no traceback, and no output file.
"""
from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models

import import_seed_model
from expression.apps.cli import run_main
from expression.core import checkpoint
from expression.core.errors import InputError
from expression.core.io import WriteError
from expression.core.seed_model import SeedModelError, load_whole_resnet34

FER = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def one_error_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "weights_only=False" not in err and "allow_pickle" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# .pt records: metadata against the weights, non-finite weights (every reader goes through load_record)


def damaged_record(tmp_path, random_checkpoint, change):
    record = torch.load(random_checkpoint, weights_only=True)
    change(record)
    return checkpoint.save(record, tmp_path / "damaged.pt")


def _nan_weight(record):
    record["model"]["layer2.0.conv1.weight"][0, 0, 0, 0] = math.nan


def _inf_running_var(record):
    record["model"]["bn1.running_var"][3] = math.inf


RECORD_CASES = {
    "nan weight": (_nan_weight, "layer2.0.conv1.weight holds inf or nan"),
    "inf statistic": (_inf_running_var, "bn1.running_var holds inf or nan"),
    "5 names, 7 outputs": (lambda r: r.update(class_names=FER[:5]), "fc.weight has shape (7, 512)"),
    "9 names, 7 outputs": (lambda r: r.update(class_names=FER + ["x", "y"]), "for 9 class names"),
    "std 0": (lambda r: r.update(std=[0.5, 0.0, 0.5]), "std"),
    "foreign arch": (lambda r: r.update(arch="vgg11"), "arch 'vgg11'"),
    "missing layer": (lambda r: r["model"].pop("layer4.2.bn2.weight"), "missing keys"),
}


@pytest.mark.parametrize("case", RECORD_CASES, ids=list(RECORD_CASES))
def test_damaged_records_are_refused_by_the_one_loader(tmp_path, random_checkpoint, case):
    change, fragment = RECORD_CASES[case]
    path = damaged_record(tmp_path, random_checkpoint, change)
    with pytest.raises(InputError, match="invalid metadata") as caught:
        checkpoint.load_model(path)
    assert fragment in str(caught.value)


def script_runs(tmp_path, path):
    """Every script that reads a model file, pointed at `path` -> (name, exit code) one after another."""
    from conftest import write_image_folder

    import attentionMap_FER
    import evaluate
    import export
    import gradcam_FER
    import predict_FER
    import train_resnet34

    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    data = tmp_path / "data"
    (data / "happy").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(data / "happy" / "a.png")
    runs = {
        "predict_FER": (predict_FER, [str(face), "--checkpoint", str(path), "--out", str(tmp_path / "p"),
                                      "--detector", "none", "--quiet"]),
        "export": (export, ["--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]),
        "gradcam_FER": (gradcam_FER, ["--checkpoint", str(path), "--images", str(face),
                                      "--out", str(tmp_path / "g")]),
        "evaluate": (evaluate, ["--checkpoint", str(path), "--split", str(data), "--out", str(tmp_path / "e"),
                                  "--quiet"]),
        "attentionMap_FER": (attentionMap_FER, ["--checkpoint", str(path), "--images", str(face),
                                                "--out", str(tmp_path / "a")]),
        "train_resnet34 --init": (train_resnet34, [
            "--data", str(write_image_folder(tmp_path / "faces", per_class=(2, 1))), "--init", str(path),
            "--epochs", "1", "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"),
            "--workers", "0", "--quiet"]),
    }
    for name, (module, argv) in runs.items():
        yield name, run_main(module.main, module.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("case", RECORD_CASES, ids=list(RECORD_CASES))
def test_every_script_refuses_a_damaged_model_file_in_one_line(tmp_path, random_checkpoint, capsys, case):
    change, fragment = RECORD_CASES[case]
    path = damaged_record(tmp_path, random_checkpoint, change)
    capsys.readouterr()
    for name, code in script_runs(tmp_path, path):
        flag = "--init" if name.startswith("train") else "--checkpoint"
        one_error_line(capsys, code, flag, "invalid metadata", fragment)
    written = [p for folder in ("p", "e", "g", "a", "models") for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert not (tmp_path / "m.onnx").exists() and not written


# ---------------------------------------------------------------------------------------------------
# The seed's pickle (import_seed_model.py): refused before anything is built, in one line


def _seed_network(nan=False):
    torch.manual_seed(0)
    model = models.resnet34()
    model.fc = nn.Linear(512, 7)
    if nan:
        with torch.no_grad():
            model.layer3[0].conv2.weight[0, 0, 0, 0] = math.nan
    return model


SEED_CASES = {
    # GLOBAL torch.nn.modules.linear.Linear, (20000, 20000), REDUCE: 1.6 GB if it were built
    "oversized Linear": (lambda p: p.write_bytes(b"\x80\x02ctorch.nn.modules.linear\nLinear\nM\x20\x4eM\x20\x4e\x86R."),
                         "sizes beyond a ResNet34's"),
    "ResNet of 100 blocks": (lambda p: p.write_bytes(
        b"\x80\x02ctorchvision.models.resnet\nResNet\nctorchvision.models.resnet\nBasicBlock\n"
        b"(KdKdKdKdtq\x00\x86R."), "sizes beyond a ResNet34's"),
    "0 bytes": (lambda p: p.write_bytes(b""), "empty (0 bytes"),
    "nan weights": (lambda p: torch.save(_seed_network(nan=True), p), "inf or nan"),
}


@pytest.mark.parametrize("case", SEED_CASES, ids=list(SEED_CASES))
def test_seed_importer_refuses_in_one_line(tmp_path, capsys, case):
    write, fragment = SEED_CASES[case]
    write(tmp_path / "model_res34.pth")
    out = tmp_path / "seed.pt"
    code = run_main(import_seed_model.main, import_seed_model.get_args_parser().parse_args(
        [str(tmp_path / "model_res34.pth"), "--out", str(out)]))
    one_error_line(capsys, code, fragment)
    assert not out.exists()


def test_oversized_constructor_is_refused_before_allocating(tmp_path, monkeypatch):
    SEED_CASES["oversized Linear"][0](tmp_path / "big.pth")
    built = []
    monkeypatch.setattr(nn.Linear, "reset_parameters", lambda self: built.append(self))
    with pytest.raises(SeedModelError, match="Linear"):
        load_whole_resnet34(tmp_path / "big.pth")
    assert not built  # nothing constructed, so nothing allocated


def test_seed_model_saved_through_data_parallel_imports(tmp_path):
    original = _seed_network().eval()
    torch.save(nn.DataParallel(original), tmp_path / "dp.pth")
    loaded = load_whole_resnet34(tmp_path / "dp.pth").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))


# ---------------------------------------------------------------------------------------------------
# .onnx exports (onnx_predict.py): metadata bounded and checked against the graph, outputs finite


def tiny_onnx(path, *, outputs=7, img_size=48, four_d=False, nan=False, meta=None):
    """A graph of this project's interface, (N, 3, S, S) -> (N, outputs), small enough to build per case:
    global average pool, then a (3 -> outputs) Gemm; metadata as export.py writes it, updated by `meta`."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(outputs, 3)).astype(np.float32)
    if nan:
        weight[0, 0] = np.nan
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["logits2d"], transB=1)]
    out_shape = ["batch", outputs]
    if four_d:
        nodes.append(helper.make_node("Unsqueeze", ["logits2d", "axes"], ["logits"]))
        out_shape = ["batch", outputs, 1, 1]
    else:
        nodes[-1].output[0] = "logits"
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 3, img_size, img_size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"class_names": json.dumps(FER), "img_size": str(img_size), "mean": "[0.5, 0.5, 0.5]",
             "std": "[0.5, 0.5, 0.5]", "color": "gray", **(meta or {})}
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


ONNX_CASES = {  # (graph, metadata, what the error line says)
    "img_size 100000": ({}, {"img_size": "100000"}, "img_size 100000"),
    "5 names, 7 outputs": ({}, {"class_names": json.dumps(FER[:5])}, "5 classes"),
    "9 names, 7 outputs": ({}, {"class_names": json.dumps(FER + ["x", "y"])}, "9 classes"),
    "foreign 3-output graph": ({"outputs": 3}, {}, "7 classes"),
    "std 0": ({}, {"std": "[0.5, 0, 0.5]"}, "std"),
    "std nan": ({}, {"std": "[0.5, NaN, 0.5]"}, "std"),
    "size mismatch": ({"img_size": 32}, {"img_size": "48"}, "48 px"),
    "4-D output": ({"four_d": True}, {}, "output has shape"),
    "nan weights": ({"nan": True}, {}, "inf or nan"),
    "class names not a list": ({}, {"class_names": '"happy"'}, "class_names"),
    "repeated names": ({}, {"class_names": json.dumps(["a", "a", "b", "c", "d", "e", "f"])}, "repeat"),
}


@pytest.mark.parametrize("case", ONNX_CASES, ids=list(ONNX_CASES))
def test_onnx_predict_refuses_untrusted_metadata_in_one_line(tmp_path, capsys, case):
    pytest.importorskip("onnxruntime")
    import onnx_predict

    graph, meta, fragment = ONNX_CASES[case]
    path = tiny_onnx(tmp_path / "m.onnx", **graph, meta=meta)
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "face.png")
    code = onnx_predict.run_main(onnx_predict.get_args_parser().parse_args(
        ["--model", str(path), str(tmp_path / "face.png")]))
    one_error_line(capsys, code, fragment)
    assert capsys.readouterr().out == ""  # no label printed from a file that was not trusted


def test_onnx_predict_takes_a_sound_tiny_graph(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnx_predict

    path = tiny_onnx(tmp_path / "m.onnx")
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "face.png")
    assert onnx_predict.run_main(onnx_predict.get_args_parser().parse_args(["--model", str(path),
                                                                            str(tmp_path / "face.png")])) == 0
    assert capsys.readouterr().out.split("\t")[1] in FER


METADATA_TABLE = [  # (field, value): onnx_predict's bounds equal the .pt loader's
    ("img_size", 7), ("img_size", 8), ("img_size", 1024), ("img_size", 1025), ("img_size", True),
    ("class_names", ["a"]), ("class_names", ["a", ""]), ("class_names", ["a", "a"]), ("class_names", ["a", "b"]),
    ("mean", [0, 0, math.inf]), ("mean", [0.1, 0.2]), ("std", [1, 1, 0]), ("std", [1, 1, -1]), ("std", [1, 1, 2]),
    ("color", "cmyk"), ("color", "rgb"),
]


@pytest.mark.parametrize("field, value", METADATA_TABLE)
def test_onnx_and_pt_metadata_bounds_agree(field, value):
    import onnx_predict

    base = {"class_names": ["a", "b"], "img_size": 48, "mean": [0.5] * 3, "std": [0.5] * 3, "color": "gray",
            "model": {}, "arch": "resnet34"}
    meta = {**base, field: value}
    pt = checkpoint.metadata_problem(meta)
    pt = None if pt and "weights are not" in pt else pt  # the empty state dict is not the point here
    assert (pt is None) == (onnx_predict.metadata_problem(meta) is None)


# ---------------------------------------------------------------------------------------------------
# Training: damaged resume states are refused before the first step; a nan test/val loss stops the run


def train(tmp_path, data, *extra, name="run"):
    import train_resnet34

    argv = ["--data", str(data), "--weights", "none", "--epochs", "1", "--batch-size", "16", "--img-size", "32",
            "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--name", name,
            "--workers", "0", "--quiet", *extra]
    return run_main(train_resnet34.main, train_resnet34.get_args_parser().parse_args(argv))


def _moment(state, name, value):
    index = next(i for i, m in state["optimizer"]["state"].items() if name in m and m[name].dim() == 4)
    state["optimizer"]["state"][index][name] = value(state["optimizer"]["state"][index][name])


STATE_CASES = {
    "moment of another shape": (lambda s: _moment(s, "exp_avg", lambda t: t[:1]), "optimizer exp_avg"),
    "nan moment": (lambda s: _moment(s, "exp_avg_sq", lambda t: t.fill_(math.nan)), "inf or nan"),
    "weights of another shape": (lambda s: s["model"].update({"conv1.weight": torch.zeros(64, 3, 3, 3)}),
                                 "conv1.weight has shape"),
    "fewer parameters in the optimizer": (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(),
                                          "parameter groups"),
    "optimizer field missing": (lambda s: s["optimizer"].pop("state"), "malformed"),
}


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory):
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("resume")
    data = write_image_folder(root / "data", per_class=(3, 2), size=32)
    assert train(root, data) == 0
    return root, data


@pytest.mark.parametrize("case", STATE_CASES, ids=list(STATE_CASES))
def test_damaged_resume_state_is_one_line_before_the_first_step(tmp_path, trained_state, capsys, case, monkeypatch):
    from expression.training import trainer

    root, data = trained_state
    state = torch.load(root / "runs" / "run" / "checkpoint.pt", weights_only=True)
    STATE_CASES[case][0](state)
    damaged = checkpoint.save(state, tmp_path / "checkpoint.pt")
    before = damaged.read_bytes()
    steps = []
    monkeypatch.setattr(trainer, "train_one_epoch", lambda *a, **k: steps.append(1))
    capsys.readouterr()
    code = train(tmp_path, data, "--epochs", "2", "--resume", str(damaged))
    one_error_line(capsys, code, "--resume", STATE_CASES[case][1])
    assert not steps and damaged.read_bytes() == before and not list((tmp_path / "models").glob("*.pt"))


@pytest.mark.parametrize("split", ["test", "val"])
def test_a_nan_evaluation_loss_stops_the_run_like_a_nan_training_loss(tmp_path, trained_state, capsys,
                                                                      monkeypatch, split):
    from expression.training import trainer

    root, data = trained_state
    real = trainer.evaluate_all

    def nan_on(model, loader, *args, desc="test", **kwargs):
        result = real(model, loader, *args, desc=desc, **kwargs)
        if desc == split:
            result.loss = math.nan
        return result

    monkeypatch.setattr(trainer, "evaluate_all", nan_on)
    capsys.readouterr()
    extra = ["--val-split", "0.3"] if split == "val" else []
    code = train(tmp_path, data, *extra, name="nan")
    label = "validation" if split == "val" else "test"
    one_error_line(capsys, code, "diverged in epoch 1", f"the {label} loss became nan", "no model was written")
    assert not (tmp_path / "models" / "nan.pt").exists()
    assert torch.load(tmp_path / "runs" / "nan" / "checkpoint.pt", weights_only=True)["epoch"] == 0


# ---------------------------------------------------------------------------------------------------
# A full disk (or a read-only, forbidden or failing one): one line naming the file and what survives,
# nothing half-written moved into place. Simulated: the OS refuses the chosen file when it is finished.


def refuse_writes(monkeypatch, name: str, nth: int = 1, code: int = errno.ENOSPC):
    """From the `nth` atomic write of a file called `name` on, the OS answers `code` (ENOSPC: disk full)."""
    import os

    real, seen = os.chmod, []

    def chmod(path, mode, *args, **kwargs):
        if Path(path).name.startswith(f".{name}."):
            seen.append(path)
            if len(seen) >= nth:
                raise OSError(code, os.strerror(code))
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    return seen


def no_temp_files(folder):
    return not [p for p in Path(folder).rglob(".*.tmp*")]


TRAIN_DISK_CASES = {  # (file refused, which write of it, what the line says survives)
    "first state": ("checkpoint.pt", 1, "No training state was written yet"),
    "state after epoch 1": ("checkpoint.pt", 2, "holds epoch 0: continue with"),
    "final model": ("run.pt", 1, "holds epoch 1: continue with"),
}


@pytest.mark.parametrize("case", TRAIN_DISK_CASES, ids=list(TRAIN_DISK_CASES))
def test_training_on_a_full_disk_names_the_file_and_the_resume_command(tmp_path, trained_state, capsys,
                                                                       monkeypatch, case):
    import shlex
    import sys

    root, data = trained_state
    name, nth, survives = TRAIN_DISK_CASES[case]
    argv = ["--data", str(data), "--weights", "none", "--epochs", "1", "--batch-size", "16", "--img-size", "32",
            "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--name", "run",
            "--workers", "0", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["train_resnet34.py", *argv])
    refuse_writes(monkeypatch, name, nth)
    capsys.readouterr()
    line = one_error_line(capsys, train(tmp_path, data), f"cannot write {tmp_path}", name, "ENOSPC",
                          "nothing was half-written", survives)
    assert not (tmp_path / "models" / "run.pt").exists() and no_temp_files(tmp_path)
    if "continue with" in line:  # the command given continues the run to its model
        command = shlex.split(line.split("`")[1])
        assert command[:2] == ["python", "train_resnet34.py"] and command[-2:] == ["--resume", str(
            tmp_path / "runs" / "run" / "checkpoint.pt")]
        monkeypatch.undo()
        import train_resnet34
        assert run_main(train_resnet34.main, train_resnet34.get_args_parser().parse_args(command[2:])) == 0
        assert checkpoint.load_record(tmp_path / "models" / "run.pt")["epoch"] == 1


def writer_runs(tmp_path, model_path, seed_file):
    """(script, argv, file it writes) for every other script that writes something."""
    import evaluate
    import export
    import gradcam_FER
    import predict_FER

    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    data = tmp_path / "split"
    (data / "happy").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(data / "happy" / "a.png")
    out = tmp_path / "out"
    return {
        "import_seed_model": (import_seed_model, [str(seed_file), "--out", str(out / "seed.pt")], "seed.pt"),
        "evaluate": (evaluate, ["--checkpoint", str(model_path), "--split", str(data), "--out", str(out),
                                "--quiet"], "summary.json"),
        "export": (export, ["--checkpoint", str(model_path), "--out", str(out / "m.onnx")], "m.onnx"),
        "gradcam_FER --save-maps": (gradcam_FER, ["--checkpoint", str(model_path), "--images", str(face),
                                                  "--out", str(out), "--save-maps", str(out / "maps.npz")],
                                    "maps.npz"),
        "predict_FER": (predict_FER, [str(face), "--checkpoint", str(model_path), "--out", str(out),
                                      "--detector", "none", "--quiet"], "face_annotated.jpg"),
    }


# Every script on a full disk; one of them also read-only, forbidden and failing (the conversion is shared).
WRITER_CASES = [(script, errno.ENOSPC) for script in
                ("import_seed_model", "evaluate", "export", "gradcam_FER --save-maps", "predict_FER")] + \
               [("evaluate", errno.EACCES), ("evaluate", errno.EROFS), ("evaluate", errno.EIO)]


@pytest.mark.parametrize("script, code", WRITER_CASES, ids=[f"{s}-{errno.errorcode[c]}" for s, c in WRITER_CASES])
def test_every_writer_refused_by_the_os_says_so_in_one_line(tmp_path, random_checkpoint, capsys, monkeypatch,
                                                            script, code):
    seed_file = tmp_path / "model_res34.pth"
    if script == "import_seed_model":
        torch.save(_seed_network(), seed_file)
    module, argv, name = writer_runs(tmp_path, random_checkpoint, seed_file)[script]
    refuse_writes(monkeypatch, name, code=code)
    capsys.readouterr()
    result = run_main(module.main, module.get_args_parser().parse_args(argv))
    one_error_line(capsys, result, f"cannot write {tmp_path / 'out' / name}", errno.errorcode[code],
                   "nothing was half-written")
    assert not (tmp_path / "out" / name).exists() and no_temp_files(tmp_path)


def test_torch_save_on_a_full_disk_is_a_write_error(tmp_path, monkeypatch):
    """torch's zip writer words a failed write "unexpected pos"; the OSError behind it is what counts."""
    real = torch.save

    def fills_the_disk(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    (tmp_path / "m.pt").write_bytes(b"old")
    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(WriteError, match=r"m.pt \(ENOSPC.*the previous m.pt is unchanged"):
        checkpoint.save({"a": torch.zeros(3)}, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == b"old" and no_temp_files(tmp_path)
    monkeypatch.setattr(torch, "save", real)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs where this machine lets us mount one (root on Linux), else skip: the simulated
    cases above cover the same code."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_full_disk(tiny_tmpfs, tmp_path, capsys):
    torch.save(_seed_network(), tmp_path / "model_res34.pth")
    code = run_main(import_seed_model.main, import_seed_model.get_args_parser().parse_args(
        [str(tmp_path / "model_res34.pth"), "--out", str(tiny_tmpfs / "seed.pt")]))
    one_error_line(capsys, code, f"cannot write {tiny_tmpfs / 'seed.pt'}", "ENOSPC", "no seed.pt was left behind")
    assert list(tiny_tmpfs.iterdir()) == []


def test_an_unreadable_video_is_not_moved_into_place(tmp_path):
    from expression.inference.outputs import VideoSink

    sink = VideoSink(tmp_path / "v.mp4", 5.0)
    for _ in range(3):
        sink.put(np.zeros((32, 32, 3), np.uint8))
    sink._writer.release()
    sink._tmp.write_bytes(sink._tmp.read_bytes()[:100])  # what a full disk leaves: no index
    sink._writer = type("Released", (), {"release": lambda self: None})()
    with pytest.raises(WriteError, match=r"v.mp4 \(EIO: the MP4 came out unreadable"):
        sink.close()
    assert not (tmp_path / "v.mp4").exists() and no_temp_files(tmp_path)
    good = VideoSink(tmp_path / "good.mp4", 5.0)
    for _ in range(3):
        good.put(np.zeros((32, 32, 3), np.uint8))
    good.close()
    assert (tmp_path / "good.mp4").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------
# Last month's remaining tracebacks, each one line now


@pytest.mark.parametrize("layer", ["fc", "", "avgpool"])
def test_cam_layer_without_a_feature_map_is_one_line(tmp_path, random_checkpoint, capsys, layer):
    import predict_FER

    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "face.png")
    code = run_main(predict_FER.main, predict_FER.get_args_parser().parse_args(
        [str(tmp_path / "face.png"), "--checkpoint", str(random_checkpoint), "--out", str(tmp_path / "p"),
         "--detector", "none", "--quiet", "--cam", "gradcam", "--cam-layer", layer]))
    line = one_error_line(capsys, code, "--cam-layer", f"{layer!r} is not a layer with a feature map")
    assert "fc" not in line.split("use one of")[1] and "layer4" in line  # only layers that work are offered


def test_batch_of_one_at_32_px_or_less_is_one_line(tmp_path, trained_state, capsys):
    root, data = trained_state
    one_error_line(capsys, train(tmp_path, data, "--img-size", "16", "--batch-size", "1"),
                   "--batch-size 1 with --img-size 16", "BatchNorm")


def test_images_one_folder_below_the_class_are_taken_as_imagefolder_takes_them(tmp_path):
    from expression.core.datasets import decode_split

    for split in ("a", "b"):
        (tmp_path / split / "deeper").mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 10, np.uint8)).save(tmp_path / split / "top.png")
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / split / "deeper" / "below.png")
    decoded = decode_split(tmp_path, ["a", "b"], 8)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in decoded.paths] == \
        ["a/top.png", "a/deeper/below.png", "b/top.png", "b/deeper/below.png"]
    assert decoded.labels.tolist() == [0, 0, 1, 1]


def test_quoted_loader_errors_never_advise_loading_unsafely():
    from expression.core.errors import reason

    torch_message = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
                     "likely succeed. Do it only if you got the file from a trusted source.\n\nTrying to load "
                     "unsupported GLOBAL posix.system whose module posix is blocked.")
    assert reason(Exception(torch_message)) == "Trying to load unsupported GLOBAL posix.system whose module " \
                                               "posix is blocked."
    assert "allow_pickle" not in reason(ValueError("Object arrays cannot be loaded when allow_pickle=False"))
    assert reason(EOFError()) == "EOFError"


@pytest.mark.parametrize("interrupt_at", [1, 2])
def test_ctrl_c_during_prediction_exits_130_with_what_was_done(tmp_path, random_checkpoint, capsys, monkeypatch,
                                                              interrupt_at):
    import predict_FER
    from expression.inference import pipeline as prediction

    for name in ("a", "b"):
        Image.fromarray(np.full((48, 48), 100, np.uint8)).save(tmp_path / f"{name}.png")
    real, calls = prediction.process_image, []

    def ctrl_c_at(source, *args, **kwargs):
        calls.append(source)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(source, *args, **kwargs)

    monkeypatch.setattr(prediction, "process_image", ctrl_c_at)
    code = run_main(predict_FER.main, predict_FER.get_args_parser().parse_args(
        [str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--checkpoint", str(random_checkpoint),
         "--out", str(tmp_path / "p"), "--detector", "none", "--quiet"]))
    assert code == 130 and "Traceback" not in capsys.readouterr().err
    records = tmp_path / "p" / "predictions.jsonl"
    assert (len(records.read_text().splitlines()) == 1) if interrupt_at == 2 else not records.exists()
