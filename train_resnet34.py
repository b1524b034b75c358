"""Train a ResNet34 facial-expression classifier (the seed recipe by default) and report on it.

    python train_resnet34.py --demo                          # generated faces, no download, < 5 min on CPU
    python train_resnet34.py                                 # FER2013 in data/fer2013/{train,test}/<class>/
    python train_resnet34.py --data ../fer2013 --weights none --epochs 1
    python train_resnet34.py --resume runs/resnet34_fer2013/checkpoint.pt
    python train_resnet34.py --data ../fer2013 --recipe cpu --init models/shipped/resnet34_fer2013_cpu.pt \
        --lr 4e-4 --schedule cosine --warmup-epochs 1 --epochs 20     # a further cycle from the shipped weights
    python train_resnet34.py --recipe strong --val-split 0.1   # SGD + cosine, smoothing, EMA, 96 px, ...
    torchrun --nproc_per_node=2 train_resnet34.py --data ../fer2013   # one process per GPU (DDP)

Writes runs/<name>/ (args.json, metrics.csv, curves.png, confusion_matrix.png/.csv,
classification_report.txt/.json, checkpoint.pt for --resume) and the model to models/<name>.pt.
With --val-split the saved model is the epoch with the best validation accuracy; the test split is
only ever reported, never used to choose. Evaluate with test-time augmentation: evaluate.py.
"""
from __future__ import annotations

import argparse
import sys

from expression.apps.cli import (ArgumentParser, add_device_argument, command_line, fraction, non_negative_float,
                                 non_negative_int, positive_float, positive_int, run_main)
from expression.apps.configs import DEMO_EPOCHS, DEMO_LR, DEMO_ROOT, train_config
from expression.training import recipe, trainer
from expression.training.config import DEFAULTS
from expression.training.recipe import preset_help


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=DEFAULTS.data, help="folder holding train/<class>/ and test/<class>/")
    data.add_argument("--train-dir", help="training split (overrides DATA/train)")
    data.add_argument("--test-dir", help="test split (overrides DATA/test)")
    data.add_argument("--img-size", type=positive_int,
                      help=preset_help("img_size", "faces are resized to this square size (48 px FER faces are "
                                                   "upscaled; layer4 CAMs are 2x2 at 48, 3x3 at 96)"))
    data.add_argument("--val-split", type=fraction,
                      help=preset_help("val_split", "hold out this stratified, seeded fraction of train to "
                                                    "choose the best epoch and drive --schedule plateau"))
    data.add_argument("--val-dir", help="a validation split folder (e.g. val/ = PublicTest from "
                                        "data/prepare_fer2013.py) to use instead of --val-split")
    data.add_argument("--workers", type=non_negative_int, default=DEFAULTS.workers,
                      help="threads that decode images once at start-up (0: main thread)")
    data.add_argument("--demo", action="store_true",
                      help=f"train on generated faces written to {DEMO_ROOT}/ (no download; --weights none)")
    data.add_argument("--demo-corner", metavar="CLASS",
                      help="with --demo: that class's evidence becomes a mark in a corner (explanation tests)")
    train = parser.add_argument_group("training (defaults are the seed recipe)")
    train.add_argument("--recipe", choices=tuple(recipe.RECIPES), default=DEFAULTS.recipe,
                       help="preset for every flag below left unset: seed (the original project) or strong")
    train.add_argument("--epochs", type=positive_int,
                       help=preset_help("epochs", f"epochs; {DEMO_EPOCHS} with --demo"))
    train.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size,
                       help="per process under torchrun; a last batch of one image joins the batch before it")
    train.add_argument("--lr", type=positive_float,
                       help=preset_help("lr", f"peak learning rate; {DEMO_LR:g} with --demo"))
    train.add_argument("--weights", default=None,
                       help="'imagenet' (torchvision weights API, downloads once), 'none' (random init) or a "
                            "local torchvision resnet34 state dict; default: imagenet, or none with --demo")
    train.add_argument("--init", metavar="MODEL",
                       help="start from this project model file's weights (e.g. the shipped model) with a fresh "
                            "optimizer and schedule: a warm restart; its classes, --img-size and --norm must "
                            "match, and the new model records it in its lineage")
    train.add_argument("--seed", type=int, default=DEFAULTS.seed,
                       help="seeds init, order, validation split and augmentation")
    add_device_argument(train)
    opt = parser.add_argument_group("optimisation (default: from --recipe)")
    opt.add_argument("--optimizer", choices=recipe.OPTIMIZERS, help=preset_help("optimizer", "optimizer"))
    opt.add_argument("--momentum", type=non_negative_float, help=preset_help("momentum", "SGD momentum"))
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                     help=preset_help("nesterov", "Nesterov momentum for SGD"))
    opt.add_argument("--weight-decay", type=non_negative_float,
                     help=preset_help("weight_decay", "weight decay (not on biases and BatchNorm)"))
    opt.add_argument("--schedule", choices=recipe.SCHEDULES,
                     help=preset_help("schedule", "learning-rate schedule, stepped every batch"))
    opt.add_argument("--warmup-epochs", type=non_negative_float,
                     help=preset_help("warmup_epochs", "linear warm-up length"))
    opt.add_argument("--label-smoothing", type=fraction, help=preset_help("label_smoothing", "label smoothing"))
    opt.add_argument("--class-balance", choices=recipe.CLASS_BALANCE,
                     help=preset_help("class_balance", "for the rare classes: inverse-frequency loss weights "
                                                       "or a class-balanced sampler"))
    opt.add_argument("--ema", type=fraction,
                     help=preset_help("ema", "decay of an exponential moving average of the weights, which is "
                                             "then evaluated and saved (0: off)"))
    aug = parser.add_argument_group("augmentation (default: from --recipe; flips are always on)")
    aug.add_argument("--translate", type=fraction, help=preset_help("translate", "shift, fraction of the size"))
    aug.add_argument("--rotate", type=non_negative_float, help=preset_help("rotate", "rotation jitter, degrees"))
    aug.add_argument("--scale", type=fraction, help=preset_help("scale", "zoom jitter U(1-s, 1+s)"))
    aug.add_argument("--erase", type=fraction, help=preset_help("erase", "random-erasing probability"))
    aug.add_argument("--mixup", type=non_negative_float, help=preset_help("mixup", "mixup Beta alpha (0: off)"))
    aug.add_argument("--cutmix", type=non_negative_float, help=preset_help("cutmix", "CutMix Beta alpha (0: off)"))
    aug.add_argument("--norm", choices=tuple(recipe.NORMS),
                     help=preset_help("norm", "input normalisation: the seed's 0.5/0.5 or ImageNet mean/std"))
    speed = parser.add_argument_group("speed (default: from --recipe)")
    speed.add_argument("--amp", choices=recipe.AMP_CHOICES,
                       help=preset_help("amp", "mixed precision; auto: bf16 on CUDA, off elsewhere"))
    speed.add_argument("--channels-last", choices=("on", "off", "auto"),
                       help=preset_help("channels_last", "channels_last memory format; auto: on CUDA only"))
    speed.add_argument("--compile", action="store_true", help="torch.compile the training model")
    out = parser.add_argument_group("output")
    out.add_argument("--name", help="run name; default resnet34_<data folder name> (resnet34_demo with --demo)")
    out.add_argument("--out", default=DEFAULTS.out, help="runs folder: files go to OUT/NAME/")
    out.add_argument("--models-dir", default=DEFAULTS.models_dir,
                     help="the trained model is written to MODELS_DIR/NAME.pt")
    out.add_argument("--resume", metavar="CHECKPOINT", help="continue from runs/NAME/checkpoint.pt")
    out.add_argument("--quiet", action="store_true", help="no progress bars (the per-epoch line stays)")
    return parser


def main(args) -> int:
    # The command as the user gave it (before the resolve step fills in presets and derived defaults).
    command = command_line(get_args_parser(), args, "train_resnet34.py")
    return trainer.run(train_config(args), command=command)


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
