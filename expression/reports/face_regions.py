"""Named face regions on the registered face, the FACS action units each expression is made of, and the
region each unit moves: what the class maps of `class_maps` are scored against.

No landmark model runs here. Of the packages that could place landmarks per face, none installs and
runs offline with its model inside the wheel and this project's torch: mediapipe's wheel (1.2.x) holds
only the tasks API, whose face landmarker downloads its `.task` model at run time; dlib ships no
wheel (a source build) and no model (the 68-point predictor is a separate download, or the 100 MB
face-recognition-models sdist); face-alignment and insightface download their weights;
facenet-pytorch ships MTCNN's weights in its wheel but pins torch<2.3, numpy<2 and Pillow<10.3. So the
regions are a fixed layout on the 48 px face as FER2013 registers it (centred, eyes level), written
below in 48 px units and checked against the mean face of whatever split is analysed
(`check_layout`: the mean face's darkest spots in each eye window and the mouth window, and its
brightest spot on the nose ridge, must fall in the region named for them).

    from expression.reports.face_regions import fer_layout
    layout = fer_layout(48)
    layout.masks["mouth"].sum(), layout.expected["happy"]    # pixels, ('cheeks', 'mouth')
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The partition of the face frame, in the order of the tables. Each pixel is in exactly one region.
REGIONS = ("forehead", "brows", "eyes", "nose", "cheeks", "mouth", "jaw", "outside")

# The fixed layout in 48 px units (x right, y down, pixel centres at 0..47), read off the mean of the
# 3,589 FER2013 PublicTest faces: eyes darkest at (14.5, 17) and (32.5, 17.5), nose ridge brightest at
# x 23.5 from y 13 to 29 with the nostrils at y 31, the mouth darkest along y 38-39 from x 17 to 29, the
# face's edge (background, hair) at x ~5 and ~42 at mid height, narrowing to x 13..34 at y 44.
FACE = dict(cx=23.5, cy=21.0, rx=19.0, ry=27.0)     # the face oval; beyond it: "outside"
EYES = (dict(cx=14.5, cy=17.5, rx=5.5, ry=3.5), dict(cx=32.5, cy=17.5, rx=5.5, ry=3.5))
BROW_BAND = (8.5, 14.0)                             # y range of the brows, the glabella between them included
NOSE = ((20.0, 14.0), (27.0, 14.0), (31.0, 33.0), (16.0, 33.0))  # trapezoid: bridge to nostrils
MOUTH = dict(cx=23.5, cy=38.5, rx=9.0, ry=4.5)
CHEEK_BAND = (14.0, 36.0)                           # y range left to the cheeks beside eyes, nose and mouth
# Below the cheek band the face is "jaw" (chin and jaw line) except the mouth; above the brows, "forehead".

# FACS prototypes (Ekman & Friesen; as listed in issue 26) per FER2013 class name.
FACS_UNITS = {
    "angry": (4, 5, 7, 23),
    "disgust": (9, 15, 16),
    "fear": (1, 2, 4, 5, 7, 20, 26),
    "happy": (6, 12),
    "neutral": (),
    "sad": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
}
# Each action unit's name and the regions of the layout where it changes the face's appearance: the
# muscle's own region. AU1/AU2 raise the brows and wrinkle the forehead; AU4 lowers and draws the brows
# together (the glabella is in the brow band); AU6 lifts the cheeks (its crow's feet are at the eyes'
# outer corners, which the eye ellipses mostly leave to the cheeks); AU26 drops the jaw, opening the mouth.
ACTION_UNITS = {
    1: ("inner brow raiser", ("brows", "forehead")),
    2: ("outer brow raiser", ("brows", "forehead")),
    4: ("brow lowerer", ("brows",)),
    5: ("upper lid raiser", ("eyes",)),
    6: ("cheek raiser", ("cheeks",)),
    7: ("lid tightener", ("eyes",)),
    9: ("nose wrinkler", ("nose",)),
    12: ("lip corner puller", ("mouth",)),
    15: ("lip corner depressor", ("mouth",)),
    16: ("lower lip depressor", ("mouth",)),
    20: ("lip stretcher", ("mouth",)),
    23: ("lip tightener", ("mouth",)),
    26: ("jaw drop", ("mouth", "jaw")),
}


@dataclass(frozen=True)
class RegionLayout:
    """A partition of the S x S input into named regions, and the regions each class's evidence should be in."""

    name: str
    masks: dict        # region -> bool (S, S); every pixel in exactly one region
    expected: dict     # class name -> tuple of regions (empty: the class names no region, e.g. neutral)
    basis: dict        # class name -> why those regions ("AU6+12", "drawn: mouth")

    @property
    def regions(self) -> tuple:
        return tuple(self.masks)

    @property
    def size(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    def onehot(self) -> np.ndarray:
        """(S*S, R) float32: pixel -> its region, for region masses as one matrix product."""
        return np.stack([m.reshape(-1) for m in self.masks.values()], axis=1).astype(np.float32)

    def area_shares(self) -> np.ndarray:
        """(R,) the share of the frame each region covers: where a uniform map's mass would go."""
        return self.onehot().mean(0)

    def label_image(self) -> np.ndarray:
        """(S, S) int: index into `regions` of each pixel."""
        return self.onehot().argmax(1).reshape(self.size, self.size)


def facs_regions(class_name: str) -> tuple:
    """The layout regions a class's FACS units move, in REGIONS order; () for neutral or an unknown class."""
    wanted = {r for unit in FACS_UNITS.get(class_name, ()) for r in ACTION_UNITS[unit][1]}
    return tuple(r for r in REGIONS if r in wanted)


def facs_basis(class_name: str) -> str:
    units = FACS_UNITS.get(class_name)
    if units is None:
        return "not a FACS prototype"
    return "AU" + "+".join(map(str, units)) if units else "none (no action unit)"


def _grid(size: int):
    """Pixel centres in 48 px units: x (1, S) and y (S, 1)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) * (48.0 / size) - 0.5
    return c[None, :], c[:, None]


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _inside_polygon(x, y, vertices) -> np.ndarray:
    """Even-odd rule point-in-polygon on the pixel grid (x (1, S), y (S, 1))."""
    x, y = np.broadcast_arrays(x, y)
    inside = np.zeros(x.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        (x0, y0), (x1, y1) = vertices[i], vertices[(i + 1) % n]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside


def fer_layout(size: int = 48) -> RegionLayout:
    """The fixed FER2013 layout rasterised at `size` px (scaled from the 48 px definition above)."""
    x, y = _grid(size)
    face = _ellipse(x, y, **FACE)
    eyes = np.zeros((size, size), dtype=bool)
    for eye in EYES:
        eyes |= _ellipse(x, y, **eye)
    nose = _inside_polygon(x, y, NOSE) & ~eyes
    mouth = _ellipse(x, y, **MOUTH) & ~nose
    taken = eyes | nose | mouth
    yy = np.broadcast_to(y, (size, size))
    brows = face & (yy >= BROW_BAND[0]) & (yy < BROW_BAND[1]) & ~taken
    cheeks = face & (yy >= CHEEK_BAND[0]) & (yy < CHEEK_BAND[1]) & ~taken
    jaw = face & (yy >= CHEEK_BAND[1]) & ~taken
    forehead = face & (yy < BROW_BAND[0]) & ~taken
    masks = dict(forehead=forehead, brows=brows, eyes=eyes & face, nose=nose & face, cheeks=cheeks,
                 mouth=mouth & face, jaw=jaw)
    masks["outside"] = ~np.logical_or.reduce(list(masks.values()))
    classes = tuple(FACS_UNITS)
    return RegionLayout(name="FER2013 fixed layout (48 px registered face)", masks=masks,
                        expected={c: facs_regions(c) for c in classes},
                        basis={c: facs_basis(c) for c in classes})


def demo_layout(region_masks: dict, evidence_region: dict, threshold: float = 0.25) -> RegionLayout:
    """A layout from the demo generator's own per-face masks (expression.demo.synthetic: "brows",
    "eyes", "mouth", each bool (N, S, S)): a pixel goes to the region it is most often in when that is at
    least `threshold` of the faces, else to "other". `evidence_region` is the generator's class ->
    region table ("all" = brows, eyes and mouth)."""
    names = [r for r in ("brows", "eyes", "mouth") if r in region_masks]
    freq = np.stack([np.asarray(region_masks[r], dtype=np.float32).mean(0) for r in names])
    best = freq.argmax(0)
    hit = freq.max(0) >= threshold
    masks = {r: hit & (best == i) for i, r in enumerate(names)}
    masks["other"] = ~hit
    expected = {c: tuple(names) if r == "all" else (r,) for c, r in evidence_region.items()}
    basis = {c: f"drawn: {r}" for c, r in evidence_region.items()}
    return RegionLayout(name="demo generator's feature masks", masks=masks, expected=expected, basis=basis)


# ---------------------------------------------------------------------------------------------------
# The layout against a mean face

# Where to look for each landmark on a mean face, as fractions of the side (x0, x1, y0, y1), what to
# look for, and the region it must fall in. "Darkest" and "brightest" are read on the face's detail,
# the mean face blurred by 1 px minus the same blurred by 4 px (at 48 px): a feature darker than its
# surround, not the hair or background, which are dark but no darker than what is around them; and only
# inside the layout's face.
LANDMARK_WINDOWS = (
    ("left eye (darkest)", (0.1, 0.5), (0.2, 0.55), "min", "eyes"),
    ("right eye (darkest)", (0.5, 0.9), (0.2, 0.55), "min", "eyes"),
    ("mouth (darkest)", (0.25, 0.75), (0.65, 0.95), "min", "mouth"),
    ("nose ridge (brightest)", (0.35, 0.65), (0.3, 0.65), "max", "nose"),
)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (numpy only)."""
    radius = max(1, int(round(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def check_layout(mean_face: np.ndarray, layout: RegionLayout) -> list[dict]:
    """Find each landmark of LANDMARK_WINDOWS on a mean face's detail (1 px minus 4 px Gaussian blur, at
    48 px) and say which region of `layout` it falls in. Rows: landmark, x, y (pixels), region, expected,
    ok."""
    size = mean_face.shape[0]
    smooth = _smooth(mean_face, sigma=size / 48.0) - _smooth(mean_face, sigma=4 * size / 48.0)
    labels = layout.label_image()
    if "outside" in layout.masks:
        smooth = np.where(layout.masks["outside"], np.nan, smooth)
    rows = []
    for name, (fx0, fx1), (fy0, fy1), kind, expected in LANDMARK_WINDOWS:
        if expected not in layout.masks:
            continue
        x0, x1, y0, y1 = (int(round(f * size)) for f in (fx0, fx1, fy0, fy1))
        window = smooth[y0:y1, x0:x1]
        flat = np.nanargmin(window) if kind == "min" else np.nanargmax(window)
        y, x = np.unravel_index(flat, window.shape)
        y, x = y + y0, x + x0
        region = layout.regions[labels[y, x]]
        rows.append(dict(landmark=name, x=int(x), y=int(y), region=region, expected=expected,
                         ok=region == expected))
    return rows


def layout_for_split(split_dir, size: int) -> RegionLayout:
    """The demo generator's layout for a split it wrote (a demo.json beside the split and its
    masks_<split>.npz), else the fixed FER2013 layout at `size` px."""
    from pathlib import Path

    from expression.demo.synthetic import EVIDENCE_REGION

    split_dir = Path(split_dir)
    masks_file = split_dir.parent / f"masks_{split_dir.name}.npz"
    if (split_dir.parent / "demo.json").is_file() and masks_file.is_file():
        try:
            with np.load(masks_file) as data:
                masks = {r: data[r] for r in ("brows", "eyes", "mouth")}
        except (OSError, KeyError, ValueError):
            masks = None
        if masks and all(m.ndim == 3 and m.shape[1:] == (size, size) for m in masks.values()):
            return demo_layout(masks, EVIDENCE_REGION)
    return fer_layout(size)
