"""The browser app behind `app.py`: a photo (upload, webcam snapshot or example) -> faces, expressions,
an explanation and an attention map per face, and the records as predict_FER.py writes them.

Everything here except `build_interface` is plain Python, so the handlers are tested without a browser
and without gradio; `build_interface` imports gradio (requirements-app.txt) only when called.

    from expression.webapp import WebApp
    app = WebApp.from_checkpoint("models/shipped/resnet34_fer2013_cpu.pt", out_dir="runs/app")
    result = app.analyse("photo.jpg", method="gradcam", layer="layer3")
    result.records          # predict_FER.py's records; result.records_path: predictions.jsonl
"""
from __future__ import annotations

import itertools
import re
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from . import prediction
from .checkpoint import load_model
from .data import UnreadableImage, load_pil
from .drawing import PALETTE, annotate
from .faces import FaceDetector, image_to_rgb
from .io import atomic_path
from .prediction import CAMS, DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, FUSED_LAYERS, NO_FACE, Classifier, \
    FacePredictor, records
from .prediction_outputs import ImageSink, RecordWriter
from gradcam.methods import FUSED

# A 40 MP photo is ~120 MB as RGB, plus copies for drawing: enough for any camera, and the limit
# is checked on the header, before a decompression bomb can allocate anything.
DEFAULT_MAX_PIXELS = 40_000_000
KEEP_REQUESTS = 50  # request folders kept under <out>/requests/; older ones are deleted
TILE = 144  # px side of each tile in a face panel
BARS_WIDTH = 230
WAITING = "Upload a photo, take a webcam snapshot or pick an example."


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
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadInput(f"{path.name} is empty")
        with Image.open(path) as img:
            width, height = img.size
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
        return image_to_rgb(load_pil(path))
    except UnreadableImage as err:
        reason = str(err).split(": ", 1)[-1][:160]
        raise BadInput(f"{path.name} is damaged or not a complete image ({reason})") from None


def probability_bars(probs, class_names, width: int = BARS_WIDTH, row: int = 20) -> np.ndarray:
    """RGB image: one labelled bar per class with its probability, the top class in bold."""
    canvas = np.full((row * len(class_names), width, 3), 250, np.uint8)
    name_w, font = 78, cv2.FONT_HERSHEY_SIMPLEX
    best = int(np.argmax(probs))
    for i, (name, p) in enumerate(zip(class_names, probs)):
        top = i * row
        bar = int(round((width - name_w - 42) * float(p)))
        if bar > 0:
            cv2.rectangle(canvas, (name_w, top + 3), (name_w + bar, top + row - 4), PALETTE[i % len(PALETTE)], -1)
        weight = 2 if i == best else 1
        cv2.putText(canvas, name, (2, top + row - 6), font, 0.42, (20, 20, 20), weight, cv2.LINE_AA)
        cv2.putText(canvas, f"{float(p):.0%}", (width - 40, top + row - 6), font, 0.4, (20, 20, 20), weight,
                    cv2.LINE_AA)
    return canvas


def face_panel(crop: np.ndarray, probs, class_names, heat=None, attention=None, titles=("face", "", "")) -> np.ndarray:
    """One face side by side: the crop the model saw, its explanation and attention map blended over it
    (each only when given), and the probability bars."""
    from gradcam import overlay
    face = crop if crop.ndim == 3 else np.repeat(crop[:, :, None], 3, axis=2)
    face = cv2.resize(face, (TILE, TILE), interpolation=cv2.INTER_AREA if face.shape[0] > TILE else cv2.INTER_CUBIC)
    tiles, names = [face], [titles[0]]
    for heat_map, title in ((heat, titles[1]), (attention, titles[2])):
        if heat_map is not None:
            tiles.append(overlay(face, np.clip(cv2.resize(heat_map, (TILE, TILE), interpolation=cv2.INTER_LINEAR),
                                               0, 1), alpha=0.5))
            names.append(title)
    bars = probability_bars(probs, class_names)
    height = max(TILE, bars.shape[0]) + 22
    canvas = np.full((height, len(tiles) * (TILE + 6) + bars.shape[1], 3), 255, np.uint8)
    for i, (tile, title) in enumerate(zip(tiles, names)):
        x = i * (TILE + 6)
        canvas[22:22 + TILE, x:x + TILE] = tile
        cv2.putText(canvas, title, (x + 2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    x = len(tiles) * (TILE + 6)
    canvas[22:22 + bars.shape[0], x:x + bars.shape[1]] = bars
    return canvas


def stack_panels(panels) -> np.ndarray | None:
    """The face panels one under the other, each under its caption: one picture for the page."""
    if not panels:
        return None
    width = max(panel.shape[1] for panel, _ in panels)
    rows = []
    for panel, caption in panels:
        head = np.full((26, width, 3), 255, np.uint8)
        cv2.putText(head, caption, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        body = np.full((panel.shape[0], width, 3), 255, np.uint8)
        body[:, :panel.shape[1]] = panel
        rows += [head, body, np.full((8, width, 3), 255, np.uint8)]
    return np.concatenate(rows[:-1])


def write_examples(folder) -> list[Path]:
    """Example photos that need no download, written once at start-up: scikit-image's astronaut
    (NASA, public domain; one face) and three of expression/synthetic.py's drawn faces in a row."""
    from .synthetic import CLASS_NAMES, render_face
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


class WebApp:
    """The model, loaded once, and what one request does with it. Thread-safe: see `lock`."""

    def __init__(self, model, ckpt: dict, device="cpu", out_dir="runs/app", *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 keep_requests: int = KEEP_REQUESTS, **predictor_options):
        self.model, self.ckpt, self.device = model, ckpt, device
        self.predictor = FacePredictor(model, ckpt, device, cam="none", **predictor_options)
        self.whole_image = FaceDetector("none")
        self.class_names = self.predictor.class_names
        self.stages = stage_names(model)  # where an attention map can be taken
        # predict_FER's --cam-layer fused, where the model has the stages it fuses
        self.layers = self.stages + ([FUSED] if set(FUSED_LAYERS) <= set(self.stages) else [])
        self.methods = tuple(CAMS)
        self.max_pixels, self.keep_requests = int(max_pixels), int(keep_requests)
        self.out_dir = Path(out_dir)
        self.requests_dir = self.out_dir / "requests"
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        self.examples = write_examples(self.out_dir / "examples")
        # The CAM hooks sit on the one shared model: two requests inside it at once would each record
        # the other's activations and gradients, so the model work (forward, backward, attention) of
        # one request at a time holds this lock. Reading and drawing run outside it.
        self.lock = threading.Lock()
        # One cv2.CascadeClassifier is not thread-safe either: two detectMultiScale calls at once lost
        # the astronaut's face (tests/test_app.py). A lock of its own lets one request detect while
        # another is in the model.
        self.detect_lock = threading.Lock()
        self._classifiers: dict = {}
        self._ids = itertools.count(1)
        self._prune_lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path, device="cpu", out_dir="runs/app", **options) -> "WebApp":
        model, ckpt = load_model(path, device)
        return cls(model, ckpt, device, out_dir, **options)

    def classifier(self, method: str, layer: str) -> Classifier:
        if method not in self.methods:
            raise BadInput(f"unknown explanation {method!r}: choose one of {', '.join(self.methods)}")
        if method != "none" and layer not in self.layers:
            raise BadInput(f"unknown layer {layer!r}: choose one of {', '.join(self.layers)}")
        key = (method, layer if method != "none" else None)
        if key not in self._classifiers:
            try:
                self._classifiers[key] = Classifier(self.model, self.ckpt, self.device, method, layer,
                                                    self.predictor.classifier.batch_size,
                                                    self.predictor.classifier.tta)
            except ValueError as err:
                raise BadInput(f"{method} at {layer}: {err}") from None
        return self._classifiers[key]

    def attention_layer(self, layer: str) -> str:
        """The stage whose attention map is shown: the explained one, or the finest for a fused map."""
        return layer if layer in self.stages else self.stages[0]

    def analyse(self, image, method: str = DEFAULT_CAM_METHOD, layer: str = DEFAULT_CAM_LAYER,
                attention: bool = True, whole_image: bool = False, name: str | None = None) -> Result:
        """One request: a file path (as uploaded) or an RGB uint8 array -> Result. BadInput for a file
        that is not a usable image or a choice that does not exist."""
        start = time.perf_counter()
        if isinstance(image, np.ndarray):
            rgb, name = np.ascontiguousarray(image), name or "image"
        else:
            if image is None:
                raise BadInput(WAITING)
            rgb, name = read_image(image, self.max_pixels), name or Path(image).name
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BadInput(f"expected an RGB uint8 picture, got {rgb.dtype} {rgb.shape}")
        classifier = self.classifier(method, layer)
        detector = self.whole_image if whole_image else self.predictor.detector
        with self.detect_lock:
            item = prediction.analyse(rgb, detector, self.predictor.margin, True, source=name, frame=None)
        maps = None
        with self.lock:
            prediction.classify([item], classifier)
            if attention and item.crops and self.stages:
                maps = self._attention(classifier, item.crops, self.attention_layer(layer))

        stem = safe_stem(name)
        folder = self._request_folder(stem)
        item.annotated = f"{folder.relative_to(self.out_dir).as_posix()}/{stem}_annotated.jpg"
        photo = annotate(replace(item, heats=None), self.class_names)  # the heat map is in the face panels
        ImageSink(self.out_dir / item.annotated).put(photo)
        face_records = records(item, self.class_names, classifier.tta)
        records_path = folder / "predictions.jsonl"
        with RecordWriter(records_path, "jsonl", self.class_names) as writer:
            for record in face_records:
                writer.write(record)
        panels = self._panels(item, method, layer, maps)
        seconds = time.perf_counter() - start
        return Result(annotated=photo, panels=panels, records=face_records, records_path=records_path,
                      summary=self._summary(item, face_records, rgb.shape, method, layer, seconds), seconds=seconds,
                      heats=item.heats, attention=maps)

    def _attention(self, classifier: Classifier, crops, layer: str) -> np.ndarray:
        from gradcam import attention_maps  # Zagoruyko & Komodakis 2017: mean over channels of |A|^2
        x = classifier.prep.to_tensor(crops).to(self.device)
        return attention_maps(self.model, x, layers=(layer,)).maps[layer].numpy()

    def _panels(self, item, method: str, layer: str, maps) -> list:
        panels = []
        for i, (crop, probs) in enumerate(zip(item.crops, item.probs)):
            heat = item.heats[i] if item.heats is not None else None
            att = maps[i] if maps is not None else None
            titles = ("face crop", f"{method} {layer}", f"attention {self.attention_layer(layer)}")
            best = int(np.argmax(probs))
            caption = f"face {i + 1}: {self.class_names[best]} {probs[best]:.0%}, box {list(map(int, item.boxes[i]))}"
            panels.append((face_panel(crop, probs, self.class_names, heat, att, titles), caption))
        return panels

    def _summary(self, item, face_records, shape, method, layer, seconds) -> str:
        height, width = shape[:2]
        if not item.boxes:
            small = min(height, width) < self.predictor.detector.min_face
            hint = (f" The picture is {width}x{height} px, smaller than the smallest face looked for "
                    f"({self.predictor.detector.min_face} px)." if small else
                    " Try a frontal, well-lit face, or tick 'whole image is one face' for a cropped face.")
            return f"**{NO_FACE}** in {item.source} ({width}x{height} px).{hint}"
        faces = ", ".join(f"**{r['label']}** {r['probabilities'][r['label']]:.0%}" for r in face_records)
        explained = f"; explanation: {method} at {layer}" if method != "none" else ""
        return (f"{len(face_records)} face(s) in {item.source} ({width}x{height} px): {faces}{explained}. "
                f"{seconds * 1000:.0f} ms.")

    def _request_folder(self, stem: str) -> Path:
        """A new folder per request under <out>/requests/, the oldest deleted beyond keep_requests, so a
        long-running server does not fill the disk."""
        folder = self.requests_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._ids):05d}-{stem[:20]}"
        folder.mkdir(parents=True)
        with self._prune_lock:
            old = sorted(p for p in self.requests_dir.iterdir() if p.is_dir())[:-self.keep_requests]
            for path in old:
                shutil.rmtree(path, ignore_errors=True)
        return folder

    def respond(self, image, method=DEFAULT_CAM_METHOD, layer=DEFAULT_CAM_LAYER, attention=True,
                whole_image=False):
        """The page's handler -> (annotated photo, the face panels in one picture, records file, status markdown,
        warning or None). Never raises: the page shows the message and the server keeps serving."""
        if image is None:
            return None, None, None, WAITING, None
        try:
            result = self.analyse(image, method, layer, bool(attention), bool(whole_image))
        except BadInput as err:
            return None, None, None, f"**Could not analyse this file:** {err}", str(err)
        except Exception as err:  # a bug should not take the server down; its traceback goes to the log
            traceback.print_exc(file=sys.stderr)
            message = f"internal error ({type(err).__name__}: {str(err)[:200]}); the server log has the details"
            return None, None, None, f"**Could not analyse this file:** {message}", message
        warning = None if result.records[0]["label"] is not None else result.summary.replace("**", "")
        return result.annotated, stack_panels(result.panels), str(result.records_path), result.summary, warning


def build_interface(app: WebApp):
    """The gradio page around `app.respond` (gradio imported here: requirements-app.txt)."""
    import gradio as gr

    class UploadImage(gr.Image):
        """gr.Image that passes any uploaded file on, so a non-image gets our message, not a bare 'Error'
        from gradio's own PIL.Image.open. `is_template` makes the page draw it as a plain Image."""
        is_template = True

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except Exception:
                return str(payload.path) if payload is not None and payload.path else None

    def handler(image, method, layer, attention, whole_image):
        photo, panels, records_file, status, warning = app.respond(image, method, layer, attention, whole_image)
        if warning:
            gr.Warning(warning)
        return photo, panels, records_file, status

    # System fonts only: the default theme would fetch Google Fonts, and the app must work offline.
    theme = gr.themes.Default(font=("system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace"))
    with gr.Blocks(title="Expression-Deciphered", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Expression-Deciphered: facial expressions, and why the model thinks so")
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadImage(sources=["upload", "webcam"], type="filepath", label="photo", elem_id="photo")
                with gr.Row():
                    method = gr.Dropdown(list(app.methods), value=DEFAULT_CAM_METHOD, label="explanation")
                    layer = gr.Dropdown(app.layers, value=DEFAULT_CAM_LAYER, label="layer")
                with gr.Row():
                    attention = gr.Checkbox(True, label="attention map")
                    whole = gr.Checkbox(False, label="whole image is one face (cropped face)")
                gr.Examples([[str(p)] for p in app.examples], inputs=[image], label="examples")
            with gr.Column(scale=2):
                status = gr.Markdown(WAITING, elem_id="status")
                annotated = gr.Image(label="annotated photo", interactive=False, format="jpeg", height=420,
                                     elem_id="annotated")
                gr.Markdown("Each face: what the model saw, the explanation, the attention map, the probabilities")
                panels = gr.Image(show_label=False, interactive=False, format="png", elem_id="faces")
                download = gr.File(label="records (predictions.jsonl, predict_FER.py's format)", elem_id="records")
        gr.on([image.change, method.change, layer.change, attention.change, whole.change], handler,
              inputs=[image, method, layer, attention, whole], outputs=[annotated, panels, download, status])
    return demo, theme
