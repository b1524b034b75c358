"""What a training run does, as one frozen value: `TrainConfig`.

The trainer reads nothing else (never the parsed command line), so a run is as easy to start from Python as
from the command line, and the config itself is what a model records about how it was made
(`args` in the checkpoint and runs/NAME/args.json, `TrainConfig.record()`):

    from expression.training.config import TrainConfig, from_recipe
    from expression.training import trainer
    trainer.run(from_recipe("cpu", train_dir="faces/train", test_dir="faces/test", weights="none",
                            name="mine", epochs=3))

Field defaults are the seed recipe (`recipe.RECIPES["seed"]`) and the script's defaults; the command
line's resolve step (`expression.apps.configs.train_config`) fills a preset and the flags that depend
on others (demo data, run name, weights) into the same fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from expression.training.recipe import RECIPES

ARCH = "resnet34"
SEED = RECIPES["seed"]


def _seed(key: str):
    return field(default=SEED[key])


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str = "data/fer2013"  # the folder train_dir and test_dir came from (recorded; names the run)
    train_dir: str = "data/fer2013/train"
    test_dir: str = "data/fer2013/test"
    img_size: int = _seed("img_size")
    val_split: float = _seed("val_split")
    val_dir: str | None = None
    workers: int = 2
    demo: bool = False  # write the generated demo faces to `data` first
    demo_corner: str | None = None
    # training
    recipe: str = "seed"  # recorded: which preset the values below came from
    epochs: int = _seed("epochs")
    batch_size: int = 64
    lr: float = _seed("lr")
    weights: str = "imagenet"
    init: str | None = None
    seed: int = 0
    device: str = "auto"
    # optimisation
    optimizer: str = _seed("optimizer")
    momentum: float = _seed("momentum")
    nesterov: bool = _seed("nesterov")
    weight_decay: float = _seed("weight_decay")
    schedule: str = _seed("schedule")
    warmup_epochs: float = _seed("warmup_epochs")
    label_smoothing: float = _seed("label_smoothing")
    class_balance: str = _seed("class_balance")
    ema: float = _seed("ema")
    # augmentation
    translate: float = _seed("translate")
    rotate: float = _seed("rotate")
    scale: float = _seed("scale")
    erase: float = _seed("erase")
    mixup: float = _seed("mixup")
    cutmix: float = _seed("cutmix")
    norm: str = _seed("norm")
    # speed
    amp: str = _seed("amp")
    channels_last: str = _seed("channels_last")
    compile: bool = False
    # output
    name: str = f"{ARCH}_fer2013"
    out: str = "runs"
    models_dir: str = "models"
    resume: str | None = None
    quiet: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def record(self) -> dict:
        """Plain types, for the checkpoint's `args` and args.json."""
        return dataclasses.asdict(self)


DEFAULTS = TrainConfig()


def from_recipe(preset: str, /, **changes) -> TrainConfig:
    """A config with the named preset's values (`recipe.RECIPES`), then `changes` (any field) on top."""
    if preset not in RECIPES:
        raise ValueError(f"no recipe {preset!r}: choose one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[preset], "recipe": preset, **changes})
