"""Convert the seed project's model file (`torch.save(model)` of a whole ResNet34) into a checkpoint.

The seed's authors shared `model_res34.pth` on Google Drive. Loading that kind of file the usual way
(`torch.load(..., weights_only=False)`) runs whatever code the pickle names; this script reads it with
torch's weights-only unpickler, allowing only the torch.nn and torchvision classes a ResNet34 is made
of, and refuses anything else without running it. The result is a normal checkpoint with the seed's
preprocessing (48 px, Normalize(0.5, 0.5), classes angry..surprise) that every script takes.

    python import_seed_model.py model_res34.pth                       # -> models/seed_resnet34.pt
    python import_seed_model.py model_res34.pth --out models/seed.pt
    python gradcam_FER.py --checkpoint models/seed_resnet34.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

from expression.apps.cli import ArgumentParser, UsageError, run_main
from expression.core.io import ensure_writable_dir
from expression.core.seed_model import SeedModelError, import_seed_model


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("source", help="the seed's whole-model file (e.g. model_res34.pth)")
    parser.add_argument("--out", default="models/seed_resnet34.pt", help="checkpoint to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser


def main(args) -> int:
    source, out = Path(args.source), Path(args.out)
    if not source.is_file():
        raise UsageError(f"no file at {source}: give the path of the seed's model_res34.pth")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name such as {out / 'seed_resnet34.pt'}")
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists: pass --force to replace it, or choose another --out")
    ensure_writable_dir(out.parent, "--out")
    try:
        import_seed_model(source, out)
    except SeedModelError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {out} (resnet34, 7 classes, 48 px, Normalize(0.5, 0.5)): "
          f"python gradcam_FER.py --checkpoint {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
