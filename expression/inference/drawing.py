"""Drawing of predictions on RGB uint8 pictures: a box, a label and probability bars per face, and
the heat map blended over the region the model saw. The bars are drawn by one function, `draw_bars`,
for the annotated copies (ON_PHOTO) and for the browser app's face panels (ON_PAGE)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MIN_CANVAS = 256  # smaller images are enlarged for the annotated copy so labels stay legible
# one colour per class index (RGB), distinct on faces and on gray
PALETTE = ((230, 60, 60), (120, 170, 40), (150, 90, 200), (250, 200, 30), (170, 170, 170),
           (60, 120, 230), (250, 130, 30), (40, 190, 190), (230, 90, 170), (120, 90, 60))


FONT = cv2.FONT_HERSHEY_SIMPLEX


def _font_scale(text_height_px: float) -> float:
    # HERSHEY_SIMPLEX capitals are ~22 px tall at scale 1
    return max(0.3, text_height_px / 22.0)


@dataclass(frozen=True)
class BarStyle:
    """How a panel of probability bars looks; the layout (row height, width) is the caller's."""

    text: tuple[int, int, int]  # colour of the class names (and percentages)
    pad: int                    # px left of the names and above each bar (below it: pad + 1)
    name_room: int              # px the name column adds to the longest name
    right: int                  # px kept free right of a full bar (the percentage's room when shown)
    baseline: float             # text baseline, as a fraction of the row height down from its top
    lift: int = 0               # ... less this many px
    scale: float | None = None  # font scale; None: from the row height
    percent: bool = False       # the probability printed right of its bar
    mark_best: bool = False     # the top class framed and set in bold


# Over the photo (annotated copies): light names on the darkened picture, the panel sized to the box.
ON_PHOTO = BarStyle(text=(235, 235, 235), pad=2, name_room=6, right=3, baseline=0.75)
# The app's face panels: dark type on white at a fixed size, percentages, the top class framed in bold.
ON_PAGE = BarStyle(text=(15, 15, 15), pad=4, name_room=10, right=48, baseline=1.0, lift=7, scale=0.48,
                   percent=True, mark_best=True)


def bar_font(row: int, class_names, style: BarStyle) -> tuple[float, int]:
    """(font scale, width of the name column) of a bar panel with rows this tall."""
    scale = style.scale or _font_scale(row * 0.55)
    return scale, max(cv2.getTextSize(n, FONT, scale, 1)[0][0] for n in class_names) + style.name_room


def draw_bars(canvas: np.ndarray, x: int, y: int, width: int, row: int, probs, class_names,
              style: BarStyle = ON_PHOTO) -> None:
    """One bar per class into canvas[y:y + row * classes, x:x + width], in place: the class name, then a
    bar in the class's colour whose length is its probability (the background is the caller's)."""
    scale, name_w = bar_font(row, class_names, style)
    best = int(np.argmax(probs))
    for i, (name, p) in enumerate(zip(class_names, probs)):
        top = y + i * row
        bar = int(round((width - name_w - style.right) * float(p)))
        if bar > 0:
            cv2.rectangle(canvas, (x + name_w, top + style.pad), (x + name_w + bar, top + row - style.pad - 1),
                          PALETTE[i % len(PALETTE)], -1)
        bold = style.mark_best and i == best
        if bold:
            cv2.rectangle(canvas, (x, top + 1), (x + width - 1, top + row - 2), (60, 60, 60), 1)
        base = top + int(row * style.baseline) - style.lift
        # bold as a second stroke one pixel to the right: Hershey's thickness 2 fills the letters' holes
        for dx in ((0, 1) if bold else (0,)):
            cv2.putText(canvas, name, (x + style.pad + dx, base), FONT, scale, style.text, 1, cv2.LINE_AA)
            if style.percent:
                cv2.putText(canvas, f"{float(p):.0%}", (x + width - style.right + 4 + dx, base), FONT, scale,
                            style.text, 1, cv2.LINE_AA)


def annotate(item, class_names, alpha: float = 0.5) -> np.ndarray:
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
        strip = np.full((ch, _bar_panel(ch, class_names)[1] + 2 * thick, 3), 40, np.uint8)
        canvas = np.concatenate([canvas, strip], axis=1)
    for box, p in zip(item.boxes, item.probs if item.probs is not None else []):
        x, y, w, h = (v * k for v in box)
        best = int(np.argmax(p))
        colour = PALETTE[best % len(PALETTE)]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thick, cv2.LINE_AA)
        # label above the box (inside it when the box touches the top edge), never wider than the box
        text = f"{class_names[best]} {p[best]:.0%}"
        unit_w = cv2.getTextSize(text, FONT, 1.0, 1)[0][0]
        scale = min(_font_scale(min(max(10, w / 9), 32)), max(0.3, 0.95 * max(w, 60) / unit_w))
        weight = max(1, round(scale * 1.5))
        (tw, th), base = cv2.getTextSize(text, FONT, scale, weight)
        ty = y - base - thick if y - th - base - thick >= 0 else y + th + thick
        cv2.rectangle(canvas, (x, ty - th - thick), (x + tw + 2 * thick, ty + base), colour, -1)
        cv2.putText(canvas, text, (x + thick, ty), FONT, scale, (0, 0, 0), weight, cv2.LINE_AA)
        _draw_bars(canvas, (x, y, w, h), p, class_names, thick)
    return canvas


def _bar_panel(box_h: int, class_names):
    """Layout of the probability panel beside a box this tall: (row, w, h)."""
    row = max(9, min(box_h // len(class_names), 40))
    return row, bar_font(row, class_names, ON_PHOTO)[1] + max(30, row * 3), row * len(class_names)


def _draw_bars(canvas, box, p, class_names, thick) -> None:
    """A small panel of one bar per class, right of the box (left if there is no room)."""
    ch, cw = canvas.shape[:2]
    x, y, w, h = box
    row, panel_w, panel_h = _bar_panel(h, class_names)
    px = x + w + thick if x + w + thick + panel_w <= cw else max(0, x - thick - panel_w)
    px, py = min(px, max(0, cw - panel_w)), min(max(0, y), max(0, ch - panel_h))
    region = canvas[py:py + panel_h, px:px + panel_w]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)  # darkened, still see-through
    draw_bars(canvas, px, py, panel_w, row, p, class_names, ON_PHOTO)
