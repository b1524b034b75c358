"""ONNX export of a checkpoint, its metadata, and the onnxruntime-vs-PyTorch parity check.

The graph takes `input`, float32 (N, 3, S, S) already normalised, with a dynamic batch axis, and
returns `logits` (N, C). Everything needed to prepare an image and name the prediction travels in
the model's metadata_props (class_names, img_size, mean, std, color, arch, source checkpoint), so
the .onnx file is all a deployment needs; `onnx_predict.py` reads them back.

    model, ckpt = load_model("models/resnet34_demo.pt", "cpu")
    export_onnx(model, ckpt, "models/demo.onnx", source="resnet34_demo.pt")
    check_parity(model, ckpt, "models/demo.onnx").ok   # max |logit diff| < 1e-4 and the same classes

onnx and onnxruntime are imported where used, so this module imports without them.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from expression.core.errors import InputError
from expression.core.io import atomic_path
from expression.core.preprocessing import Preprocessing

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_FORMAT = "expression-deciphered/onnx"
METADATA_VERSION = "1"
DEFAULT_OPSET = 18  # the dynamo exporter's own minimum; the TorchScript exporter supports it too, ORT >= 1.14 runs it
PARITY_ATOL = 1e-4  # the bound on max |logit difference| between onnxruntime and PyTorch
EXPORTERS = ("torchscript", "dynamo")



def opset_range(exporter: str) -> tuple[int, int]:
    """Opsets the chosen exporter can write. Checked before exporting because the TorchScript exporter
    answers an unsupported opset by dumping the whole traced graph to stderr."""
    try:
        from torch.onnx import _constants  # private, so fall back to torch 2.14's values if it moves
        low, ts_high, high = _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET, \
            _constants.ONNX_MAX_OPSET
    except (ImportError, AttributeError):
        low, ts_high, high = 7, 20, 23
    # the dynamo exporter writes opset 18 natively and converts down below it, unreliably
    return (low, ts_high) if exporter == "torchscript" else (18, high)


# ---------------------------------------------------------------------------------------------------
# Export


def onnx_metadata(ckpt: dict, source: str, exporter: str, opset: int) -> dict[str, str]:
    """metadata_props are string -> string: lists are JSON so any reader can parse them back exactly."""
    pre = Preprocessing.from_checkpoint(ckpt)
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "class_names": json.dumps(list(ckpt["class_names"])),
        "img_size": str(pre.img_size),
        "mean": json.dumps([float(m) for m in pre.mean]),
        "std": json.dumps([float(s) for s in pre.std]),
        "color": pre.color,
        "arch": str(ckpt["arch"]),
        "source_checkpoint": source,
        "input": f"{INPUT_NAME}: float32 (N, 3, img_size, img_size), pixels/255 then (x - mean) / std; "
                 f"gray images repeated to 3 channels",
        "output": f"{OUTPUT_NAME}: float32 (N, len(class_names)), softmax for probabilities",
        "exporter": f"torch {torch.__version__} {exporter}",
        "opset": str(opset),
    }


def read_metadata(path) -> dict:
    """The metadata written by `export_onnx`, parsed back to Python types (class_names, mean, std as lists)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return parse_metadata(props)


def parse_metadata(props: dict[str, str]) -> dict:
    parsed = dict(props)
    for key in ("class_names", "mean", "std"):
        parsed[key] = json.loads(props[key])
    parsed["img_size"] = int(props["img_size"])
    return parsed


def _to_proto_torchscript(model, dummy, opset: int):
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # we chose the legacy exporter on purpose (see the module docstring); its deprecation notice
        # would only confuse a user of this script
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _to_proto_dynamo(model, dummy, opset: int):
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter imports it lazily and fails deep inside)
    except ImportError:
        raise InputError("the dynamo exporter needs the onnxscript package (pip install onnxscript), "
                         "or use the torchscript exporter", option="exporter") from None
    batch = torch.export.Dim("batch")
    # its progress lines go to stdout; keep this script's output to its own one-line summary
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(model, (dummy,), dynamo=True, opset_version=opset, verbose=False,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), external_data=False)
    return program.model_proto


def export_onnx(model, ckpt: dict, out, *, source: str = "", opset: int = DEFAULT_OPSET,
                exporter: str = "torchscript") -> Path:
    """Write `model` (eval mode, CPU) to `out` atomically, with ckpt's preprocessing as metadata."""
    import onnx

    low, high = opset_range(exporter)
    if not low <= opset <= high:
        raise InputError(f"opset {opset} is outside what the {exporter} exporter supports ({low} to {high}): "
                         f"use {DEFAULT_OPSET}", option="opset")
    pre = Preprocessing.from_checkpoint(ckpt)
    model = model.cpu().eval()
    # batch 2, not 1: a traced batch of 1 invites exporters to specialise the axis to a constant
    dummy = torch.zeros(2, 3, pre.img_size, pre.img_size)
    try:
        if exporter == "dynamo":
            proto = _to_proto_dynamo(model, dummy, opset)
        else:
            proto = _to_proto_torchscript(model, dummy, opset)
    except InputError:
        raise
    except Exception as err:  # one line for the user; the other exporter is the practical way round
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        other = EXPORTERS[1 - EXPORTERS.index(exporter)]
        raise InputError(f"ONNX export with the {exporter} exporter at opset {opset} failed ({first}): "
                         f"try the {other} exporter", option="exporter") from None
    proto.doc_string = "Expression-Deciphered facial expression classifier (see metadata_props)"
    onnx.helper.set_model_props(proto, onnx_metadata(ckpt, source, exporter, opset))
    onnx.checker.check_model(proto)
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


# ---------------------------------------------------------------------------------------------------
# Parity


@dataclass
class Parity:
    max_abs_diff: float
    same_argmax: bool
    samples: int
    batch_sizes: tuple

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < PARITY_ATOL and self.same_argmax


def generated_faces(n: int, img_size: int, seed: int = 0) -> np.ndarray:
    """n uint8 (48, 48) demo faces, cycling through the classes, or gray noise blobs if the generator
    is unavailable; Preprocessing resizes them to the model's img_size like any other image."""
    try:
        from expression.demo.synthetic import make_split
    except ImportError:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, img_size, img_size), dtype=np.uint8)
    per_class = -(-n // 7)
    return make_split(per_class, seed=seed, split="test").images[:n]


def check_parity(model, ckpt: dict, onnx_path, n: int = 14, seed: int = 0) -> Parity:
    """Logits of onnxruntime (CPU) vs PyTorch on generated faces, one batch of n and the first face alone."""
    import onnxruntime as ort

    pre = Preprocessing.from_checkpoint(ckpt)
    x = pre.to_tensor(list(generated_faces(n, pre.img_size, seed)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        reference = model.cpu().eval()(x).numpy()
    got_batch = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    got_single = session.run([OUTPUT_NAME], {INPUT_NAME: x[:1].numpy()})[0]
    diff = max(float(np.abs(got_batch - reference).max()), float(np.abs(got_single - reference[:1]).max()))
    same = bool((got_batch.argmax(1) == reference.argmax(1)).all()
                and got_single.argmax(1)[0] == reference.argmax(1)[0])
    return Parity(diff, same, n, (n, 1))
