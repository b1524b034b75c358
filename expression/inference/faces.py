"""Face detection and cropping for photos and video frames, fully offline.

The detectors are OpenCV's Haar cascades, whose XML files ship inside the opencv-python 4.x wheels
(`cv2.data.haarcascades`); OpenCV 5 wheels dropped them, hence the `<5` pin. Nothing is downloaded at
run time. `none` treats the whole image as one face (pre-cropped faces such as FER2013 files).

Why alt2 is the default (measured on images scikit-image ships, both at minNeighbors 5; see
docs/prediction.md): it finds at least as many faces as `haarcascade_frontalface_default.xml`
(scikit-image's 100 LFW faces at 28/40/64/96 px: 85/93/98/98 found vs 80/90/96/95) and none of its false boxes on
face-free photos (0 vs 7 on 16 photos: six on coins, one on cells), at the same speed.

    from expression.inference.faces import FaceDetector, crop_faces, image_to_rgb
    detector = FaceDetector("haar-alt2", min_face=32)
    rgb = image_to_rgb(load_pil("group.jpg"))
    boxes = detector(rgb)                           # [(x, y, w, h), ...] in rgb's pixels
    crops, regions = crop_faces(rgb, boxes, margin=0.1)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from expression.core.errors import InputError
from expression.core.images import standard_image

# name -> cascade file in cv2.data.haarcascades; the first entry is the default
CASCADES = {
    "haar-alt2": "haarcascade_frontalface_alt2.xml",
    "haar": "haarcascade_frontalface_default.xml",
}
DETECTORS = (*CASCADES, "none")
DEFAULT_DETECTOR = "haar-alt2"
# Big photos are scanned at most this large: detection cost grows with the pixel count, while a face
# that is still >= min_face after the downscale is found just as well. Boxes are mapped back.
DEFAULT_DETECT_MAX_SIDE = 1024
DEFAULT_MIN_FACE = 32      # px in the original image; below ~30 px little expression detail is left
DEFAULT_MARGIN = 0.1       # per side, as a fraction of the box: FER2013 crops include chin and brow
DEFAULT_MIN_NEIGHBORS = 5  # fewer finds more faces in poor light but also faces in coins and clocks
SCALE_FACTOR = 1.1         # image pyramid step: 1.05 is ~2x slower for a few more small faces


Box = tuple  # (x, y, w, h) ints in the pixels of the image that was passed in


def cascade_dir() -> str:
    data = getattr(cv2, "data", None)
    return getattr(data, "haarcascades", "") if data is not None else ""


def load_cascade(name: str) -> cv2.CascadeClassifier:
    """The named Haar cascade; a missing file (OpenCV 5, or a stripped build) is an InputError."""
    path = os.path.join(cascade_dir(), CASCADES[name])
    cascade = cv2.CascadeClassifier(path) if os.path.isfile(path) else None
    if cascade is None or cascade.empty():
        raise InputError(f"OpenCV {cv2.__version__} has no Haar cascade {CASCADES[name]} (looked in "
                         f"{cascade_dir() or 'cv2.data, which is missing'}): install opencv-python<5, whose "
                         f"wheels ship the cascades (OpenCV 5 dropped them), or use detector 'none' for "
                         f"pre-cropped faces", option="detector")
    return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) from uint8 (H, W) or RGB (H, W, 3)."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class FaceDetector:
    """Callable: RGB or gray uint8 image -> list of (x, y, w, h) boxes in reading order (`reading_order`).

    kind: one of DETECTORS. min_face: smallest face side in the image's own pixels. max_side: the
    image is downscaled so that its longer side is at most this before the scan (0 = never).
    """

    def __init__(self, kind: str = DEFAULT_DETECTOR, min_face: int = DEFAULT_MIN_FACE,
                 max_side: int = DEFAULT_DETECT_MAX_SIDE, min_neighbors: int = DEFAULT_MIN_NEIGHBORS,
                 scale_factor: float = SCALE_FACTOR):
        if kind not in DETECTORS:
            raise InputError(f"unknown detector {kind!r}: choose from {', '.join(DETECTORS)}", option="detector")
        self.kind, self.min_face, self.max_side = kind, int(min_face), int(max_side)
        self.min_neighbors, self.scale_factor = int(min_neighbors), float(scale_factor)
        self.cascade = None if kind == "none" else load_cascade(kind)
        if self.cascade is not None:
            # the cascade's training window (24x24 default, 20x20 alt2): nothing smaller is found
            self.window = tuple(int(v) for v in self.cascade.getOriginalWindowSize())

    def __call__(self, image: np.ndarray) -> list[Box]:
        height, width = image.shape[:2]
        if self.cascade is None:
            return [(0, 0, width, height)]
        gray = to_gray(image)
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            # INTER_AREA averages the dropped pixels: no aliasing that would invent edges
            gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        side = max(self.window[0], self.window[1], int(self.min_face * scale))
        if min(gray.shape) < side:
            return []
        found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(side, side))
        boxes = []
        for x, y, w, h in (found if len(found) else []):
            x0, y0 = round(x / scale), round(y / scale)
            x1, y1 = min(width, round((x + w) / scale)), min(height, round((y + h) / scale))
            boxes.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
        return reading_order(boxes)


def reading_order(boxes) -> list[Box]:
    """Boxes as a person reads them: rows top to bottom, each row left to right. A box whose vertical
    centre lies within the first box of the current row (taken top down) joins that row, so faces in a
    row at slightly different heights are not split; a single row is simply left to right."""
    rows: list[list] = []
    for box in sorted(boxes, key=lambda b: (b[1] + b[3] / 2, b[0])):
        if rows and box[1] + box[3] / 2 <= rows[-1][0][1] + rows[-1][0][3]:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [box for row in rows for box in sorted(row)]


@dataclass(frozen=True)
class Region:
    """The square the model saw around a box: may reach outside the image (padded there)."""
    x0: int
    y0: int
    x1: int
    y1: int

    def clipped(self, width: int, height: int) -> "Region":
        return Region(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))


def face_region(box: Box, margin: float, width: int, height: int, whole: bool = False) -> Region:
    """Square of side max(w, h) * (1 + 2 * margin) centred on the box. whole=True (detector `none`):
    the box itself, unpadded, so pre-cropped faces reach the model exactly as they are."""
    x, y, w, h = box
    if whole:
        return Region(x, y, x + w, y + h)
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    cx2, cy2 = 2 * x + w, 2 * y + h  # doubled centre keeps the arithmetic in integers
    x0, y0 = (cx2 - side) // 2, (cy2 - side) // 2
    return Region(x0, y0, x0 + side, y0 + side)


def crop_region(image: np.ndarray, region: Region) -> np.ndarray:
    """Pixels of `region`; where it leaves the image the border pixels are repeated, so a face at the
    edge keeps its size and centring instead of being squeezed by a clipped crop."""
    height, width = image.shape[:2]
    inner = region.clipped(width, height)
    crop = image[inner.y0:inner.y1, inner.x0:inner.x1]
    pads = (inner.y0 - region.y0, region.y1 - inner.y1, inner.x0 - region.x0, region.x1 - inner.x1)
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop)


def crop_faces(image: np.ndarray, boxes, margin: float = DEFAULT_MARGIN, whole: bool = False):
    """-> (list of uint8 crops, list of Regions), one per box."""
    height, width = image.shape[:2]
    regions = [face_region(b, margin, width, height, whole) for b in boxes]
    return [crop_region(image, r) for r in regions], regions


def image_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image -> uint8 (H, W, 3) RGB as a person sees it (see expression.core.images: EXIF rotation,
    since Haar cascades only find upright faces; transparency on white; 16-bit and float scaled)."""
    return np.asarray(standard_image(img, alpha="white").convert("RGB"), dtype=np.uint8)
