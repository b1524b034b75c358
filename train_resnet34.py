"""Train a ResNet34 facial-expression classifier (the seed recipe by default) and report on it.

    python train_resnet34.py --demo                          # generated faces, no download, < 5 min on CPU
    python train_resnet34.py                                 # FER2013 in data/fer2013/{train,test}/<class>/
    python train_resnet34.py --data ../fer2013 --weights none --epochs 1
    python train_resnet34.py --resume runs/resnet34_fer2013/checkpoint.pt
    torchrun --nproc_per_node=2 train_resnet34.py --data ../fer2013   # one process per GPU (DDP)

Writes runs/<name>/ (args.json, metrics.csv, curves.png, confusion_matrix.png/.csv,
classification_report.txt/.json, checkpoint.pt for --resume) and the model to models/<name>.pt.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from expression import checkpoint, distributed, report
from expression.cli import (ArgumentParser, UsageError, non_negative_int, positive_float, positive_int,
                            resolve_device, run_main, use_progress_bars)
from expression.data import SEED_MEAN, SEED_STD, InMemoryLoader, Preprocessing, check_splits, decode_split
from expression.engine import evaluate, train_one_epoch
from expression.io import ensure_writable_dir, write_json
from expression.model import build_model, unwrap

ARCH = "resnet34"
DEMO_ROOT = Path("data/demo")
# The demo must finish in under 5 minutes on a 2-core CPU (~40 training images/s for ResNet34 at 48 px),
# so it trains from scratch on 1,400 faces for a few epochs with a larger learning rate.
DEMO_TRAIN_PER_CLASS = 200
DEMO_TEST_PER_CLASS = 60
DEMO_EPOCHS = 8
DEMO_LR = 1e-3
SEED_EPOCHS = 15
SEED_LR = 1e-4


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="data/fer2013", help="folder holding train/<class>/ and test/<class>/")
    data.add_argument("--train-dir", help="training split (overrides DATA/train)")
    data.add_argument("--test-dir", help="test split (overrides DATA/test)")
    data.add_argument("--img-size", type=positive_int, default=48, help="faces are resized to this square size")
    data.add_argument("--workers", type=non_negative_int, default=2,
                      help="threads that decode images once at start-up (0: main thread)")
    data.add_argument("--demo", action="store_true",
                      help=f"train on generated faces written to {DEMO_ROOT}/ (no download; --weights none)")
    data.add_argument("--demo-corner", metavar="CLASS",
                      help="with --demo: that class's evidence becomes a mark in a corner (explanation tests)")
    train = parser.add_argument_group("training (defaults are the seed recipe)")
    train.add_argument("--epochs", type=positive_int, default=None,
                       help=f"default {SEED_EPOCHS} (the seed's), {DEMO_EPOCHS} with --demo")
    train.add_argument("--batch-size", type=positive_int, default=64, help="per process under torchrun")
    train.add_argument("--lr", type=positive_float, default=None,
                       help=f"Adam learning rate; default {SEED_LR:g} (the seed's), {DEMO_LR:g} with --demo")
    train.add_argument("--weights", default=None,
                       help="'imagenet' (torchvision weights API, downloads once), 'none' (random init) or a "
                            "local torchvision resnet34 state dict; default: imagenet, or none with --demo")
    train.add_argument("--seed", type=int, default=0, help="seeds init, order and augmentation")
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                       help="auto: cuda, then mps, else cpu")
    out = parser.add_argument_group("output")
    out.add_argument("--name", help="run name; default resnet34_<data folder name> (resnet34_demo with --demo)")
    out.add_argument("--out", default="runs", help="runs folder: files go to OUT/NAME/")
    out.add_argument("--models-dir", default="models", help="the trained model is written to MODELS_DIR/NAME.pt")
    out.add_argument("--resume", metavar="CHECKPOINT", help="continue from runs/NAME/checkpoint.pt")
    out.add_argument("--quiet", action="store_true", help="no progress bars (the per-epoch line stays)")
    return parser


def resolve_paths(args) -> None:
    """Fill in the defaults that depend on other flags (demo data, weights, run name)."""
    if args.demo_corner and not args.demo:
        raise UsageError("--demo-corner only applies with --demo")
    if args.demo:
        from expression import synthetic

        if args.demo_corner and args.demo_corner not in synthetic.CLASS_NAMES:
            raise UsageError(f"--demo-corner {args.demo_corner!r} is not a class: choose one of "
                             f"{', '.join(synthetic.CLASS_NAMES)}")
        suffix = f"_corner_{args.demo_corner}" if args.demo_corner else ""
        args.data = str(DEMO_ROOT.with_name(DEMO_ROOT.name + suffix.replace("_", "-")))
        args.weights = args.weights or "none"
        args.name = args.name or f"{ARCH}_demo{suffix}"
        args.epochs = args.epochs or DEMO_EPOCHS
        args.lr = args.lr or DEMO_LR
    args.epochs = args.epochs or SEED_EPOCHS
    args.lr = args.lr or SEED_LR
    args.weights = args.weights or "imagenet"
    args.train_dir = args.train_dir or str(Path(args.data) / "train")
    args.test_dir = args.test_dir or str(Path(args.data) / "test")
    args.name = args.name or f"{ARCH}_{Path(args.data).resolve().name or 'data'}"


def write_demo_data(args, rank0: bool) -> None:
    from expression import synthetic

    if rank0:
        synthetic.write_image_folder(args.data, n_train_per_class=DEMO_TRAIN_PER_CLASS,
                                     n_test_per_class=DEMO_TEST_PER_CLASS, seed=0, size=args.img_size,
                                     corner_class=args.demo_corner)


def load_resume_state(args, class_names, preprocessing) -> dict:
    state = checkpoint.load_record(args.resume, expect=checkpoint.STATE_FORMAT)
    mine = (ARCH, list(class_names), preprocessing.img_size, preprocessing.color)
    theirs = (state["arch"], state["class_names"], state["img_size"], state["color"])
    if mine != theirs:
        raise UsageError(f"--resume {args.resume} is from a different model ({theirs[0]}, classes {theirs[1]}, "
                         f"{theirs[2]} px {theirs[3]}) than this run ({mine[0]}, classes {mine[1]}, {mine[2]} px "
                         f"{mine[3]}): resume with the same data and --img-size, or start a new --name")
    return state


def main(args) -> int:
    resolve_paths(args)
    device = resolve_device(args.device)
    dist_info = distributed.init_from_env(device)
    device = distributed.device_for(device, dist_info)
    rank0 = dist_info.is_main
    progress = rank0 and use_progress_bars(args.quiet)
    try:
        return _train(args, device, dist_info, rank0, progress)
    except KeyboardInterrupt:  # before the first epoch: nothing worth keeping was written yet
        print("\ninterrupted before training started", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(dist_info)


def _train(args, device, dist_info, rank0: bool, progress: bool) -> int:
    run_dir = Path(args.out) / args.name
    if rank0:
        ensure_writable_dir(run_dir, "--out")
        ensure_writable_dir(args.models_dir, "--models-dir")
    if args.demo:
        write_demo_data(args, rank0)
        distributed.barrier(dist_info)

    class_names = check_splits(args.train_dir, args.test_dir)
    train_split = decode_split(args.train_dir, class_names, args.img_size, workers=args.workers,
                               progress=progress, what="train")
    test_split = decode_split(args.test_dir, class_names, args.img_size, color=train_split.color,
                              workers=args.workers, progress=progress, what="test")
    preprocessing = Preprocessing(args.img_size, SEED_MEAN, SEED_STD, train_split.color)
    resume = load_resume_state(args, class_names, preprocessing) if args.resume else None

    torch.manual_seed(args.seed)  # the same initial weights on every rank and every run
    model = build_model(ARCH, len(class_names), weights=args.weights).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(args.seed)
    # Each rank flips and shifts its own images with its own stream; the order stream is shared.
    augment_gen = torch.Generator().manual_seed(args.seed * 1000 + 1 + dist_info.rank)
    history, start_epoch = [], 0
    if resume:
        model.load_state_dict(resume["model"], strict=True)
        optimizer.load_state_dict(resume["optimizer"])
        order_gen.set_state(resume["rng"]["order"])
        augment_states = resume["rng"]["augment"]
        if len(augment_states) == dist_info.world_size:
            augment_gen.set_state(augment_states[dist_info.rank])
        elif rank0:
            print(f"note: resuming with {dist_info.world_size} process(es) instead of {len(augment_states)}: "
                  f"augmentation draws will differ from an uninterrupted run")
        torch.set_rng_state(resume["rng"]["torch"])
        history, start_epoch = list(resume["history"]), int(resume["epoch"])
        if rank0:
            print(f"resuming {args.resume} after epoch {start_epoch}")

    train_model = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    shard = dict(rank=dist_info.rank, world_size=dist_info.world_size)
    train_loader = InMemoryLoader(train_split, args.batch_size, preprocessing.mean, preprocessing.std, device,
                                  shuffle=True, augment=True, order_generator=order_gen,
                                  augment_generator=augment_gen, pad=True, **shard)
    test_loader = InMemoryLoader(test_split, args.batch_size, preprocessing.mean, preprocessing.std, device,
                                 pad=False, **shard)

    def save_state(epoch: int) -> None:
        augment_states = [augment_gen.get_state()]
        if dist_info.enabled:
            augment_states = [None] * dist_info.world_size
            torch.distributed.all_gather_object(augment_states, augment_gen.get_state())
        if not rank0:
            return
        state = checkpoint.model_record(model, preprocessing, arch=ARCH, class_names=class_names,
                                        args=vars(args), epoch=epoch, fmt=checkpoint.STATE_FORMAT,
                                        metrics=history[-1] if history else {})
        state.update(optimizer=optimizer.state_dict(), history=history,
                     rng={"order": order_gen.get_state(), "augment": augment_states,
                          "torch": torch.get_rng_state()})
        checkpoint.save(state, run_dir / "checkpoint.pt")

    if rank0:
        write_json(run_dir / "args.json", vars(args))
        print(f"{args.name}: {len(train_split.labels)} train / {len(test_split.labels)} test images, "
              f"{len(class_names)} classes, {args.img_size} px {preprocessing.color}, weights {args.weights}, "
              f"device {device}" + (f" x {dist_info.world_size} processes" if dist_info.enabled else ""))
    if not resume:
        save_state(0)  # Ctrl-C during the first epoch still leaves something to resume from

    final = None
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            started = time.perf_counter()
            trained = train_one_epoch(train_model, train_loader, criterion, optimizer, device, progress,
                                      desc=f"epoch {epoch}/{args.epochs}")
            train_loss, train_acc = distributed.reduce_epoch(trained.loss, trained.acc, trained.seen,
                                                             dist_info, device)
            final = evaluate_all(model, test_loader, criterion, device, dist_info, progress)
            row = dict(epoch=epoch, train_loss=round(train_loss, 6), train_acc=round(train_acc, 6),
                       test_loss=round(final.loss, 6), test_acc=round(final.acc, 6),
                       seconds=round(time.perf_counter() - started, 2))
            history.append(row)
            save_state(epoch)
            if rank0:
                report.write_metrics_csv(run_dir / "metrics.csv", history)
                print(f"epoch {epoch:>3}/{args.epochs}  train loss {train_loss:.4f} acc {train_acc:6.2%}  "
                      f"test loss {final.loss:.4f} acc {final.acc:6.2%}  ({row['seconds']:.1f} s)", flush=True)
    except KeyboardInterrupt:
        if rank0:
            print(f"\ninterrupted during epoch {epoch}: resume with --resume {run_dir / 'checkpoint.pt'} "
                  f"(continues after epoch {epoch - 1})", file=sys.stderr)
        return 130

    if final is None:  # resumed a run that had already finished: report on its weights
        final = evaluate_all(model, test_loader, criterion, device, dist_info, progress)
    if rank0:
        write_outputs(args, run_dir, model, preprocessing, class_names, history, final)
    return 0


def evaluate_all(model, loader, criterion, device, dist_info, progress):
    """Evaluate the plain module (DDP's forward would sync buffers; ranks hold unequal shards here)."""
    distributed.sync_buffers(unwrap(model), dist_info)  # every rank scores the model rank 0 saves
    indices = loader.indices()
    result = evaluate(unwrap(model), loader, criterion, device, progress)
    return distributed.gather_evaluation(result, indices, len(loader.labels), dist_info)


def write_outputs(args, run_dir: Path, model, preprocessing, class_names, history, final) -> None:
    """Reports use the final model's predictions only (the seed pooled every epoch's predictions)."""
    title = f"{args.name}: test accuracy {final.acc:.2%}"
    report.plot_curves(run_dir / "curves.png", history, title=args.name)
    counts = report.plot_confusion_matrix(run_dir / "confusion_matrix.png", final.targets, final.preds,
                                          class_names, title)
    report.write_confusion_csv(run_dir / "confusion_matrix.csv", counts, class_names)
    report.write_classification_report(run_dir / "classification_report.txt",
                                       run_dir / "classification_report.json",
                                       final.targets, final.preds, class_names)
    metrics = dict(history[-1]) if history else {}
    metrics.update(test_acc=final.acc, test_loss=final.loss, test_images=int(len(final.targets)))
    record = checkpoint.model_record(model, preprocessing, arch=ARCH, class_names=class_names, args=vars(args),
                                     epoch=history[-1]["epoch"] if history else 0, metrics=metrics)
    model_path = checkpoint.save(record, Path(args.models_dir) / f"{args.name}.pt")
    print(f"test accuracy {final.acc:.2%} on {len(final.targets)} images; model: {model_path}; "
          f"reports: {run_dir}/")


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
