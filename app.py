"""A browser app: upload a photo (or take a webcam snapshot, or pick an example) and see each face's
expression, its probabilities, an explanation (Grad-CAM and friends, method and layer selectable) and
an attention map, and download the records in predict_FER.py's format.

    pip install -r requirements-app.txt
    python app.py                                   # http://127.0.0.1:7860, the model predict_FER.py takes
    python app.py --checkpoint models/resnet34_fer2013.pt --workers 4 --port 8080

Offline by design: no analytics, system fonts instead of Google Fonts, no public share link unless
--share. Everything the app writes (examples, uploads, annotated photos, records) stays under --out,
under random names, and is deleted 10 minutes after it was written (--keep-minutes; sooner, oldest
first, beyond --max-out-mb). Only the examples and gradio's own cache of this session's files are served. Serving it
to other people: docs/serving.md (a reverse proxy with authentication in front; --root-path).
The page's logic is expression/apps/webapp.py; the prediction pipeline is predict_FER.py's
(expression/inference/).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from expression.apps.cli import (ArgumentParser, UsageError, add_checkpoint_argument, add_device_argument, positive_int,
                                 resolve_device, run_main)
from expression.apps.webapp import DEFAULT_MAX_OUT_MB, DEFAULT_MAX_PIXELS, KEEP_SECONDS, default_workers
from expression.core.checkpoint import open_model
from expression.core.io import ensure_writable_dir
from expression.core.runtime import usable_cores
from expression.inference.classifier import DEFAULT_FACE_TTA, FACE_TTA

MAX_UPLOAD_MB = 100  # the upload itself; the pixel count is checked separately (--max-pixels)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: reachable from other machines)")
    parser.add_argument("--port", type=positive_int, default=7860, help="port to listen on")
    parser.add_argument("--root-path", default=None,
                        help="the URL path the app is served under behind a reverse proxy (e.g. /expressions)")
    parser.add_argument("--workers", type=positive_int, default=default_workers(),
                        help="requests served at once, each with its own copy of the model (default: this "
                             "machine's cores, at most 8); torch threads are shared out among them")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (needs the internet; off by default)")
    parser.add_argument("--out", default="runs/app",
                        help="folder for everything the app writes: examples, uploads, annotated photos, records")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="larger images are refused before they are decoded (decompression bombs)")
    parser.add_argument("--keep-minutes", type=positive_int, default=KEEP_SECONDS // 60,
                        help="uploads and results under --out are deleted this long after they were written "
                             "(changing the explanation of an upload works until then)")
    parser.add_argument("--max-out-mb", type=positive_int, default=DEFAULT_MAX_OUT_MB,
                        help="and the oldest of them sooner while they add up to more than this")
    add_device_argument(parser)
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
    import torch

    from expression.apps.webapp import WebApp, build_interface
    device = resolve_device(args.device)
    # workers x threads = cores: more intra-op threads than cores only spin
    torch.set_num_threads(max(1, usable_cores() // args.workers))
    model, ckpt, _ = open_model(args.checkpoint, device, real_photos=True)
    app = WebApp(model, ckpt, device, out_dir, max_pixels=args.max_pixels, tta=args.tta, workers=args.workers,
                 max_out_mb=args.max_out_mb, keep_seconds=60 * args.keep_minutes,
                 cache_dir=out_dir / "cache")
    demo, theme = build_interface(app)
    sweeper = threading.Thread(target=sweep_every_minute, args=(app,), daemon=True, name="sweep")
    sweeper.start()
    try:
        # Served: the examples, and gradio's cache (uploads and this session's results, in folders named
        # by a keyed hash of their content). Not served: <out>/requests/, whatever its name.
        _, local_url, share_url = demo.launch(
            server_name=args.host, server_port=args.port, share=args.share, theme=theme, ssr_mode=False,
            max_file_size=f"{MAX_UPLOAD_MB}mb", allowed_paths=[str(out_dir / "examples")],
            root_path=args.root_path, prevent_thread_lock=True, quiet=True, inbrowser=False)
    except OSError as err:  # port taken, or an address this machine does not have
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({err}): choose another --port or --host") \
            from None
    print(f"app: running on {local_url}" + (f" and {share_url}" if share_url else "") +
          f" with {args.workers} worker(s) (Ctrl-C stops it)", flush=True)
    demo.block_thread()
    return 0


def sweep_every_minute(app) -> None:
    """Uploads that were never analysed are deleted on time too (a request sweeps only when it runs)."""
    while True:
        time.sleep(60)
        try:
            app.sweep()
        except OSError as err:  # a full or read-only disk must not end the thread for good
            print(f"app: sweeping {app.out_dir}: {err}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
