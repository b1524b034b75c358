"""Model building from a small spec (arch, number of classes, weights), shared by every script.

    model = build_model("resnet34", num_classes=7, weights="imagenet")   # torchvision weights API
    model = build_model("resnet34", num_classes=7, weights="none")       # random init, offline
    model = build_model("resnet34", num_classes=7, weights="resnet34.pth")  # local torchvision state dict
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from expression.core.errors import InputError, reason

# arch -> (constructor, ImageNet weights enum). One entry today; the table keeps checkpoints honest
# about what they hold and leaves room for more.
ARCHS = {"resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1)}


def build_model(arch: str = "resnet34", num_classes: int = 7, weights: str = "none") -> nn.Module:
    """A torchvision network with its classifier replaced by a `num_classes`-way Linear layer."""
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}", option="arch")
    constructor, imagenet = ARCHS[arch]
    if weights == "imagenet":
        try:
            model = constructor(weights=imagenet)  # downloads once into torch.hub's cache, like torchvision
        except Exception as err:  # offline, proxy, corrupt cache: all mean "no weights to be had"
            why = reason(err, 120)
            raise InputError(f"could not get ImageNet weights for {arch} ({why}): use 'none' to train "
                             f"from scratch, or the path of a local torchvision {arch} state dict",
                             option="weights") from None
    else:
        model = constructor(weights=None)
        if weights != "none":
            model.load_state_dict(_load_torchvision_state_dict(weights, arch, model))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _load_torchvision_state_dict(path, arch: str, reference: nn.Module) -> dict:
    path = Path(path)
    hint = f"weights are 'imagenet', 'none' or a torchvision {arch} state dict file"
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist: {hint}", option="weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt: torch raises many types
        raise InputError(f"cannot read weights file {path} ({reason(err)}): {hint}",
                         option="weights") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"weights file {path} is not a state dict of tensors: {hint}", option="weights")
    expected = reference.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        raise InputError(f"weights file {path} does not match torchvision {arch} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(wrong_shape)} mis-shaped keys): {hint}",
                         option="weights")
    return state


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel or torch.compile, whose state_dict keys are clean."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
