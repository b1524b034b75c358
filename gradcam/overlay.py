"""Colour-map a heat map and blend it over a face image.

    out = (1 - alpha) * image + alpha * colormap(heat)      (uint8, rounded)

alpha is the weight of the heat map: 0 returns the image unchanged, 1 the colour-mapped heat.
Grayscale faces (H,W) or (H,W,1) are repeated to RGB first. Colour maps are looked up by name in
matplotlib's registry ("jet" by default, like cv2.COLORMAP_JET; matplotlib's jet and OpenCV's differ
by a few levels) and sampled at 256 levels; output channels are RGB (not OpenCV's BGR).

Example::

    from gradcam import explain, overlay
    res = explain(model, x)                          # x: (N,3,48,48)
    rgb = overlay(face_uint8, res.maps["gradcampp/layer3"][0].numpy(), colormap="jet", alpha=0.5)
    cv2.imwrite("cam.png", rgb[:, :, ::-1])          # cv2 writes BGR
"""
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def _lut(colormap: str) -> np.ndarray:
    """256x3 uint8 RGB table of a matplotlib colour map."""
    from matplotlib import colormaps  # imported here: matplotlib is slow to import

    if colormap not in colormaps:
        common = ", ".join(n for n in ("jet", "turbo", "viridis", "inferno", "magma", "hot")
                           if n in colormaps)
        raise ValueError(f"unknown colormap {colormap!r}; any matplotlib name, e.g. {common}")
    rgba = colormaps[colormap](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def colorize(heat, colormap: str = "jet") -> np.ndarray:
    """(H,W) float heat in [0,1] -> (H,W,3) uint8 RGB; values outside [0,1] are clipped."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be (H,W), got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heat contains NaN or inf")
    levels = np.rint(np.clip(heat, 0.0, 1.0) * 255).astype(np.intp)
    return _lut(colormap)[levels]


def overlay(image, heat, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend colour-mapped ``heat`` over ``image``.

    image: uint8 (H,W), (H,W,1) or (H,W,3) RGB. heat: float (H,W) in [0,1] of the same H,W
    (resize it first if the image is larger than the model input). alpha in [0,1]: heat weight.
    Returns uint8 (H,W,3) RGB.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H,W) or (H,W,3), got shape {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(heat, colormap)
    if colour.shape[:2] != image.shape[:2]:
        raise ValueError(f"heat is {colour.shape[:2]} but image is {image.shape[:2]}; resize one first")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
