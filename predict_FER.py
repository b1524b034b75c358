"""Find faces in photos and videos, classify their expressions, and optionally show why (Grad-CAM).

    python predict_FER.py photo.jpg holiday/ "shots/*.png" clip.mp4           # newest models/*.pt
    python predict_FER.py --checkpoint models/resnet34_demo.pt --cam gradcam group.jpg
    python predict_FER.py --detector none --format csv data/fer2013/test      # pre-cropped faces
    python predict_FER.py --every 5 --out runs/clip clip.mp4                  # every 5th frame
    python predict_FER.py --webcam 0                                         # live; q quits

PATH is an image, a folder (its images and videos, plus <folder>/<class>/ images whose folder name is
kept as true_label), a glob or a video file. Faces are found with an OpenCV Haar cascade that ships
inside opencv-python (no download), cropped square with --margin, preprocessed exactly as the
checkpoint was trained (size, gray/RGB, mean/std) and classified in batches.

Writes to --out:
  predictions.jsonl (or .csv)  one record per face: source, frame (video frame index; null for images),
                               face (index in the image), box [x, y, w, h] in the original pixels,
                               label, probabilities {class: p}, true_label, annotated, note.
                               An image or frame without a face still gets one record, with face, box,
                               label and probabilities null and note "no face found".
                               CSV: the same, box as x,y,w,h columns and one prob_<class> column each.
  <stem>_annotated.jpg         boxes, labels and probability bars (and the heat map with --cam);
  <stem>_annotated.mp4         for a video: the processed frames at fps / --every (at least 1), so it
                               keeps its length.
  summary.json                 counts per label, files without faces, unreadable files, timing.
Unreadable files are listed and skipped; the exit code is 2 only when nothing could be processed.
"""
from __future__ import annotations

import csv
import glob
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from expression.checkpoint import add_checkpoint_argument, open_model
from expression.cli import (ArgumentParser, UsageError, non_negative_int, number_in, positive_int,
                            resolve_device, run_main, use_progress_bars)
from expression.data import Preprocessing, UnreadableImage, find_images, is_image_file, load_pil
from expression.faces import (DEFAULT_DETECT_MAX_SIDE, DEFAULT_DETECTOR, DEFAULT_MARGIN, DEFAULT_MIN_FACE,
                              DEFAULT_MIN_NEIGHBORS, DETECTORS, FaceDetector, crop_faces, image_to_rgb)
from expression.io import atomic_path, ensure_writable_dir, write_json

MAX_MARGIN = 2.0  # a margin of 2 face widths on every side already makes a crop 5x the face
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
CAMS = ("none", "gradcam", "gradcampp")
# At 48 px input ResNet34's layer3 is 3x3 and layer4 2x2: layer3 is the deepest stage that still
# separates the brow/eye band from the mouth band, and deep enough to be class-specific.
DEFAULT_CAM_LAYER = "layer3"
NO_FACE = "no face found"
MIN_CANVAS = 256  # smaller images are enlarged for the annotated copy so labels stay legible
PENDING_PIXELS = 64_000_000  # images held for annotation before a batch is forced (~190 MB RGB)
# one colour per class index (RGB), distinct on faces and on gray
PALETTE = ((230, 60, 60), (120, 170, 40), (150, 90, 200), (250, 200, 30), (170, 170, 170),
           (60, 120, 230), (250, 130, 30), (40, 190, 190), (230, 90, 170), (120, 90, 60))


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="images, folders, globs or video files")
    parser.add_argument("--webcam", type=non_negative_int, default=None, metavar="N",
                        help="read camera N live instead of PATHs: a window with boxes and labels, q quits "
                             "(default: off)")
    add_checkpoint_argument(parser)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                        help="face detector: OpenCV Haar cascade frontalface_alt2 or frontalface_default "
                             "(haar), or none = the whole image is one face (pre-cropped faces)")
    parser.add_argument("--min-face", type=positive_int, default=DEFAULT_MIN_FACE,
                        help="smallest face side to look for, in the image's pixels")
    parser.add_argument("--min-neighbors", type=positive_int, default=DEFAULT_MIN_NEIGHBORS,
                        help="overlapping hits a face needs: lower finds more faces and more false ones")
    parser.add_argument("--detect-max-side", type=non_negative_int, default=DEFAULT_DETECT_MAX_SIDE,
                        help="larger images are downscaled to this longer side for detection, boxes are "
                             "mapped back (0 = scan at full size: slower, finds smaller faces)")
    parser.add_argument("--margin", type=number_in(0.0, MAX_MARGIN), default=DEFAULT_MARGIN,
                        help="context added on each side of a face box before classification, as a fraction "
                             "of the box (FER2013 crops show brow to chin)")
    parser.add_argument("--cam", default="none", choices=CAMS,
                        help="blend this explanation of the predicted class over each face in the annotated "
                             "output")
    parser.add_argument("--cam-layer", default=DEFAULT_CAM_LAYER,
                        help="network stage explained by --cam (at 48 px: layer2 6x6, layer3 3x3, layer4 2x2)")
    parser.add_argument("--every", type=positive_int, default=1,
                        help="process every N-th video (or webcam) frame")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="faces per forward pass")
    parser.add_argument("--out", default="runs/predict", help="output folder")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "csv"), help="records file format")
    parser.add_argument("--no-annotate", action="store_true",
                        help="write the records only, no annotated images or videos")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where the model runs (auto: cuda, then mps, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-file notes")
    return parser


# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "image" or "video"
    label: str | None = None  # class sub-folder name, when the image came from <folder>/<class>/


def is_video_file(path) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def find_sources(specs, out_dir) -> tuple[list[Source], list[str]]:
    """PATH arguments -> (sources in the order given, specs that matched nothing). Anything under
    --out found through a folder or glob is left out, so a glob over the working folder never re-reads
    its own annotated copies; a file named explicitly is always read."""
    out_dir = Path(out_dir).resolve()
    sources, missing = [], []
    for spec in specs:
        path = Path(spec)
        if path.is_file():  # named explicitly: tried whatever its extension
            found = [Source(str(path), "video" if is_video_file(path) else "image")]
        else:
            found = [Source(e.path, "image", e.label) for e in find_images([spec])]
            if path.is_dir():
                videos = sorted(p for p in path.iterdir() if p.is_file() and is_video_file(p))
            else:
                videos = sorted(Path(p) for p in glob.glob(str(spec), recursive=True)
                                if Path(p).is_file() and is_video_file(p) and not is_image_file(p))
            found += [Source(str(p), "video") for p in videos]
            found = [s for s in found if out_dir not in Path(s.path).resolve().parents]
        if not found:
            missing.append(spec)
        sources.extend(found)
    seen, unique = set(), []
    for source in sources:
        key = str(Path(source.path).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, missing


class OutputNames:
    """<stem>_annotated<suffix>, made unique: same stems from different folders get the folder name
    (happy/001.png, sad/001.png -> 001_annotated.jpg, sad_001_annotated.jpg), then a counter."""

    def __init__(self):
        self.used = set()

    def __call__(self, path, suffix: str) -> str:
        path = Path(path)
        candidates = [path.stem, f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem]
        candidates += [f"{path.stem}_{i}" for i in range(2, 10_000)]
        for stem in candidates:
            name = f"{stem}_annotated{suffix}"
            if name.lower() not in self.used:  # lower(): case-insensitive file systems
                self.used.add(name.lower())
                return name
        raise UsageError(f"too many inputs named {path.name}")


# ---------------------------------------------------------------------------------------------------
# Model


class Classifier:
    """Crops -> (probabilities (N, C) numpy, heat maps (N, S, S) in [0, 1] or None), in batches."""

    def __init__(self, model, ckpt: dict, device, cam: str = "none", cam_layer: str = DEFAULT_CAM_LAYER,
                 batch_size: int = 64):
        self.model, self.device, self.batch_size = model, device, batch_size
        self.prep = Preprocessing.from_checkpoint(ckpt)
        self.class_names = list(ckpt["class_names"])
        self.cam, self.cam_layer = cam, cam_layer
        if cam != "none":
            layers = [name for name, _ in model.named_modules() if name and "." not in name]
            if cam_layer not in dict(model.named_modules()):
                raise UsageError(f"--cam-layer {cam_layer} is not a module of this {ckpt['arch']}: use one of "
                                 f"{', '.join(layers)} (or a dotted name such as layer3.5.conv2)")
            from gradcam import explain  # imported only when needed: pulls in the CAM machinery
            self._explain = explain

    def __call__(self, crops):
        probs, heats = [], []
        for start in range(0, len(crops), self.batch_size):
            x = self.prep.to_tensor(crops[start:start + self.batch_size]).to(self.device)
            if self.cam == "none":
                with torch.inference_mode():
                    probs.append(torch.softmax(self.model(x).float(), dim=1).cpu())
            else:
                # one forward + backward gives both the prediction and its explanation
                res = self._explain(self.model, x, layers=(self.cam_layer,), methods=(self.cam,))
                probs.append(res.probs.float().cpu())
                heats.append(res.maps[f"{self.cam}/{self.cam_layer}"].numpy())
        if not probs:
            return np.zeros((0, len(self.class_names))), None
        return torch.cat(probs).double().numpy(), (np.concatenate(heats) if heats else None)


# ---------------------------------------------------------------------------------------------------
# One image or frame: detect -> crop -> classify -> records and annotation


@dataclass
class Item:
    source: str
    frame: int | None
    image: np.ndarray | None  # RGB uint8; dropped after detection when nothing is annotated
    shape: tuple
    boxes: list
    crops: list
    regions: list
    true_label: str | None = None
    whole: bool = False  # --detector none: the one box is the whole image
    annotated: str | None = None  # output file name, relative to --out
    probs: np.ndarray | None = None
    heats: np.ndarray | None = None
    sink: object = None  # where the annotated picture goes: ImageSink or VideoSink

    @property
    def pixels(self) -> int:
        return int(np.prod(self.shape[:2])) if self.image is not None else 0


def analyse(image: np.ndarray, detector: FaceDetector, margin: float, keep_image: bool, **fields) -> Item:
    boxes = detector(image)
    crops, regions = crop_faces(image, boxes, margin, whole=detector.kind == "none")
    return Item(image=image if keep_image else None, shape=image.shape, boxes=boxes, crops=crops,
                regions=regions, whole=detector.kind == "none", **fields)


def classify(items, classifier: Classifier) -> None:
    """Fill probs/heats of every item from one pass over all their faces (cross-image batching)."""
    crops = [c for item in items for c in item.crops]
    probs, heats = classifier(crops)
    start = 0
    for item in items:
        end = start + len(item.crops)
        item.probs = probs[start:end]
        item.heats = heats[start:end] if heats is not None else None
        start = end


def records(item: Item, class_names) -> list[dict]:
    base = {"source": item.source, "frame": item.frame}
    tail = {"true_label": item.true_label, "annotated": item.annotated}
    if not item.boxes:
        return [{**base, "face": None, "box": None, "label": None, "probabilities": None, **tail,
                 "note": NO_FACE}]
    out = []
    for index, (box, p) in enumerate(zip(item.boxes, item.probs)):
        out.append({**base, "face": index, "box": [int(v) for v in box],
                    "label": class_names[int(np.argmax(p))],
                    "probabilities": {name: round(float(v), 6) for name, v in zip(class_names, p)},
                    **tail, "note": None})
    return out


# ---------------------------------------------------------------------------------------------------
# Drawing


def _font_scale(text_height_px: float) -> float:
    # HERSHEY_SIMPLEX capitals are ~22 px tall at scale 1
    return max(0.3, text_height_px / 22.0)


def annotate(item: Item, class_names, alpha: float = 0.5) -> np.ndarray:
    """RGB canvas: the image (enlarged if small), heat maps blended over the regions the model saw,
    a box and label per face and a bar per class beside it. A whole-image face (--detector none)
    gets a strip on the right for its bars instead of hiding the face under them."""
    image = item.image
    height, width = image.shape[:2]
    k = max(1, math.ceil(MIN_CANVAS / min(height, width))) if min(height, width) < MIN_CANVAS else 1
    canvas = cv2.resize(image, (width * k, height * k), interpolation=cv2.INTER_CUBIC) if k > 1 \
        else image.copy()
    ch, cw = canvas.shape[:2]
    if item.heats is not None:
        from gradcam import overlay
        for heat, region in zip(item.heats, item.regions):
            x0, y0, x1, y1 = (v * k for v in (region.x0, region.y0, region.x1, region.y1))
            heat = cv2.resize(heat, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(cw, x1), min(ch, y1)
            if cx1 > cx0 and cy1 > cy0:
                part = np.clip(heat[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], 0, 1)
                canvas[cy0:cy1, cx0:cx1] = overlay(canvas[cy0:cy1, cx0:cx1], part, alpha=alpha)
    thick = max(1, round(max(ch, cw) / 400))
    if item.whole:
        strip = np.full((ch, _bar_panel(ch, class_names)[3] + 2 * thick, 3), 40, np.uint8)
        canvas = np.concatenate([canvas, strip], axis=1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, p in zip(item.boxes, item.probs if item.probs is not None else []):
        x, y, w, h = (v * k for v in box)
        best = int(np.argmax(p))
        colour = PALETTE[best % len(PALETTE)]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thick, cv2.LINE_AA)
        # label above the box (inside it when the box touches the top edge), never wider than the box
        text = f"{class_names[best]} {p[best]:.0%}"
        unit_w = cv2.getTextSize(text, font, 1.0, 1)[0][0]
        scale = min(_font_scale(min(max(10, w / 9), 32)), max(0.3, 0.95 * max(w, 60) / unit_w))
        weight = max(1, round(scale * 1.5))
        (tw, th), base = cv2.getTextSize(text, font, scale, weight)
        ty = y - base - thick if y - th - base - thick >= 0 else y + th + thick
        cv2.rectangle(canvas, (x, ty - th - thick), (x + tw + 2 * thick, ty + base), colour, -1)
        cv2.putText(canvas, text, (x + thick, ty), font, scale, (0, 0, 0), weight, cv2.LINE_AA)
        _draw_bars(canvas, (x, y, w, h), p, class_names, thick)
    return canvas


def _bar_panel(box_h: int, class_names):
    """Layout of the probability panel for a box this tall: (row, font scale, name width, w, h)."""
    row = max(9, min(box_h // len(class_names), 40))
    scale = _font_scale(row * 0.55)
    name_w = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in class_names) + 6
    return row, scale, name_w, name_w + max(30, row * 3), row * len(class_names)


def _draw_bars(canvas, box, p, class_names, thick) -> None:
    """A small panel of one bar per class, right of the box (left if there is no room)."""
    ch, cw = canvas.shape[:2]
    x, y, w, h = box
    row, scale, name_w, panel_w, panel_h = _bar_panel(h, class_names)
    px = x + w + thick if x + w + thick + panel_w <= cw else max(0, x - thick - panel_w)
    px, py = min(px, max(0, cw - panel_w)), min(max(0, y), max(0, ch - panel_h))
    region = canvas[py:py + panel_h, px:px + panel_w]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)  # darkened, still see-through
    for i, (name, value) in enumerate(zip(class_names, p)):
        top = py + i * row
        cv2.putText(canvas, name, (px + 2, top + int(row * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (235, 235, 235), 1, cv2.LINE_AA)
        bar = int(round((panel_w - name_w - 3) * float(value)))
        if bar > 0:
            cv2.rectangle(canvas, (px + name_w, top + 2), (px + name_w + bar, top + row - 3),
                          PALETTE[i % len(PALETTE)], -1)


# ---------------------------------------------------------------------------------------------------
# Outputs


class RecordWriter:
    """Streams records into a temp file that replaces <out>/predictions.<fmt> only when the run ends."""

    def __init__(self, path: Path, fmt: str, class_names):
        self.path, self.fmt, self.class_names = path, fmt, list(class_names)
        self.count = 0

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "w", encoding="utf-8", newline="")
        if self.fmt == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(["source", "frame", "face", "x", "y", "w", "h", "label",
                                *(f"prob_{c}" for c in self.class_names), "true_label", "annotated", "note"])
        return self

    def write(self, record: dict) -> None:
        self.count += 1
        if self.fmt == "jsonl":
            self._file.write(json.dumps(record) + "\n")
            return
        box = record["box"] or [None] * 4
        probs = record["probabilities"] or {}
        self._csv.writerow([_cell(v) for v in (record["source"], record["frame"], record["face"], *box,
                                               record["label"], *(probs.get(c) for c in self.class_names),
                                               record["true_label"], record["annotated"], record["note"])])

    def __exit__(self, *exc):
        self._file.close()
        return self._atomic.__exit__(*exc)


def _cell(value):
    return "" if value is None else value


class ImageSink:
    def __init__(self, path: Path):
        self.path = path

    def put(self, canvas_rgb: np.ndarray) -> None:
        with atomic_path(self.path) as tmp:
            if not cv2.imwrite(str(tmp), canvas_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(f"cv2 could not write {self.path}")


class VideoSink:
    """MP4 (mp4v) written to a temp file and moved into place when the video is complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._atomic = self._writer = None

    def put(self, canvas_rgb: np.ndarray) -> None:
        if self._writer is None:  # the size is known only after the first (possibly enlarged) frame
            self._atomic = atomic_path(self.path)
            tmp = self._atomic.__enter__()
            h, w = canvas_rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                self._atomic.__exit__(OSError, OSError("no writer"), None)
                self._atomic = None
                raise OSError(f"this OpenCV build cannot write MP4 (mp4v) to {self.path}")
        self._writer.write(np.ascontiguousarray(canvas_rgb[:, :, ::-1]))

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if ok:
                self._atomic.__exit__(None, None, None)
            else:
                self._atomic.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass
class Stats:
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    labels: Counter = field(default_factory=Counter)
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # (path, reason)
    missing: list = field(default_factory=list)
    correct: int = 0
    labelled: int = 0
    interrupted: bool = False


class Predictor:
    """Holds analysed items until a batch is full, then classifies, writes records and annotations."""

    def __init__(self, args, detector, classifier, writer, out_dir, stats, note):
        self.args, self.detector, self.classifier, self.writer = args, detector, classifier, writer
        self.out_dir, self.stats, self.note = out_dir, stats, note
        self.annotate = not args.no_annotate
        self.pending: list[Item] = []

    def add(self, image: np.ndarray, **fields) -> None:
        item = analyse(image, self.detector, self.args.margin, self.annotate, **fields)
        self.pending.append(item)
        faces = sum(len(i.crops) for i in self.pending)
        if faces >= self.args.batch_size or sum(i.pixels for i in self.pending) >= PENDING_PIXELS:
            self.flush()

    def now(self, image: np.ndarray, **fields) -> Item:
        """Analyse and classify one picture at once (webcam: latency over throughput)."""
        self.flush()
        item = analyse(image, self.detector, self.args.margin, True, **fields)
        self.pending.append(item)
        self.flush()
        return item

    def flush(self) -> list[Item]:
        items, self.pending = self.pending, []
        if not items:
            return items
        classify(items, self.classifier)
        names = self.classifier.class_names
        for item in items:
            for record in records(item, names):
                self.writer.write(record)
                if record["label"] is not None:
                    self.stats.faces += 1
                    self.stats.labels[record["label"]] += 1
                    if item.true_label in names:
                        self.stats.labelled += 1
                        self.stats.correct += record["label"] == item.true_label
            if not item.boxes and item.frame is None:
                self.stats.no_face.append(item.source)
                self.note(f"{item.source}: {NO_FACE}")
            if item.sink is not None:
                item.sink.put(annotate(item, names))
        return items


def process_image(source: Source, predictor: Predictor, names: OutputNames) -> None:
    image = image_to_rgb(load_pil(source.path))
    sink = annotated = None
    if predictor.annotate:
        annotated = names(source.path, ".jpg")
        sink = ImageSink(predictor.out_dir / annotated)
    predictor.add(image, source=source.path, frame=None, true_label=source.label, annotated=annotated,
                  sink=sink)
    predictor.stats.images += 1


def process_video(source: Source, predictor: Predictor, names: OutputNames, progress: bool) -> None:
    capture = cv2.VideoCapture(source.path)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise UnreadableImage(f"{source.path}: OpenCV cannot decode it as a video")
    every = predictor.args.every
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    sink = annotated = None
    if predictor.annotate:
        annotated = names(source.path, ".mp4")
        sink = VideoSink(predictor.out_dir / annotated, max(fps / every, 1.0))
    keep = False  # whether the annotated MP4 is moved into place
    bar = tqdm(total=total, desc=Path(source.path).name, unit="frame", leave=False, disable=not progress)
    try:
        index = 0
        while ok:
            if index % every == 0:
                predictor.add(np.ascontiguousarray(frame[:, :, ::-1]), source=source.path, frame=index,
                              annotated=annotated, sink=sink)
                predictor.stats.frames += 1
            bar.update(1)
            index += 1
            if index % every == 0:
                ok, frame = capture.read()
            else:  # grab() skips decoding the frames that --every leaves out
                ok, frame = capture.grab(), None
        predictor.flush()  # the writer must have every frame before it is closed
        keep = True
    except KeyboardInterrupt:
        predictor.flush()  # Ctrl-C: the frames done so far make a valid, shorter MP4
        keep = True
        raise
    finally:
        bar.close()
        capture.release()
        if sink is not None:
            sink.close(ok=keep)
    predictor.stats.videos += 1


def run_webcam(index: int, predictor: Predictor) -> None:
    """Live loop sharing analyse/classify/annotate with the video path; q (or Ctrl-C) stops it."""
    log = getattr(cv2, "utils", None) and getattr(cv2.utils, "logging", None)
    level = log.getLogLevel() if log else None
    if log:  # every backend that fails to open the camera prints its own warning: one error is enough
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        capture = cv2.VideoCapture(index)
    finally:
        if log:
            log.setLogLevel(level)
    if not capture.isOpened():
        raise UsageError(f"cannot open camera {index}: check --webcam N and that no other program uses it")
    window, last, frame_no = f"predict_FER - camera {index} (q quits)", None, 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            if frame_no % predictor.args.every == 0 or last is None:
                last = predictor.now(rgb, source=f"webcam:{index}", frame=frame_no)
                predictor.stats.frames += 1
            else:  # frames in between show the last result on the new picture
                last.image = rgb
            try:
                cv2.imshow(window, annotate(last, predictor.classifier.class_names)[:, :, ::-1])
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:
                raise UsageError("this OpenCV build has no GUI (opencv-python-headless?): install "
                                 "opencv-python<5 for --webcam, or record a video and pass its path") from None
            if key == ord("q"):
                break
            frame_no += 1
    finally:
        capture.release()
        cv2.destroyAllWindows()


def main(args) -> int:
    if args.webcam is not None and args.paths:
        raise UsageError("give PATHs or --webcam N, not both")
    if args.webcam is None and not args.paths:
        raise UsageError("nothing to do: give image/video/folder PATHs or --webcam N")
    out_dir = Path(args.out)
    sources, missing = find_sources(args.paths, out_dir)
    if args.webcam is None and not sources:
        raise UsageError(f"no images or videos found in {', '.join(missing)}: check the paths (quote globs)")

    progress, start = use_progress_bars(args.quiet), time.perf_counter()
    device = resolve_device(args.device)
    model, ckpt, checkpoint = open_model(args.checkpoint, device, real_photos=True)
    detector = FaceDetector(args.detector, args.min_face, args.detect_max_side, args.min_neighbors)
    classifier = Classifier(model, ckpt, device, args.cam, args.cam_layer, args.batch_size)
    ensure_writable_dir(out_dir, "--out")
    stats = Stats(missing=list(missing))

    def note(message: str) -> None:
        if not args.quiet:
            tqdm.write(message, file=sys.stderr)

    for spec in missing:
        note(f"{spec}: no such file, folder or matching image/video: skipped")
    records_path = out_dir / f"predictions.{args.format}"
    names = OutputNames()
    try:
        with RecordWriter(records_path, args.format, classifier.class_names) as writer:
            predictor = Predictor(args, detector, classifier, writer, out_dir, stats, note)
            try:
                if args.webcam is not None:
                    run_webcam(args.webcam, predictor)
                else:
                    bar = tqdm(sources, desc="predicting", unit="file", disable=not progress)
                    for source in bar:
                        try:
                            if source.kind == "video":
                                process_video(source, predictor, names, progress)
                            else:
                                process_image(source, predictor, names)
                        except UnreadableImage as err:
                            reason = str(err).split(": ", 1)[-1][:120]
                            stats.unreadable.append((source.path, reason))
                            note(f"{source.path}: unreadable ({reason}): skipped")
                predictor.flush()
            except KeyboardInterrupt:
                stats.interrupted = True
                note("interrupted: writing what was done so far")
                predictor.pending = [i for i in predictor.pending if i.frame is None]  # video is closed
                predictor.flush()
            except OSError as err:  # disk full, permissions changed under us, no MP4 encoder
                raise UsageError(f"writing to {out_dir} failed ({err}): check free space and "
                                 f"permissions") from None
            if stats.images + stats.frames == 0:
                raise _NothingDone()
    except _NothingDone:
        if args.webcam is not None:
            raise UsageError(f"camera {args.webcam} gave no frames") from None
        bad = "; ".join(f"{p} ({why})" for p, why in stats.unreadable[:3])
        raise UsageError(f"nothing could be processed: {len(stats.unreadable)} unreadable file(s)"
                         + (f": {bad}" if bad else "") + (" ..." if len(stats.unreadable) > 3 else "")) from None

    seconds = time.perf_counter() - start
    summary = {
        "checkpoint": str(checkpoint), "detector": args.detector, "records": str(records_path),
        "images": stats.images, "videos": stats.videos, "frames": stats.frames, "faces": stats.faces,
        "labels": dict(stats.labels.most_common()), "no_face": stats.no_face,
        "unreadable": [{"path": p, "reason": r} for p, r in stats.unreadable], "missing": stats.missing,
        "accuracy": round(stats.correct / stats.labelled, 4) if stats.labelled else None,
        "seconds": round(seconds, 2), "interrupted": stats.interrupted,
    }
    write_json(out_dir / "summary.json", summary)
    print_summary(summary, stats, out_dir, args)
    return 0


class _NothingDone(Exception):
    """Raised inside the records writer so that no empty records file replaces an old one."""


def print_summary(summary: dict, stats: Stats, out_dir: Path, args) -> None:
    if args.quiet:
        print(summary["records"])
        return
    parts = [f"{stats.images} image(s)"] if stats.images or not stats.frames else []
    if stats.videos or stats.frames:
        parts.append(f"{stats.videos} video(s) / {stats.frames} frame(s)")
    print(f"processed {', '.join(parts)}: {stats.faces} face(s) in {summary['seconds']:.1f} s"
          + (" (interrupted)" if stats.interrupted else ""))
    if stats.labels:
        print("labels: " + ", ".join(f"{k} {v}" for k, v in stats.labels.most_common()))
    if summary["accuracy"] is not None:
        print(f"accuracy on {stats.labelled} faces with a class folder: {summary['accuracy']:.1%}")
    if stats.no_face:
        print(f"no face found in {len(stats.no_face)} image(s)")
    if stats.unreadable:
        print(f"unreadable, skipped: {len(stats.unreadable)}: "
              + ", ".join(p for p, _ in stats.unreadable[:5]) + (" ..." if len(stats.unreadable) > 5 else ""))
    if stats.missing:
        print(f"not found: {', '.join(stats.missing)}")
    print(f"records: {summary['records']}" + ("" if args.no_annotate else f"; annotated copies in {out_dir}/"))


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
