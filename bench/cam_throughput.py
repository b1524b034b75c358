"""CAM throughput: the batched gradcam library vs pytorch-grad-cam vs the seed's one-map-per-pass loop.

Every image gets Grad-CAM and Grad-CAM++ at layer1..layer4 (8 maps) from a randomly initialised
ResNet34 (7 classes, eval mode) on FER-size 48x48 faces (one gray channel repeated to 3):

  (a) gradcam.explain: a batch of images, all 8 maps from one forward and one backward pass;
  (b) pytorch-grad-cam as its README shows: one object per method and layer (8 objects), each
      `with GradCAM(model=..., target_layers=[layer]) as cam:` run over the same batches;
  (c) the seed's loop (1Konny's gradcam_plus_plus-pytorch style): one image, one method, one layer
      per forward + full backward (parameter gradients included, model.zero_grad() each time).
      It is slow, so it is timed on the first --seed-n images and reported in images/s.

The same run checks that (a) equals (b) (max abs difference, tolerance --tol) and (c).

With --per-method (d): every gradcam method alone at layer1..layer4 (the layer-free guidedbackprop and
fullgrad once), the layer1..layer4 fusion, and the default map averaged over the flip and tencrop
test-time-augmentation views, each timed on the first --method-n images in images/s. Score-CAM and
Ablation-CAM take one forward pass per channel and image, so they get --slow-n images.

Examples:
    python bench/cam_throughput.py                          # N=512, batch 64, GPU if there is one
    python bench/cam_throughput.py --n 32 --seed-n 8        # a quick check that it runs
    python bench/cam_throughput.py --device cpu --threads 2 --skip-seed-loop
    python bench/cam_throughput.py --n 64 --skip-seed-loop --per-method --method-n 64 --slow-n 2
"""
import argparse
import time

import torch
import torchvision

from expression.apps.cli import add_device_argument
from expression.core.runtime import resolve_device
from gradcam import explain
from gradcam.base import to_input_size
from gradcam.methods import make_method

LAYERS = ("layer1", "layer2", "layer3", "layer4")
METHODS = ("gradcam", "gradcampp")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="CAM throughput benchmark", add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images explained by (a) and (b)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of (a) and (b)")
    add_device_argument(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-seed-loop", action="store_true", help="do not time (c)")
    parser.add_argument("--seed-n", type=int, default=64, help="images timed for the seed loop (c)")
    parser.add_argument("--tol", type=float, default=1e-5, help="max abs difference accepted for (a) vs (b)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for weights and images")
    parser.add_argument("--per-method", action="store_true", help="also time every method alone (d)")
    parser.add_argument("--method-n", type=int, default=64, help="images per method in (d)")
    parser.add_argument("--slow-n", type=int, default=4, help="images for Score-CAM and Ablation-CAM in (d)")
    return parser


def run_per_method(model, images, args, device):
    """(d): images/s of each method alone, of the fusion and of the TTA-averaged default map."""
    from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD
    from expression.core.tta import tta_geometry
    from gradcam import EXTRA_PASSES
    from gradcam import METHODS as ALL_METHODS
    from gradcam import explain_views

    slow = ("scorecam", "ablationcam")
    rows = []
    for method in ALL_METHODS:
        n = min(args.slow_n if method in slow else args.method_n, len(images))
        def job(x, method=method):
            for s in range(0, len(x), args.batch_size):
                explain(model, x[s:s + args.batch_size], layers=LAYERS, methods=(method,),
                        scorecam_batch_size=args.batch_size)
        _, t = timed(job, device, images[:n])
        rows.append((method, "layer1..layer4" if method not in ("guidedbackprop", "fullgrad") else "input",
                     n, n / t, EXTRA_PASSES.get(method, "shared forward + backward")))
    n = min(args.method_n, len(images))
    _, t = timed(lambda x: explain(model, x, layers=LAYERS, methods=("layercam",), fuse=True), device, images[:n])
    rows.append(("layercam + fused", "layer1..layer4", n, n / t, "fusion adds no pass"))
    for mode in ("flip", "tencrop"):
        views = tta_geometry(mode, images.shape[-1])
        _, t = timed(lambda x: explain_views(model, x, views, layers=(DEFAULT_CAM_LAYER,),
                                             methods=(DEFAULT_CAM_METHOD,)), device, images[:n])
        rows.append((f"{DEFAULT_CAM_METHOD}@{mode}", DEFAULT_CAM_LAYER, n, n / t,
                     f"{len(views)} views in one forward + backward"))
    print("(d) one method at a time:")
    print(f"    {'method':<22} {'layers':<15} {'images':>6} {'images/s':>9}  extra cost")
    for method, layers, n, r, cost in rows:
        print(f"    {method:<22} {layers:<15} {n:>6} {rate(r)}  {cost}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, images, batch_size):
    maps = {}
    for start in range(0, len(images), batch_size):
        res = explain(model, images[start:start + batch_size], layers=LAYERS, methods=METHODS)
        for key, value in res.maps.items():
            maps.setdefault(key, []).append(value)
    return {key: torch.cat(value) for key, value in maps.items()}


def run_reference(model, images, batch_size):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    classes = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus}
    maps = {}
    for method in METHODS:
        for layer in LAYERS:
            with classes[method](model=model, target_layers=[model.get_submodule(layer)]) as cam:
                parts = [torch.from_numpy(cam(input_tensor=images[s:s + batch_size], targets=None))
                         for s in range(0, len(images), batch_size)]
            maps[f"{method}/{layer}"] = torch.cat(parts)
    return maps


def seed_style_map(model, image, layer, method):
    """One map from one forward + full backward, hooks set up and torn down for it, as in the seed."""
    store = {}

    def forward_hook(module, inputs, output):
        store["a"] = output.detach()
        output.register_hook(lambda grad: store.__setitem__("g", grad.detach()))

    handle = model.get_submodule(layer).register_forward_hook(forward_hook)
    try:
        logits = model(image)
        model.zero_grad()
        logits[0, logits[0].argmax()].backward()
    finally:
        handle.remove()
    raw = torch.relu(make_method(method).cam(store["a"], store["g"]))  # same formulas as (a)
    return to_input_size(raw, tuple(image.shape[-2:])).cpu()


def run_seed_loop(model, images):
    maps = {f"{m}/{l}": [] for m in METHODS for l in LAYERS}
    for i in range(len(images)):
        for method in METHODS:
            for layer in LAYERS:
                maps[f"{method}/{layer}"].append(seed_style_map(model, images[i:i + 1], layer, method))
    return {key: torch.cat(value) for key, value in maps.items()}


def rate(r: float) -> str:
    return f"{r:9.1f}" if r >= 10 else f"{r:9.3f}"


def timed(fn, device, *args):
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def max_diff(a, b):
    return max((a[k] - b[k][:len(a[k])]).abs().max().item() for k in a)


def main(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet34(weights=None, num_classes=7).eval().to(device)
    # FER2013 faces are gray: one channel repeated, as the project's preprocessing does
    images = torch.rand(args.n, 1, 48, 48).expand(-1, 3, -1, -1).contiguous().to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; resnet34 (random init, 7 classes, eval); "
          f"N={args.n} images 3x48x48, batch {args.batch_size}; {len(METHODS) * len(LAYERS)} maps per "
          f"image ({', '.join(METHODS)} x {', '.join(LAYERS)})")

    try:
        import pytorch_grad_cam  # noqa: F401
        have_reference = True
    except ImportError:
        have_reference = False
        print("pytorch-grad-cam is not installed: (b) skipped (pip install grad-cam)")

    # Warm-up: first calls allocate, pick kernels and import lazily.
    warm = images[:min(args.batch_size, args.n)]
    run_ours(model, warm, args.batch_size)
    if have_reference:
        run_reference(model, warm[:2], args.batch_size)
    if not args.skip_seed_loop:
        run_seed_loop(model, images[:1])

    ours, t_ours = timed(run_ours, device, model, images, args.batch_size)
    rate_ours = args.n / t_ours
    print(f"(a) gradcam library, batched, 1 forward + 1 backward per batch: {rate(rate_ours)} images/s "
          f"({t_ours:.2f} s)")
    if have_reference:
        ref, t_ref = timed(run_reference, device, model, images, args.batch_size)
        rate_ref = args.n / t_ref
        print(f"(b) pytorch-grad-cam, 8 objects (method x layer), batched:     {rate(rate_ref)} images/s "
              f"({t_ref:.2f} s)")
    if not args.skip_seed_loop:
        seed_n = min(args.seed_n, args.n)
        seed, t_seed = timed(run_seed_loop, device, model, images[:seed_n])
        rate_seed = seed_n / t_seed
        print(f"(c) seed-style loop, 1 map per forward + backward:             {rate(rate_seed)} images/s "
              f"({t_seed:.2f} s, timed on the first {seed_n} images only)")

    ratios = []
    if have_reference:
        ratios.append(f"ours/(b) = {rate_ours / rate_ref:.1f}x")
    if not args.skip_seed_loop:
        ratios.append(f"ours/(c) = {rate_ours / rate_seed:.1f}x")
    if ratios:
        print("speed-up: " + ", ".join(ratios))

    if have_reference:
        diff = max_diff(ours, ref)
        over = sum(int(((ours[k] - ref[k]).abs().flatten(1).max(1).values > args.tol).sum()) for k in ours)
        verdict = "OK" if diff < args.tol else (
            f"{over} map(s) over; float32 round-off magnified by normalising nearly flat maps, see "
            "tests/test_gradcam_reference.py for the float64 check")
        print(f"check (a) vs (b): max |diff| = {diff:.2e} over {args.n * len(ours)} maps "
              f"(tolerance {args.tol:g}): {verdict}")
    if args.per_method:
        run_per_method(model, images, args, device)
    if not args.skip_seed_loop:
        print(f"check (a) vs (c): max |diff| = {max_diff(seed, ours):.2e} over {seed_n * len(seed)} maps "
              "(same formulas; float32 round-off of batched vs single-image convolutions)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
