"""Export a trained checkpoint to ONNX for inference without PyTorch (onnxruntime, numpy, PIL).

The graph takes `input`, float32 (N, 3, S, S) already normalised, with a dynamic batch axis, and
returns `logits` (N, C). Everything needed to prepare an image and name the prediction travels in
the model's metadata_props: class_names, img_size, mean, std, color, arch and the source checkpoint;
`onnx_predict.py` reads them back, so the .onnx file is all a deployment needs.

Examples:
    python export.py --check                                   # newest models/*.pt -> same stem .onnx
    python export.py --checkpoint models/resnet34_demo.pt --out models/demo.onnx --opset 18
    python onnx_predict.py --model models/demo.onnx img/face.png

Exporter: torch 2.14's torch.onnx.export defaults to the torch.export-based ("dynamo") exporter,
which needs the onnxscript package. The default here is the TorchScript exporter
(`--exporter torchscript`), which needs only `onnx` from requirements-export.txt and so works
offline; `--exporter dynamo` is there for when onnxscript is installed (pip install onnxscript) or
the TorchScript exporter is removed from a later torch. Both give the same logits within 1e-4.
"""
from __future__ import annotations

import sys
from pathlib import Path

from expression.apps.cli import ArgumentParser, UsageError, add_checkpoint_argument, positive_int, run_main
from expression.core.checkpoint import choose_model, describe_model, load_model
from expression.core.io import ensure_writable_dir
from expression.inference.onnx_export import (DEFAULT_OPSET, EXPORTERS, INPUT_NAME, PARITY_ATOL, check_parity,
                                              export_onnx)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--out", default="beside",
                        help="ONNX file to write; 'beside' = the checkpoint's path with suffix .onnx")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                        help="torch.onnx exporter: torchscript needs only onnx; dynamo also needs onnxscript")
    parser.add_argument("--check", action="store_true",
                        help="after export, compare onnxruntime (CPU) logits with PyTorch on generated faces")
    parser.add_argument("--check-samples", type=positive_int, default=14,
                        help="generated faces for --check (run as one batch, then the first one alone)")
    parser.add_argument("--models-dir", default="models", help="where the default --checkpoint looks")
    return parser


# ---------------------------------------------------------------------------------------------------


def main(args) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError("export needs the onnx package: pip install -r requirements-export.txt") from None
    if args.check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UsageError("--check needs onnxruntime: pip install -r requirements-export.txt") from None
    named = None if args.checkpoint == "newest" else args.checkpoint  # 'newest': the old spelling of the default
    # Without --checkpoint: the user's newest model only. The shipped one is exported by naming it,
    # so that a default run never writes into models/shipped/.
    checkpoint, reason = choose_model(named, args.models_dir, shipped=False)
    out = checkpoint.with_suffix(".onnx") if args.out == "beside" else Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name such as {out / (checkpoint.stem + '.onnx')}")
    if out.resolve() == checkpoint.resolve():
        raise UsageError(f"--out {out} would overwrite the checkpoint: give it a .onnx name")
    model, ckpt = load_model(checkpoint, "cpu")
    print(describe_model(checkpoint, ckpt, reason), file=sys.stderr)
    ensure_writable_dir(out.parent, "output")
    export_onnx(model, ckpt, out, source=checkpoint.name, opset=args.opset, exporter=args.exporter)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, {args.exporter} exporter, "
          f"{len(ckpt['class_names'])} classes, input {INPUT_NAME} (N, 3, {ckpt['img_size']}, {ckpt['img_size']}))")
    if args.check:
        parity = check_parity(model, ckpt, out, n=args.check_samples)
        verdict = "ok" if parity.ok else f"FAILED (bound {PARITY_ATOL:g}, same classes required)"
        print(f"parity onnxruntime vs PyTorch on {parity.samples} generated faces (batch sizes "
              f"{', '.join(map(str, parity.batch_sizes))}): max |logit diff| {parity.max_abs_diff:.2e}, "
              f"predicted classes {'identical' if parity.same_argmax else 'DIFFER'}: {verdict}")
        return 0 if parity.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
