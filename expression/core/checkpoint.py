"""Checkpoint I/O: plain-type dicts that record how to rebuild the model and its preprocessing.

Two kinds of file, both written atomically and read with `torch.load(weights_only=True)`:
- a model file (`models/<name>.pt`): weights, arch, class names, preprocessing, training args, metrics;
- a training state (`runs/<name>/checkpoint.pt`): the above plus optimizer and RNG states, for --resume.

    from expression.core.checkpoint import load_model, newest_model
    model, ckpt = load_model(newest_model("models"))
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import sys
from pathlib import Path

import torch

from expression.core.errors import InputError, reason
from expression.core.io import atomic_path
from expression.core.model import ARCHS, build_model, unwrap
from expression.core.preprocessing import Preprocessing

MODEL_FORMAT = "expression-deciphered/model"
STATE_FORMAT = "expression-deciphered/train-state"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "model", "arch", "class_names", "img_size", "mean", "std", "color")
# The fix for "no usable model": the library names the command that makes one; scripts name their flag.
TRAIN_HINT = ("train one with `python train_resnet34.py --demo` (installed: `expression-train --demo`; minutes) "
              "or on FER2013, or choose another model file")


def model_record(model, preprocessing: Preprocessing, *, arch: str, class_names, args: dict | None = None,
                 epoch: int = 0, metrics: dict | None = None, fmt: str = MODEL_FORMAT,
                 lineage: list | None = None, command: str | None = None) -> dict:
    """Everything needed to rebuild and use the model, as plain types (weights_only-loadable).
    `lineage`: the models these weights were started from, oldest first (see `lineage_entry`);
    `total_epochs` counts every epoch behind the weights, the ancestors' included."""
    lineage = list(lineage or [])
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
        "lineage": lineage,
        "total_epochs": (lineage[-1]["total_epochs"] if lineage else 0) + int(epoch),
        "command": command or "",
    }


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def total_epochs(record: dict) -> int:
    """Epochs behind a record's weights (files written before lineages existed: their own epoch)."""
    total = record.get("total_epochs")
    return int(total) if isinstance(total, int) and not isinstance(total, bool) else int(record.get("epoch") or 0)


def lineage_entry(path, record: dict) -> dict:
    """What a model started from `path` (with `--init`) records of its parent: the file and its sha256,
    the epoch its own run saved, the epochs behind its weights and the command that made it."""
    return {"file": Path(path).name, "sha256": file_sha256(path), "epoch": int(record.get("epoch") or 0),
            "total_epochs": total_epochs(record), "command": str(record.get("command") or "")}


def lineage_of(path, record: dict) -> list[dict]:
    """The lineage of a model started from `path`: the parent's own lineage, then the parent."""
    inherited = record.get("lineage") if isinstance(record.get("lineage"), list) else []
    return [dict(entry) for entry in inherited] + [lineage_entry(path, record)]


def mismatch(record: dict, arch: str, class_names, preprocessing: Preprocessing) -> str | None:
    """How a checkpoint differs from a run's model and preprocessing (the first difference), or None."""
    checks = (("architecture", record["arch"], arch),
              ("class names", list(record["class_names"]), list(class_names)),
              ("image size", record["img_size"], preprocessing.img_size),
              ("colour", record["color"], preprocessing.color),
              ("normalisation mean", [round(float(m), 6) for m in record["mean"]],
               [round(float(m), 6) for m in preprocessing.mean]),
              ("normalisation std", [round(float(s), 6) for s in record["std"]],
               [round(float(s), 6) for s in preprocessing.std]))
    for what, theirs, mine in checks:
        if theirs != mine:
            return f"{what}: {theirs} in the file, {mine} in this run"
    return None


def save(record: dict, path) -> Path:
    """Write to a temp file in the same folder, then os.replace: an old file survives any crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(record, handle)  # a file object: its OSError (disk full) is the cause torch reports
        except RuntimeError as err:  # torch's zip writer words a failed write "unexpected pos 576 vs 534"
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise
    return path


def load_record(path, expect: str = MODEL_FORMAT, option: str = "checkpoint") -> dict:
    """Read a checkpoint dict safely; every way it can be wrong is an InputError of `option` (the
    caller's parameter that named the file)."""

    def bad(message: str) -> InputError:
        return InputError(message, option=option)

    path = Path(path)
    if not path.is_file():
        raise bad(f"no checkpoint at {path}: " + (shipped_model_missing() if path.name == SHIPPED_MODEL.name
                                                  else TRAIN_HINT))
    if path.stat().st_size == 0:
        raise bad(f"checkpoint {path} is empty (0 bytes; an interrupted copy?): {TRAIN_HINT}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # garbage bytes also surface as UnpicklingError
            raise bad(f"cannot read checkpoint {path} (not a PyTorch file): {TRAIN_HINT}") from None
        raise bad(f"{path} pickles Python objects (e.g. a whole model saved with torch.save(model)), "
                  f"which is unsafe to load: convert the seed's model_res34.pth with `python import_seed_model.py "
                  f"{path}`, or retrain") from None
    except Exception as err:  # truncated, foreign or corrupt: torch raises many types
        raise bad(f"cannot read checkpoint {path} ({reason(err)}): "
                  f"the file is truncated or not a PyTorch file; {TRAIN_HINT}") from None
    if not isinstance(record, dict) or any(k not in record for k in REQUIRED_KEYS):
        raise bad(f"{path} is not an Expression-Deciphered checkpoint (a bare state dict or another "
                  f"project's file): {TRAIN_HINT}")
    if record["format"] not in (MODEL_FORMAT, STATE_FORMAT):
        raise bad(f"{path} has unknown format {record['format']!r}: {TRAIN_HINT}")
    if expect == STATE_FORMAT and record["format"] != STATE_FORMAT:
        raise bad(f"{path} is a model file, not a training state: resume from runs/<name>/checkpoint.pt")
    problem = metadata_problem(record)
    if problem:
        raise bad(f"{path} holds invalid metadata ({problem}): the file was edited or damaged; "
                  f"retrain or re-export it")
    return record


MAX_IMG_SIZE = 1024  # larger faces than this are a damaged field, not a model anyone trained here


def metadata_problem(record: dict) -> str | None:
    """What is wrong with the fields a script trusts to preprocess and label images, or None.
    Checked on every load: a bad value would otherwise surface deep inside torch or as wrong labels."""
    names = record["class_names"]
    if not isinstance(names, (list, tuple)) or len(names) < 2 or \
            not all(isinstance(n, str) and n.strip() for n in names):
        return "class_names must be a list of at least two non-empty names"
    if len(set(names)) != len(names):
        return f"class_names repeat a name: {', '.join(names)}"
    size = record["img_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_IMG_SIZE:
        return f"img_size {size!r} is not a whole number of pixels in 8..{MAX_IMG_SIZE}"
    if record["color"] not in ("gray", "rgb"):
        return f"color {record['color']!r} is neither 'gray' nor 'rgb'"
    for key, low in (("mean", float("-inf")), ("std", 0.0)):
        values = record[key]
        if not isinstance(values, (list, tuple)) or len(values) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > low
                for v in values):
            return f"{key} {values!r} must be three finite numbers" + (" above 0" if key == "std" else "")
    if not isinstance(record["model"], dict) or not all(torch.is_tensor(v) for v in record["model"].values()):
        return "model must be a state dict of tensors"
    return weights_problem(record["model"], record["arch"], len(names))


def weights_problem(state: dict, arch: str, num_classes: int) -> str | None:
    """What is wrong with a state dict for a `num_classes`-way `arch`, or None: the same keys and shapes
    (so class names and the input channels agree with the weights) and no inf or nan. The one check every
    reader of weights runs (.pt records, the seed's pickle, training states; export.py reads records)."""
    if not isinstance(arch, str) or arch not in ARCHS:
        return f"arch {arch!r} is not one of {', '.join(ARCHS)}"
    expected = _expected_shapes(arch, num_classes)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        return (f"the weights are not a {arch}'s ({len(missing)} missing keys, e.g. {missing[:1]}; "
                f"{len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            what = f"{num_classes} class names" if key.startswith("fc.") else f"a {arch}"
            return f"{key} has shape {tuple(state[key].shape)}, {shape} for {what}"
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{key} holds inf or nan weights (a diverged run or a damaged file)"
    return None


@functools.lru_cache(maxsize=8)
def _expected_shapes(arch: str, num_classes: int) -> dict:
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = build_model(arch, num_classes, weights="none")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_weights(model, record: dict, path="checkpoint", option: str = "checkpoint") -> None:
    """Put a record's weights into `model` with strict key matching, as float32 (the shipped model stores
    float16 weights, half the size in git; compute stays float32). `option` names the caller's parameter."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in record["model"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit a {record['arch']} with {len(record['class_names'])} classes "
                         f"({reason(err)}): the file is damaged or from another model", option=option) from None


def model_from_record(record: dict, path="checkpoint", device="cpu"):
    """Rebuild the network with strict key matching; eval mode, on `device`."""
    model = build_model(record["arch"], len(record["class_names"]), weights="none")
    load_weights(model, record, path)
    return model.to(device).eval()


def load_model(path, device="cpu"):
    """-> (model in eval mode on `device`, checkpoint dict). Use Preprocessing.from_checkpoint(ckpt)."""
    record = load_record(path)
    return model_from_record(record, path, device), record


# The FER2013 model the project ships (float16 weights, tracked in git). Training writes
# models/<name>.pt and never this sub-folder, so a user's run cannot overwrite it.
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "shipped" / "resnet34_fer2013_cpu.pt"
# An installed (non-editable) package carries it as wheel data: pip puts it under <prefix>/share/.
SHIPPED_DATA = Path("share") / "expression-deciphered" / "models" / "shipped" / SHIPPED_MODEL.name


def shipped_model_candidates() -> list[Path]:
    """Where the shipped model is looked for, in order: $EXPRESSION_SHIPPED_MODEL (a file you put
    anywhere), the clone's models/shipped/, then the install's share/ folder (the environment's prefix,
    the user scheme, and beside the package for `pip install --target`). Nothing is downloaded."""
    import sysconfig

    found = [Path(os.environ["EXPRESSION_SHIPPED_MODEL"])] if os.environ.get("EXPRESSION_SHIPPED_MODEL") else []
    found.append(SHIPPED_MODEL)
    prefixes = [Path(sys.prefix), Path(sysconfig.get_path("data")), Path(__file__).resolve().parents[2]]
    try:
        prefixes.append(Path(sysconfig.get_path("data", f"{os.name}_user")))
    except KeyError:  # a platform without a user scheme
        pass
    found.extend(prefix / SHIPPED_DATA for prefix in prefixes)
    return list(dict.fromkeys(found))


def shipped_model() -> Path | None:
    """The shipped FER2013 model file (see `shipped_model_candidates`), or None when there is none."""
    return next((path for path in shipped_model_candidates() if path.is_file()), None)


def shipped_model_missing() -> str:
    """What to do when the shipped model is not found: where it was looked for and where to put it."""
    return (f"the shipped FER2013 model {SHIPPED_MODEL.name} is in none of "
            f"{', '.join(str(p) for p in shipped_model_candidates())}: copy it from a clone's models/shipped/ "
            f"to one of them or set EXPRESSION_SHIPPED_MODEL to its path")


def choose_model(arg=None, models_dir="models", *, real_photos: bool = False,
                 shipped: bool = True) -> tuple[Path, str]:
    """-> (model file, why it was chosen). Without `arg`: the newest `models_dir/*.pt`, then the shipped
    FER2013 model (unless `shipped` is False). With `real_photos` (the user's own pictures), models
    trained on the drawn demo faces are passed over: their predictions on real faces are meaningless,
    and nobody should get them without asking for that file by name."""
    if arg:
        named = Path(arg)
        if not named.is_file() and named.name == SHIPPED_MODEL.name:
            found = shipped_model()
            if found:
                return found, "the shipped FER2013 model"  # its documented path, outside the clone
        return named, "--checkpoint"
    passed_over = []
    for path in reversed(_models_by_age(models_dir)):
        if real_photos and trained_on_demo_faces(path):
            passed_over.append(path.name)
            continue
        return path, f"the newest model in {models_dir}/"
    skipped = f"; passed over {', '.join(passed_over)} (drawn demo faces)" if passed_over else ""
    found = shipped_model() if shipped else None
    if found:
        return found, f"the shipped FER2013 model{skipped}"
    if passed_over:
        raise InputError(f"only demo-face models in {models_dir}/ ({', '.join(passed_over)}), which cannot read "
                         f"real faces: train on FER2013, or name {models_dir}/{passed_over[0]} as the checkpoint "
                         f"to use it anyway", option="checkpoint")
    raise InputError(f"no model in {models_dir}/" + (f" and {shipped_model_missing()}" if shipped else "")
                     + f"; or {TRAIN_HINT}", option="checkpoint")


def open_model(arg, device="cpu", *, real_photos: bool = False):
    """What every script does with its --checkpoint: choose (see `choose_model`), load, and say on
    stderr which model it took and why. -> (model, checkpoint dict, path)."""
    model, ckpt, path, line = open_model_quietly(arg, device, real_photos=real_photos)
    print(line, file=sys.stderr, flush=True)
    return model, ckpt, path


def open_model_quietly(arg, device="cpu", *, real_photos: bool = False):
    """`open_model` that returns its stderr line instead of printing it -> (model, ckpt, path, line),
    for a script that checks the rest of its input first, so a usage error stays its only line."""
    path, reason = choose_model(arg, real_photos=real_photos)
    model, ckpt = load_model(path, device)
    return model, ckpt, path, describe_model(path, ckpt, reason)


def trained_on_demo_faces(path) -> bool:
    """Whether a model file was trained by `train_resnet34.py --demo` (unreadable files: no, and the
    load that follows reports them)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(record, dict) and bool(dict(record.get("args") or {}).get("demo"))


def describe_model(path, ckpt: dict, reason: str) -> str:
    """One line naming the model a script took and why, e.g. for stderr."""
    metrics = ckpt.get("metrics") or {}
    accuracy = metrics.get("test_acc")
    trained = "drawn demo faces" if (ckpt.get("args") or {}).get("demo") else \
        Path(str((ckpt.get("args") or {}).get("train_dir", "?"))).parent.name or "?"
    acc = f", test accuracy {100 * float(accuracy):.1f} %" if isinstance(accuracy, (int, float)) else ""
    return (f"model: {path} ({reason}; {ckpt['arch']}, {len(ckpt['class_names'])} classes, "
            f"{ckpt['img_size']} px {ckpt['color']}, trained on {trained}{acc})")


def _models_by_age(models_dir) -> list[Path]:
    """Model files in `models_dir`, oldest first."""
    folder = Path(models_dir)
    return sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []


def newest_model(models_dir="models") -> Path:
    """The most recently written model file in `models_dir` (`choose_model` without the shipped fallback)."""
    return choose_model(None, models_dir, shipped=False)[0]
