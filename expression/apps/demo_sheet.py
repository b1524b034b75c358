"""A contact sheet of the demo faces: one row per class, each face beside itself with its evidence mask
outlined in red (the picture in docs/explanations.md).

    python -m expression.apps.demo_sheet --out img/demo_faces.png
    python -m expression.apps.demo_sheet --out img/demo_corner.png --corner-class happy

The faces and the sheet are expression.demo.synthetic's (contact_sheet); this is only its command line.
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from PIL import Image

from expression.demo.synthetic import CLASS_NAMES, contact_sheet

# The flags' defaults are contact_sheet's own, so the command and the function cannot disagree.
DEFAULTS = {name: p.default for name, p in inspect.signature(contact_sheet).parameters.items()}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, and the docstring's examples kept as written."""


def get_args_parser() -> argparse.ArgumentParser:
    # Plain argparse rather than expression.apps.cli: that module imports torch, which drawing faces
    # does not need.
    parser = argparse.ArgumentParser(prog="python -m expression.apps.demo_sheet", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("img/demo_faces.png"),
                        help="contact sheet PNG to write")
    parser.add_argument("--per-class", type=int, default=DEFAULTS["per_class"], help="samples per class (columns)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="generator seed")
    parser.add_argument("--split", default=DEFAULTS["split"], help="split name the samples are drawn from")
    parser.add_argument("--size", type=int, default=DEFAULTS["size"], help="face size in pixels")
    parser.add_argument("--zoom", type=int, default=DEFAULTS["zoom"], help="pixel zoom of each tile")
    parser.add_argument("--corner-class", choices=CLASS_NAMES, default=DEFAULTS["corner_class"],
                        help="class whose evidence is a corner mark on a neutral face")
    return parser


def main(args) -> int:
    if args.per_class < 1 or args.size < 16 or args.zoom < 1:
        raise SystemExit("error: --per-class and --zoom must be positive and --size at least 16")
    sheet = contact_sheet(per_class=args.per_class, seed=args.seed, size=args.size, zoom=args.zoom,
                          corner_class=args.corner_class, split=args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
