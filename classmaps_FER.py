"""What the model looks at, per class: class maps, face regions against FACS, confusions, disputed labels.

For a labelled ImageFolder split and a model (default: the shipped FER2013 model on data/fer2013/test),
with the map the explanation report trusts (default: HiResCAM at layer1, single view):

    python classmaps_FER.py                                              # shipped model, FER2013 PublicTest
    python classmaps_FER.py --checkpoint models/resnet34_demo.pt --split data/demo/test --bootstrap 200
    python classmaps_FER.py --method xgradcam --layer layer2 --tta-maps flip --confusions 6

1. class maps: the mean normalised map per true class (explaining it) and per predicted class
   (explaining the prediction), with the faces behind each, over the class's mean face and bare;
2. regions: each class map's share in forehead, brows, eyes, nose, cheeks, mouth, jaw and outside the
   face (a fixed layout on the 48 px registered face, checked against the split's mean face; the
   demo generator's own masks on a demo split), with bootstrap intervals, against the regions the
   class's FACS action units move (agreement in percentage points);
3. confusions: for the most frequent (true A, predicted B) pairs, the mean map of B and the mean
   contrastive map of logit B - logit A;
4. honesty: the same class maps on the model with its layers from fc down to --layer re-initialised,
   and how much the class maps differ (mean pairwise total-variation distance) against label shuffles,
   also with the explained class held fixed (every class in turn on --structure-faces faces per class);
5. labels the model disputes (confident-joint off-diagonal), counted per class and drawn with their
   maps under <out>/disputes/ (single faces: keep them out of the README).

Writes to --out (default runs/class_maps/<checkpoint>_<split folder>/): class_maps.png (the overview),
class_maps_{true,predicted,randomised}.png, face_regions.png, region_shares.png, confusions.png,
disputes/<class>.png, a CSV per table (class_counts, region_shares, facs_agreement, class_structure,
confusions, disputes, disputes_per_class, layout_check), class_maps.npz, summary.md and run.json.
docs/what-the-model-looks-at.md explains every number.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from expression.apps.cli import (ArgumentParser, add_device_argument, command_line, non_negative_int, positive_int,
                                 resolve_device, run_main, use_progress_bars)
from expression.apps.configs import class_map_config
from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, SHIPPED_MAP_TTA
from expression.core.checkpoint import SHIPPED_MODEL, open_model_quietly
from expression.core.datasets import decode_split
from expression.core.io import ensure_writable_dir, write_json
from expression.core.preprocessing import Preprocessing
from expression.core.runtime import usable_cores
from expression.core.tta import TTA_MODES
from expression.reports.class_map_outputs import write_report
from expression.reports.class_maps import MIN_FACES_FOR_MEAN, analyse, check_layer, check_split
from expression.reports.face_regions import layout_for_split

DEFAULT_SPLIT = "data/fer2013/test"
DEFAULT_CHECKPOINT = f"models/shipped/{SHIPPED_MODEL.name}"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help="model file (the shipped model is also found where an installed package keeps it)")
    parser.add_argument("--split", default=DEFAULT_SPLIT, metavar="DIR",
                        help="labelled ImageFolder split DIR/<class>/*, its class folders exactly the model's "
                             "classes; out of sample for the disputed labels to mean anything")
    parser.add_argument("--method", default=DEFAULT_CAM_METHOD,
                        help="gradcam method of the maps (the explanation report's trusted map on the shipped model)")
    parser.add_argument("--layer", default=DEFAULT_CAM_LAYER, help="layer the maps are taken at")
    parser.add_argument("--tta-maps", choices=TTA_MODES, default=SHIPPED_MAP_TTA,
                        help="average each map over the classifier's test-time-augmentation views (the default is "
                             "the variant the report found best on the shipped model)")
    parser.add_argument("--confusions", type=non_negative_int, default=4,
                        help="most frequent (true, predicted) pairs to explain contrastively")
    parser.add_argument("--bootstrap", type=positive_int, default=1000,
                        help="bootstrap resamples for the region-share and agreement intervals")
    parser.add_argument("--shuffles", type=positive_int, default=50,
                        help="label shuffles for the class-structure noise floor")
    parser.add_argument("--structure-faces", type=non_negative_int, default=40,
                        help="faces per class explained for every class in turn, for the class structure with "
                             "the explained class held fixed (0: skip; costs classes x faces maps per model)")
    parser.add_argument("--randomised", action=argparse.BooleanOptionalAction, default=True,
                        help="also explain the model with fc..--layer re-initialised (one more pass over the split)")
    parser.add_argument("--disputes-shown", type=non_negative_int, default=8,
                        help="disputed faces per class drawn with their maps into <out>/disputes/")
    parser.add_argument("--min-faces-for-mean", type=positive_int, default=MIN_FACES_FOR_MEAN,
                        help="a class of fewer faces is drawn over the split's mean face, not its own")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap, shuffles and the randomised weights")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="faces per forward/backward pass")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="threads that decode the split")
    add_device_argument(parser)
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/class_maps/<checkpoint stem>_<split folder name>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary, only the output folder")
    return parser


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}, {usable_cores()} cores"


def main(args) -> int:
    config = class_map_config(args)  # an unknown --method or --tta-maps fails here, before any loading
    device = resolve_device(args.device)
    model, ckpt, checkpoint, model_line = open_model_quietly(args.checkpoint, device)
    check_layer(model, config.layer)
    class_names = list(ckpt["class_names"])
    split = Path(args.split)
    check_split(split, class_names)
    prep = Preprocessing.from_checkpoint(ckpt)
    layout = layout_for_split(split, prep.img_size)
    out = ensure_writable_dir(args.out or Path("runs") / "class_maps" / f"{checkpoint.stem}_{split.resolve().name}",
                              "--out")
    print(model_line, file=sys.stderr, flush=True)  # after the checks: an error stays the only line
    trained_on = (ckpt.get("args") or {}).get("train_dir")
    if trained_on and Path(trained_on).resolve() == split.resolve():
        print(f"warning: {split} is the folder this model was trained on: its disputed labels are not out of "
              f"sample", file=sys.stderr)

    started = time.perf_counter()
    data = decode_split(split, class_names, prep.img_size, color=prep.color, workers=args.workers,
                        progress=use_progress_bars(args.quiet), what="--split")
    report = analyse(model, data.images, data.labels.numpy(), class_names, prep.mean, prep.std, layout, config)
    seconds = time.perf_counter() - started
    faces = data.images.permute(0, 2, 3, 1).numpy()
    faces = faces[..., 0] if faces.shape[-1] == 1 else faces
    meta = dict(model=str(checkpoint), split=str(split), seconds=seconds, machine=machine(),
                command=command_line(get_args_parser(), args, "classmaps_FER.py"))
    paths = write_report(out, report, data.paths, faces, meta)
    write_json(out / "run.json", {**meta, "faces": len(report.labels), "class_names": class_names,
                                  "config": {k: v for k, v in vars(config).items() if k != "progress"}})
    if not args.quiet:
        accuracy = float((report.pred == report.labels).mean())
        print(f"{len(report.labels)} faces, accuracy {100 * accuracy:.1f} %, {seconds:.0f} s; {len(paths) + 1} files")
        for name, s in report.structure.items():
            print(f"class structure, {name} model: {s.value:.3f} (label-shuffled {s.shuffled:.3f}, excess "
                  f"{s.excess:+.3f}, p {s.p_value:.3f})")
        for name, s in report.fixed_structure.items():
            print(f"class structure with the explained class held fixed, {name} model: {s.value:.3f} "
                  f"(label-shuffled {s.shuffled:.3f}, excess {s.excess:+.3f}, p {s.p_value:.3f})")
        scored = [r for r in report.agreement if r["regions"]]
        print("FACS agreement (pp): " + ", ".join(f"{r['cls']} {r['agreement']:+.1f}" for r in scored))
        print(f"disputed labels: {int(report.disputed.sum())}")
    print(f"wrote {out / 'summary.md'} and the figures and tables beside it")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
