"""Make the shipped model: a trained FER2013 checkpoint -> float16 file + manifest in models/shipped/.

A maintainer's step, not a user's. The float16 copy (half the bytes in git) is what gets scored:
PublicTest accuracy with and without flip TTA is measured on the file users load, and the manifest
records it with the recipe, epochs, data counts and the file's sha256 (checked by the tests).

    python -m bench.ship_model runs/candidates/fer2013_cpu.pt --test-dir ../shared/fer2013/test
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from expression import checkpoint
from expression.cli import run_main, UsageError
from expression.data import InMemoryLoader, Preprocessing, class_folders, decode_split
from expression.engine import evaluate
from expression.io import write_json

MANIFEST = checkpoint.SHIPPED_MODEL.with_suffix(".json")


def lineage_with_commands(lineage: list, manifest_path: Path) -> list:
    """The record's lineage, each cycle with its command: models shipped before records kept their
    command have it only in the manifest they shipped with (matched by sha256)."""
    known = {}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        known = {old.get("sha256"): old.get("command")}
        known.update({entry.get("sha256"): entry.get("command") for entry in old.get("lineage") or []})
    return [{**entry, "command": entry.get("command") or known.get(entry["sha256"]) or ""} for entry in lineage]


def half_record(record: dict) -> dict:
    """The same record with floating-point weights in float16 (BatchNorm counters stay int64)."""
    half = dict(record)
    half["model"] = {k: v.half() if v.is_floating_point() else v for k, v in record["model"].items()}
    return half


def main(args) -> int:
    record = checkpoint.load_record(args.source)
    if record["class_names"] != class_folders(args.test_dir):
        raise UsageError(f"{args.test_dir} classes differ from the model's {record['class_names']}")
    lineage = lineage_with_commands(record.get("lineage") or [], args.manifest)  # before it is replaced
    out = checkpoint.save(half_record(record), args.out)
    model, ckpt = checkpoint.load_model(out)  # exactly what users get: float16 on disk, float32 in memory
    prep = Preprocessing.from_checkpoint(ckpt)
    split = decode_split(args.test_dir, ckpt["class_names"], prep.img_size, color=prep.color, workers=2,
                         progress=False, what="--test-dir")
    loader = InMemoryLoader(split, 256, prep.mean, prep.std, torch.device("cpu"), pad=False)
    accuracy = {mode: evaluate(model, loader, "cpu", False, tta=mode).acc for mode in ("none", "flip")}
    train_args = ckpt["args"]
    manifest = {
        "file": out.name, "sha256": checkpoint.file_sha256(out), "bytes": out.stat().st_size, "dtype": "float16",
        "arch": ckpt["arch"], "class_names": ckpt["class_names"], "img_size": ckpt["img_size"],
        "recipe": train_args.get("recipe"), "command": args.command or ckpt.get("command", ""),
        "epochs_trained": train_args.get("epochs"), "epoch_saved": ckpt["epoch"],
        "train_images": args.train_images, "val_images": args.val_images,
        "test_split": "FER2013 PublicTest", "test_images": len(split.labels),
        "public_test_accuracy": round(accuracy["none"], 4), "public_test_accuracy_flip_tta": round(accuracy["flip"], 4),
        "val_accuracy": ckpt["metrics"].get("val_acc"),
        "total_epochs": checkpoint.total_epochs(ckpt), "lineage": lineage,
    }
    write_json(args.manifest, manifest)
    print(json.dumps(manifest, indent=2))
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="trained float32 model file")
    parser.add_argument("--test-dir", required=True, help="FER2013 PublicTest ImageFolder split")
    parser.add_argument("--out", type=Path, default=checkpoint.SHIPPED_MODEL)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--command", default="", help="the training command (default: the one the model records)")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--val-images", type=int, default=None)
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
