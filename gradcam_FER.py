"""Grad-CAM / Grad-CAM++ overlays of a trained expression model, one panel per layer and method.

Each row of the grid is one face: the input with its true label (when it came from a class folder)
and the predicted class with its probability, then the overlay of every --methods x --layers map.
Preprocessing (size, colour, mean/std) comes from the checkpoint, so any image size or mode works.

    python gradcam_FER.py                                    # newest models/*.pt, 16 test faces
    python gradcam_FER.py --checkpoint models/resnet34_demo.pt --images data/demo/test \\
        --methods gradcam,gradcampp,layercam --target true --save-maps runs/explain/maps.npz
    python gradcam_FER.py --images face.jpg --layers layer3,layer4 --target happy
    python gradcam_FER.py --images data/fer2013/test/sad --target neutral-vs-sad --methods hirescam --layers layer1

Writes <out>/gradcam_grid.png (or gradcam_grid_001.png, ... for more than --rows-per-file faces).
Panel titles carry a tick where the explanation report (evaluate_explanations.py on the demo faces)
found the method and layer faithful at the model's input size (expression.core.cam_policy.TRUSTED_MAPS).
"""
from __future__ import annotations

import sys

from expression.apps.cli import ArgumentParser, UsageError, name_list, run_main
from expression.apps.configs import figure_config
from expression.apps.explain_cli import add_common_args
from expression.core.cam_policy import TRUSTED_MAPS
from expression.reports.explain_figures import (Batch, draw_grids, prepare, print_paths, resolve_targets, run_batches,
                                                save_maps, summary)
from gradcam import METHODS, explain, map_keys

GRID = "gradcam_grid"


def size_text(feature_sizes, layer: str) -> str:
    """'12x12' for a layer; the layer-free pixel maps are at the input's size."""
    return "x".join(map(str, feature_sizes[layer])) if layer in feature_sizes else "pixels"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--methods", type=name_list, default="gradcam,gradcampp", metavar="M1,M2",
                        help=f"comma-separated CAM methods, any of {', '.join(METHODS)}")
    return add_common_args(parser, grid_name=GRID)


def main(args) -> int:
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    config = figure_config(args)
    session = prepare(config)
    targets = resolve_targets(args.target, session)

    def compute(images, index):
        res = explain(session.model, images, layers=config.layers, methods=args.methods,
                      targets=None if targets is None else [targets[i] for i in index],
                      class_names=session.class_names, scorecam_batch_size=config.batch_size)
        return Batch(res.maps, res.probs, res.feature_sizes, res.targets, res.foils)

    result = run_batches(compute, session, config.batch_size, "grad-cam")
    # Methods side by side per layer, so the eye compares Grad-CAM with Grad-CAM++ at equal resolution.
    # A tick marks the maps the explanation report trusts at this input size (TRUSTED_MAPS).
    trusted = TRUSTED_MAPS.get(session.prep.img_size, ())
    keys = map_keys(args.methods, config.layers)
    panels = [(key, f"{layer} {size_text(result.feature_sizes, layer)}\n{method}"
                    f"{' ✓' if (method, layer) in trusted else ''}")
              for key in keys for method, layer in [key.split("/", 1)]]
    paths = draw_grids(session, result, panels, config, GRID)
    if config.save_maps:
        paths.append(save_maps(config.save_maps, session, result))
    summary(session, result, f"explained ({', '.join(args.methods)}; target {args.target})")
    print_paths(paths)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
