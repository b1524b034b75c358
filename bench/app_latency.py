"""Request latency of the browser app's handler (expression/webapp.py, what app.py runs per request),
without a browser or a server: a 512 px photo with one face (scikit-image's astronaut), as a file the
way an upload arrives, read, detected, classified, explained, drawn and its records written.

Configurations, interleaved round by round after `--warmup` untimed calls of each:
- plain: no heat map (explanation "none", no attention map);
- explained: the app's default explanation (expression.prediction's DEFAULT_CAM_METHOD / _LAYER);
- explained + attention: the page's default, the explanation and the attention map.
Prints p50 / p95 / mean / min in ms per configuration and the process's peak RSS; on a shared CPU
the minimum is the closest to an unloaded machine's figure.

    python bench/app_latency.py                          # the model app.py takes (the shipped one)
    python bench/app_latency.py --repeats 50 --checkpoint models/resnet34_fer2013.pt
"""
from __future__ import annotations

import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from expression.checkpoint import open_model
from expression.cli import ArgumentParser, add_checkpoint_argument, positive_int, resolve_device, run_main
from expression.webapp import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, WebApp


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--repeats", type=positive_int, default=30, help="timed calls per configuration")
    parser.add_argument("--warmup", type=positive_int, default=2, help="untimed calls per configuration first")
    parser.add_argument("--size", type=positive_int, default=512, help="photo side in px (the astronaut resized)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="where the model runs")
    return parser


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(args) -> int:
    device = resolve_device(args.device)
    model, ckpt, path = open_model(args.checkpoint, device, real_photos=True)
    rss_model = peak_rss_mib()
    configs = {
        "plain (no heat map)": dict(method="none", attention=False),
        f"explained ({DEFAULT_CAM_METHOD} {DEFAULT_CAM_LAYER})": dict(method=DEFAULT_CAM_METHOD, layer=DEFAULT_CAM_LAYER,
                                                                     attention=False),
        "explained + attention map": dict(method=DEFAULT_CAM_METHOD, layer=DEFAULT_CAM_LAYER, attention=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).resize((args.size, args.size), Image.BILINEAR).save(photo)
        app = WebApp(model, ckpt, device, Path(tmp) / "out")
        faces = len(app.analyse(str(photo), method="none", attention=False).records)
        times = {name: [] for name in configs}
        for name, options in configs.items():
            for _ in range(args.warmup):
                app.analyse(str(photo), **options)
        for _ in range(args.repeats):
            for name, options in configs.items():
                start = time.perf_counter()
                app.analyse(str(photo), **options)
                times[name].append(1000 * (time.perf_counter() - start))
    print(f"checkpoint {path}; {args.size}x{args.size} photo, {faces} face; device {device}, "
          f"{torch.get_num_threads()} torch threads; {cpu_name()}; "
          f"{args.repeats} timed calls each after {args.warmup} warm-up")
    print("| request | p50 ms | p95 ms | mean ms | min ms |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {percentile(values, 50):.0f} | {percentile(values, 95):.0f} | "
              f"{statistics.fmean(values):.0f} | {min(values):.0f} |")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (after loading the model: {rss_model:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
