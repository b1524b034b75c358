"""Classify face images with an exported ONNX model: onnxruntime, numpy and PIL only, no PyTorch.

Everything the model needs (class names, input size, colour mode, mean/std) is read from the .onnx
file's metadata, written by export.py. Preprocessing repeats expression.core.preprocessing.Preprocessing exactly:
convert to L (gray) or RGB, PIL bilinear resize to SxS, /255, (x - mean) / std, gray repeated to 3
channels. This file deliberately imports nothing from the project so it can be copied next to the
.onnx file onto a machine with only `pip install onnxruntime pillow numpy`.

Examples:
    python onnx_predict.py img/face.png data/demo/test/happy           # newest models/*.onnx
    python onnx_predict.py --model models/resnet34_demo.onnx --json "faces/*.jpg" > predictions.jsonl

Output: one line per image, `path<TAB>label<TAB>probability`, or with --json one JSON object per line
with every class's probability.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
REQUIRED_METADATA = ("class_names", "img_size", "mean", "std", "color")
EXPORT_HINT = "export one with `python export.py --checkpoint models/NAME.pt` or pass --model PATH"


class UsageError(Exception):
    """Bad input the user can fix: reported as one line and exit code 2 (as the project's other scripts)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders (searched recursively) or quoted glob patterns")
    parser.add_argument("--model", default="newest", help="ONNX file; 'newest' = the newest MODELS_DIR/*.onnx")
    parser.add_argument("--models-dir", default="models", help="where --model newest looks")
    parser.add_argument("--json", action="store_true", help="JSON lines with all class probabilities")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="images per onnxruntime call")
    parser.add_argument("--threads", type=_non_negative_int, default=0,
                        help="onnxruntime intra-op threads; 0 = its default (one per physical core)")
    return parser


# ---------------------------------------------------------------------------------------------------
# Model and metadata


def newest_onnx(models_dir) -> Path:
    candidates = sorted(Path(models_dir).glob("*.onnx"), key=lambda p: p.stat().st_mtime) \
        if Path(models_dir).is_dir() else []
    if not candidates:
        raise UsageError(f"no .onnx model in {models_dir}/: {EXPORT_HINT}")
    return candidates[-1]


MAX_IMG_SIZE = 1024  # as expression.core.checkpoint.MAX_IMG_SIZE: larger is a damaged field, not a trained model


def parse_metadata(props: dict) -> dict:
    """String metadata_props -> typed preprocessing spec; a file without them is not ours, and values
    out of bounds are refused (a 100000 px img_size once resized until the kernel killed the process)."""
    missing = [k for k in REQUIRED_METADATA if k not in props]
    if missing:
        raise ValueError(f"metadata lacks {', '.join(missing)}")
    meta = dict(props)
    for key in ("class_names", "mean", "std", "img_size"):
        meta[key] = json.loads(props[key])
    problem = metadata_problem(meta)
    if problem:
        raise ValueError(f"invalid metadata: {problem}")
    meta["mean"], meta["std"] = [float(m) for m in meta["mean"]], [float(s) for s in meta["std"]]
    return meta


def metadata_problem(meta: dict) -> str | None:
    """The bounds expression.core.checkpoint.metadata_problem puts on a .pt record's fields, repeated here
    because this file imports nothing from the project (tests/test_untrusted_files.py checks the two agree)."""
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n.strip() for n in names):
        return "class_names must be a list of at least two non-empty names"
    if len(set(names)) != len(names):
        return f"class_names repeat a name: {', '.join(names)}"
    size = meta["img_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_IMG_SIZE:
        return f"img_size {size!r} is not a whole number of pixels in 8..{MAX_IMG_SIZE}"
    if meta["color"] not in ("gray", "rgb"):
        return f"color {meta['color']!r} is neither 'gray' nor 'rgb'"
    for key, low in (("mean", float("-inf")), ("std", 0.0)):
        values = meta[key]
        if not isinstance(values, list) or len(values) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > low
                for v in values):
            return f"{key} {values!r} must be three finite numbers" + (" above 0" if key == "std" else "")
    return None


def graph_problem(session, meta: dict) -> str | None:
    """What in the graph contradicts the metadata, or None: one (N, 3, S, S) input with S = img_size and
    one (N, classes) output. Dimensions left symbolic are checked on the first batch (`predict`)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        return f"the graph has {len(inputs)} inputs and {len(outputs)} outputs, not one image batch in"
    size = meta["img_size"]
    for what, shape, expected in (("input", inputs[0].shape, ["N", 3, size, size]),
                                  ("output", outputs[0].shape, ["N", len(meta["class_names"])])):
        if shape is None or len(shape) != len(expected) or any(
                isinstance(dim, int) and isinstance(want, int) and dim != want for dim, want in zip(shape, expected)):
            return f"its {what} has shape {shape}, the metadata ({len(meta['class_names'])} classes, " \
                   f"{size} px) says {expected}"
    return None


def load_session(path, threads: int = 0):
    """-> (onnxruntime CPU session, metadata dict)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}: {EXPORT_HINT}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad protobufs and graphs
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UsageError(f"onnxruntime cannot load {path} ({first}): {EXPORT_HINT}") from None
    try:
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"{path} is not an Expression-Deciphered export ({err}): {EXPORT_HINT}") from None
    problem = graph_problem(session, meta)
    if problem:
        raise UsageError(f"{path} does not match its own metadata ({problem}): {EXPORT_HINT}")
    meta["path"] = str(path)
    return session, meta


# ---------------------------------------------------------------------------------------------------
# Preprocessing: must equal expression.core.preprocessing.Preprocessing (tests/test_export.py checks it)


# A copy of expression/core/images.py (this file imports nothing from the project); tests/test_images.py
# checks the two agree on every image mode.
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def standard_image(img: Image.Image, alpha: str = "drop") -> Image.Image:
    """-> an 8-bit PIL image in mode "L" (gray sources) or "RGB" (everything else).

    alpha="drop" ignores transparency as torchvision's ImageFolder (PIL's convert) does, so model
    inputs match what a seed-style model was trained on; "white" composites on white, as a viewer
    shows the picture (face detection, annotated copies)."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the picture unreadable
        pass
    if img.mode in HIGH_DEPTH_MODES:
        return Image.fromarray(scale_to_uint8(np.asarray(img), img.mode), "L")
    if img.mode in ("1", "L"):
        return img.convert("L")
    transparent = img.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info)
    if transparent and alpha == "drop":
        return img.convert("L" if img.mode in ("LA", "La") else "RGB")
    if transparent:
        gray = img.mode in ("LA", "La")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(white, rgba).convert("RGB")
        return flat.convert("L") if gray else flat
    return img.convert("RGB")  # RGB, P, CMYK, YCbCr, LAB, HSV


def scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit files span 0..65535; 32-bit integer and float files are scaled by their own range (their
    nominal range is unknown: scientific images use a fraction of it, floats may be 0..1 or 0..255)."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if mode == "I" and low >= 0 and high <= 255:  # an 8-bit image stored as 32-bit ints
            low, high = 0.0, 255.0
        elif mode == "I" and low >= 0 and high <= 65535:  # 16-bit PNGs open as "I" in recent Pillow
            low, high = 0.0, 65535.0
        elif mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def pixels(img, meta: dict) -> np.ndarray:
    """uint8 (S, S) for gray models or (S, S, 3) for rgb ones, resized with PIL's bilinear filter."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    size = meta["img_size"]
    img = standard_image(img).convert("L" if meta["color"] == "gray" else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def normalize(batch_uint8: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 (N, S, S) or (N, S, S, 3) -> float32 (N, 3, S, S), all arithmetic in float32 as torch does."""
    x = batch_uint8.astype(np.float32) / np.float32(255.0)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def preprocess(images, meta: dict) -> np.ndarray:
    """A list of PIL images or uint8 arrays of any size and mode -> model input (N, 3, S, S) float32."""
    return normalize(np.stack([pixels(img, meta) for img in images]), meta)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # shift so exp cannot overflow
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# Inputs


def find_images(specs) -> list[str]:
    paths = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            paths.append(str(path))  # named explicitly: tried whatever its extension
        elif path.is_dir():
            paths.extend(sorted(str(p) for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            matches = sorted(p for p in glob.glob(spec, recursive=True)
                             if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
            if not matches:
                raise UsageError(f"{spec} is not a file, folder or glob matching any image")
            paths.extend(matches)
    return list(dict.fromkeys(paths))  # a file named twice is predicted once


def load_pixels(path, meta: dict) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return pixels(img, meta)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise UsageError(f"cannot read image {path} ({str(err)[:120]})") from None


def predict(session, meta: dict, batch_uint8: np.ndarray) -> np.ndarray:
    """Probabilities (N, C) for uint8 pixels as `pixels` returns them."""
    name = session.get_inputs()[0].name
    try:
        logits = session.run(None, {name: normalize(batch_uint8, meta)})[0]
    except Exception as err:  # onnxruntime's own types: a graph that cannot take this input
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UsageError(f"onnxruntime cannot run {meta.get('path', 'the model')} ({first}): {EXPORT_HINT}") from None
    classes = len(meta["class_names"])
    if logits.shape != (len(batch_uint8), classes):
        raise UsageError(f"{meta.get('path', 'the model')} returned shape {list(logits.shape)} for "
                         f"{len(batch_uint8)} images, not {classes} class scores each: {EXPORT_HINT}")
    if not np.isfinite(logits).all():
        raise UsageError(f"{meta.get('path', 'the model')} computed inf or nan (its weights are damaged): "
                         f"{EXPORT_HINT}")
    return softmax(logits.astype(np.float64))


def main(args) -> int:
    paths = find_images(args.images)  # before loading the model: a typo in a path fails at once
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)}: pass image files, folders or globs")
    model = newest_onnx(args.models_dir) if args.model == "newest" else Path(args.model)
    session, meta = load_session(model, args.threads)
    # Decode (and shrink to SxS) everything first; an unreadable file is skipped, as in the other scripts.
    arrays, unreadable = [], []
    for path in paths:
        try:
            arrays.append(load_pixels(path, meta))
        except UsageError as err:
            unreadable.append((path, str(err)))
    if not arrays:
        raise UsageError(f"none of the {len(paths)} image(s) could be read ({unreadable[0][1]})")
    for path, why in unreadable:
        print(f"warning: skipped {why}", file=sys.stderr)
    paths = [p for p in paths if p not in dict(unreadable)]
    classes = meta["class_names"]
    for start in range(0, len(paths), args.batch_size):
        probs = predict(session, meta, np.stack(arrays[start:start + args.batch_size]))
        for path, p in zip(paths[start:start + args.batch_size], probs):
            best = int(p.argmax())
            if args.json:
                print(json.dumps({"path": path, "label": classes[best], "probability": round(float(p[best]), 6),
                                  "probabilities": {c: round(float(q), 6) for c, q in zip(classes, p)}}))
            else:
                print(f"{path}\t{classes[best]}\t{p[best]:.4f}")
    return 0


def run_main(args) -> int:
    try:
        return main(args) or 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run_main(get_args_parser().parse_args()))
