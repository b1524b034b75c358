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

from expression.core.checkpoint import model_record, save, weights_problem
from expression.core.errors import reason
from expression.core.preprocessing import SEED_MEAN, SEED_STD, Preprocessing

# Everything a pickled torchvision ResNet34 (torch 1.x/2.x) refers to besides tensors and
# containers, which the weights_only unpickler already allows.
RESNET34_CLASSES = [
    resnet.ResNet, resnet.BasicBlock,
    nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Sequential,
]
# The largest number a ResNet34's constructors take (ResNet's default num_classes; channels stop at 512)
# and the most blocks in one of its stages. A pickle may call an allow-listed class with any arguments
# (a 49-byte file calling nn.Linear(20000, 20000) would allocate 1.6 GB): larger ones are refused first.
MAX_CONSTRUCTOR_NUMBER = 1000
MAX_BLOCKS = 6


class SeedModelError(ValueError):
    """The file is not a seed-style whole ResNet34 (or names classes outside the allow-list)."""


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item)


def _guarded(cls):
    """`cls` under its own pickle name, refusing a constructor call whose sizes exceed a ResNet34's
    before anything is allocated (unpickling a saved module calls __new__ without arguments)."""

    def __new__(klass, *args, **kwargs):
        sizes = list(_numbers(list(args) + list(kwargs.values())))
        blocks = args[1] if cls is resnet.ResNet and len(args) > 1 else kwargs.get("layers", ())
        if any(abs(n) > MAX_CONSTRUCTOR_NUMBER for n in sizes) or any(n > MAX_BLOCKS for n in _numbers(blocks)):
            raise SeedModelError(f"the file calls {cls.__name__}{tuple(args)} with sizes beyond a ResNet34's: "
                                 f"refused before building it")
        return super(guarded, klass).__new__(klass)

    guarded = type(cls.__name__, (cls,), {"__new__": __new__, "__module__": cls.__module__})
    return guarded, f"{cls.__module__}.{cls.__qualname__}"


SEED_CLASS_NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # ImageFolder order
SEED_IMG_SIZE = 48


def load_whole_resnet34(path) -> nn.Module:
    """Unpickle `torch.save(model)` of a torchvision ResNet34 without running foreign code."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise SeedModelError(f"{path} is empty (0 bytes; an interrupted copy?)")
    try:
        with torch.serialization.safe_globals([_guarded(cls) for cls in RESNET34_CLASSES] + [_PARALLEL]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except SeedModelError:
        raise
    except pickle.UnpicklingError as err:
        message = str(err)
        if "global" in message.lower():  # torch words it "Unsupported global" or "unsupported GLOBAL"
            name = _refused_global(message)
            raise SeedModelError(f"{path} refers to {name}, which is not part of a torchvision ResNet34: "
                                 f"refused without running it") from None
        raise SeedModelError(f"{path} is not a PyTorch file ({reason(err, 80)})") from None
    except Exception as err:  # truncated or foreign bytes: torch raises many types
        raise SeedModelError(f"cannot read {path} ({reason(err)})") from None
    if isinstance(obj, (nn.DataParallel, _ParallelShell)) and isinstance(obj._modules.get("module"), resnet.ResNet):
        obj = obj._modules["module"]  # saved through nn.DataParallel: the network is inside
    if not isinstance(obj, resnet.ResNet):
        raise SeedModelError(f"{path} holds a {type(obj).__name__}, not a whole torchvision ResNet "
                             f"saved with torch.save(model)")
    return obj


# nn.DataParallel(model) pickles as the wrapper around the network: allowed by name as an inert
# container (its constructor, which would look for GPUs, is refused; its state is set as a __dict__).
class _ParallelShell(nn.Module):
    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise SeedModelError("the file calls DataParallel(...) instead of restoring a saved one: refused")
        return super().__new__(cls)


_PARALLEL = (_ParallelShell, "torch.nn.parallel.data_parallel.DataParallel")


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
    problem = weights_problem(model.state_dict(), "resnet34", len(SEED_CLASS_NAMES))
    if problem:
        raise SeedModelError(f"the network is not a ResNet34 the seed trained ({problem})")
    prep = Preprocessing(SEED_IMG_SIZE, SEED_MEAN, SEED_STD, "rgb")
    return model_record(model.float(), prep, arch="resnet34", class_names=SEED_CLASS_NAMES,
                        args={"imported_from": str(source), "recipe": "seed (imported whole-model file)"},
                        metrics={})


def import_seed_model(source, out) -> Path:
    """Read the seed's whole-model file and write an Expression-Deciphered checkpoint to `out`."""
    model = load_whole_resnet34(source)
    return save(seed_record(model, Path(source)), out)
