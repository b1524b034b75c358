"""Shared fixtures: tiny generated data and checkpoints. No network, no ../shared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from expression.core import checkpoint
from expression.core.model import build_model
from expression.core.preprocessing import FER2013_CLASSES, Preprocessing


def write_image_folder(root: Path, classes=FER2013_CLASSES, per_class=(6, 3), size=48, seed=0) -> Path:
    """train/<class>/ and test/<class>/ of small grayscale PNGs whose brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size), dtype=np.uint8)
                row = (index * size) // len(classes)
                pixels[row:row + size // len(classes)] += 150  # a class-specific bright band
                Image.fromarray(pixels, mode="L").save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def single_thread():
    """For modules of many tiny forward passes: on a shared 2-core machine extra intra-op threads
    mostly spin (measured 4x the CPU time under load). Use with pytest.mark.usefixtures."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "data")


def make_checkpoint(path: Path, classes=FER2013_CLASSES, img_size=48, seed=0) -> Path:
    torch.manual_seed(seed)
    model = build_model("resnet34", len(classes), weights="none").eval()
    record = checkpoint.model_record(model, Preprocessing(img_size=img_size), arch="resnet34",
                                     class_names=classes, args={"note": "random weights for tests"})
    return checkpoint.save(record, path)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ResNet34 checkpoint with the 7 FER2013 classes, 48 px gray input."""
    return make_checkpoint(tmp_path_factory.mktemp("models") / "random_resnet34.pt")
