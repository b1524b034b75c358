"""Evaluate a trained checkpoint on any ImageFolder split, with optional test-time augmentation.

    python evaluate.py --checkpoint models/resnet34_fer2013.pt --split ../fer2013/test --tta none flip tencrop
    python evaluate.py --checkpoint models/resnet34_demo.pt --split data/demo/test --tta all --out runs/eval/demo

For each --tta mode (none: the face as trained; flip: the face and its mirror; tencrop: corners and
centre of the face upscaled by expression.core.tta.TENCROP_SCALE and their mirrors; softmax averaged over
views) writes the training reports to OUT/<mode>/ (confusion_matrix.png/.csv,
classification_report.txt/.json, metrics.json), all modes to OUT/summary.json, and prints one JSON
line per mode on stdout: {"checkpoint", "split", "tta", "images", "accuracy", "loss", "seconds"}.
The split's class folders are matched to the checkpoint's classes by name; a subset is fine.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from expression.apps.cli import (ArgumentParser, UsageError, add_checkpoint_argument, add_device_argument,
                                 non_negative_int, positive_int, resolve_device, run_main, use_progress_bars)
from expression.core import report
from expression.core.checkpoint import open_model_quietly
from expression.core.datasets import class_folders, decode_split
from expression.core.io import ensure_writable_dir, write_json
from expression.core.preprocessing import Preprocessing, is_image_file
from expression.core.tta import TTA_MODES, views_per_image
from expression.training.engine import evaluate
from expression.training.loader import InMemoryLoader

DEFAULT_SPLIT = "data/fer2013/test"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--split", default=DEFAULT_SPLIT, metavar="DIR", help="ImageFolder split: DIR/<class>/*")
    parser.add_argument("--tta", nargs="+", choices=(*TTA_MODES, "all"), default=["none"],
                        help="test-time augmentation mode(s), each reported separately; all = every mode")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="faces per forward pass (tencrop sends 10x as many views)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="threads that decode the split once (0: main thread)")
    add_device_argument(parser)
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/eval/<checkpoint stem>_<split folder name>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary lines on stderr")
    return parser


def split_labels(split_dir: Path, class_names: list[str], checkpoint: Path) -> list[int]:
    """The split's class folders -> the checkpoint's class indices, matched by name."""
    if not split_dir.is_dir():
        raise UsageError(f"--split {split_dir} does not exist: pass an ImageFolder split holding <class>/ folders")
    folders = class_folders(split_dir)
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        raise UsageError(f"--split {split_dir} has class folder(s) {', '.join(unknown)} that {checkpoint} does not "
                         f"know (its classes: {', '.join(class_names)}): rename or remove them")
    if not any(is_image_file(p) and p.is_file() for name in folders for p in (split_dir / name).iterdir()):
        raise UsageError(f"--split {split_dir} holds no images: expected {split_dir}/<class>/*.png with classes "
                         f"among {', '.join(class_names)}")
    return [class_names.index(name) for name in folders]


def main(args) -> int:
    modes = list(dict.fromkeys(m for mode in args.tta for m in (TTA_MODES if mode == "all" else (mode,))))
    device = resolve_device(args.device)
    model, ckpt, ckpt_path, model_line = open_model_quietly(args.checkpoint, device)
    prep = Preprocessing.from_checkpoint(ckpt)
    class_names = list(ckpt["class_names"])
    split_dir = Path(args.split)
    mapping = split_labels(split_dir, class_names, ckpt_path)
    out_dir = ensure_writable_dir(args.out or Path("runs") / "eval" / f"{ckpt_path.stem}_{split_dir.resolve().name}",
                                  "--out")
    print(model_line, file=sys.stderr, flush=True)  # after the checks: an error stays the only line

    progress = use_progress_bars(args.quiet)
    # Decode with the split's own folder list, then move labels to the checkpoint's indices.
    split = decode_split(split_dir, class_folders(split_dir), prep.img_size, color=prep.color,
                         workers=args.workers, progress=progress, what="--split")
    split.labels = torch.tensor(mapping, dtype=torch.long)[split.labels]
    loader = InMemoryLoader(split, args.batch_size, prep.mean, prep.std, device, pad=False)

    summary = []
    for mode in modes:
        started = time.perf_counter()
        result = evaluate(model, loader, device, progress, desc=f"tta {mode}", tta=mode)
        line = {"checkpoint": str(ckpt_path), "split": str(split_dir), "tta": mode, "images": len(result.targets),
                "accuracy": result.acc, "loss": result.loss, "seconds": round(time.perf_counter() - started, 3)}
        metrics = {**line, "views_per_image": views_per_image(mode)}
        mode_dir = ensure_writable_dir(out_dir / mode, "--out")
        report.write_evaluation_reports(mode_dir, result, class_names,
                                        f"{ckpt_path.stem} on {split_dir}: TTA {mode}, accuracy {result.acc:.2%}")
        write_json(mode_dir / "metrics.json", metrics)
        summary.append(metrics)
        print(json.dumps(line), flush=True)
        if not args.quiet:
            print(f"tta {mode:<8} accuracy {result.acc:6.2%}  loss {result.loss:.4f}  {line['images']} images  "
                  f"({line['seconds']:.1f} s): {mode_dir}/", file=sys.stderr)
    write_json(out_dir / "summary.json", {"checkpoint": str(ckpt_path), "split": str(split_dir),
                                          "class_names": class_names, "modes": summary})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
