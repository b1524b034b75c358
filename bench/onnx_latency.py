"""CPU inference speed of the exported ONNX model (onnxruntime) beside the same weights in PyTorch.

Two figures per runtime, measured in one run on the same inputs and thread count:
- single-image latency: median (and 90th percentile) of `--repeats` calls with a batch of 1, after
  `--warmup` untimed calls (first calls allocate and pick kernels);
- batch throughput: images per second for a batch of `--batch-size`, median of `--batch-repeats` calls.
The model's preprocessing is not timed: it is the same numpy/PIL work whichever runtime follows.

Examples:
    python bench/onnx_latency.py                                   # random-weight ResNet34, 48 px
    python bench/onnx_latency.py --checkpoint models/resnet34_demo.pt --repeats 200 --threads 4
    python bench/onnx_latency.py --repeats 5 --warmup 1 --batch-repeats 2   # a quick look
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from expression.apps.cli import ArgumentParser, UsageError, non_negative_int, positive_int, run_main
from expression.core.checkpoint import load_model, model_record
from expression.core.model import build_model
from expression.core.preprocessing import FER2013_CLASSES, Preprocessing
from expression.inference import onnx_export


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default="random",
                        help="model file, or 'random' for a random-weight ResNet34 (speed does not depend on weights)")
    parser.add_argument("--img-size", type=positive_int, default=48, help="input size for --checkpoint random")
    parser.add_argument("--repeats", type=positive_int, default=50, help="timed single-image calls")
    parser.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls before each measurement")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch for the throughput figure")
    parser.add_argument("--batch-repeats", type=positive_int, default=5, help="timed calls of one batch")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="intra-op threads for both runtimes; 0 = torch.get_num_threads() for both")
    return parser


def timed_interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Alternate the runtimes call by call (order swapped every round) so that load from other
    processes on a shared machine lands on both, instead of on whichever happened to run second."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def p90(values) -> float:
    return float(np.percentile(values, 90))


def main(args) -> int:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("the benchmark needs onnxruntime and onnx: pip install -r requirements-export.txt") from None
    if args.checkpoint == "random":
        torch.manual_seed(0)
        model = build_model("resnet34", len(FER2013_CLASSES), weights="none").eval()
        ckpt = model_record(model, Preprocessing(args.img_size), arch="resnet34", class_names=FER2013_CLASSES)
        source = "random"
    else:
        model, ckpt = load_model(args.checkpoint, "cpu")
        source = Path(args.checkpoint).name
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    size = int(ckpt["img_size"])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.onnx"
        onnx_export.export_onnx(model, ckpt, path, source=source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        start = time.perf_counter()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((args.batch_size, 3, size, size)).astype(np.float32)
    single = batch[:1].copy()
    batch_t, single_t = torch.from_numpy(batch), torch.from_numpy(single)

    def torch_run(x):
        with torch.inference_mode():
            return model(x)

    def ort_run(x):
        return session.run(["logits"], {"input": x})[0]

    diff = float(np.abs(ort_run(batch) - torch_run(batch_t).numpy()).max())
    lat = timed_interleaved({"PyTorch": lambda: torch_run(single_t), "onnxruntime": lambda: ort_run(single)},
                            args.repeats, args.warmup)
    thr = timed_interleaved({"PyTorch": lambda: torch_run(batch_t), "onnxruntime": lambda: ort_run(batch)},
                            args.batch_repeats, min(args.warmup, 1))
    results = {name: (statistics.median(lat[name]), p90(lat[name]), args.batch_size / statistics.median(thr[name]))
               for name in lat}

    print(f"{ckpt['arch']} ({source}), input (N, 3, {size}, {size}), {threads} thread(s), "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}; onnx session load {load_s * 1e3:.0f} ms; "
          f"max |logit diff| {diff:.1e}")
    print(f"{'runtime':<12} {'1 image median':>15} {'p90':>10} {f'batch {args.batch_size} img/s':>17}")
    for name, (median, tail, per_s) in results.items():
        print(f"{name:<12} {median * 1e3:>12.2f} ms {tail * 1e3:>7.2f} ms {per_s:>17.0f}")
    speedup = results["PyTorch"][0] / results["onnxruntime"][0]
    print(f"onnxruntime single-image speed-up: {speedup:.2f}x; batch throughput ratio "
          f"{results['onnxruntime'][2] / results['PyTorch'][2]:.2f}x "
          f"({args.repeats} single / {args.batch_repeats} batch repeats: noisy at small counts)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
