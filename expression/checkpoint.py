"""Checkpoint I/O: plain-type dicts that record how to rebuild the model and its preprocessing.

Two kinds of file, both written atomically and read with `torch.load(weights_only=True)`:
- a model file (`models/<name>.pt`): weights, arch, class names, preprocessing, training args, metrics;
- a training state (`runs/<name>/checkpoint.pt`): the above plus optimizer and RNG states, for --resume.

    from expression.checkpoint import load_model, newest_model
    model, ckpt = load_model(newest_model("models"))
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .cli import UsageError
from .data import Preprocessing
from .io import atomic_path
from .model import build_model, unwrap

MODEL_FORMAT = "expression-deciphered/model"
STATE_FORMAT = "expression-deciphered/train-state"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "model", "arch", "class_names", "img_size", "mean", "std", "color")
TRAIN_HINT = "train one with `python train_resnet34.py --demo` (minutes) or on FER2013, or pass --checkpoint PATH"


def model_record(model, preprocessing: Preprocessing, *, arch: str, class_names, args: dict | None = None,
                 epoch: int = 0, metrics: dict | None = None, fmt: str = MODEL_FORMAT) -> dict:
    """Everything needed to rebuild and use the model, as plain types (weights_only-loadable)."""
    return {
        "format": fmt,
        "version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "arch": arch,
        "class_names": list(class_names),
        "img_size": int(preprocessing.img_size),
        "mean": [float(m) for m in preprocessing.mean],
        "std": [float(s) for s in preprocessing.std],
        "color": preprocessing.color,
        "args": dict(args or {}),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
    }


def save(record: dict, path) -> Path:
    """Write to a temp file in the same folder, then os.replace: an old file survives any crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def load_record(path, expect: str = MODEL_FORMAT) -> dict:
    """Read a checkpoint dict safely; every way it can be wrong is a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}: {TRAIN_HINT}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # garbage bytes also surface as UnpicklingError
            raise UsageError(f"cannot read checkpoint {path} (not a PyTorch file): {TRAIN_HINT}") from None
        raise UsageError(f"{path} pickles Python objects (e.g. a whole model saved with torch.save(model)), "
                         f"which is unsafe to load: re-save it as a state-dict checkpoint or retrain") from None
    except Exception as err:  # truncated, foreign or corrupt: torch raises many types
        raise UsageError(f"cannot read checkpoint {path} ({str(err).splitlines()[0][:100]}): "
                         f"the file is truncated or not a PyTorch file; {TRAIN_HINT}") from None
    if not isinstance(record, dict) or any(k not in record for k in REQUIRED_KEYS):
        raise UsageError(f"{path} is not an Expression-Deciphered checkpoint (a bare state dict or another "
                         f"project's file): {TRAIN_HINT}")
    if record["format"] not in (MODEL_FORMAT, STATE_FORMAT):
        raise UsageError(f"{path} has unknown format {record['format']!r}: {TRAIN_HINT}")
    if expect == STATE_FORMAT and record["format"] != STATE_FORMAT:
        raise UsageError(f"{path} is a model file, not a training state: resume from runs/<name>/checkpoint.pt")
    return record


def model_from_record(record: dict, path="checkpoint", device="cpu"):
    """Rebuild the network with strict key matching; eval mode, on `device`."""
    model = build_model(record["arch"], len(record["class_names"]), weights="none")
    try:
        model.load_state_dict(record["model"], strict=True)
    except RuntimeError as err:
        raise UsageError(f"{path}: weights do not fit a {record['arch']} with {len(record['class_names'])} classes "
                         f"({str(err).splitlines()[0][:100]}): the file is damaged or from another model") from None
    return model.to(device).eval()


def load_model(path, device="cpu"):
    """-> (model in eval mode on `device`, checkpoint dict). Use Preprocessing.from_checkpoint(ckpt)."""
    record = load_record(path)
    return model_from_record(record, path, device), record


def add_checkpoint_argument(parser) -> None:
    """--checkpoint as every script that reads a trained model takes it (resolve with `checkpoint_path`)."""
    parser.add_argument("--checkpoint", default=None,
                        help="model file written by train_resnet34.py (default: the newest models/*.pt)")


def checkpoint_path(arg) -> Path:
    """The --checkpoint value, or the newest model when it was left out."""
    return Path(arg) if arg else newest_model("models")


def newest_model(models_dir="models") -> Path:
    """The most recently written model file, the default for the explanation and prediction scripts."""
    candidates = sorted(Path(models_dir).glob("*.pt"), key=lambda p: p.stat().st_mtime) \
        if Path(models_dir).is_dir() else []
    if not candidates:
        raise UsageError(f"no model in {models_dir}/: {TRAIN_HINT}")
    return candidates[-1]
