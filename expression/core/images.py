"""One conversion from whatever PIL opens to the 8-bit gray or RGB image every path of the project uses.

PIL's own `convert("L")` clips 16-bit ("I;16", "I") and float ("F") pixels at 255, so a 16-bit face
becomes near-white; here they are scaled to 0..255 instead. Also: EXIF rotation applied (phone photos
are stored sideways), transparency dropped (as ImageFolder does) or composited on white, palette, CMYK,
YCbCr, LAB and HSV converted, and a multi-frame file (GIF, TIFF stack) read as its first frame.

Only PIL and numpy, so the standalone ONNX script can carry a copy that behaves identically (tests compare them).
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
        low, high = own_range(values)
        if mode == "I" and low >= 0 and high <= 255:  # an 8-bit image stored as 32-bit ints
            low, high = 0.0, 255.0
        elif mode == "I" and low >= 0 and high <= 65535:  # 16-bit PNGs open as "I" in recent Pillow
            low, high = 0.0, 65535.0
        elif mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
    return span_to_uint8(values, low, high)


def own_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values; (0, 1) when there are none."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def span_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """float64 values with low..high mapped to 0..255, rounded; nan counts as low, infinities clip."""
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def rgb_uint8(image) -> np.ndarray:
    """A picture as the API takes it -> RGB uint8 (H, W, 3): a file path, a PIL image of any mode, or an
    array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any dtype. Arrays are RGB(A) in channel order;
    bool is black/white, uint8 as is, uint16 spans 0..65535, floats in 0..1 or 0..255 keep that range
    and any other range (other integers too) is scaled by its own minimum and maximum; nan counts as the
    minimum. A ValueError says what was not a picture."""
    import os

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:  # OSError / UnidentifiedImageError for a missing or foreign file
            img.load()
            return np.asarray(standard_image(img).convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(standard_image(image).convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, :3] if array.shape[2] != 1 else array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or min(array.shape[:2]) < 1 \
            or array.dtype.kind not in "biuf":
        raise ValueError(f"expected an image: a path, a PIL image or an (H, W[, 1|3|4]) numeric array, got "
                         f"{type(image).__name__} {getattr(array, 'dtype', '')} of shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "b":
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        pixels = scale_to_uint8(array, "I;16")
    else:
        values = array.astype(np.float64)
        low, high = own_range(values)
        if array.dtype.kind == "f" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        elif low >= 0 and high <= 255:
            low, high = 0.0, 255.0
        pixels = span_to_uint8(values, low, high)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels)
