"""Make the shipped model: a trained FER2013 checkpoint -> float16 file + manifest in models/shipped/.

A maintainer's step, not a user's. The float16 copy (half the bytes in git) is what gets scored:
PublicTest accuracy with and without flip TTA is measured on the file users load. It replaces the
shipped model only when it beats it by --min-gain (a point), and the manifest records it with the
recipe, epochs, data counts, the file's sha256 (checked by the tests), its lineage (each --init
parent with its sha256 and command) and the per-epoch curve of every training cycle behind it.

    python -m bench.ship_model runs/candidates/fer2013_cpu.pt --test-dir ../shared/fer2013/test
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from expression.apps.cli import UsageError, run_main
from expression.core import checkpoint
from expression.core.datasets import class_folders, decode_split
from expression.core.io import write_json
from expression.core.preprocessing import Preprocessing
from expression.training.engine import evaluate
from expression.training.loader import InMemoryLoader

MANIFEST = checkpoint.SHIPPED_MODEL.with_suffix(".json")


def lineage_with_commands(lineage: list, manifest: dict) -> list:
    """The record's lineage, each cycle with its command: models shipped before records kept their
    command have it only in the manifest they shipped with (matched by sha256)."""
    known = {manifest.get("sha256"): manifest.get("command")}
    known.update({entry.get("sha256"): entry.get("command") for entry in manifest.get("lineage") or []})
    return [{**entry, "command": entry.get("command") or known.get(entry["sha256"]) or ""} for entry in lineage]


def half_record(record: dict) -> dict:
    """The same record with floating-point weights in float16 (BatchNorm counters stay int64)."""
    half = dict(record)
    half["model"] = {k: v.half() if v.is_floating_point() else v for k, v in record["model"].items()}
    return half


def read_curve(path) -> list[dict]:
    """The run's per-epoch metrics.csv as rows of numbers (epoch, val_acc, test_acc, seconds, ...)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)} for row in rows]


def main(args) -> int:
    record = checkpoint.load_record(args.source)
    if record["class_names"] != class_folders(args.test_dir):
        raise UsageError(f"{args.test_dir} classes differ from the model's {record['class_names']}")
    train_args = record["args"]
    metrics_csv = args.metrics or Path(str(train_args.get("out", "runs"))) / str(train_args.get("name")) / "metrics.csv"
    if not Path(metrics_csv).is_file():
        raise UsageError(f"no per-epoch metrics at {metrics_csv}: pass --metrics runs/NAME/metrics.csv")
    old = json.loads(args.manifest.read_text()) if args.manifest.is_file() else {}
    lineage = lineage_with_commands(record.get("lineage") or [], old)  # the manifest before it is replaced
    # The candidate is scored as the float16 file users would load, beside the shipped one, and moved
    # onto it (os.replace, atomic) only when it is measurably better: every version stays in git history.
    candidate = checkpoint.save(half_record(record), args.out.with_name(args.out.stem + ".candidate.pt"))
    try:
        model, ckpt = checkpoint.load_model(candidate)  # float16 on disk, float32 in memory
        prep = Preprocessing.from_checkpoint(ckpt)
        split = decode_split(args.test_dir, ckpt["class_names"], prep.img_size, color=prep.color, workers=2,
                             progress=False, what="--test-dir")
        loader = InMemoryLoader(split, 256, prep.mean, prep.std, torch.device("cpu"), pad=False)
        accuracy = {mode: evaluate(model, loader, "cpu", False, tta=mode).acc for mode in ("none", "flip")}
        before = old.get("public_test_accuracy")
        print(f"candidate {args.source}: PublicTest {accuracy['none']:.2%} (flip {accuracy['flip']:.2%})"
              + (f"; shipped {before:.2%}" if before is not None else ""))
        if before is not None and accuracy["none"] < before + args.min_gain and not args.force:
            print(f"not shipped: needs at least {before + args.min_gain:.2%} (--min-gain {args.min_gain:g})")
            return 1
        sha = checkpoint.file_sha256(candidate)
        size = candidate.stat().st_size
        candidate.replace(args.out)
    finally:
        candidate.unlink(missing_ok=True)
    command = args.command or ckpt.get("command", "")
    cycle = {"cycle": len(old.get("cycles") or []) + 1, "command": command,
             "start": lineage[-1]["file"] + f" ({lineage[-1]['total_epochs']} epochs, sha256 {lineage[-1]['sha256']})"
             if lineage else f"--weights {train_args.get('weights')}",
             "epochs": train_args.get("epochs"), "epoch_saved": ckpt["epoch"],
             "public_test_accuracy": round(accuracy["none"], 4),
             "public_test_accuracy_flip_tta": round(accuracy["flip"], 4), "curve": read_curve(metrics_csv)}
    manifest = {
        "file": args.out.name, "sha256": sha, "bytes": size, "dtype": "float16",
        "arch": ckpt["arch"], "class_names": ckpt["class_names"], "img_size": ckpt["img_size"],
        "recipe": train_args.get("recipe"), "command": command,
        "epochs_trained": train_args.get("epochs"), "epoch_saved": ckpt["epoch"],
        "train_images": args.train_images, "val_images": args.val_images,
        "test_split": "FER2013 PublicTest", "test_images": len(split.labels),
        "public_test_accuracy": round(accuracy["none"], 4), "public_test_accuracy_flip_tta": round(accuracy["flip"], 4),
        "val_accuracy": ckpt["metrics"].get("val_acc"),
        "total_epochs": checkpoint.total_epochs(ckpt), "lineage": lineage,
        "cycles": list(old.get("cycles") or []) + [cycle],
    }
    write_json(args.manifest, manifest)
    print(json.dumps({k: v for k, v in manifest.items() if k != "cycles"}, indent=2))
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="trained float32 model file")
    parser.add_argument("--test-dir", required=True, help="FER2013 PublicTest ImageFolder split")
    parser.add_argument("--out", type=Path, default=checkpoint.SHIPPED_MODEL)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--command", default="", help="the training command (default: the one the model records)")
    parser.add_argument("--metrics", type=Path, help="the run's per-epoch metrics.csv (default: runs/NAME/metrics.csv "
                        "from the model's training args)")
    parser.add_argument("--min-gain", type=float, default=0.01,
                        help="ship only if PublicTest accuracy beats the shipped model's by this much (0.01: a point)")
    parser.add_argument("--force", action="store_true", help="ship even without the gain (e.g. a new recipe)")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--val-images", type=int, default=None)
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
