"""Read the seed project's model file safely and turn it into a normal checkpoint.

The seed shared `models/model_res34.pth`, written with `torch.save(model)`: a pickle of a whole
torchvision ResNet34 whose `fc` was replaced by a 7-way Linear layer. Unpickling such a file with
`weights_only=False` can run any code the file names. Here it is read with torch's `weights_only`
unpickler, which builds only the classes on an allow-list: the torch.nn and torchvision classes a
ResNet34 is made of. A file that names anything else (`os.system`, a custom class) is refused before
any of it is built.

    python import_seed_model.py model_res34.pth            # -> models/seed_resnet34.pt
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

from .checkpoint import model_record, save
from .data import SEED_MEAN, SEED_STD, Preprocessing

# Everything a pickled torchvision ResNet34 (torch 1.x/2.x) refers to besides tensors and
# containers, which the weights_only unpickler already allows.
RESNET34_CLASSES = [
    resnet.ResNet, resnet.BasicBlock,
    nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Sequential,
]
SEED_CLASS_NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # ImageFolder order
SEED_IMG_SIZE = 48


class SeedModelError(ValueError):
    """The file is not a seed-style whole ResNet34 (or names classes outside the allow-list)."""


def load_whole_resnet34(path) -> nn.Module:
    """Unpickle `torch.save(model)` of a torchvision ResNet34 without running foreign code."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(RESNET34_CLASSES):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "global" in message.lower():  # torch words it "Unsupported global" or "unsupported GLOBAL"
            name = _refused_global(message)
            raise SeedModelError(f"{path} refers to {name}, which is not part of a torchvision ResNet34: "
                                 f"refused without running it") from None
        raise SeedModelError(f"{path} is not a PyTorch file ({message.splitlines()[0][:80]})") from None
    except Exception as err:  # truncated or foreign bytes: torch raises many types
        raise SeedModelError(f"cannot read {path} ({str(err).splitlines()[0][:100]})") from None
    if not isinstance(obj, resnet.ResNet):
        raise SeedModelError(f"{path} holds a {type(obj).__name__}, not a whole torchvision ResNet "
                             f"saved with torch.save(model)")
    return obj


def _refused_global(message: str) -> str:
    """The dotted name torch's unpickler refused, pulled from its message (whose advice to reload with
    weights_only=False is exactly what must not be passed on)."""
    match = re.search(r"GLOBAL\s+([\w.]+)", message)
    return match.group(1) if match else "a class outside the allow-list"


def seed_record(model: nn.Module, source: Path) -> dict:
    """A normal checkpoint record for the seed's network and preprocessing (48 px, Normalize(0.5, 0.5)).

    color is "rgb": the seed's ImageFolder fed every image as RGB, so colour photos reach the network
    as the seed fed them, and grayscale FER faces give identical inputs either way."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear) or fc.out_features != len(SEED_CLASS_NAMES):
        got = fc.out_features if isinstance(fc, nn.Linear) else type(fc).__name__
        raise SeedModelError(f"the seed's model has a {len(SEED_CLASS_NAMES)}-way fc; this one has {got}")
    expected = resnet.resnet34(num_classes=len(SEED_CLASS_NAMES)).state_dict()
    state = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise SeedModelError("the network's layers are not a ResNet34's (another depth or a changed layer)")
    prep = Preprocessing(SEED_IMG_SIZE, SEED_MEAN, SEED_STD, "rgb")
    return model_record(model.float(), prep, arch="resnet34", class_names=SEED_CLASS_NAMES,
                        args={"imported_from": str(source), "recipe": "seed (imported whole-model file)"},
                        metrics={})


def import_seed_model(source, out) -> Path:
    """Read the seed's whole-model file and write an Expression-Deciphered checkpoint to `out`."""
    model = load_whole_resnet34(source)
    return save(seed_record(model, Path(source)), out)
