"""The resolve steps: parsed command-line flags -> the libraries' frozen configs.

Each function is pure (reads the Namespace, returns a new config, changes nothing), so presets and
derived defaults are applied in one place and the libraries below never see argparse.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from expression.core.errors import UsageError
from expression.training.config import ARCH, TrainConfig
from expression.training.recipe import RECIPES

if TYPE_CHECKING:
    from expression.inference.pipeline import PredictConfig
    from expression.reports.class_maps import ClassMapConfig
    from expression.reports.explain_figures import FigureConfig
    from expression.reports.explanation_report import ReportConfig

# ---------------------------------------------------------------------------------------------------
# Prediction and reports (predict_FER.py, gradcam_FER.py, attentionMap_FER.py, evaluate_explanations.py)
#
# Each of these imports its library when called, so a script loads only its own layer: predict_FER.py
# would otherwise pull in matplotlib with the reports' configs.


def predict_config(args: argparse.Namespace) -> PredictConfig:
    """predict_FER.py's flags -> what its pipeline (expression.inference.pipeline.Predictor) reads."""
    from expression.inference.pipeline import PredictConfig
    return PredictConfig(margin=args.margin, batch_size=args.batch_size, every=args.every,
                         annotate=not args.no_annotate)


def figure_config(args: argparse.Namespace) -> FigureConfig:
    """gradcam_FER.py's and attentionMap_FER.py's shared flags -> expression.reports.explain_figures'
    config (the scripts' own flags, --methods, --target and --p, they read themselves)."""
    from expression.reports.explain_figures import FigureConfig
    return FigureConfig(checkpoint=args.checkpoint, images=None if args.images is None else tuple(args.images),
                        layers=tuple(args.layers), limit=args.limit, batch_size=args.batch_size, out=args.out,
                        save_maps=args.save_maps, rows_per_file=args.rows_per_file, colormap=args.colormap,
                        alpha=args.alpha, device=args.device, quiet=args.quiet)


def report_config(args: argparse.Namespace) -> ReportConfig:
    """evaluate_explanations.py's flags -> what its report (expression.reports.explanation_report) states."""
    from expression.reports.explanation_report import ReportConfig
    return ReportConfig(layers=tuple(args.layers), target=args.target, baseline=args.baseline,
                        blur_sigma=args.blur_sigma, steps=args.steps, pointing_ties=args.pointing_ties,
                        sanity=args.sanity)


def class_map_config(args: argparse.Namespace) -> ClassMapConfig:
    """classmaps_FER.py's flags -> the analysis config (ClassMapConfig checks the method and TTA mode)."""
    from expression.core.runtime import use_progress_bars
    from expression.reports.class_maps import ClassMapConfig
    return ClassMapConfig(method=args.method, layer=args.layer, tta=args.tta_maps, batch_size=args.batch_size,
                          confusions=args.confusions, bootstrap=args.bootstrap, shuffles=args.shuffles,
                          structure_faces=args.structure_faces, randomise=args.randomised,
                          disputes_shown=args.disputes_shown, min_faces_for_mean=args.min_faces_for_mean,
                          seed=args.seed, progress=use_progress_bars(args.quiet))


# ---------------------------------------------------------------------------------------------------
# Training (train_resnet34.py)

DEMO_ROOT = Path("data/demo")
# The demo must finish in under 5 minutes on a 2-core CPU (~40 training images/s for ResNet34 at 48 px),
# so it trains from scratch on 1,400 faces for a few epochs with a larger learning rate.
DEMO_EPOCHS = 8
DEMO_LR = 1e-3


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The parsed flags -> the run's TrainConfig: the demo's and the preset's values for every flag left
    unset (None), then the paths and names that follow from the others. Refuses contradictory flags."""
    given = dict(vars(args))
    if given["init"] and given["weights"] is not None:
        raise UsageError(f"--init and --weights both choose the starting weights: drop --weights "
                         f"{given['weights']} to start from {given['init']}")
    if given["init"]:
        given["weights"] = "none"  # the network is built empty, then takes the --init file's weights
    if given["demo_corner"] and not given["demo"]:
        raise UsageError("--demo-corner only applies with --demo")
    if given["demo"]:
        from expression.demo import synthetic

        corner = given["demo_corner"]
        if corner and corner not in synthetic.CLASS_NAMES:
            raise UsageError(f"--demo-corner {corner!r} is not a class: choose one of "
                             f"{', '.join(synthetic.CLASS_NAMES)}")
        suffix = f"_corner_{corner}" if corner else ""
        given["data"] = str(DEMO_ROOT.with_name(DEMO_ROOT.name + suffix.replace("_", "-")))
        given["weights"] = given["weights"] or "none"
        given["name"] = given["name"] or f"{ARCH}_demo{suffix}"
        if given["recipe"] == "seed":
            given["epochs"] = given["epochs"] or DEMO_EPOCHS
            given["lr"] = given["lr"] or DEMO_LR
    if given["val_dir"] and given["val_split"]:
        raise UsageError("--val-dir and --val-split both choose the validation images: give one")
    for key, value in RECIPES[given["recipe"]].items():  # the preset fills what the flags left unset
        if given.get(key) is None:
            given[key] = value
    if given["val_dir"]:
        given["val_split"] = 0.0  # the folder replaces the preset's held-out fraction
    if given["schedule"] == "plateau" and not (given["val_split"] or given["val_dir"]):
        raise UsageError("--schedule plateau watches the validation loss: add --val-split (e.g. 0.1) or --val-dir")
    if given["nesterov"] and given["optimizer"] != "sgd":
        raise UsageError(f"--nesterov applies to --optimizer sgd, not {given['optimizer']}")
    if given["batch_size"] == 1 and given["img_size"] <= 32:
        # a ResNet halves the input five times: up to 32 px layer4 is 1x1, and BatchNorm cannot train on
        # one value per channel
        raise UsageError(f"--batch-size 1 with --img-size {given['img_size']} leaves BatchNorm one value per "
                         f"channel in layer4 (1x1 there): use --batch-size 2 or more, or --img-size 33 or more")
    given["weights"] = given["weights"] or "imagenet"
    given["train_dir"] = given["train_dir"] or str(Path(given["data"]) / "train")
    given["test_dir"] = given["test_dir"] or str(Path(given["data"]) / "test")
    given["name"] = given["name"] or f"{ARCH}_{Path(given['data']).resolve().name or 'data'}"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{key: value for key, value in given.items() if key in fields})
