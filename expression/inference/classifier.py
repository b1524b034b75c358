"""Faces -> expressions: the batched classifier (with optional flip test-time augmentation and a CAM
per face) and the Python API, `FacePredictor`, that finds faces in a picture and classifies them.

    from expression.inference import FacePredictor
    predictor = FacePredictor.from_checkpoint()      # the shipped FER2013 model; or a path, cam="gradcam"
    for record in predictor.predict("photo.jpg"):   # or a PIL image, or an array of any dtype
        print(record["box"], record["label"], record["probabilities"])
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from expression.core.cam_policy import CAMS, DEFAULT_CAM_LAYER
from expression.core.checkpoint import choose_model, load_model, shipped_model, shipped_model_missing
from expression.core.errors import InputError, reason
from expression.core.images import rgb_uint8
from expression.core.preprocessing import Preprocessing
from expression.core.tta import tta_probs
from expression.inference.drawing import annotate
from expression.inference.faces import (DEFAULT_DETECT_MAX_SIDE, DEFAULT_DETECTOR, DEFAULT_MARGIN, DEFAULT_MIN_FACE,
                                        DEFAULT_MIN_NEIGHBORS, FaceDetector, crop_faces)
from gradcam import explain
from gradcam.methods import FUSED, INPUT_LAYER, LAYER_FREE_METHODS

# How each face is classified: "flip" averages the softmax of the face and its mirror image. On the
# shipped model and the 3,589 PublicTest faces it adds +0.4 points (63.4 -> 63.9 %; +0.7 for the first
# cycle's model, docs/shipped-model.md)
# for one more forward pass of a batch that is already in memory; "none" is the plain, single view.
FACE_TTA = ("none", "flip")
DEFAULT_FACE_TTA = "flip"
# --cam-layer fused: these stages fused into one map at layer1's resolution (gradcam.fuse_layers).
FUSED_LAYERS = ("layer1", "layer2", "layer3", "layer4")
NO_FACE = "no face found"


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
        found as expression.core.checkpoint.shipped_model says, also in an installed package."""
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
        image or an array of any dtype (expression.core.images.rgb_uint8); an unusable one is an InputError."""
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
