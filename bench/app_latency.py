"""Request latency of the browser app's handler (expression/apps/webapp.py, what app.py runs per request),
without a browser or a server: a 512 px photo with one face (scikit-image's astronaut), as a file the
way an upload arrives, read, detected, classified, explained, drawn and its records written.

Configurations, interleaved round by round after `--warmup` untimed calls of each:
- plain: no heat map (explanation "none", no attention map);
- explained: the app's default explanation (expression.core.cam_policy's DEFAULT_CAM_METHOD / _LAYER);
- explained + attention: the page's default, the explanation and the attention map.
Prints p50 / p95 / mean / min in ms per configuration and the process's peak RSS; on a shared CPU
the minimum is the closest to an unloaded machine's figure.

With --clients N: app.py itself is served (once per --workers value, one after the other) and N clients
send the page's default request (explanation + attention map) at the same time over HTTP, as browsers
do; p50 / p95 of what each client waited, throughput and the server's peak RSS, side by side.

    python bench/app_latency.py                          # the model app.py takes (the shipped one)
    python bench/app_latency.py --repeats 50 --checkpoint models/resnet34_fer2013.pt
    python bench/app_latency.py --clients 8 --workers 1,2 --requests 64
"""
from __future__ import annotations

import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from expression.apps.cli import (ArgumentParser, add_checkpoint_argument, add_device_argument, positive_int,
                                 resolve_device, run_main)
from expression.apps.webapp import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, WebApp, default_workers
from expression.core.checkpoint import open_model


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--repeats", type=positive_int, default=30, help="timed calls per configuration")
    parser.add_argument("--warmup", type=positive_int, default=2, help="untimed calls per configuration first")
    parser.add_argument("--size", type=positive_int, default=512, help="photo side in px (the astronaut resized)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--clients", type=int, default=0,
                        help="0: the handler in this process; N: N clients at once against app.py served")
    parser.add_argument("--workers", default=f"1,{default_workers()}",
                        help="with --clients: app.py --workers values compared, comma-separated")
    parser.add_argument("--requests", type=positive_int, default=64,
                        help="with --clients: timed requests per --workers value, shared among the clients")
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


def concurrent_requests(url: str, photo: Path, clients: int, requests: int, warmup: int = 1) -> list[float]:
    """`clients` users, each with its own connection, send the page's default request over and over, all
    starting together after `warmup` untimed requests each; -> the `requests` latencies in ms."""
    from expression.apps.app_client import AppClient
    users = [AppClient(url) for _ in range(clients)]
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    barrier, times, errors = threading.Barrier(clients), [], []

    def user(i):
        try:
            for _ in range(warmup):
                users[i].analyse(photo, DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER, True)
            barrier.wait()
            for _ in range(shares[i]):
                start = time.perf_counter()
                status = users[i].analyse(photo, DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER, True)[3]
                times.append(1000 * (time.perf_counter() - start))
                if "face(s)" not in status:
                    raise RuntimeError(f"unexpected answer: {status}")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=user, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return times


def served(args, path: Path, device: str) -> int:
    from expression.apps.app_client import serve
    from expression.apps.cli import UsageError
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        raise UsageError(f"--workers wants comma-separated counts, got {args.workers!r}") from None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).resize((args.size, args.size), Image.BILINEAR).save(photo)
        for workers in counts:
            with serve(["--checkpoint", path, "--device", device, "--workers", workers,
                        "--out", Path(tmp) / f"out{workers}"], tmp) as server:
                start = time.perf_counter()
                times = concurrent_requests(server.url, photo, args.clients, args.requests, args.warmup)
                wall = time.perf_counter() - start
                rows.append((workers, times, len(times) / wall, server.rss_mib()[1]))
    print(f"checkpoint {path}; app.py served on 127.0.0.1, {args.clients} clients at once, the page's default "
          f"request ({DEFAULT_CAM_METHOD} {DEFAULT_CAM_LAYER} + attention map) on a {args.size}x{args.size} "
          f"photo; {args.requests} timed requests per row after {args.warmup} per client; device {device}; "
          f"{cpu_name()}, {default_workers()} cores")
    print("| --workers | p50 ms | p95 ms | mean ms | requests/s | server peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for workers, times, rate, rss in rows:
        print(f"| {workers} | {percentile(times, 50):.0f} | {percentile(times, 95):.0f} | "
              f"{statistics.fmean(times):.0f} | {rate:.2f} | {rss:.0f} |")
    return 0


def main(args) -> int:
    device = resolve_device(args.device)
    if args.clients:
        from expression.core.checkpoint import choose_model
        return served(args, choose_model(args.checkpoint, real_photos=True)[0], device)
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
