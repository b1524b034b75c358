"""A training run from parsed flags: what `python train_resnet34.py` does after parsing its command line.

`run(args)` fills in the defaults that depend on other flags, decodes the splits, builds the model,
optimizer, schedule and weight average of the chosen recipe, trains with a checkpoint per epoch
(`--resume` continues exactly), and writes the reports and the model. The building blocks are the
core modules' (expression.data, model, recipe, engine, training, checkpoint, report); this module
only wires them together in the order a run needs, as torchvision's references/classification
train.py does in its main().

    import train_resnet34                 # the script holds the flags and their defaults
    from expression.training import trainer
    args = train_resnet34.get_args_parser().parse_args(["--demo"])
    trainer.run(args)   # 0, or 130 when interrupted (resume with --resume)
"""
from __future__ import annotations

import copy
import functools
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from expression.core import checkpoint
from expression.training import distributed
from expression.training import recipe
from expression.core import report
from expression.training.augment import mix_batch
from expression.apps.cli import UsageError, resolve_device, use_progress_bars
from expression.core.errors import InputError
from expression.training.augment import Augmentation
from expression.training.loader import InMemoryLoader
from expression.core.preprocessing import Preprocessing
from expression.core.datasets import check_splits, decode_split, stratified_split
from expression.training.engine import NonFiniteLoss, train_one_epoch
from expression.core.io import WriteError, ensure_writable_dir, write_json
from expression.core.model import build_model
from expression.training.state import TrainingState, evaluate_all

ARCH = "resnet34"
DEMO_ROOT = Path("data/demo")
# The demo must finish in under 5 minutes on a 2-core CPU (~40 training images/s for ResNet34 at 48 px),
# so it trains from scratch on 1,400 faces for a few epochs with a larger learning rate.
DEMO_TRAIN_PER_CLASS = 200
DEMO_TEST_PER_CLASS = 60
DEMO_EPOCHS = 8
DEMO_LR = 1e-3


def resolve_paths(args) -> None:
    """Fill in the defaults that depend on other flags (demo data, weights, run name)."""
    if args.init and args.weights is not None:
        raise UsageError(f"--init and --weights both choose the starting weights: drop --weights {args.weights} "
                         f"to start from {args.init}")
    if args.init:
        args.weights = "none"  # the network is built empty, then takes the --init file's weights
    if args.demo_corner and not args.demo:
        raise UsageError("--demo-corner only applies with --demo")
    if args.demo:
        from expression.demo import synthetic

        if args.demo_corner and args.demo_corner not in synthetic.CLASS_NAMES:
            raise UsageError(f"--demo-corner {args.demo_corner!r} is not a class: choose one of "
                             f"{', '.join(synthetic.CLASS_NAMES)}")
        suffix = f"_corner_{args.demo_corner}" if args.demo_corner else ""
        args.data = str(DEMO_ROOT.with_name(DEMO_ROOT.name + suffix.replace("_", "-")))
        args.weights = args.weights or "none"
        args.name = args.name or f"{ARCH}_demo{suffix}"
        if args.recipe == "seed":
            args.epochs = args.epochs or DEMO_EPOCHS
            args.lr = args.lr or DEMO_LR
    if args.val_dir and args.val_split:
        raise UsageError("--val-dir and --val-split both choose the validation images: give one")
    recipe.apply_recipe(args)
    if args.val_dir:
        args.val_split = 0.0  # the folder replaces the preset's held-out fraction
    if args.schedule == "plateau" and not (args.val_split or args.val_dir):
        raise UsageError("--schedule plateau watches the validation loss: add --val-split (e.g. 0.1) or --val-dir")
    if args.nesterov and args.optimizer != "sgd":
        raise UsageError(f"--nesterov applies to --optimizer sgd, not {args.optimizer}")
    if args.batch_size == 1 and args.img_size <= 32:
        # a ResNet halves the input five times: up to 32 px layer4 is 1x1, and BatchNorm cannot train on
        # one value per channel
        raise UsageError(f"--batch-size 1 with --img-size {args.img_size} leaves BatchNorm one value per channel "
                         f"in layer4 (1x1 there): use --batch-size 2 or more, or --img-size 33 or more")
    args.weights = args.weights or "imagenet"
    args.train_dir = args.train_dir or str(Path(args.data) / "train")
    args.test_dir = args.test_dir or str(Path(args.data) / "test")
    args.name = args.name or f"{ARCH}_{Path(args.data).resolve().name or 'data'}"


def write_demo_data(args, rank0: bool) -> None:
    from expression.demo import synthetic

    if rank0:
        try:
            synthetic.write_image_folder(args.data, n_train_per_class=DEMO_TRAIN_PER_CLASS,
                                         n_test_per_class=DEMO_TEST_PER_CLASS, seed=0, size=args.img_size,
                                         corner_class=args.demo_corner)
        except OSError as err:  # written in a temp folder moved into place: nothing half-written is left
            raise UsageError(f"cannot write the demo faces to {args.data} ({err.strerror or err}): nothing was "
                             f"half-written; free space or fix the folder's permissions and run again") from None


def check_splits_or_say_which_flag(args) -> list[str]:
    """The class names; a missing or malformed split names the flag that chose it."""
    try:
        class_names = check_splits(args.train_dir, args.test_dir)
    except InputError as err:
        raise UsageError(f"{err}; pass --data DIR holding train/<class>/ and test/<class>/ (see README: "
                         f"Getting FER2013), or try --demo") from None
    if args.val_dir:
        try:  # the same classes as train, none empty
            check_splits(args.train_dir, args.val_dir, other="validation")
        except InputError as err:
            raise UsageError(f"--val-dir: {err}; or use --val-split F instead") from None
    return class_names


def load_resume_state(args, class_names, preprocessing) -> dict:
    state = checkpoint.load_record(args.resume, expect=checkpoint.STATE_FORMAT, option="resume")
    mine = (ARCH, list(class_names), preprocessing.img_size, preprocessing.color)
    theirs = (state["arch"], state["class_names"], state["img_size"], state["color"])
    if mine != theirs:
        raise UsageError(f"--resume {args.resume} is from a different model ({theirs[0]}, classes {theirs[1]}, "
                         f"{theirs[2]} px {theirs[3]}) than this run ({mine[0]}, classes {mine[1]}, {mine[2]} px "
                         f"{mine[3]}): resume with the same data and --img-size, or start a new --name")
    saved_optimizer = dict(state.get("args") or {}).get("optimizer", args.optimizer)
    if saved_optimizer != args.optimizer:  # its saved moments cannot seed another optimizer
        raise UsageError(f"--resume {args.resume} was trained with --optimizer {saved_optimizer}, not "
                         f"{args.optimizer}: resume with --optimizer {saved_optimizer}, or start a new --name")
    return state


def load_init(args, class_names, preprocessing) -> tuple[dict, list[dict]]:
    """The --init checkpoint (model file or training state) and the lineage a run from it records.
    Its network, classes and preprocessing must be this run's: the weights are only meaningful there."""
    record = checkpoint.load_record(args.init, option="init")
    differs = checkpoint.mismatch(record, ARCH, class_names, preprocessing)
    if differs:
        raise UsageError(f"--init {args.init} does not match this run ({differs}): start from a model trained "
                         f"with the same data classes, --img-size and --norm, or pass those flags to match it")
    return record, checkpoint.lineage_of(args.init, record)


def diverged(args, run_dir: Path, epoch: int, why: str) -> UsageError:
    """The one line a run that computed inf or nan ends with; nothing of the epoch is saved."""
    kept = f"; {run_dir / 'checkpoint.pt'} still holds epoch {epoch - 1}" if epoch > 1 else ""
    return UsageError(f"training diverged in epoch {epoch}: {why} (--lr {args.lr:g}): try a lower "
                      f"--lr or --schedule onecycle; no model was written{kept}")


def run(args, command: str = "") -> int:
    """Train as the parsed flags say; returns the exit status (130: interrupted, resumable). `command`:
    the command line to record in the model (train_resnet34.main gives it)."""
    resolve_paths(args)
    device = resolve_device(args.device)
    dist_info = distributed.init_from_env(device)
    device = distributed.device_for(device, dist_info)
    rank0 = dist_info.is_main
    progress = rank0 and use_progress_bars(args.quiet)
    try:
        return _train(args, device, dist_info, rank0, progress, command)
    except WriteError as err:  # nothing half-written (atomic writes): say what is on disk and how to go on
        raise UsageError(f"{err}. {what_survives(args, command)}") from None
    except KeyboardInterrupt:  # before the first epoch: nothing worth keeping was written yet
        print("\ninterrupted before training started", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(dist_info)


def _train(args, device, dist_info, rank0: bool, progress: bool, command: str) -> int:
    run_dir = Path(args.out) / args.name
    if rank0:
        ensure_writable_dir(run_dir, "--out")
        ensure_writable_dir(args.models_dir, "--models-dir")
    if args.demo:
        write_demo_data(args, rank0)
        distributed.barrier(dist_info)

    class_names = check_splits_or_say_which_flag(args)
    train_split = decode_split(args.train_dir, class_names, args.img_size, workers=args.workers,
                               progress=progress, what="train")
    test_split = decode_split(args.test_dir, class_names, args.img_size, color=train_split.color,
                              workers=args.workers, progress=progress, what="test")
    val_split = None
    if args.val_dir:
        val_split = decode_split(args.val_dir, class_names, args.img_size, color=train_split.color,
                                 workers=args.workers, progress=progress, what="val")
    elif args.val_split:  # the same seeded split on every rank and every resume
        keep, held_out = stratified_split(train_split.labels, args.val_split, args.seed)
        train_split, val_split = train_split.subset(keep), train_split.subset(held_out)
    mean, std = recipe.NORMS[args.norm]
    preprocessing = Preprocessing(args.img_size, mean, std, train_split.color)
    resume = load_resume_state(args, class_names, preprocessing) if args.resume else None
    init, lineage = load_init(args, class_names, preprocessing) if args.init else (None, [])
    if resume and resume.get("lineage") is not None:  # a resumed cycle keeps the lineage it started with
        lineage = list(resume["lineage"])

    torch.manual_seed(args.seed)  # the same initial weights on every rank and every run
    model = build_model(ARCH, len(class_names), weights=args.weights)
    if init:
        checkpoint.load_weights(model, init, args.init, option="init")
        if rank0:
            print(f"starting from {args.init} ({lineage[-1]['total_epochs']} epochs behind its weights, "
                  f"sha256 {lineage[-1]['sha256'][:12]}): a fresh optimizer and schedule")
    model = model.to(device)
    if recipe.use_channels_last(args.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = recipe.resolve_amp(args.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    order_gen = torch.Generator().manual_seed(args.seed)
    # Each rank flips and shifts its own images with its own stream; the order stream is shared.
    augment_gen = torch.Generator().manual_seed(args.seed * 1000 + 1 + dist_info.rank)
    shard = dict(rank=dist_info.rank, world_size=dist_info.world_size)
    augmentation = Augmentation(translate=args.translate, rotate=args.rotate, scale=args.scale, erase=args.erase)
    train_loader = InMemoryLoader(train_split, args.batch_size, preprocessing.mean, preprocessing.std, device,
                                  shuffle=True, augment=augmentation, order_generator=order_gen,
                                  augment_generator=augment_gen, pad=True,
                                  balanced=args.class_balance == "sampler", **shard)
    test_loader = InMemoryLoader(test_split, args.batch_size, preprocessing.mean, preprocessing.std, device,
                                 pad=False, **shard)
    val_loader = val_split and InMemoryLoader(val_split, args.batch_size, preprocessing.mean, preprocessing.std,
                                              device, pad=False, **shard)

    optimizer = recipe.build_optimizer(args.optimizer, model, args.lr, args.weight_decay, args.momentum,
                                       bool(args.nesterov))
    schedule = recipe.LrSchedule(optimizer, args.schedule, len(train_loader), args.epochs, args.warmup_epochs)
    weights = (recipe.class_weights(train_split.labels, len(class_names)).to(device)
               if args.class_balance == "weighted-loss" else None)
    criterion = recipe.build_criterion(args.label_smoothing, weights)
    mix = None
    if args.mixup or args.cutmix:
        mix = functools.partial(mix_batch, num_classes=len(class_names), generator=augment_gen,
                                mixup_alpha=args.mixup, cutmix_alpha=args.cutmix)
    ema = recipe.ModelEma(model, args.ema) if args.ema else None
    state = TrainingState(model, optimizer, schedule, ema, order_gen, augment_gen, dist_info)
    if resume:
        note = state.load_state_dict(resume)
        if rank0:
            print(f"resuming {args.resume} after epoch {state.epoch}" + (f"\nnote: {note}" if note else ""))

    train_model = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = recipe.maybe_compile(train_model, args.compile)

    def save_state() -> None:
        saved = state.state_dict()  # on every rank: it gathers the augmentation streams
        if rank0:
            record = checkpoint.model_record(model, preprocessing, arch=ARCH, class_names=class_names,
                                             args=vars(args), epoch=state.epoch, fmt=checkpoint.STATE_FORMAT,
                                             metrics=state.history[-1] if state.history else {},
                                             lineage=lineage, command=command)
            checkpoint.save({**record, **saved}, run_dir / "checkpoint.pt")

    if rank0:
        write_json(run_dir / "args.json", vars(args))
        sizes = f"{len(train_split.labels)} train / " + (f"{len(val_split.labels)} val / " if val_split else "")
        print(f"{args.name}: {sizes}{len(test_split.labels)} test images, {len(class_names)} classes, "
              f"{args.img_size} px {preprocessing.color}, weights {args.weights}, recipe {args.recipe}, "
              f"device {device}" + (f" x {dist_info.world_size} processes" if dist_info.enabled else ""))
    if not resume:
        save_state()  # Ctrl-C during the first epoch still leaves something to resume from

    evaluate_on = functools.partial(evaluate_all, device=device, dist_info=dist_info, progress=progress,
                                    amp_dtype=amp_dtype)
    final, epoch = None, state.epoch
    try:
        for epoch in range(state.epoch + 1, args.epochs + 1):
            started = time.perf_counter()
            try:
                trained = train_one_epoch(train_model, train_loader, criterion, optimizer, device, progress,
                                          desc=f"epoch {epoch}/{args.epochs}", mix=mix, schedule=schedule,
                                          ema=ema, amp_dtype=amp_dtype, scaler=scaler)
            except NonFiniteLoss as err:  # nothing of this epoch is saved: the last good state stays
                raise diverged(args, run_dir, epoch, str(err)) from None
            train_loss, train_acc = distributed.reduce_epoch(trained.loss, trained.acc, trained.seen,
                                                             dist_info, device)
            row = dict(epoch=epoch, train_loss=round(train_loss, 6), train_acc=round(train_acc, 6))
            val_line = ""
            if val_loader:
                checked = evaluate_on(state.eval_model, val_loader, desc="val")
                if not math.isfinite(checked.loss):  # nan weights must not be saved or chosen as best
                    raise diverged(args, run_dir, epoch, f"the validation loss became {checked.loss}")
                schedule.epoch_end(checked.loss)
                state.remember_if_best(epoch, checked.acc)
                row.update(val_loss=round(checked.loss, 6), val_acc=round(checked.acc, 6))
                val_line = f"val loss {checked.loss:.4f} acc {checked.acc:6.2%}  "
            final = evaluate_on(state.eval_model, test_loader)  # reported only: nothing is chosen on it
            if not math.isfinite(final.loss):
                raise diverged(args, run_dir, epoch, f"the test loss became {final.loss}")
            row.update(test_loss=round(final.loss, 6), test_acc=round(final.acc, 6), lr=schedule.lr,
                       seconds=round(time.perf_counter() - started, 2))
            state.history.append(row)
            state.epoch = epoch
            save_state()
            if rank0:
                report.write_metrics_csv(run_dir / "metrics.csv", state.history)
                print(f"epoch {epoch:>3}/{args.epochs}  train loss {train_loss:.4f} acc {train_acc:6.2%}  "
                      f"{val_line}test loss {final.loss:.4f} acc {final.acc:6.2%}  ({row['seconds']:.1f} s)",
                      flush=True)
    except KeyboardInterrupt:
        if rank0:
            print(f"\ninterrupted during epoch {epoch}: resume with --resume {run_dir / 'checkpoint.pt'} "
                  f"(continues after epoch {epoch - 1})", file=sys.stderr)
        return 130

    eval_model, history, best = state.eval_model, state.history, state.best
    chosen = history[-1] if history else None
    if best is not None and best["epoch"] != state.epoch:  # validation chose an earlier epoch than the last
        eval_model = copy.deepcopy(eval_model)
        eval_model.load_state_dict(best["model"])
        chosen = next(row for row in history if row["epoch"] == best["epoch"])
        final = None
    if final is None:  # the chosen epoch, or a resumed run that had already finished
        final = evaluate_on(eval_model, test_loader)
    if rank0:
        write_outputs(args, run_dir, eval_model, preprocessing, class_names, history, chosen, final,
                      lineage=lineage, command=command)
    return 0


def what_survives(args, command: str = "") -> str:
    """After a write the OS refused (disk full, permissions): the epoch the training state on disk holds
    and the exact command that continues from it (`command`: this run's, as train_resnet34.main
    recorded it; else the process's own arguments), or that there is none yet."""
    state = Path(args.out) / args.name / "checkpoint.pt"
    try:
        epoch = int(torch.load(state, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - absent, or itself unreadable: there is nothing to resume
        if args.resume:
            return f"{args.resume} is unchanged: run the same command again"
        return "No training state was written yet: run the same command again"
    argv, skip = [], False
    for arg in shlex.split(command)[2:] if command else sys.argv[1:]:  # its own --resume replaced by the state
        if skip or arg == "--resume" or arg.startswith("--resume="):
            skip = arg == "--resume"
            continue
        argv.append(arg)
    resume = shlex.join(["python", "train_resnet34.py", *argv, "--resume", str(state)])
    return f"{state} holds epoch {epoch}: continue with `{resume}`"


def write_outputs(args, run_dir: Path, model, preprocessing, class_names, history, chosen, final, *,
                  lineage=(), command: str = "") -> None:
    """Reports use the saved model's predictions only (the seed pooled every epoch's predictions)."""
    which = f" (epoch {chosen['epoch']}, best on val)" if chosen and "val_acc" in chosen else ""
    title = f"{args.name}: test accuracy {final.acc:.2%}{which}"
    report.plot_curves(run_dir / "curves.png", history, title=args.name)
    report.write_evaluation_reports(run_dir, final, class_names, title)
    metrics = dict(chosen) if chosen else {}
    metrics.update(test_acc=final.acc, test_loss=final.loss, test_images=int(len(final.targets)))
    record = checkpoint.model_record(model, preprocessing, arch=ARCH, class_names=class_names, args=vars(args),
                                     epoch=chosen["epoch"] if chosen else 0, metrics=metrics, lineage=list(lineage),
                                     command=command)
    model_path = checkpoint.save(record, Path(args.models_dir) / f"{args.name}.pt")
    print(f"test accuracy {final.acc:.2%}{which} on {len(final.targets)} images; model: {model_path}; "
          f"reports: {run_dir}/")
