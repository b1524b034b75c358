"""Training throughput: the seed's data pipeline against ours, same model, batch and machine, one run.

(a) seed: torchvision ImageFolder + PIL decode and transforms per image per step, DataLoader with
    0 workers (as the seed ran);
(b) ours: every image decoded once into a uint8 tensor, flip + translate applied to whole batches.
Both feed the same ResNet34 training step (forward, backward, Adam). The data path alone (no model) is
timed too, because on a GPU the model step is fast and the data path decides the speed.

    python bench/train_throughput.py --data ../shared/fer2013            # CPU, ~5 minutes
    python bench/train_throughput.py --data ../shared/fer2013 --device cuda --batches 200
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

from expression.apps.cli import ArgumentParser, add_device_argument, positive_int, run_main
from expression.core.datasets import check_splits, decode_split
from expression.core.model import build_model
from expression.core.preprocessing import SEED_MEAN, SEED_STD
from expression.core.runtime import resolve_device
from expression.training.loader import InMemoryLoader


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/fer2013", help="ImageFolder root with train/")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--img-size", type=positive_int, default=48)
    parser.add_argument("--batches", type=positive_int, default=30, help="timed training batches per pipeline")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed batches first")
    parser.add_argument("--data-batches", type=positive_int, default=100, help="timed batches, data path alone")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="alternate (a) and (b) this many times, so drift hits both")
    add_device_argument(parser)
    return parser


def seed_loader(train_dir, img_size, batch_size):
    tf = transforms.Compose([
        transforms.Resize((img_size, img_size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomAffine(degrees=0, translate=(0.1, 0.1)),
        transforms.ToTensor(),
        transforms.Normalize(SEED_MEAN, SEED_STD),
    ])
    return torch.utils.data.DataLoader(datasets.ImageFolder(train_dir, tf), batch_size=batch_size,
                                       shuffle=True, num_workers=0)


def batches_forever(loader):
    while True:
        yield from loader


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(batches, model, optimizer, device, warmup, count) -> float:
    """Images per second of full training steps fed by `batches`."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen, started = 0, None
    for step in range(warmup + count):
        if step == warmup:
            sync(device)
            started, seen = time.perf_counter(), 0
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    sync(device)
    return seen / (time.perf_counter() - started)


def time_data_only(batches, device, count) -> float:
    seen, started = 0, time.perf_counter()
    for _ in range(count):
        images, _ = next(batches)
        images = images.to(device)
        seen += len(images)
    sync(device)
    return seen / (time.perf_counter() - started)


def main(args) -> int:
    device = resolve_device(args.device)
    train_dir = Path(args.data) / "train"
    classes = check_splits(train_dir, Path(args.data) / "test")
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.img_size} px, data {train_dir}")

    started = time.perf_counter()
    split = decode_split(train_dir, classes, args.img_size, workers=2)
    decode_seconds = time.perf_counter() - started
    print(f"ours: decoded {len(split.labels)} images once in {decode_seconds:.1f} s (one-off, at start-up)")

    seed_batches = batches_forever(seed_loader(train_dir, args.img_size, args.batch_size))
    ours = InMemoryLoader(split, args.batch_size, SEED_MEAN, SEED_STD, device, shuffle=True, augment=True,
                          order_generator=torch.Generator().manual_seed(0),
                          augment_generator=torch.Generator().manual_seed(1))
    our_batches = batches_forever(ours)

    seed_data = time_data_only(seed_batches, device, args.data_batches)
    our_data = time_data_only(our_batches, device, args.data_batches)
    print(f"data path alone:   seed {seed_data:10.0f} img/s   ours {our_data:10.0f} img/s   "
          f"ratio {our_data / seed_data:.1f}x")

    torch.manual_seed(0)
    model = build_model("resnet34", len(classes), weights="none").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    seed_rates, our_rates = [], []
    for round_index in range(args.rounds):
        seed_rates.append(time_training(seed_batches, model, optimizer, device, args.warmup, args.batches))
        our_rates.append(time_training(our_batches, model, optimizer, device, args.warmup, args.batches))
        print(f"round {round_index + 1}: training  seed {seed_rates[-1]:8.1f} img/s   ours {our_rates[-1]:8.1f} img/s"
              f"   ratio {our_rates[-1] / seed_rates[-1]:.2f}x", flush=True)
    best_seed, best_ours = max(seed_rates), max(our_rates)
    print(f"training (best round): seed {best_seed:.1f} img/s, ours {best_ours:.1f} img/s, "
          f"ratio {best_ours / best_seed:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
