"""A browser app: upload a photo (or take a webcam snapshot, or pick an example) and see each face's
expression, its probabilities, an explanation (Grad-CAM and friends, method and layer selectable) and
an attention map, and download the records in predict_FER.py's format.

    pip install -r requirements-app.txt
    python app.py                                   # http://127.0.0.1:7860, the model predict_FER.py takes
    python app.py --checkpoint models/resnet34_fer2013.pt --host 0.0.0.0 --port 8080

Offline by design: no analytics, system fonts instead of Google Fonts, no public share link unless
--share. Everything the app writes (examples, uploads, annotated photos, records) stays under --out.
The page's logic is expression/webapp.py; the prediction pipeline is predict_FER.py's
(expression/prediction.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from expression.checkpoint import open_model
from expression.cli import ArgumentParser, add_checkpoint_argument, UsageError, positive_int, resolve_device, run_main
from expression.io import ensure_writable_dir
from expression.prediction import DEFAULT_FACE_TTA, FACE_TTA
from expression.webapp import DEFAULT_MAX_PIXELS

MAX_UPLOAD_MB = 100  # the upload itself; the pixel count is checked separately (--max-pixels)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: reachable from other machines)")
    parser.add_argument("--port", type=positive_int, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (needs the internet; off by default)")
    parser.add_argument("--out", default="runs/app",
                        help="folder for everything the app writes: examples, uploads, annotated photos, records")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="larger images are refused before they are decoded (decompression bombs)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where the model runs (auto: cuda, then mps, else cpu)")
    parser.add_argument("--tta", default=DEFAULT_FACE_TTA, choices=FACE_TTA,
                        help="flip: average each face's probabilities with its mirror image's; none: plain face")
    return parser


def main(args) -> int:
    out_dir = ensure_writable_dir(Path(args.out), "--out").resolve()
    # Both before gradio is imported: no usage statistics sent, and uploads cached under --out.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(out_dir / "cache")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the app needs gradio: pip install -r requirements-app.txt") from None
    from expression.webapp import WebApp, build_interface

    device = resolve_device(args.device)
    model, ckpt, _ = open_model(args.checkpoint, device, real_photos=True)
    app = WebApp(model, ckpt, device, out_dir, max_pixels=args.max_pixels, tta=args.tta)
    demo, theme = build_interface(app)
    try:
        _, local_url, share_url = demo.launch(
            server_name=args.host, server_port=args.port, share=args.share, theme=theme, ssr_mode=False,
            max_file_size=f"{MAX_UPLOAD_MB}mb", allowed_paths=[str(out_dir)], prevent_thread_lock=True,
            quiet=True, inbrowser=False)
    except OSError as err:  # port taken, or an address this machine does not have
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({err}): choose another --port or --host") \
            from None
    print(f"app: running on {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl-C stops it)",
          flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
