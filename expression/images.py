"""One conversion from whatever PIL opens to the 8-bit gray or RGB image every path of the project uses.

PIL's own `convert("L")` clips 16-bit ("I;16", "I") and float ("F") pixels at 255, so a 16-bit face
becomes near-white; here they are scaled to 0..255 instead. Also: EXIF rotation applied (phone photos
are stored sideways), transparency dropped (as ImageFolder does) or composited on white, palette, CMYK, YCbCr, LAB and HSV converted,
and a multi-frame file (GIF, TIFF stack) read as its first frame.

Only PIL and numpy, so the standalone ONNX script can carry an identical copy (tests compare them).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
GRAY_MODES = ("1", "L", "LA", "La", *HIGH_DEPTH_MODES)  # the modes standard_image turns into "L"


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
