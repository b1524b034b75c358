"""Disk and memory of app.py served over many requests: RSS of the server at start, after N mixed
requests (the large and the hostile cases included) and its peak, and the bytes under --out after them
(uploads and results are deleted --keep-minutes after they were written, the oldest sooner beyond
--max-out-mb).

The mix, cycled: the astronaut as 8-bit, 16-bit and RGBA PNGs and as an animated GIF, the three drawn
faces, a photo without a face, a --large-side x --large-side JPEG (decoded: ~100 MB at 6000 px), a
13000 x 13000 gray PNG (164 KB, refused from its header), a header claiming 10 gigapixels, a text file
named .png; and three bare uploads of --bare-mb MB each, never analysed.

    python bench/app_resources.py                                   # 100 requests, --workers 2
    python bench/app_resources.py --requests 12 --large-side 1500   # a quick check that it runs
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from app_latency import cpu_name
from PIL import Image

from expression.apps.app_client import AppClient, serve
from expression.apps.cli import ArgumentParser, add_checkpoint_argument, positive_int, run_main
from expression.apps.webapp import default_workers
from expression.core.checkpoint import choose_model
from expression.demo.synthetic import png_claiming


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--requests", type=positive_int, default=100, help="requests, the mix cycled")
    parser.add_argument("--workers", type=positive_int, default=2, help="app.py --workers")
    parser.add_argument("--large-side", type=positive_int, default=6000, help="px side of the large photo")
    parser.add_argument("--bare-mb", type=positive_int, default=50, help="size of each never-analysed upload")
    parser.add_argument("--max-out-mb", type=positive_int, default=100, help="app.py --max-out-mb")
    parser.add_argument("--max-rss-growth-mib", type=positive_int, default=300,
                        help="the stated bound: the server's RSS after the requests may exceed its start by this "
                             "much (exit 1 if it does, or if --out ends over its cap)")
    return parser


def mixed_files(folder: Path, large_side: int) -> list[Path]:
    from expression.apps.webapp import write_examples
    astro = Image.fromarray(skimage.data.astronaut())
    files = {"astronaut.png": lambda p: astro.save(p),
             "astronaut_16bit.png": lambda p: Image.fromarray(
                 np.asarray(astro.convert("L")).astype(np.uint16) * 257).save(p),
             "astronaut_rgba.png": lambda p: astro.convert("RGBA").save(p),
             "astronaut.gif": lambda p: astro.save(p, save_all=True, append_images=[astro.rotate(180)] * 20),
             "coffee.png": lambda p: Image.fromarray(skimage.data.coffee()).save(p),
             "large.jpg": lambda p: astro.resize((large_side, large_side), Image.BICUBIC).save(p, quality=90),
             "huge_gray.png": lambda p: Image.new("L", (13000, 13000)).save(p),
             "bomb.png": lambda p: p.write_bytes(png_claiming(100_000, 100_000)),
             "fake.png": lambda p: p.write_text("not a picture\n")}
    paths = []
    for name, write in files.items():
        write(folder / name)
        paths.append(folder / name)
    paths.insert(4, write_examples(folder / "examples")[-1])  # the three drawn faces
    return paths


def disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def measure(server, folder: Path, out: Path, files, requests: int, bare_mb: int) -> dict:
    """The figures for a running server whose --out is `out`."""
    client = AppClient(server.url)
    figures = {"rss_start": server.rss_mib()[0], "disk_start": disk_mib(out)}
    for i in range(3):  # different bytes each: gradio names uploads by their content
        bare = folder / f"bare{i}.png"
        bare.write_bytes(os.urandom(bare_mb * 2 ** 20))
        client.upload(bare)
    figures["disk_after_bare_uploads"] = disk_mib(out)
    start = time.perf_counter()
    refused = 0
    for i in range(requests):
        status = client.analyse(files[i % len(files)], "hirescam", "layer1", True)[3]
        refused += status.startswith("**Could not analyse")
    figures.update(seconds=time.perf_counter() - start, refused=refused, disk_after=disk_mib(out))
    figures["rss_after"], figures["rss_peak"] = server.rss_mib()
    return figures


def main(args) -> int:
    path = choose_model(args.checkpoint, real_photos=True)[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = mixed_files(folder, args.large_side)
        out = folder / "out"
        with serve(["--checkpoint", path, "--device", "cpu", "--workers", args.workers, "--out", out,
                    "--max-out-mb", args.max_out_mb], tmp) as server:
            time.sleep(2)  # let start-up settle
            f = measure(server, folder, out, files, args.requests, args.bare_mb)
    print(f"checkpoint {path}; app.py --workers {args.workers} --max-out-mb {args.max_out_mb}; {args.requests} "
          f"requests cycling {len(files)} files ({', '.join(p.name for p in files)}), the page's default request, "
          f"in {f['seconds']:.0f} s ({f['refused']} refused); {cpu_name()}, {default_workers()} cores")
    print("| | at start | after | peak |")
    print("|---|---:|---:|---:|")
    print(f"| server RSS MiB | {f['rss_start']:.0f} | {f['rss_after']:.0f} | {f['rss_peak']:.0f} |")
    print(f"| --out MiB | {f['disk_start']:.1f} | {f['disk_after']:.1f} | "
          f"{f['disk_after_bare_uploads']:.1f} after 3 bare uploads of {args.bare_mb} MB |")
    growth = f["rss_after"] - f["rss_start"]
    within = growth <= args.max_rss_growth_mib and f["disk_after"] <= args.max_out_mb
    print(f"RSS growth {growth:.0f} MiB (bound {args.max_rss_growth_mib}), --out {f['disk_after']:.1f} MiB "
          f"(cap {args.max_out_mb}): {'within' if within else 'OVER'} the stated bounds")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
