"""Procedural demo faces with known evidence regions: the dataset that needs no download.

Every face is a skin-toned ellipse with brows, eyes, a nose hint and a mouth, drawn at 4x
supersampling with anti-aliased cv2 primitives and reduced with an area filter. The seven classes
use the FER2013 names and differ from "neutral" only inside one region, so each sample comes with
exact boolean masks of where its class evidence is (for pointing-game scores of CAM maps):

    angry     brows slanted down toward the nose (a V)        evidence: brows
    disgust   asymmetric sneer, one mouth corner raised        evidence: mouth
    fear      wide round eyes, white visible around the iris   evidence: eyes
    happy     smile (U-shaped mouth)                           evidence: mouth
    neutral   flat brows, almond eyes, straight mouth          evidence: brows | eyes | mouth
    sad       frown (inverted U)                               evidence: mouth
    surprise  open O-shaped mouth                              evidence: mouth

Nuisance variation (position, scale, rotation, lighting, noise, hair, feature sizes) is drawn from
the same random numbers whatever the label, so a face rendered with the same generator state but
label "neutral" differs only inside the evidence region. With `corner_class="happy"` (say), samples
of that class are neutral faces with a small white square crossed by a dark X in one image corner
(the corner is drawn per sample, uniformly among the four); their evidence mask is that square.

Masks: "brows", "eyes" and "mouth" are the convex hull of each drawn feature grown by ~1 px, rasterised
through the same transform as the face, so every pixel the feature touches is inside; "evidence" is
the class's region (all three for neutral, the mark for the corner class). Sample i of a split is
drawn from np.random.default_rng([seed, crc32(split), i]) and classes are interleaved (label i % 7).

Examples (the contact sheet's command is expression/apps/demo_sheet.py):
    python -m expression.apps.demo_sheet --out img/demo_faces.png
    python -c "from expression.demo.synthetic import write_image_folder; write_image_folder('data/demo')"
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
REGIONS = ("brows", "eyes", "mouth")
EVIDENCE_REGION = {
    "angry": "brows",
    "disgust": "mouth",
    "fear": "eyes",
    "happy": "mouth",
    "neutral": "all",  # nothing distinctive: the whole expression is the evidence
    "sad": "mouth",
    "surprise": "mouth",
}
# Bump whenever a change alters any rendered pixel or mask, so cached folders are regenerated.
GENERATOR_VERSION = 1

_SS = 4  # supersampling factor: sub-pixel feature placement and smooth edges after INTER_AREA
_FRAC = 4  # fixed-point bits handed to cv2 (`shift`), so vertices are not snapped to the grid
_MASK_MARGIN = 1.0  # mask margin around a feature, in 48-px units; must exceed the AA spread
_MARK_SIZE = 7  # corner mark side, in 48-px units
_N_UNIFORM = 48  # uniforms drawn per face, a fixed count whatever the label (see _draw_params)


@dataclass
class FaceSample:
    image: np.ndarray  # uint8 (S, S)
    masks: dict  # "brows", "eyes", "mouth", "evidence" -> bool (S, S)
    label: int


@dataclass
class SyntheticSplit:
    images: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # int64 (N,); sample i has label i % 7 (classes interleaved)
    masks: dict  # region -> bool (N, S, S)
    class_names: tuple


def _draw_params(rng: np.random.Generator, size: int) -> dict:
    """All random choices of one face, consumed in a fixed order and count for every label.

    This is what makes `render_face(label, rng)` and `render_face(neutral, same-state rng)` share
    pose, lighting and noise, so they differ only where the expression differs.
    """
    u = iter(rng.random(_N_UNIFORM))

    def uni(lo, hi):
        return lo + (hi - lo) * next(u)

    p = {}
    # Pose (48-px units and degrees).
    p["scale"] = uni(0.85, 1.1)
    p["angle"] = uni(-10.0, 10.0)
    p["dx"], p["dy"] = uni(-3.0, 3.0), uni(-3.0, 3.0)
    # Palette (0..255 before lighting). Background is kept apart from skin so the face stands out.
    skin = uni(110, 215)
    gap, side = uni(40, 100), next(u)
    bg = skin + gap if side < 0.5 else skin - gap
    if not 15 <= bg <= 245:
        bg = skin - gap if side < 0.5 else skin + gap
    p["skin"], p["bg"] = skin, float(np.clip(bg, 15, 245))
    hair, has_hair = uni(15, 110), next(u) < 0.7  # both drawn always: fixed consumption
    p["hair"] = hair if has_hair else None
    p["hair_line"] = uni(-16.5, -14.5)
    p["brow_ink"] = skin * uni(0.12, 0.35)
    p["mouth_ink"] = skin * uni(0.15, 0.4)
    p["iris_ink"] = uni(10, 60)
    p["sclera"] = min(255.0, skin + uni(25, 60))
    p["nose_ink"] = skin * uni(0.55, 0.75)
    # Face geometry jitter.
    p["face_rx"], p["face_ry"] = uni(16.0, 18.0), uni(20.0, 22.0)
    p["eye_x"], p["eye_y"] = uni(6.4, 7.6), uni(-3.8, -2.6)
    p["eye_w"] = uni(2.8, 3.4)
    p["eye_h"] = uni(0.42, 0.55)  # neutral eye height / width
    p["fear_rx"], p["fear_ry"] = uni(1.0, 1.1), uni(0.92, 1.02)  # fear eye radii / eye_w
    p["iris_r"] = uni(1.1, 1.35)
    p["lid_t"] = uni(0.7, 1.0)
    p["brow_gap"] = uni(6.3, 7.2)  # brow centre above eye centre
    p["brow_len"] = uni(3.2, 4.0)  # half length
    p["brow_t"] = uni(1.3, 2.0)
    p["brow_arch"] = uni(0.0, 0.6)
    p["angry_drop"] = uni(2.6, 3.6)  # inner-end drop of angry brows
    p["mouth_y"] = uni(10.2, 11.8)
    p["mouth_w"] = uni(5.0, 6.4)  # half width
    p["mouth_t"] = uni(1.3, 2.0)
    p["curve"] = uni(3.0, 4.5)  # smile / frown depth, corner to centre
    p["sneer"] = uni(3.0, 4.5)  # how far the raised corner of disgust goes up
    p["sneer_side"] = 1.0 if next(u) < 0.5 else -1.0
    p["wave"] = uni(0.7, 1.0)  # amplitude of the disgust mouth's wiggle
    p["o_rx"], p["o_ry"] = uni(2.3, 3.0), uni(3.0, 3.9)
    # Lighting: identical distributions for every class, so global statistics carry no label.
    p["contrast"] = uni(0.6, 1.25)
    p["brightness"] = uni(-0.18, 0.18)
    p["grad"] = uni(0.0, 0.3)
    p["grad_dir"] = uni(0.0, 2 * np.pi)
    p["noise"] = uni(0.01, 0.05)
    p["corner"] = min(int(next(u) * 4), 3)
    p["noise_field"] = rng.standard_normal((size, size), dtype=np.float32)
    return p


@functools.lru_cache(maxsize=None)
def _unit_circle(n: int) -> np.ndarray:
    t = np.arange(n) * (2 * np.pi / n)
    ring = np.stack([np.cos(t), np.sin(t)], axis=1)
    ring.flags.writeable = False  # shared by the cache
    return ring


def _ellipse(cx, cy, rx, ry, n=32):
    return _unit_circle(n) * (rx, ry) + (cx, cy)


def _curve(w, f, n=13):
    x = np.linspace(-w, w, n)
    return np.stack([x, f(x)], axis=1)


def _ribbon(p, r, cap_n=6):
    """Polygon of polyline `p` stroked with half-width `r` and round caps.

    Filled as one polygon because cv2's thick anti-aliased polylines draw a disc at every joint
    and cost ~10x more; having the outline also lets the masks hull exactly what is drawn.
    """
    p = np.asarray(p, dtype=np.float64)
    d = np.diff(p, axis=0)
    d /= np.hypot(d[:, 0], d[:, 1])[:, None]
    ns = np.stack([-d[:, 1], d[:, 0]], axis=1)  # segment normals
    nv = np.empty_like(p)
    nv[0], nv[-1] = ns[0], ns[-1]
    if len(p) > 2:
        m = ns[:-1] + ns[1:]
        nv[1:-1] = m / np.sum(m * ns[1:], axis=1, keepdims=True)  # miter: offset edges stay r away
    phi = np.linspace(0.0, np.pi, cap_n + 1)[1:-1, None]
    end = p[-1] + r * (np.cos(phi) * ns[-1] + np.sin(phi) * d[-1])
    start = p[0] - r * (np.cos(phi) * ns[0] + np.sin(phi) * d[0])
    return np.concatenate([p + r * nv, end, (p - r * nv)[::-1], start])


class _Painter:
    """Collects polygons in face coordinates (48-px units, origin at the face centre, y down) and
    draws them on the supersampled canvas through one similarity transform shared by the image and
    every mask. Polygons are transformed in one batch: per-call numpy overhead dominated otherwise.
    """

    def __init__(self, size, scale, angle, dx, dy):
        self.k = size / 48.0 * scale * _SS  # canvas pixels per face unit
        a = np.deg2rad(angle)
        self.At = self.k * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # transposed
        centre = (size - 1) / 2.0 + np.array([dx, dy]) * size / 48.0  # in output pixel centres
        # Output pixel j spans canvas pixels SS*j .. SS*j+SS-1, whose mid-point is SS*j+(SS-1)/2.
        self.t = _SS * centre + (_SS - 1) / 2.0
        # The mask margin, in canvas pixels, must exceed the ~1 px reach of anti-aliased edges.
        margin = max(2.0, _MASK_MARGIN * size / 48.0 * _SS)
        # A 16-gon circumscribing a disc of that radius (in face units: a similarity maps discs to
        # discs): hulls grown by it contain the true Minkowski sum, so no touched pixel is missed.
        self.ring = _unit_circle(16) * (margin / np.cos(np.pi / 16) / self.k)
        self.ops = []  # (mask name or None for the image, polygon, grey value)

    def fill(self, poly, value):
        self.ops.append((None, poly, value))

    def cover(self, mask_name, poly):
        """Mark on a mask the convex hull of `poly` grown by the margin."""
        self.ops.append((mask_name, (poly[:, None, :] + self.ring[None]).reshape(-1, 2), None))

    def render(self, canvas, masks):
        sizes = np.cumsum([len(op[1]) for op in self.ops])[:-1]
        q = np.concatenate([op[1] for op in self.ops]) @ self.At + self.t
        q = np.round(q * (1 << _FRAC)).astype(np.int32)  # cv2 fixed point, `shift` = _FRAC
        for (mask_name, _, value), pts in zip(self.ops, np.split(q, sizes)):
            if mask_name is None:
                cv2.fillPoly(canvas, [pts], int(round(value)), cv2.LINE_AA, _FRAC)
            else:  # no AA on masks: values stay 0 or 255
                cv2.fillPoly(masks[mask_name], [cv2.convexHull(pts)], 255, cv2.LINE_8, _FRAC)


_NOSE = (_ribbon([(0.3, -1.0), (0.6, 4.0)], 0.35), _ribbon([(-1.6, 5.2), (0.0, 6.0), (1.6, 5.2)], 0.45))
_MIRROR = np.array([-1.0, 1.0])


def _mouth_line(kind: str, p: dict):
    """Centre line of an open mouth, in face units."""
    w, y, c = p["mouth_w"], p["mouth_y"], p["curve"]
    if kind == "happy":  # corners up, centre down
        return _curve(w, lambda x: y + c * (0.45 - (x / w) ** 2))
    if kind == "sad":
        return _curve(w, lambda x: y - c * (0.45 - (x / w) ** 2))
    if kind == "disgust":
        # A wavy sneer: one corner pulled up, the other slightly down, and a 1.5-period wiggle
        # that no other mouth has (without it a sneer reads as a lopsided smile).
        s, a, b = p["sneer_side"], p["sneer"], p["wave"]

        def sneer(x):
            t = (s * x + w) / (2 * w)  # 0 at the low corner, 1 at the raised one
            return y + 0.8 - (a + 0.8) * t ** 2 + b * np.sin(3 * np.pi * t)
        return _curve(w, sneer, 19)
    return np.array([[-w, y], [w, y]])


def _brow_line(kind: str, p: dict):
    """Centre line of the right-hand brow (x > 0), in face units; the inner end comes first."""
    bx, by, L = p["eye_x"], p["eye_y"] - p["brow_gap"], p["brow_len"]
    if kind == "angry":  # inner end pulled down toward the nose
        d = p["angry_drop"]
        return np.array([(bx - L + 0.4, by + 0.6 * d), (bx + L, by - 0.4 * d)])
    return np.array([(bx - L, by), (bx, by - p["brow_arch"]), (bx + L, by)])


def render_face(label: int, rng: np.random.Generator, size: int = 48,
                corner_class: str | None = None) -> FaceSample:
    """Draw one face of class `label` (index into CLASS_NAMES) with its region masks.

    The generator advances by the same amount for every label, so two generators in the same state
    give the same face apart from the evidence region.
    """
    if not 0 <= int(label) < len(CLASS_NAMES):
        raise ValueError(f"label must be in 0..{len(CLASS_NAMES) - 1}, got {label}")
    if corner_class is not None and corner_class not in CLASS_NAMES:
        raise ValueError(f"corner_class must be one of {CLASS_NAMES} or None, got {corner_class!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    label = int(label)
    name = CLASS_NAMES[label]
    p = _draw_params(rng, size)
    corner = corner_class is not None and name == corner_class
    kind = "neutral" if corner else name  # a corner-class face carries no expression of its own

    n = size * _SS
    canvas = np.full((n, n), int(round(p["bg"])), dtype=np.uint8)
    pt = _Painter(size, p["scale"], p["angle"], p["dx"], p["dy"])
    skin, rx, ry = p["skin"], p["face_rx"], p["face_ry"]

    # Head: neck, hair behind the upper head, face, then a hair cap over the forehead.
    pt.fill(np.array([(-6.5, 14.0), (6.5, 14.0), (8.0, 40.0), (-8.0, 40.0)]), skin * 0.85)
    if p["hair"] is not None:
        back = _ellipse(0.0, -1.0, rx + 2.0, ry + 2.0, 40)
        pt.fill(back[back[:, 1] < 3.0], p["hair"])
    pt.fill(_ellipse(0.0, 0.0, rx, ry, 48), skin)
    if p["hair"] is not None:
        rim = _ellipse(0.0, 0.0, rx, ry, 96)
        pt.fill(rim[rim[:, 1] < p["hair_line"]], p["hair"])
    for part in _NOSE:  # a faint hint, part of no region
        pt.fill(part, p["nose_ink"])

    brow = _ribbon(_brow_line(kind, p), p["brow_t"] / 2)  # the right brow; the left mirrors it
    for b in (brow, brow * _MIRROR):
        pt.fill(b, p["brow_ink"])
        pt.cover("brows", b)

    w, lid = p["eye_w"], p["lid_t"] / 2
    if kind == "fear":  # wide round eye: white all around a small iris
        erx, ery, iris_r = w * p["fear_rx"], w * p["fear_ry"], p["iris_r"] * 0.9
    else:  # almond eye whose iris fills most of the opening
        erx, ery = w, w * p["eye_h"]
        iris_r = min(p["iris_r"], ery - lid)
    for s in (-1.0, 1.0):
        ex, ey = s * p["eye_x"], p["eye_y"]
        outer = _ellipse(ex, ey, erx + lid, ery + lid, 24)  # the lid line is the rim between fills
        pt.fill(outer, p["iris_ink"])
        pt.fill(_ellipse(ex, ey, erx - lid, ery - lid, 24), p["sclera"])
        pt.fill(_ellipse(ex, ey, iris_r, iris_r, 12), p["iris_ink"])
        pt.cover("eyes", outer)

    if kind == "surprise":
        lip, my = p["mouth_t"] * 0.3, p["mouth_y"] + 0.5
        outer = _ellipse(0.0, my, p["o_rx"] + lip, p["o_ry"] + lip, 24)
        pt.fill(outer, p["mouth_ink"] * 0.7)
        pt.fill(_ellipse(0.0, my, p["o_rx"] - lip, p["o_ry"] - lip, 24), p["mouth_ink"])
    else:
        outer = _ribbon(_mouth_line(kind, p), p["mouth_t"] / 2)
        pt.fill(outer, p["mouth_ink"])
    pt.cover("mouth", outer)

    masks = {r: np.zeros((n, n), dtype=np.uint8) for r in REGIONS}
    pt.render(canvas, masks)

    mark = None
    if corner:
        # Pixel-aligned square in an image corner, unrotated: the cue lives in image space, not on
        # the face, which is the point of the "does the map follow the evidence?" experiment.
        m = max(3, round(_MARK_SIZE * size / 48.0))
        x0 = 1 if p["corner"] in (0, 2) else size - 1 - m
        y0 = 1 if p["corner"] in (0, 1) else size - 1 - m
        a0, a1 = (x0 * _SS, y0 * _SS), ((x0 + m) * _SS - 1, (y0 + m) * _SS - 1)
        cv2.rectangle(canvas, a0, a1, 250, -1)
        t = max(2, round(1.1 * _SS * size / 48.0))  # ~1 px strokes
        inset = t // 2 + 2  # keeps the round caps and their AA fringe inside the square
        lo_x, hi_x, lo_y, hi_y = a0[0] + inset, a1[0] - inset, a0[1] + inset, a1[1] - inset
        cv2.line(canvas, (lo_x, lo_y), (hi_x, hi_y), 20, t, cv2.LINE_AA)
        cv2.line(canvas, (lo_x, hi_y), (hi_x, lo_y), 20, t, cv2.LINE_AA)
        mark = np.zeros((size, size), dtype=bool)
        mark[y0:y0 + m, x0:x0 + m] = True

    image = _light(cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA), p)
    # A mask pixel is on when any of its supersampled pixels is: masks are drawn without AA (0 or
    # 255), so one covered sub-pixel averages to >= 255/16 and survives the > 0 test exactly.
    out = {r: cv2.resize(masks[r], (size, size), interpolation=cv2.INTER_AREA) > 0 for r in REGIONS}
    if mark is not None:
        out["evidence"] = mark
    elif EVIDENCE_REGION[name] == "all":
        out["evidence"] = out["brows"] | out["eyes"] | out["mouth"]
    else:
        out["evidence"] = out[EVIDENCE_REGION[name]].copy()
    return FaceSample(image=image, masks=out, label=label)


@functools.lru_cache(maxsize=8)
def _grid(size: int):
    c = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    return c[None, :] / (size / 2.0), c[:, None] / (size / 2.0)


def _light(small: np.ndarray, p: dict) -> np.ndarray:
    """Pointwise contrast, brightness, a linear illumination ramp and Gaussian noise.

    Pointwise on purpose: a pixel changes only if its drawn value changed, which keeps every
    difference between expressions inside the masks.
    """
    gx, gy = _grid(small.shape[0])
    ramp = p["grad"] * (np.cos(p["grad_dir"]) * gx + np.sin(p["grad_dir"]) * gy)
    x = small.astype(np.float32) / 255.0
    x = 0.5 + (x - 0.5) * p["contrast"] + p["brightness"] + ramp + p["noise"] * p["noise_field"]
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _split_id(split: str) -> int:
    # crc32, not hash(): Python salts str hashes per process, and the data must not change.
    return zlib.crc32(split.encode("utf-8"))


def make_split(n_per_class: int, seed: int = 0, split: str = "train", size: int = 48,
               corner_class: str | None = None) -> SyntheticSplit:
    """`n_per_class` faces of each class, interleaved: sample i has label i % 7.

    Sample i is drawn from np.random.default_rng([seed, crc32(split), i]), so any sample can be
    regenerated alone, a larger split starts with the smaller one, and the `corner_class` variant
    of sample i is the same face as the plain sample i (only the corner class is redrawn).
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be 0 or more, got {n_per_class}")
    k = len(CLASS_NAMES)
    total = n_per_class * k
    images = np.zeros((total, size, size), dtype=np.uint8)
    labels = np.arange(total, dtype=np.int64) % k
    masks = {r: np.zeros((total, size, size), dtype=bool) for r in REGIONS + ("evidence",)}
    sid = _split_id(split)
    for i in range(total):
        face = render_face(int(labels[i]), np.random.default_rng([seed, sid, i]), size, corner_class)
        images[i] = face.image
        for r, m in face.masks.items():
            masks[r][i] = m
    return SyntheticSplit(images=images, labels=labels, masks=masks, class_names=CLASS_NAMES)


def write_image_folder(root, n_train_per_class: int = 200, n_test_per_class: int = 60, seed: int = 0,
                       size: int = 48, corner_class: str | None = None) -> Path:
    """Write an ImageFolder tree (root/{train,test}/<class>/<class>_00000.png) with masks and params.

    masks_{split}.npz rows follow make_split's order (interleaved classes), not ImageFolder's sorted
    order: match them through the "files" key (paths relative to root). A root whose demo.json
    already matches is returned untouched; anything else is built in a temp folder beside it and
    renamed into place, so an interrupted run never leaves a half-written dataset.
    """
    root = Path(root)
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        "corner_class": corner_class,
        "n_train_per_class": int(n_train_per_class),
        "n_test_per_class": int(n_test_per_class),
        "class_names": list(CLASS_NAMES),
    }
    meta = root / "demo.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text()) == params:
                return root
        except (OSError, ValueError):
            pass  # unreadable: regenerate
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        # Without demo.json this is not ours (maybe real FER2013 images): never delete it.
        raise FileExistsError(f"{root} exists and is not a synthetic demo dataset (no demo.json); "
                              "choose another folder or remove it")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
            data = make_split(n, seed, split, size, corner_class)
            for name in CLASS_NAMES:
                (tmp / split / name).mkdir(parents=True)
            files = []
            for i, (img, lab) in enumerate(zip(data.images, data.labels)):
                name = CLASS_NAMES[lab]
                rel = f"{split}/{name}/{name}_{i // len(CLASS_NAMES):05d}.png"
                Image.fromarray(img).save(tmp / rel)
                files.append(rel)
            np.savez_compressed(tmp / f"masks_{split}.npz", files=np.array(files, dtype=str),
                                labels=data.labels, **data.masks)
        # demo.json last: its presence is what marks a folder complete.
        (tmp / "demo.json").write_text(json.dumps(params, indent=2) + "\n")
        if root.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, trash / "old")
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def contact_sheet(per_class: int = 6, seed: int = 0, size: int = 48, zoom: int = 2,
                  corner_class: str | None = None, split: str = "train") -> np.ndarray:
    """RGB sheet: one row per class; left block the faces, right block the same with the
    evidence mask outlined in red."""
    data = make_split(per_class, seed, split, size, corner_class)
    k, tile, label_w, gap, head = len(CLASS_NAMES), size * zoom, 90, 12, 22
    width = label_w + 2 * per_class * (tile + 2) + gap
    sheet = np.full((head + k * (tile + 2), width, 3), 32, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(sheet, "faces", (label_w, 16), font, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    cv2.putText(sheet, "evidence mask", (label_w + per_class * (tile + 2) + gap, 16), font, 0.45,
                (230, 230, 230), 1, cv2.LINE_AA)
    for i in range(len(data.labels)):
        row, col = int(data.labels[i]), i // k
        y = head + row * (tile + 2)
        face = cv2.resize(data.images[i], (tile, tile), interpolation=cv2.INTER_NEAREST)
        rgb = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
        x = label_w + col * (tile + 2)
        sheet[y:y + tile, x:x + tile] = rgb
        ev = data.masks["evidence"][i].astype(np.uint8)
        big = cv2.resize(ev, (tile, tile), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outlined = rgb.copy()
        cv2.drawContours(outlined, contours, -1, (255, 40, 40), 1)
        x2 = x + per_class * (tile + 2) + gap
        sheet[y:y + tile, x2:x2 + tile] = outlined
        if col == 0:
            name = CLASS_NAMES[row] + (" *" if CLASS_NAMES[row] == corner_class else "")
            cv2.putText(sheet, name, (6, y + tile // 2 + 5), font, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return sheet


# Test inputs for the readers' size checks (tests/, bench/app_resources.py).
def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height: what a decompression bomb looks like to Image.open."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)
