"""Labelled ImageFolder splits: folder checks, decode-once in-memory splits, stratified hold-outs, and
finding images (with their class folder as label) to explain or predict.

FER2013 is tiny (28,709 faces of 48x48 bytes), so each split is decoded once into a uint8 tensor
instead of PIL-decoding every image at every step as the seed's ImageFolder pipeline did.

    from expression.core.datasets import check_splits, decode_split
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
from PIL import Image
from tqdm import tqdm

from expression.core.errors import InputError
from expression.core.images import GRAY_MODES
from expression.core.preprocessing import Preprocessing, UnreadableImage, is_image_file, load_pil

# ---------------------------------------------------------------------------------------------------
# Folder checks and decoding


def class_folders(root) -> list[str]:
    """Class names as ImageFolder finds them: sub-folder names, sorted."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def class_has_images(folder) -> bool:
    """Whether a class folder holds an image that decode_split would read (the files ImageFolder takes:
    sub-folders included, hidden files and folders left out)."""
    return any(is_image_file(p) for p in _class_files(Path(folder)))


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
            if not class_has_images(folder):
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
