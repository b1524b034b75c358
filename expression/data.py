"""Data: folder checks, decode-once in-memory datasets, the seed's augmentation on tensors, and the one
preprocessing definition that training, explanation and prediction all share.

FER2013 is tiny (28,709 faces of 48x48 bytes), so each split is decoded once into a uint8 tensor
instead of PIL-decoding every image at every step as the seed's ImageFolder pipeline did. The
augmentation (RandomHorizontalFlip + RandomAffine(degrees=0, translate=(0.1, 0.1))) is applied to whole
batches of tensors with the same parameter distribution as torchvision's transforms.

    from expression.data import check_splits, decode_split, InMemoryLoader
    classes = check_splits("data/fer2013/train", "data/fer2013/test")
    train = decode_split("data/fer2013/train", classes, img_size=48)
"""
from __future__ import annotations

import glob
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .augment import random_erase, random_rotate_scale
from .errors import InputError
from .images import GRAY_MODES, standard_image

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


# ---------------------------------------------------------------------------------------------------
# Folder checks and decoding


def class_folders(root) -> list[str]:
    """Class names as ImageFolder finds them: sub-folder names, sorted."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def check_splits(train_dir, test_dir, other: str = "test") -> list[str]:
    """Both splits exist, hold the same class folders, and no class folder is empty. `other` names the
    second split in messages ("test", or "validation"). Problems are InputErrors; the caller adds which
    of its settings chose the folders."""
    for what, path in (("train", train_dir), (other, test_dir)):
        if not Path(path).is_dir():
            raise InputError(f"{what} folder {path} does not exist: expected a folder of <class>/ "
                             f"sub-folders of images")
    train_classes, test_classes = class_folders(train_dir), class_folders(test_dir)
    if not train_classes:
        raise InputError(f"train folder {train_dir} has no class sub-folders: expected {train_dir}/<class>/*.png")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise InputError(f"train and {other} classes differ (only in train: {only_train or 'none'}; only in "
                         f"{other}: {only_test or 'none'}): give both splits the same class folders")
    for what, path in (("train", train_dir), (other, test_dir)):
        for name in train_classes:
            folder = Path(path) / name
            if not any(is_image_file(p) for p in _class_files(folder)):
                raise InputError(f"class folder {folder} has no images: add images or remove the class "
                                 f"from both splits")
    return train_classes


@dataclass
class DecodedSplit:
    images: torch.Tensor  # uint8 (N, C, S, S), C = 1 (gray) or 3 (rgb)
    labels: torch.Tensor  # int64 (N,)
    paths: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason) of files that could not be used

    @property
    def color(self) -> str:
        return "gray" if self.images.shape[1] == 1 else "rgb"

    def subset(self, indices: torch.Tensor) -> "DecodedSplit":
        return DecodedSplit(self.images[indices], self.labels[indices], [self.paths[i] for i in indices.tolist()]
                            if self.paths else [])


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): round(fraction * n) images of each class, at least one when
    the class has two or more, chosen with a generator seeded by `seed` (same split on every run and
    rank). Both index lists are sorted."""
    if not 0 < fraction < 1:
        raise InputError(f"the held-out fraction must be between 0 and 1 (a fraction of train), got {fraction}",
                         option="val_split")
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        take = round(fraction * len(members))
        take = min(max(take, 1 if len(members) >= 2 else 0), len(members) - 1)
        held_out.append(members[torch.randperm(len(members), generator=generator)[:take]])
    held = torch.cat(held_out).sort().values if held_out else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).flatten(), held


def _decode_for_training(path, img_size: int) -> np.ndarray:
    """(S, S) uint8 for a grayscale image, (S, S, 3) for colour: gray files stay one channel in memory."""
    img = load_pil(path)
    gray = img.mode in GRAY_MODES  # pixels() below converts it once, with standard_image
    pixels = Preprocessing(img_size, color="gray" if gray else "rgb").pixels(img)
    if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
        return pixels[..., 0]  # an RGB or palette file of gray pixels: keep one channel, lose nothing
    return pixels


def _class_files(folder: Path) -> list[Path]:
    """Every file under a class folder, sub-folders included as torchvision's ImageFolder takes them
    (hidden files and folders left out), sorted: <class>/a.png before <class>/sub/b.png."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found.extend(Path(parent) / n for n in sorted(names) if not n.startswith("."))
    return found


def decode_split(root, class_names, img_size: int, color: str | None = None, workers: int = 0,
                 progress: bool = False, what: str = "split") -> DecodedSplit:
    """Decode every image of an ImageFolder split once into memory.

    Files with non-image extensions and files PIL cannot read are skipped and listed in one warning;
    if most of the split is unusable that is an error. `color` forces "gray" or "rgb" (the test split
    must match the training split); by default the split is gray when every file is.
    """
    files, labels, skipped = [], [], []
    for index, name in enumerate(class_names):
        for path in _class_files(Path(root) / name):
            if is_image_file(path.name):
                files.append(str(path))
                labels.append(index)
            else:
                skipped.append((str(path), "not an image file extension"))

    def decode(path):
        try:
            return _decode_for_training(path, img_size)
        except UnreadableImage as err:
            return err

    bar = dict(total=len(files), desc=f"decoding {what}", unit="img", disable=not progress, leave=False)
    if workers > 0:
        with ThreadPoolExecutor(workers) as pool:
            decoded = list(tqdm(pool.map(decode, files, chunksize=64), **bar))
    else:
        decoded = [decode(p) for p in tqdm(files, **bar)]

    arrays, kept_paths, kept_labels = [], [], []
    for path, label, result in zip(files, labels, decoded):
        if isinstance(result, UnreadableImage):
            skipped.append((path, "unreadable"))
        else:
            arrays.append(result)
            kept_paths.append(path)
            kept_labels.append(label)
    if skipped:
        skipped.sort()
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(f"skipped {len(skipped)} file(s) in {root}: {shown}{more}", stacklevel=2)
    total = len(arrays) + len(skipped)
    if not arrays or len(arrays) < total / 2:
        raise InputError(f"{what} folder {root}: {len(skipped)} of {total} files are unreadable or not images: "
                         f"check the folder holds image files in <class>/ sub-folders")

    if color is None:
        color = "gray" if all(a.ndim == 2 for a in arrays) else "rgb"
    if color == "gray":
        arrays = [a if a.ndim == 2 else np.asarray(Image.fromarray(a).convert("L")) for a in arrays]
        images = torch.from_numpy(np.stack(arrays))[:, None]
    else:
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return DecodedSplit(images, torch.tensor(kept_labels, dtype=torch.long), kept_paths, skipped)


# ---------------------------------------------------------------------------------------------------
# Augmentation and batching on tensors


def sample_flip_translate(batch: int, height: int, width: int, generator: torch.Generator,
                          translate: float = SEED_TRANSLATE):
    """Draw per-image (flip, dx, dy) with torchvision's distributions: RandomHorizontalFlip(p=0.5) and
    RandomAffine's translate, dx = round(U(-t*W, t*W)) whole pixels (round half to even, like Python)."""
    flip = torch.rand(batch, generator=generator) < 0.5
    max_dx, max_dy = translate * width, translate * height
    dx = torch.round((torch.rand(batch, generator=generator) * 2 - 1) * max_dx).long()
    dy = torch.round((torch.rand(batch, generator=generator) * 2 - 1) * max_dy).long()
    return flip, dx, dy


def apply_flip_translate(images: torch.Tensor, flip, dx, dy) -> torch.Tensor:
    """Flip then shift each image by whole pixels (content moves right/down for positive dx/dy), filling
    with 0 as RandomAffine's default fill does. Works on any device; one gather for the whole batch."""
    n, _, h, w = images.shape
    device = images.device
    flip, dx, dy = flip.to(device), dx.to(device), dy.to(device)
    cols = torch.arange(w, device=device)
    src_x = cols[None, :] - dx[:, None]                               # output x reads input x - dx
    src_x = torch.where(flip[:, None], w - 1 - src_x, src_x)          # flipping first mirrors the source
    src_y = torch.arange(h, device=device)[None, :] - dy[:, None]
    valid = ((src_y >= 0) & (src_y < h))[:, :, None] & ((src_x >= 0) & (src_x < w))[:, None, :]
    batch_idx = torch.arange(n, device=device)[:, None, None]
    out = images[batch_idx, :, src_y.clamp(0, h - 1)[:, :, None], src_x.clamp(0, w - 1)[:, None, :]]
    out = out.permute(0, 3, 1, 2) * valid[:, None].to(images.dtype)  # advanced indexing put C last
    return out.contiguous()


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation. The defaults are the seed's flip + translate; the rest are off.

    rotate: degrees (uniform +-), scale: zoom jitter U(1 - scale, 1 + scale), erase: probability of
    one random-erasing rectangle per image (applied after normalisation, so erased = mean colour)."""

    translate: float = SEED_TRANSLATE
    rotate: float = 0.0
    scale: float = 0.0
    erase: float = 0.0


def balanced_indices(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(labels) indices drawn with replacement, each class equally likely (probability of an image
    is 1 / (classes * its class count)): the rare `disgust` faces are seen as often as `happy` ones."""
    counts = torch.bincount(labels.cpu())
    weights = 1.0 / counts[labels.cpu()].double()
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


class InMemoryLoader:
    """Batches of normalised float tensors from a decoded split, optionally shuffled and augmented.

    All randomness comes from CPU `torch.Generator`s (one for the order, one for flips and shifts), so a
    run is repeatable and resumable from their saved states on any device.

    With `world_size > 1` (torchrun) each rank takes every world_size-th index of the shared order.
    Training (`pad=True`) wraps the order around so every rank gets the same number of batches, as
    DistributedSampler does, and folds a last batch of one image into the batch before it (BatchNorm
    in training mode cannot normalise one image whose feature map is 1x1, e.g. layer4 at 32 px);
    evaluation (`pad=False`) never pads, so each image is counted exactly once.
    `augment` is False, True (the seed's flip + translate) or an Augmentation; `balanced` replaces the
    shuffle by class-balanced sampling with replacement.
    """

    def __init__(self, split: DecodedSplit, batch_size: int, mean, std, device="cpu", shuffle=False,
                 augment: bool | Augmentation = False, order_generator: torch.Generator | None = None,
                 augment_generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                 pad: bool = False, balanced: bool = False):
        if ((shuffle or balanced) and order_generator is None) or (augment and augment_generator is None):
            raise ValueError("shuffle/augment need a torch.Generator for repeatable runs")
        self.images = split.images.to(device)  # the whole uint8 split lives on the device: tiny for FER
        self.labels = split.labels.to(device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.shuffle, self.balanced = shuffle, balanced
        self.augment = Augmentation() if augment is True else (augment or None)
        self.order_generator, self.augment_generator = order_generator, augment_generator
        self.rank, self.world_size, self.pad = rank, world_size, pad

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the next pass (draws the shuffle, so call once per pass)."""
        n = len(self.labels)
        if self.balanced:
            order = balanced_indices(self.labels, self.order_generator)
        else:
            order = torch.randperm(n, generator=self.order_generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            if self.pad and n % self.world_size:
                order = torch.cat([order, order[: self.world_size - n % self.world_size]])
            order = order[self.rank::self.world_size]
        return order

    def _batch_starts(self, count: int) -> list[int]:
        starts = list(range(0, count, self.batch_size))
        if self.pad and len(starts) > 1 and count - starts[-1] == 1:
            starts.pop()  # the lone last image joins the batch before it
        return starts

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = -(-n // self.world_size) if self.pad else len(range(self.rank, n, self.world_size))
        return len(self._batch_starts(per_rank))

    def __iter__(self):
        order = self.indices().to(self.images.device)
        starts = self._batch_starts(len(order))
        for start, end in zip(starts, [*starts[1:], len(order)]):
            idx = order[start:end]
            x = self.images[idx]
            aug, gen = self.augment, self.augment_generator
            if aug is not None:
                x = apply_flip_translate(x, *sample_flip_translate(len(idx), x.shape[2], x.shape[3], gen,
                                                                  translate=aug.translate))
                if aug.rotate or aug.scale:  # on [0, 1] floats so the zero fill is black, as in RandomAffine
                    x = random_rotate_scale(x.float().div_(255.0), gen, degrees=aug.rotate, scale=aug.scale)
            x = normalize(x, self.mean, self.std)
            if aug is not None and aug.erase:
                x = random_erase(x, gen, p=aug.erase)
            yield x, self.labels[idx]


# ---------------------------------------------------------------------------------------------------
# Finding images to explain or predict


@dataclass(frozen=True)
class ImageEntry:
    path: str
    label: str | None = None  # the class sub-folder name when the images came from <folder>/<class>/


def find_images(specs) -> list[ImageEntry]:
    """Files, folders and globs -> image entries. A folder of class sub-folders gives true labels."""
    entries: list[ImageEntry] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            entries.append(ImageEntry(str(path)))
        elif path.is_dir():
            for file in sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p)):
                entries.append(ImageEntry(str(file)))
            for label in class_folders(path):
                for file in sorted(p for p in (path / label).iterdir() if p.is_file() and is_image_file(p)):
                    entries.append(ImageEntry(str(file), label))
        else:
            entries.extend(ImageEntry(p) for p in sorted(glob.glob(str(spec), recursive=True))
                           if Path(p).is_file() and is_image_file(p))
    seen, unique = set(), []
    for entry in entries:  # a file named twice (folder and glob) is explained once
        if entry.path not in seen:
            seen.add(entry.path)
            unique.append(entry)
    return unique
