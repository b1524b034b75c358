"""The one preprocessing definition that training, explanation and prediction all share: how an image
file is read (`load_pil`), resized, converted to the model's colour and normalised (`Preprocessing`),
with the seed's and ImageNet's normalisation constants and the FER2013 class names.

    from expression.core.preprocessing import Preprocessing
    prep = Preprocessing(img_size=48, mean=(0.5,) * 3, std=(0.5,) * 3, color="gray")
    batch = prep.to_tensor([load_pil("face.png")])  # (1, 3, 48, 48) float tensor
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from expression.core.images import standard_image

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SEED_MEAN = (0.5, 0.5, 0.5)  # the seed's Normalize(0.5, 0.5): pixels land in [-1, 1]
SEED_STD = (0.5, 0.5, 0.5)
SEED_TRANSLATE = 0.1  # RandomAffine(degrees=0, translate=(0.1, 0.1))
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnreadableImage(Exception):
    """A file that PIL cannot decode."""


def is_image_file(path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_pil(path) -> Image.Image:
    """Open and fully decode an image (a truncated JPEG fails here, not in the middle of training)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: {err}") from None


@dataclass(frozen=True)
class Preprocessing:
    """How a face becomes a model input; stored in every checkpoint so no script redefines it.

    color is "gray" (one channel, repeated three times for the ImageNet-shaped stem, exactly what the
    seed's ImageFolder did by converting grayscale files to RGB) or "rgb".
    """

    img_size: int = 48
    mean: tuple = SEED_MEAN
    std: tuple = SEED_STD
    color: str = "gray"

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "Preprocessing":
        return cls(int(ckpt["img_size"]), tuple(ckpt["mean"]), tuple(ckpt["std"]), ckpt["color"])

    def pixels(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """Resized uint8 pixels, (S, S) for gray or (S, S, 3) for rgb: what the model sees, before
        normalisation. Same PIL bilinear resize as the seed's transforms.Resize."""
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        img = standard_image(img).convert("L" if self.color == "gray" else "RGB")  # 16-bit scaled, not clipped
        if img.size != (self.img_size, self.img_size):
            img = img.resize((self.img_size, self.img_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)

    def to_tensor(self, images) -> torch.Tensor:
        """A list of PIL images or uint8 arrays of any size and mode -> normalised (N, 3, S, S) floats."""
        batch = np.stack([self.pixels(img) for img in images])
        batch = torch.from_numpy(batch)
        batch = batch[:, None] if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
        return normalize(batch, self.mean, self.std)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in {1, 3}, or floats already in [0, 1] -> float (N, 3, H, W), as
    ToTensor + Normalize would give."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
