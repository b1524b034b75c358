"""The prediction pipeline: faces in a picture -> crops -> the checkpoint's preprocessing -> batched
classification (and a CAM per face) -> one record per face. `predict_FER.py` and the benchmarks call it;
drawing is in `expression.drawing`, the files it writes in `expression.prediction_outputs`.

    from expression.prediction import FacePredictor
    predictor = FacePredictor.from_checkpoint("models/shipped/resnet34_fer2013_cpu.pt", cam="gradcam")
    for record in predictor.predict("photo.jpg"):   # or a PIL image, or an array of any dtype
        print(record["box"], record["label"], record["probabilities"])
"""
from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import choose_model, load_model, shipped_model, shipped_model_missing
from .errors import InputError, reason
from .data import Preprocessing, UnreadableImage, find_images, is_image_file, load_pil
from .drawing import annotate
from .images import rgb_uint8
from .faces import DEFAULT_DETECT_MAX_SIDE, DEFAULT_DETECTOR, DEFAULT_MARGIN, DEFAULT_MIN_FACE, \
    DEFAULT_MIN_NEIGHBORS, FaceDetector, crop_faces, image_to_rgb
from .prediction_outputs import ImageSink, VideoSink
from .tta import tta_probs
from gradcam import explain
from gradcam.methods import FUSED, INPUT_LAYER, LAYER_FREE_METHODS, METHODS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Any gradcam.explain method ("none" = no map). Score-CAM and Ablation-CAM cost one forward pass per
# channel and face (a few seconds a face on a CPU at layer4); the others one pass or two.
CAMS = ("none",) + METHODS
# The map --cam shows by default (and the browser app imports): chosen on evaluate_explanations.py's
# demo-face table (docs/explanations.md, "Which map to trust at 48 px"). At 48 px layer3 (3x3) and layer4 (2x2) maps
# point at the evidence less often than a centred blob; the 12x12 layer1 maps localise. LayerCAM and
# Grad-CAM++ point best there but fail the randomisation check (their maps barely change when fc is
# re-initialised: they show the image, not the class); HiResCAM at layer1 beats both baselines on
# pointing and deletion and its maps decorrelate (rho about 0) once the model is randomised.
DEFAULT_CAM_METHOD = "hirescam"
DEFAULT_CAM_LAYER = "layer1"
# (method, layer) maps the report found faithful (beating the random and centre baselines on pointing
# and deletion) and passing the randomisation check, per input size: gradcam_FER.py ticks them.
TRUSTED_MAPS = {48: (("hirescam", "layer1"), ("xgradcam", "layer1"), ("xgradcam", "layer2"),
                     ("gradcam", "layer2"), ("hirescam", "layer2"))}
# The maps the report trusts on the shipped model itself (its report is committed in
# results/shipped_fer2013_publictest/, which tests/test_shipped_model.py checks this set against): the app
# ticks these, the ones a user of the shipped model can rely on.
SHIPPED_TRUSTED_MAPS = frozenset({("hirescam", "layer1")})
# How each face is classified: "flip" averages the softmax of the face and its mirror image. On the
# shipped model and the 3,589 PublicTest faces it adds +0.4 points (63.4 -> 63.9 %; +0.7 for the first
# cycle's model, docs/shipped-model.md)
# for one more forward pass of a batch that is already in memory; "none" is the plain, single view.
FACE_TTA = ("none", "flip")
DEFAULT_FACE_TTA = "flip"
# --cam-layer fused: these stages fused into one map at layer1's resolution (gradcam.fuse_layers).
FUSED_LAYERS = ("layer1", "layer2", "layer3", "layer4")
NO_FACE = "no face found"
PENDING_PIXELS = 64_000_000  # images held for annotation before a batch is forced (~190 MB RGB)


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
        raise ValueError(f"too many inputs named {path.name}")


# ---------------------------------------------------------------------------------------------------
# Model


def cam_layers(model, ckpt: dict, cam: str, layer: str) -> tuple[tuple, str]:
    """--cam, --cam-layer -> (layers to explain, key of the map shown). `layer` is a module name,
    "fused" (FUSED_LAYERS fused into one map) or, for the layer-free guidedbackprop and fullgrad,
    anything (their map is at the input)."""
    # A CAM needs a spatial feature map: the classifier head (fc, its pooling) and the model itself
    # (the empty name) have none, so they are neither offered nor accepted.
    modules = {name: m for name, m in model.named_modules()
               if name and not isinstance(m, (torch.nn.Linear, torch.nn.AdaptiveAvgPool2d, torch.nn.Flatten))}
    stages = [name for name in modules if "." not in name]
    if cam in LAYER_FREE_METHODS:
        last = [name for name in FUSED_LAYERS if name in modules][-1:] or stages[-1:]
        return tuple(last), f"{cam}/{INPUT_LAYER}"
    if layer == FUSED:
        missing = [name for name in FUSED_LAYERS if name not in modules]
        if missing:
            raise ValueError(f"{FUSED} fuses {', '.join(FUSED_LAYERS)}, but this {ckpt['arch']} has no "
                             f"{', '.join(missing)}: name one layer instead")
        return FUSED_LAYERS, f"{cam}/{FUSED}"
    if layer not in modules:
        raise ValueError(f"{layer!r} is not a layer with a feature map in this {ckpt['arch']}: use one of "
                         f"{', '.join(stages)}, {FUSED} (or a dotted name such as layer3.5.conv2)")
    return (layer,), f"{cam}/{layer}"


class Classifier:
    """Crops -> (probabilities (N, C) numpy, heat maps (N, S, S) in [0, 1] or None), in batches.
    `tta` "flip": probabilities averaged over each face and its mirror; the heat map stays the plain
    view's (the map the explanation report scored), explaining the class the averaged probabilities pick."""

    def __init__(self, model, ckpt: dict, device, cam: str = "none", cam_layer: str = DEFAULT_CAM_LAYER,
                 batch_size: int = 64, tta: str = DEFAULT_FACE_TTA):
        if tta not in FACE_TTA:
            raise InputError(f"unknown test-time augmentation {tta!r}: choose one of {', '.join(FACE_TTA)}",
                             option="tta")
        self.model, self.device, self.batch_size, self.tta = model, device, batch_size, tta
        self.prep = Preprocessing.from_checkpoint(ckpt)
        self.class_names = list(ckpt["class_names"])
        self.cam, self.cam_layer = cam, cam_layer
        if cam != "none":
            if cam not in CAMS:
                raise ValueError(f"unknown CAM method {cam!r}: choose one of {', '.join(CAMS)}")
            self._layers, self._key = cam_layers(model, ckpt, cam, cam_layer)

    def __call__(self, crops):
        probs, heats = [], []
        for start in range(0, len(crops), self.batch_size):
            x = self.prep.to_tensor(crops[start:start + self.batch_size]).to(self.device)
            if self.cam == "none":
                with torch.inference_mode():
                    probs.append(tta_probs(self.model, x, self.tta).cpu())
            else:
                averaged = None  # plain: one forward + backward gives both the prediction and its explanation
                if self.tta != "none":  # the map explains the class the averaged views pick
                    with torch.inference_mode():
                        averaged = tta_probs(self.model, x, self.tta)
                res = explain(self.model, x, layers=self._layers, methods=(self.cam,),
                              targets=None if averaged is None else averaged.argmax(1), fuse=self.cam_layer == FUSED)
                probs.append((res.probs.float() if averaged is None else averaged).cpu())
                heats.append(res.maps[self._key].numpy())
        if not probs:
            return np.zeros((0, len(self.class_names))), None
        return torch.cat(probs).double().numpy(), (np.concatenate(heats) if heats else None)


# ---------------------------------------------------------------------------------------------------
# One image or frame: detect -> crop -> classify -> records


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


def records(item: Item, class_names, tta: str = "none") -> list[dict]:
    """One record per face (one with note "no face found" when there is none); `tta` says how the
    probabilities were computed ("flip": averaged with the mirror image)."""
    base = {"source": item.source, "frame": item.frame}
    tail = {"true_label": item.true_label, "annotated": item.annotated}
    if not item.boxes:
        return [{**base, "face": None, "box": None, "label": None, "probabilities": None, "tta": None, **tail,
                 "note": NO_FACE}]
    out = []
    for index, (box, p) in enumerate(zip(item.boxes, item.probs)):
        out.append({**base, "face": index, "box": [int(v) for v in box],
                    "label": class_names[int(np.argmax(p))],
                    "probabilities": {name: round(float(v), 6) for name, v in zip(class_names, p)},
                    "tta": tta, **tail, "note": None})
    return out


class FacePredictor:
    """The small Python API: a model, a detector and a classifier, loaded once; `predict(image)` gives
    one record per face (a record with note "no face found" when there is none)."""

    def __init__(self, model, ckpt: dict, device="cpu", *, cam: str = "none", cam_layer: str = DEFAULT_CAM_LAYER,
                 detector: str = DEFAULT_DETECTOR, margin: float = DEFAULT_MARGIN, min_face: int = DEFAULT_MIN_FACE,
                 min_neighbors: int = DEFAULT_MIN_NEIGHBORS, detect_max_side: int = DEFAULT_DETECT_MAX_SIDE,
                 batch_size: int = 64, tta: str = DEFAULT_FACE_TTA):
        self.classifier = Classifier(model, ckpt, device, cam, cam_layer, batch_size, tta)
        self.detector = FaceDetector(detector, min_face, detect_max_side, min_neighbors)
        self.margin = margin

    @classmethod
    def from_checkpoint(cls, path=None, device="cpu", **options) -> "FacePredictor":
        """`path` None (or the shipped model's documented path, from anywhere): the shipped FER2013 model,
        found as expression.checkpoint.shipped_model says, also in an installed package."""
        # None is the shipped model itself, not "the newest models/*.pt" the scripts take: a library call
        # should not change its answer because a file appeared in the working directory.
        if path is None:
            path = shipped_model()
            if path is None:
                raise InputError(shipped_model_missing(), option="checkpoint")
        model, ckpt = load_model(choose_model(path, real_photos=True)[0], device)
        return cls(model, ckpt, device, **options)

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    def analyse(self, image, source: str = "image") -> Item:
        """-> the classified Item (boxes, crops, probabilities, heat maps) of one picture: a path, a PIL
        image or an array of any dtype (expression.images.rgb_uint8); an unusable one is an InputError."""
        try:
            image = rgb_uint8(image)
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise InputError(f"cannot use {str(image)[:80] if isinstance(image, (str, Path)) else 'the image'} "
                             f"({reason(err, 200)})", option="image") from None
        item = analyse(image, self.detector, self.margin, True, source=source, frame=None)
        classify([item], self.classifier)
        return item

    def predict(self, image: np.ndarray, source: str = "image") -> list[dict]:
        return records(self.analyse(image, source), self.class_names, self.classifier.tta)

    def annotate(self, item: Item) -> np.ndarray:
        return annotate(item, self.class_names)


# ---------------------------------------------------------------------------------------------------
# A run over many files: batching across images, stats, sinks


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

    def summary(self, **run) -> dict:
        """summary.json: the run's own fields (`run`: checkpoint, detector, records, seconds), then the counts."""
        return {**run, "images": self.images, "videos": self.videos, "frames": self.frames, "faces": self.faces,
                "labels": dict(self.labels.most_common()), "no_face": self.no_face,
                "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable], "missing": self.missing,
                "accuracy": round(self.correct / self.labelled, 4) if self.labelled else None,
                "interrupted": self.interrupted}


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
            for record in records(item, names, self.classifier.tta):
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
        raise InputError(f"cannot open camera {index}: check the camera number and that no other program uses it",
                         option="webcam")
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
                raise InputError("this OpenCV build has no GUI (opencv-python-headless?): install "
                                 "opencv-python<5 for the camera window, or record a video and pass its path",
                                 option="webcam") from None
            if key == ord("q"):
                break
            frame_no += 1
    finally:
        capture.release()
        cv2.destroyAllWindows()


def process_all(predictor: Predictor, sources, names: OutputNames, progress: bool, webcam: int | None = None) -> None:
    """Every source (or the camera) through `predictor`; unreadable files are noted and skipped, and
    Ctrl-C ends the run after writing what was done (stats.interrupted)."""
    stats, note = predictor.stats, predictor.note
    try:
        if webcam is not None:
            run_webcam(webcam, predictor)
        else:
            for source in tqdm(sources, desc="predicting", unit="file", disable=not progress):
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
        predictor.pending = [i for i in predictor.pending if i.frame is None]  # the video is closed
        predictor.flush()
