"""How trustworthy are the maps? Faithfulness, localisation and a sanity check for every method x layer.

For each --methods x --layers map (plus two trivial maps every method must beat: uniform noise and
a centred Gaussian blob) on a class-balanced set of test faces:

* deletion / insertion AUC (RISE): target-class probability as the top-ranked pixels are replaced
  by the --baseline image (deletion, lower is better) or revealed on it (insertion, higher is better);
* average drop % (lower is better) and increase in confidence % (higher is better) on image * map;
* optionally ROAD MoRF (lower is better) / LeRF (higher is better) with noisy linear imputation;
* pointing game and energy pointing game against ground-truth evidence masks, when the images come
  from a demo folder written by expression.demo.synthetic (root/masks_test.npz); empty for FER2013;
* the cascading model-randomisation sanity check (Adebayo et al. 2018): Spearman correlation between
  the trained model's map and the map once the explained layer and every layer above it are random.

    python evaluate_explanations.py --checkpoint models/resnet34_demo.pt --images data/demo/test
    python evaluate_explanations.py --checkpoint models/resnet34_demo_corner_happy.pt \\
        --images data/demo-corner-happy/test --target true --methods gradcam,gradcampp,layercam
    python evaluate_explanations.py --checkpoint models/resnet34_fer2013.pt --images data/fer2013/test \\
        --limit 512 --baseline mean --road
    python evaluate_explanations.py --checkpoint models/resnet34_demo.pt --images data/demo/test --limit 70 \\
        --methods layercam,hirescam --layers layer1 --tta-maps flip,tencrop      # maps averaged over TTA views

Besides method x layer maps, every CAM method's layers fused into one map (layer "fused", --no-fuse
to skip) and the layer-free guidedbackprop / fullgrad maps (layer "input") are scored; the column
"trusted" says which maps beat both baselines and pass the randomisation check.

The scoring itself is gradcam/evaluation.py (score_explanations), the files expression/reports/explanation_report.py
(write_report, with the settings it states in a ReportConfig).

Writes <out>/explanations_report.csv and .md, deletion_insertion.png, randomisation.csv and .png
(with --sanity), pointing_per_class.csv (with masks) and args.json; out defaults to
runs/explain_eval/<checkpoint name>/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from expression.apps.cli import (ArgumentParser, UsageError, add_device_argument, name_list, positive_float,
                                 positive_int, resolve_device, run_main, use_progress_bars)
from expression.apps.configs import report_config
from expression.apps.explain_cli import add_input_args
from expression.core.checkpoint import open_model_quietly
from expression.core.io import ensure_writable_dir, write_json
from expression.core.preprocessing import Preprocessing
from expression.core.tta import TTA_MODES, tta_geometry
from expression.reports.explain_figures import check_layers, select_images
from expression.reports.explanation_report import ReportConfig, load_masks, write_report
from gradcam import METHODS
from gradcam.evaluation import progress_total, score_explanations
from gradcam.metrics import BASELINES, POINTING_TIES

# Score-CAM and Ablation-CAM need one extra forward pass per channel and image (960 per face over the
# four stages, and again for every stage of the sanity check): available with --methods, left out of
# the default.
SLOW_METHODS = ("scorecam", "ablationcam")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in SLOW_METHODS)
DEFAULT_LIMIT = 256


def tta_list(text: str) -> tuple[str, ...]:
    """argparse type: 'flip,tencrop' -> ('flip', 'tencrop'); 'none' -> ()."""
    modes = tuple(m for m in name_list(text) if m != "none")
    bad = [m for m in modes if m not in TTA_MODES]
    if bad:
        raise ValueError(f"unknown TTA mode {bad[0]}")
    return modes


tta_list.__name__ = "comma-separated TTA modes (flip, tencrop, none)"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_input_args(parser, verb="evaluate", limit=DEFAULT_LIMIT,
                   batch_help="images per forward pass (every perturbation step of a batch is one pass)")
    parser.add_argument("--methods", type=name_list, default=",".join(DEFAULT_METHODS), metavar="M1,M2",
                        help=f"comma-separated CAM methods, any of {', '.join(METHODS)}")
    parser.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                        help="also score each CAM method's --layers fused into one map (mean of the per-layer "
                             "normalised maps, as pytorch-grad-cam combines layers), layer 'fused'")
    parser.add_argument("--tta-maps", type=tta_list, default="none", metavar="M1,M2",
                        help="also score the maps averaged over the classifier's test-time-augmentation views "
                             "(flip, tencrop; each view's map mapped back to the face), as method@mode; "
                             "'none' = off. Costs a pass per view, also in the sanity check")
    parser.add_argument("--target", choices=("predicted", "true"), default=ReportConfig.target,
                        help="class to explain and score: the predicted one or the true label (needs class "
                             "sub-folders). The pointing game always uses only images whose target is the "
                             "true class")
    parser.add_argument("--baseline", choices=BASELINES, default=ReportConfig.baseline,
                        help="what deleted pixels become: the blurred image, black pixels, or the "
                             "checkpoint's normalisation mean")
    parser.add_argument("--blur-sigma", type=positive_float, default=ReportConfig.blur_sigma,
                        help="Gaussian sigma in pixels of the blur baseline")
    parser.add_argument("--steps", type=positive_int, default=ReportConfig.steps,
                        help="deletion/insertion steps of equal pixel counts")
    parser.add_argument("--sanity", action=argparse.BooleanOptionalAction, default=ReportConfig.sanity,
                        help="cascading model-randomisation check (one extra explain pass per model stage)")
    parser.add_argument("--road", action=argparse.BooleanOptionalAction, default=False,
                        help="ROAD MoRF/LeRF at 10..90%% removed with noisy linear imputation; off by default "
                             "(about as costly as deletion/insertion again; fast on a GPU)")
    parser.add_argument("--pointing-ties", choices=POINTING_TIES, default=ReportConfig.pointing_ties,
                        help="pointing game when several pixels share the map's maximum (coarse maps): a hit if "
                             "any is inside the evidence mask, or the share of them inside")
    parser.add_argument("--masks", default=None, metavar="FILE.npz",
                        help="evidence masks (keys files, evidence) with files relative to the npz's folder "
                             "(default: masks_*.npz found in a parent folder of the images, as "
                             "expression.demo.synthetic's write_image_folder writes them)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random baseline map, ROAD noise and "
                                                             "the re-initialised weights")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/explain_eval/<checkpoint name>/)")
    add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table; paths only")
    return parser


def main(args) -> int:
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    device = resolve_device(args.device)
    model, ckpt, checkpoint, model_line = open_model_quietly(args.checkpoint, device)
    check_layers(model, args.layers)
    prep = Preprocessing.from_checkpoint(ckpt)
    if args.steps > prep.img_size ** 2:
        raise UsageError(f"--steps {args.steps} exceeds the {prep.img_size ** 2} pixels of a "
                         f"{prep.img_size}x{prep.img_size} input: use at most that many")
    class_names = list(ckpt["class_names"])
    class_index = {name: i for i, name in enumerate(class_names)}
    out_dir = ensure_writable_dir(args.out or Path("runs") / "explain_eval" / checkpoint.stem, "--out")

    images_used, kept = select_images(args.images, ckpt, args.limit)
    files = [e.path for e, _ in kept]
    labels = [class_index.get(e.label, -1) for e, _ in kept]
    if args.target == "true" and min(labels) < 0:
        bad = next(f for f, lb in zip(files, labels) if lb < 0)
        raise UsageError(f"--target true needs every image in a class sub-folder named after one of "
                         f"{', '.join(class_names)}; e.g. {bad} is not: use --target predicted")
    pixels = [prep.pixels(img) for _, img in kept]
    masks, has_mask, corner = load_masks(files, prep.img_size, args.masks)
    if corner is not None and corner not in class_index:
        corner = None
    print(model_line, file=sys.stderr, flush=True)  # after the checks: an error stays the only line

    tta = {mode: tta_geometry(mode, prep.img_size) for mode in args.tta_maps}
    bar = tqdm(total=progress_total(len(pixels), args.batch_size, args.methods, args.layers, args.sanity,
                                    args.fuse, tta),
               desc="evaluating", unit="map", disable=not use_progress_bars(args.quiet), leave=False)
    try:
        scores = score_explanations(
            model, prep.to_tensor(pixels), labels, methods=args.methods, layers=args.layers, mean=prep.mean,
            std=prep.std, explain_true_class=args.target == "true", masks=masks, has_mask=has_mask,
            batch_size=args.batch_size, baseline=args.baseline, blur_sigma=args.blur_sigma, steps=args.steps,
            road_scores=args.road, pointing_ties=args.pointing_ties, sanity=args.sanity, seed=args.seed,
            progress=bar, fuse=args.fuse, tta=tta)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    finally:
        bar.close()
    paths, table = write_report(out_dir, report_config(args), checkpoint, images_used, scores, masks, has_mask,
                                corner, class_names, prep.img_size)
    # the run's record: every flag as given (lists for tuples, for JSON), the images and model it resolved to
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    record.update(checkpoint=str(checkpoint), images_used=images_used)
    paths.append(out_dir / "args.json")
    write_json(paths[-1], record)
    if not args.quiet:
        print(table)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
