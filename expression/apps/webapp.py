"""The browser app behind `app.py`: a photo (upload, webcam snapshot or example) -> faces, expressions,
an explanation and an attention map per face, and the records as predict_FER.py writes them.

Everything here except `build_interface` is plain Python, so the handlers are tested without a browser
and without gradio; `build_interface` imports gradio (requirements-app.txt) only when called.

    from expression.apps.webapp import WebApp
    app = WebApp.from_checkpoint("models/shipped/resnet34_fer2013_cpu.pt", out_dir="runs/app")
    result = app.analyse("photo.jpg", method="gradcam", layer="layer3")
    result.records          # predict_FER.py's records; result.records_path: predictions.jsonl
"""
from __future__ import annotations

import copy
import ctypes
import queue
import re
import secrets
import shutil
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from expression.core.cam_policy import CAMS, DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, SHIPPED_TRUSTED_MAPS
from expression.core.checkpoint import load_model
from expression.core.io import atomic_path
from expression.core.preprocessing import UnreadableImage, load_pil
from expression.core.runtime import usable_cores
from expression.inference import classifier as face_classifier
from expression.inference.classifier import FUSED_LAYERS, NO_FACE, Classifier, FacePredictor, records
from expression.inference.drawing import MIN_CANVAS, ON_PAGE, PALETTE, draw_bars
from expression.inference.faces import FaceDetector, image_to_rgb
from expression.inference.outputs import ImageSink, RecordWriter
from gradcam.methods import FUSED

# A 40 MP photo is ~120 MB as RGB, plus copies for drawing: enough for any camera, and the limit
# is checked on the header, before a decompression bomb can allocate anything.
DEFAULT_MAX_PIXELS = 40_000_000
# What a request leaves on disk (its folder under <out>/requests/, and gradio's copies of the upload and
# of the results under <out>/cache/) is deleted this long after it was written: long enough to change
# the explanation or layer of the same upload, short enough that nothing piles up.
KEEP_SECONDS = 600
DEFAULT_MAX_OUT_MB = 500  # the oldest of those go first when they add up to more than this
TILE = 144  # px side of each tile in a face panel
BARS_WIDTH = 250
WAITING = "Upload a photo, take a webcam snapshot or pick an example."
MAP_NOTE = ("**What the maps show.** The explanation colours the pixels of the face crop by how much they "
            "raised the score of the class shown (red: most, blue: least; the scale is under each map). The "
            "attention map shows where the features of that layer are strongest, whatever the class. "
            "A green tick marks a map the project's explanation report trusts (HiResCAM at layer1: it beats "
            "random and centre-blob maps at finding the pixels the model needs, and changes when the model's "
            "weights are randomised); the others are for comparison.")


def default_workers() -> int:
    """Requests served at once: one per core this process may use, at most 8 (each keeps a model copy)."""
    return max(1, min(usable_cores(), 8))


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


_LIBC = _libc()


def give_memory_back() -> None:
    """Return freed heap pages to the system after a request: a 40 MP photo's copies would otherwise
    stay in glibc's arenas (one per worker thread) and the server's RSS would only grow."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def plain_text(text: str) -> str:
    """Text (a file name, an error) shown literally in the page's Markdown: no emphasis, links or HTML."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", str(text))


class BadInput(Exception):
    """Something wrong with what the user sent, said in the page in one sentence; the server goes on."""


@dataclass
class Result:
    annotated: np.ndarray  # RGB: the photo with a box, label and probability bars per face
    panels: list  # one (RGB panel, caption) per face: crop, explanation, attention map, bars
    records: list  # predict_FER.py's records, one per face (or one "no face found" record)
    records_path: Path  # predictions.jsonl of this request, written by prediction_outputs.RecordWriter
    summary: str  # markdown for the page
    seconds: float = 0.0
    first_frame_only: bool = False  # an animation (GIF, WebP, multi-page TIFF): only frame 1 was analysed
    heats: np.ndarray | None = field(default=None, repr=False)  # (faces, S, S) explanation maps
    attention: np.ndarray | None = field(default=None, repr=False)  # (faces, S, S) attention maps


def stage_names(model) -> list[str]:
    """The ResNet stages an explanation can be asked of (layer1..layer4)."""
    return [name for name, _ in model.named_modules() if name.startswith("layer") and "." not in name]


def safe_stem(name: str) -> str:
    """A file-name stem from an uploaded file's name: no folders, no odd characters."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(str(name)).stem).strip("_")
    return stem[:60] or "image"


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An uploaded file -> RGB uint8 as predict_FER.py reads it; BadInput with the reason otherwise.
    The size is checked on the header first, so a decompression bomb is refused before it is decoded."""
    return read_upload(path, max_pixels)[0]


def read_upload(path, max_pixels: int = DEFAULT_MAX_PIXELS,
                keep_seconds: float = KEEP_SECONDS) -> tuple[np.ndarray, bool]:
    """read_image, and whether the file is an animation of which only the first frame was read."""
    path = Path(path)
    try:
        if not path.is_file():
            raise BadInput(f"{path.name} is no longer on the server (uploads are deleted "
                           f"{keep_seconds / 60:g} minutes after they arrive): upload it again")
        if path.stat().st_size == 0:
            raise BadInput(f"{path.name} is empty")
        with Image.open(path) as img:
            width, height = img.size
            animated = bool(getattr(img, "is_animated", False))  # looks for a second frame, decodes none
    except UnidentifiedImageError:
        raise BadInput(f"{path.name} is not an image this app can read (PNG, JPEG, WebP, BMP, TIFF, GIF ...)") \
            from None
    except Image.DecompressionBombError:
        width = height = None  # claims more pixels than even PIL allows: refused below
    except OSError as err:
        raise BadInput(f"{path.name} could not be read ({err})") from None
    if width is None or width * height > max_pixels:
        size = f"{width}x{height} px" if width else "more than PIL's own limit of pixels"
        raise BadInput(f"{path.name} is too large ({size}); the limit is {max_pixels / 1e6:g} megapixels: "
                       f"downscale it first")
    try:
        return image_to_rgb(load_pil(path)), animated
    except UnreadableImage as err:
        reason = str(err).split(": ", 1)[-1][:160]
        raise BadInput(f"{path.name} is damaged or not a complete image ({reason})") from None


FONT = cv2.FONT_HERSHEY_SIMPLEX


def fit_text(text: str, width: int, scale: float = 0.5, weight: int = 1, smallest: float = 0.35) -> tuple[str, float]:
    """(text, font scale) that fits `width` px: smaller type first, then cut with '..'."""
    while scale > smallest and cv2.getTextSize(text, FONT, scale, weight)[0][0] > width:
        scale = round(scale - 0.03, 2)
    while len(text) > 3 and cv2.getTextSize(text, FONT, scale, weight)[0][0] > width:
        text = text[:-3] + ".."
    return text, scale


def probability_bars(probs, class_names, width: int = BARS_WIDTH, row: int = 22) -> np.ndarray:
    """RGB image: one labelled bar per class with its probability; the top class in bold type and framed
    (the annotated copies' bars, drawn in the page's style)."""
    canvas = np.full((row * len(class_names), width, 3), 250, np.uint8)
    draw_bars(canvas, 0, 0, width, row, probs, class_names, ON_PAGE)
    return canvas


def fit_tile(picture: np.ndarray, side: int = TILE, fill: int = 255) -> tuple[np.ndarray, tuple]:
    """The picture scaled to fit a side x side tile in proportion, centred on `fill`: (tile, (x, y, w, h))."""
    height, width = picture.shape[:2]
    k = side / max(height, width)
    w, h = max(1, round(width * k)), max(1, round(height * k))
    small = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    tile = np.full((side, side, 3), fill, np.uint8)
    x, y = (side - w) // 2, (side - h) // 2
    tile[y:y + h, x:x + w] = small if small.ndim == 3 else small[:, :, None]
    return tile, (x, y, w, h)


def colour_scale(width: int) -> np.ndarray:
    """The heat maps' colour scale as a strip with 'low' and 'high' under it."""
    from gradcam.overlay import colorize
    strip = np.full((26, width, 3), 255, np.uint8)
    strip[:9] = colorize(np.tile(np.linspace(0, 1, width, dtype=np.float32), (9, 1)))
    cv2.putText(strip, "low", (0, 23), FONT, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.putText(strip, "high", (width - 30, 23), FONT, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
    return strip


def tick(tile: np.ndarray) -> None:
    """The 'trusted map' mark: a white tick on a green disc in the tile's top right corner."""
    side = tile.shape[1]
    centre = (side - 14, 14)
    cv2.circle(tile, centre, 11, (20, 150, 60), -1, cv2.LINE_AA)
    cv2.polylines(tile, [np.array([(side - 20, 14), (side - 15, 19), (side - 8, 8)], np.int32)], False,
                  (255, 255, 255), 2, cv2.LINE_AA)


def face_panel(crop: np.ndarray, probs, class_names, heat=None, attention=None, titles=("face", "", ""),
               trusted: bool = False) -> np.ndarray:
    """One face side by side: the crop the model saw (in proportion: a cropped face need not be square),
    its explanation and attention map blended over it (each only when given, with the colour scale under
    it; a tick on the explanation when the report trusts it), and the probability bars."""
    from gradcam import overlay
    face = crop if crop.ndim == 3 else np.repeat(crop[:, :, None], 3, axis=2)
    face_tile, (fx, fy, fw, fh) = fit_tile(face)
    tiles, names, scales = [face_tile], [titles[0]], [False]
    for heat_map, title, mark in ((heat, titles[1], trusted), (attention, titles[2], False)):
        if heat_map is not None:
            # the map is of the square model input; the crop was squashed into it, so stretch it back
            heat_map = np.clip(cv2.resize(heat_map, (fw, fh), interpolation=cv2.INTER_LINEAR), 0, 1)
            tile = face_tile.copy()
            tile[fy:fy + fh, fx:fx + fw] = overlay(face_tile[fy:fy + fh, fx:fx + fw], heat_map, alpha=0.5)
            if mark:
                tick(tile)
            tiles.append(tile)
            names.append(title)
            scales.append(True)
    bars = probability_bars(probs, class_names)
    gap, head = 8, 22
    height = max(head + TILE + (26 + 4 if len(tiles) > 1 else 0), bars.shape[0] + head)
    canvas = np.full((height, len(tiles) * (TILE + gap) + bars.shape[1], 3), 255, np.uint8)
    for i, (tile, title, has_scale) in enumerate(zip(tiles, names, scales)):
        x = i * (TILE + gap)
        canvas[head:head + TILE, x:x + TILE] = tile
        text, scale = fit_text(title, TILE - 2, 0.45)
        cv2.putText(canvas, text, (x + 1, 16), FONT, scale, (20, 20, 20), 1, cv2.LINE_AA)
        if has_scale:
            canvas[head + TILE + 4:head + TILE + 30, x:x + TILE] = colour_scale(TILE)
    x = len(tiles) * (TILE + gap)
    canvas[head:head + bars.shape[0], x:x + bars.shape[1]] = bars
    return canvas


def stack_panels(panels) -> np.ndarray | None:
    """The face panels one under the other, each under its caption: one picture for the page."""
    if not panels:
        return None
    width = max(panel.shape[1] for panel, _ in panels)
    rows = []
    for panel, caption in panels:
        head = np.full((28, width, 3), 255, np.uint8)
        text, scale = fit_text(caption, width - 8, 0.6)
        cv2.putText(head, text, (4, 20), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
        body = np.full((panel.shape[0], width, 3), 255, np.uint8)
        body[:, :panel.shape[1]] = panel
        rows += [head, body, np.full((10, width, 3), 255, np.uint8)]
    return np.concatenate(rows[:-1])


def number_faces(image: np.ndarray, boxes, probs) -> np.ndarray:
    """The photo with a box per face coloured by its class and the face's number on a tag at the box's
    top left corner: nothing else drawn over the photo, so neighbouring faces never garble each other's
    labels (the label and probabilities are in each face's panel, in the same order)."""
    height, width = image.shape[:2]
    k = max(1, -(-MIN_CANVAS // min(height, width))) if min(height, width) < MIN_CANVAS else 1
    canvas = cv2.resize(image, (width * k, height * k), interpolation=cv2.INTER_CUBIC) if k > 1 else image.copy()
    thick = max(2, round(max(canvas.shape[:2]) / 400))
    for number, (box, p) in enumerate(zip(boxes, probs if probs is not None else []), 1):
        x, y, w, h = (v * k for v in box)
        colour = PALETTE[int(np.argmax(p)) % len(PALETTE)]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thick, cv2.LINE_AA)
        scale = max(0.5, min(2.0, w / 120))
        weight = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(str(number), FONT, scale, weight)
        pad = max(3, round(4 * scale))
        tx0, ty0 = x, (y - th - base - 2 * pad if y - th - base - 2 * pad >= 0 else y)
        cv2.rectangle(canvas, (tx0, ty0), (tx0 + tw + 2 * pad, ty0 + th + base + 2 * pad), colour, -1)
        cv2.putText(canvas, str(number), (tx0 + pad, ty0 + pad + th), FONT, scale, (0, 0, 0), weight, cv2.LINE_AA)
    return canvas


def write_examples(folder) -> list[Path]:
    """Example photos that need no download, written once at start-up: scikit-image's astronaut
    (NASA, public domain; one face) and three of expression/demo/synthetic.py's drawn faces in a row."""
    from expression.demo.synthetic import CLASS_NAMES, render_face
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        import skimage.data
        astronaut = folder / "astronaut.png"
        if not astronaut.is_file():
            with atomic_path(astronaut) as tmp:
                Image.fromarray(skimage.data.astronaut()).save(tmp, format="PNG")
        paths.append(astronaut)
    except ImportError:  # scikit-image is a test dependency; the drawn faces are always there
        pass
    faces = folder / "demo_faces.png"
    if not faces.is_file():
        # 48 px faces enlarged 4x, with a margin (the Haar cascade needs context around a face) and room
        # on the right of each for the probability bars of the annotated copy
        canvas = np.full((320, 3 * 400, 3), 128, np.uint8)
        for i, (name, seed) in enumerate((("happy", 0), ("angry", 1), ("surprise", 4))):
            face = render_face(CLASS_NAMES.index(name), np.random.default_rng([0, seed])).image
            big = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
            canvas[64:256, 48 + i * 400:240 + i * 400] = big[:, :, None]
        with atomic_path(faces) as tmp:
            Image.fromarray(canvas).save(tmp, format="PNG")
    paths.append(faces)
    return paths


class Engine:
    """One worker's own model copy, its Classifiers (one per explanation) and its Haar detectors: CAM hooks
    sit on a model, and one cv2.CascadeClassifier used by two threads at once lost the astronaut's face
    (tests/test_app.py), so each of these serves one request at a time; `lock` is held while it does."""

    def __init__(self, model, detector: FaceDetector):
        self.model, self.detector = model, detector
        self.classifiers: dict = {}
        self.lock = threading.Lock()


class WebApp:
    """The model, loaded once, and what one request does with it. Thread-safe: `workers` requests run at
    once, each on an Engine of its own (a copy of the model); the model work of a request (forward,
    backward and the hooks of the explanation and the attention map) holds its engine's lock, reading,
    detection set-up, drawing and writing run outside it."""

    def __init__(self, model, ckpt: dict, device="cpu", out_dir="runs/app", *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 workers: int = 1, keep_seconds: float = KEEP_SECONDS, max_out_mb: float = DEFAULT_MAX_OUT_MB,
                 cache_dir=None, **predictor_options):
        self.model, self.ckpt, self.device = model, ckpt, device
        self.predictor = FacePredictor(model, ckpt, device, cam="none", **predictor_options)
        self.whole_image = FaceDetector("none")
        self.class_names = self.predictor.class_names
        self.stages = stage_names(model)  # where an attention map can be taken
        # predict_FER's --cam-layer fused, where the model has the stages it fuses
        self.layers = self.stages + ([FUSED] if set(FUSED_LAYERS) <= set(self.stages) else [])
        self.methods = tuple(CAMS)
        self.max_pixels, self.workers = int(max_pixels), max(1, int(workers))
        self.keep_seconds, self.max_out_bytes = float(keep_seconds), int(max_out_mb * 2 ** 20)
        self.out_dir = Path(out_dir)
        self.requests_dir = self.out_dir / "requests"
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        # gradio's upload and result cache (app.py: <out>/cache), swept with the request folders
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.examples = write_examples(self.out_dir / "examples")
        d = self.predictor.detector
        self.pool = [Engine(model if i == 0 else copy.deepcopy(model),
                            d if i == 0 else FaceDetector(d.kind, d.min_face, d.max_side, d.min_neighbors,
                                                          d.scale_factor)) for i in range(self.workers)]
        self.engines: queue.Queue = queue.Queue()  # the free ones
        for engine in self.pool:
            self.engines.put(engine)
        self._sweep_lock = threading.Lock()
        self.protected: set = set()  # entries of cache_dir never swept: gradio's copies of the examples

    @classmethod
    def from_checkpoint(cls, path, device="cpu", out_dir="runs/app", **options) -> "WebApp":
        model, ckpt = load_model(path, device)
        return cls(model, ckpt, device, out_dir, **options)

    @contextmanager
    def engine(self):
        """A free engine for the duration of the block (waits for one when all `workers` are busy)."""
        engine = self.engines.get()
        try:
            yield engine
        finally:
            self.engines.put(engine)

    def check_choice(self, method: str, layer: str) -> None:
        if method not in self.methods:
            raise BadInput(f"unknown explanation {method!r}: choose one of {', '.join(self.methods)}")
        if method != "none" and layer not in self.layers:
            raise BadInput(f"unknown layer {layer!r}: choose one of {', '.join(self.layers)}")

    def classifier(self, method: str, layer: str, engine: Engine | None = None) -> Classifier:
        """The Classifier for this explanation on `engine`'s model (the first model when None)."""
        self.check_choice(method, layer)
        engine = engine or self.pool[0]
        key = (method, layer if method != "none" else None)
        if key not in engine.classifiers:
            try:
                engine.classifiers[key] = Classifier(engine.model, self.ckpt, self.device, method, layer,
                                                     self.predictor.classifier.batch_size,
                                                     self.predictor.classifier.tta)
            except ValueError as err:
                raise BadInput(f"{method} at {layer}: {err}") from None
        return engine.classifiers[key]

    def attention_layer(self, layer: str) -> str:
        """The stage whose attention map is shown: the explained one, or the finest for a fused map."""
        return layer if layer in self.stages else self.stages[0]

    def analyse(self, image, method: str = DEFAULT_CAM_METHOD, layer: str = DEFAULT_CAM_LAYER,
                attention: bool = True, whole_image: bool = False, name: str | None = None) -> Result:
        """One request: a file path (as uploaded) or an RGB uint8 array -> Result. BadInput for a file
        that is not a usable image or a choice that does not exist."""
        start = time.perf_counter()
        animated = False
        self.check_choice(method, layer)
        if isinstance(image, np.ndarray):
            rgb, name = np.ascontiguousarray(image), name or "image"
        else:
            if image is None:
                raise BadInput(WAITING)
            rgb, animated = read_upload(image, self.max_pixels, self.keep_seconds)
            name = name or Path(image).name
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BadInput(f"expected an RGB uint8 picture, got {rgb.dtype} {rgb.shape}")
        maps = None
        with self.engine() as engine:
            detector = self.whole_image if whole_image else engine.detector
            item = face_classifier.analyse(rgb, detector, self.predictor.margin, True, source=name, frame=None)
            classifier = self.classifier(method, layer, engine)
            with engine.lock:  # the hooks of the explanation and of the attention map are on engine.model
                face_classifier.classify([item], classifier)
                if attention and item.crops and self.stages:
                    maps = self._attention(engine.model, classifier, item.crops, self.attention_layer(layer))

        stem = safe_stem(name)
        folder = self._request_folder()
        item.annotated = f"{folder.relative_to(self.out_dir).as_posix()}/{stem}_annotated.jpg"
        photo = number_faces(rgb, item.boxes, item.probs)
        ImageSink(self.out_dir / item.annotated).put(photo)
        face_records = records(item, self.class_names, classifier.tta)
        records_path = folder / "predictions.jsonl"
        with RecordWriter(records_path, "jsonl", self.class_names) as writer:
            for record in face_records:
                writer.write(record)
        panels = self._panels(item, method, layer, maps)
        seconds = time.perf_counter() - start
        result = Result(annotated=photo, panels=panels, records=face_records, records_path=records_path,
                        summary=self._summary(item, face_records, rgb.shape, method, layer, seconds, animated),
                        seconds=seconds, first_frame_only=animated, heats=item.heats, attention=maps)
        self.sweep(keep=folder)
        return result

    def _attention(self, model, classifier: Classifier, crops, layer: str) -> np.ndarray:
        from gradcam import attention_maps  # Zagoruyko & Komodakis 2017: mean over channels of |A|^2
        x = classifier.prep.to_tensor(crops).to(self.device)
        return attention_maps(model, x, layers=(layer,)).maps[layer].numpy()

    def _panels(self, item, method: str, layer: str, maps) -> list:
        panels = []
        for i, (crop, probs) in enumerate(zip(item.crops, item.probs)):
            heat = item.heats[i] if item.heats is not None else None
            att = maps[i] if maps is not None else None
            titles = ("face crop", f"{method} {layer}", f"attention {self.attention_layer(layer)}")
            best = int(np.argmax(probs))
            caption = f"face {i + 1}: {self.class_names[best]} {probs[best]:.0%}, box {list(map(int, item.boxes[i]))}"
            panels.append((face_panel(crop, probs, self.class_names, heat, att, titles,
                                      trusted=(method, layer) in SHIPPED_TRUSTED_MAPS), caption))
        return panels

    def _summary(self, item, face_records, shape, method, layer, seconds, animated=False) -> str:
        height, width = shape[:2]
        source = plain_text(item.source)
        frame = " Only the first frame of this animation was analysed." if animated else ""
        if not item.boxes:
            small = min(height, width) < self.predictor.detector.min_face
            hint = (f" The picture is {width}x{height} px, smaller than the smallest face looked for "
                    f"({self.predictor.detector.min_face} px)." if small else
                    " Try a frontal, well-lit face, or tick 'whole image is one face' for a cropped face.")
            return f"**{NO_FACE}** in {source} ({width}x{height} px).{hint}{frame}"
        faces = ", ".join(f"{i}: **{r['label']}** {r['probabilities'][r['label']]:.0%}"
                          for i, r in enumerate(face_records, 1))
        explained = f"; explanation: {method} at {layer}" if method != "none" else ""
        return (f"{len(face_records)} face(s) in {source} ({width}x{height} px), numbered as on the photo: "
                f"{faces}{explained}. {seconds * 1000:.0f} ms.{frame}")

    def _request_folder(self) -> Path:
        """A new folder per request under <out>/requests/, named by a random token: nothing about the
        time, the order or the file, so one user's results cannot be found from another's."""
        folder = self.requests_dir / secrets.token_urlsafe(18)
        folder.mkdir(parents=True)
        return folder

    def sweep(self, keep: Path | None = None, now: float | None = None) -> int:
        """Delete request folders and cached uploads and results older than keep_seconds, then the oldest
        of the rest while they add up to more than max_out_mb (never `keep`, the request in hand).
        Returns the bytes left. Run after every request and, by app.py, every minute."""
        now = time.time() if now is None else now
        with self._sweep_lock:
            entries = []
            for root in (self.requests_dir, self.cache_dir):
                if root is None or not root.is_dir():
                    continue
                for path in root.iterdir():
                    try:
                        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                        stats = [f.stat() for f in files]
                        newest = max([path.stat().st_mtime] + [s.st_mtime for s in stats])
                        entries.append((newest, sum(s.st_size for s in stats), path))
                    except OSError:  # deleted meanwhile by gradio's own cache cleaner
                        continue
            entries = sorted((e for e in entries if e[2] not in self.protected), key=lambda e: e[0])
            total = sum(size for _, size, _ in entries)
            for mtime, size, path in entries:
                if path == keep or (mtime >= now - self.keep_seconds and total <= self.max_out_bytes):
                    continue
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                total -= size
            return total

    def respond(self, image, method=DEFAULT_CAM_METHOD, layer=DEFAULT_CAM_LAYER, attention=True,
                whole_image=False):
        """The page's handler -> (annotated photo, the face panels in one picture, records file, status markdown,
        warning or None). Never raises: the page shows the message and the server keeps serving."""
        if image is None:
            return None, None, None, WAITING, None
        try:
            result = self.analyse(image, method, layer, bool(attention), bool(whole_image))
        except BadInput as err:
            return None, None, None, f"**Could not analyse this file:** {plain_text(err)}", str(err)
        except Exception as err:  # a bug should not take the server down; its traceback goes to the log
            traceback.print_exc(file=sys.stderr)
            message = f"internal error ({type(err).__name__}: {str(err)[:200]}); the server log has the details"
            return None, None, None, f"**Could not analyse this file:** {plain_text(message)}", message
        finally:
            give_memory_back()
        warning = None if result.records[0]["label"] is not None else result.summary.replace("**", "")
        return result.annotated, stack_panels(result.panels), str(result.records_path), result.summary, warning


def build_interface(app: WebApp):
    """The gradio page around `app.respond` (gradio imported here: requirements-app.txt)."""
    import gradio as gr

    class UploadImage(gr.Image):
        """gr.Image that hands the app the file exactly as uploaded. gr.Image would convert it first
        (image_mode "RGB" by default): a 16-bit PNG clipped near-white, transparency black, .jpg renamed
        .jpeg, and every non-RGB file decoded in full before the app could check its size from the header.
        With this the app's own reader (read_upload: 16-bit scaled, alpha on white, size from the header)
        is the only decoder, and a non-image gets the app's message, not gradio's bare 'Error'.
        `is_template` makes the page draw it as a plain Image."""
        is_template = True

        def preprocess(self, payload):
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return str(payload.path)
            try:
                return super().preprocess(payload)
            except Exception:
                return None

    def handler(image, method, layer, attention, whole_image):
        # No gr.Warning toast: it outlived its request and covered the next result; the status line
        # above the result says the same and is replaced by the next request's.
        return app.respond(image, method, layer, attention, whole_image)[:4]

    # System fonts only: the default theme would fetch Google Fonts, and the app must work offline.
    theme = gr.themes.Default(font=("system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace"))
    # No share button (it only works on Hugging Face Spaces); download and full screen stay.
    buttons = ["download", "fullscreen"]
    with gr.Blocks(title="Expression-Deciphered", analytics_enabled=False,
                   delete_cache=(60, int(app.keep_seconds))) as demo:
        gr.Markdown("## Expression-Deciphered: facial expressions, and why the model thinks so")
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadImage(sources=["upload", "webcam"], type="filepath", image_mode=None, label="photo",
                                    elem_id="photo", buttons=["fullscreen"])
                with gr.Row():
                    method = gr.Dropdown(list(app.methods), value=DEFAULT_CAM_METHOD, label="explanation")
                    layer = gr.Dropdown(app.layers, value=DEFAULT_CAM_LAYER, label="layer")
                with gr.Row():
                    attention = gr.Checkbox(True, label="attention map")
                    whole = gr.Checkbox(False, label="whole image is one face (cropped face)")
                gr.Examples([[str(p)] for p in app.examples], inputs=[image], label="examples")
            with gr.Column(scale=2):
                status = gr.Markdown(WAITING, elem_id="status")
                annotated = gr.Image(label="annotated photo (faces numbered as the panels below)", interactive=False,
                                     format="jpeg", height=420, elem_id="annotated", buttons=buttons)
                gr.Markdown("Each face, in the photo's numbering: what the model saw, the explanation, the attention "
                            "map, the probabilities")
                panels = gr.Image(show_label=False, interactive=False, format="png", elem_id="faces", buttons=buttons)
                gr.Markdown(MAP_NOTE, elem_id="map-note")
                download = gr.File(label="records (predictions.jsonl, predict_FER.py's format)", elem_id="records")
        gr.on([image.change, method.change, layer.change, attention.change, whole.change], handler,
              inputs=[image, method, layer, attention, whole], outputs=[annotated, panels, download, status],
              api_name="analyse", concurrency_limit=app.workers)
    if app.cache_dir is not None and app.cache_dir.is_dir():  # gr.Examples copied the examples there
        app.protected = set(app.cache_dir.iterdir())
    return demo, theme
