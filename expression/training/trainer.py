"""A training run from a `TrainConfig`: what `python train_resnet34.py` does after resolving its flags.

`run(config)` decodes the splits, builds the model, optimizer, schedule and weight average the config
asks for (`build`), trains with a checkpoint per epoch so that `resume` continues exactly (`fit`), and
writes the reports and the model (`finish`). The building blocks are the other modules' (core
preprocessing, datasets, model, checkpoint, report; training recipe, loader, engine, state); this module
only wires them together in the order a run needs, as torchvision's references/classification
train.py does in its main().

    from expression.training import trainer
    from expression.training.config import TrainConfig
    trainer.run(TrainConfig(demo=True, data="data/demo", train_dir="data/demo/train",
                            test_dir="data/demo/test", weights="none", epochs=8, lr=1e-3, name="demo"))
    # 0, or 130 when interrupted (continue with resume="runs/demo/checkpoint.pt")
"""
from __future__ import annotations

import copy
import functools
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from expression.core import checkpoint, report
from expression.core.datasets import DecodedSplit, check_splits, decode_split, stratified_split
from expression.core.errors import InputError, UsageError
from expression.core.io import WriteError, ensure_writable_dir, write_json
from expression.core.model import build_model
from expression.core.preprocessing import Preprocessing
from expression.core.runtime import resolve_device, use_progress_bars
from expression.training import distributed, recipe
from expression.training.augment import Augmentation, mix_batch
from expression.training.config import ARCH, TrainConfig
from expression.training.engine import NonFiniteLoss, train_one_epoch
from expression.training.loader import InMemoryLoader
from expression.training.state import TrainingState, evaluate_all

# The demo data set's size: 1,400 training faces keep the demo run under 5 minutes on a 2-core CPU.
DEMO_TRAIN_PER_CLASS = 200
DEMO_TEST_PER_CLASS = 60


def write_demo_data(config: TrainConfig, rank0: bool) -> None:
    from expression.demo import synthetic

    if rank0:
        try:
            synthetic.write_image_folder(config.data, n_train_per_class=DEMO_TRAIN_PER_CLASS,
                                         n_test_per_class=DEMO_TEST_PER_CLASS, seed=0, size=config.img_size,
                                         corner_class=config.demo_corner)
        except OSError as err:  # written in a temp folder moved into place: nothing half-written is left
            raise UsageError(f"cannot write the demo faces to {config.data} ({err.strerror or err}): nothing was "
                             f"half-written; free space or fix the folder's permissions and run again") from None


def check_splits_or_say_which_flag(config: TrainConfig) -> list[str]:
    """The class names; a missing or malformed split names the flag that chose it."""
    try:
        class_names = check_splits(config.train_dir, config.test_dir)
    except InputError as err:
        raise UsageError(f"{err}; pass --data DIR holding train/<class>/ and test/<class>/ (see README: "
                         f"Getting FER2013), or try --demo") from None
    if config.val_dir:
        try:  # the same classes as train, none empty
            check_splits(config.train_dir, config.val_dir, other="validation")
        except InputError as err:
            raise UsageError(f"--val-dir: {err}; or use --val-split F instead") from None
    return class_names


def load_resume_state(config: TrainConfig, class_names, preprocessing) -> dict:
    state = checkpoint.load_record(config.resume, expect=checkpoint.STATE_FORMAT, option="resume")
    mine = (ARCH, list(class_names), preprocessing.img_size, preprocessing.color)
    theirs = (state["arch"], state["class_names"], state["img_size"], state["color"])
    if mine != theirs:
        raise UsageError(f"--resume {config.resume} is from a different model ({theirs[0]}, classes {theirs[1]}, "
                         f"{theirs[2]} px {theirs[3]}) than this run ({mine[0]}, classes {mine[1]}, {mine[2]} px "
                         f"{mine[3]}): resume with the same data and --img-size, or start a new --name")
    saved_optimizer = dict(state.get("args") or {}).get("optimizer", config.optimizer)
    if saved_optimizer != config.optimizer:  # its saved moments cannot seed another optimizer
        raise UsageError(f"--resume {config.resume} was trained with --optimizer {saved_optimizer}, not "
                         f"{config.optimizer}: resume with --optimizer {saved_optimizer}, or start a new --name")
    return state


def load_init(config: TrainConfig, class_names, preprocessing) -> tuple[dict, list[dict]]:
    """The --init checkpoint (model file or training state) and the lineage a run from it records.
    Its network, classes and preprocessing must be this run's: the weights are only meaningful there."""
    record = checkpoint.load_record(config.init, option="init")
    differs = checkpoint.mismatch(record, ARCH, class_names, preprocessing)
    if differs:
        raise UsageError(f"--init {config.init} does not match this run ({differs}): start from a model trained "
                         f"with the same data classes, --img-size and --norm, or pass those flags to match it")
    return record, checkpoint.lineage_of(config.init, record)


def diverged(config: TrainConfig, epoch: int, why: str) -> UsageError:
    """The one line a run that computed inf or nan ends with; nothing of the epoch is saved."""
    kept = f"; {config.run_dir / 'checkpoint.pt'} still holds epoch {epoch - 1}" if epoch > 1 else ""
    return UsageError(f"training diverged in epoch {epoch}: {why} (--lr {config.lr:g}): try a lower "
                      f"--lr or --schedule onecycle; no model was written{kept}")


@dataclass
class Context:
    """Where and how this process trains: its device, its rank under torchrun, whether to draw bars."""
    device: torch.device
    dist_info: distributed.DistInfo
    progress: bool
    command: str = ""  # the command line recorded in the model

    @property
    def rank0(self) -> bool:
        return self.dist_info.is_main


@dataclass
class Run:
    """Everything `build` makes for `fit` to train and `finish` to report."""
    run_dir: Path
    class_names: list[str]
    preprocessing: Preprocessing
    model: nn.Module  # the network itself (the EMA, if any, is in state)
    train_model: nn.Module  # what the optimizer steps: DDP- and compile-wrapped as asked
    state: TrainingState
    train_loader: InMemoryLoader
    val_loader: InMemoryLoader | None
    test_loader: InMemoryLoader
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: recipe.LrSchedule
    mix: functools.partial | None
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    lineage: list[dict]
    resumed: bool


def run(config: TrainConfig, command: str = "") -> int:
    """Train as `config` says; returns the exit status (0; 130: interrupted, resumable). `command`: the
    command line to record in the model (train_resnet34.main gives it)."""
    device = resolve_device(config.device)
    dist_info = distributed.init_from_env(device)
    ctx = Context(distributed.device_for(device, dist_info), dist_info, False, command)
    ctx.progress = ctx.rank0 and use_progress_bars(config.quiet)
    try:
        built = build(config, ctx)
        final = fit(config, built, ctx)
        if final is None:
            return 130
        finish(config, built, ctx, final)
        return 0
    except WriteError as err:  # nothing half-written (atomic writes): say what is on disk and how to go on
        raise UsageError(f"{err}. {what_survives(config, command)}") from None
    except KeyboardInterrupt:  # before the first epoch: nothing worth keeping was written yet
        print("\ninterrupted before training started", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(dist_info)


def load_splits(config: TrainConfig, class_names, progress: bool):
    """The decoded train, validation (a folder, a seeded hold-out of train, or None) and test splits."""
    decode = functools.partial(decode_split, class_names=class_names, img_size=config.img_size,
                               workers=config.workers, progress=progress)
    train_split = decode(config.train_dir, what="train")
    test_split = decode(config.test_dir, color=train_split.color, what="test")
    val_split: DecodedSplit | None = None
    if config.val_dir:
        val_split = decode(config.val_dir, color=train_split.color, what="val")
    elif config.val_split:  # the same seeded split on every rank and every resume
        keep, held_out = stratified_split(train_split.labels, config.val_split, config.seed)
        train_split, val_split = train_split.subset(keep), train_split.subset(held_out)
    return train_split, val_split, test_split


def build(config: TrainConfig, ctx: Context) -> Run:
    """Data, model (fresh, ImageNet, --init or resumed), loaders, optimizer, schedule, loss and EMA."""
    run_dir = config.run_dir
    if ctx.rank0:
        ensure_writable_dir(run_dir, "--out")
        ensure_writable_dir(config.models_dir, "--models-dir")
    if config.demo:
        write_demo_data(config, ctx.rank0)
        distributed.barrier(ctx.dist_info)

    class_names = check_splits_or_say_which_flag(config)
    train_split, val_split, test_split = load_splits(config, class_names, ctx.progress)
    mean, std = recipe.NORMS[config.norm]
    preprocessing = Preprocessing(config.img_size, mean, std, train_split.color)
    resume = load_resume_state(config, class_names, preprocessing) if config.resume else None
    init, lineage = load_init(config, class_names, preprocessing) if config.init else (None, [])
    if resume and resume.get("lineage") is not None:  # a resumed cycle keeps the lineage it started with
        lineage = list(resume["lineage"])

    torch.manual_seed(config.seed)  # the same initial weights on every rank and every run
    model = build_model(ARCH, len(class_names), weights=config.weights)
    if init:
        checkpoint.load_weights(model, init, config.init, option="init")
        if ctx.rank0:
            print(f"starting from {config.init} ({lineage[-1]['total_epochs']} epochs behind its weights, "
                  f"sha256 {lineage[-1]['sha256'][:12]}): a fresh optimizer and schedule")
    device = ctx.device
    model = model.to(device)
    if recipe.use_channels_last(config.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = recipe.resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    order_gen = torch.Generator().manual_seed(config.seed)
    # Each rank flips and shifts its own images with its own stream; the order stream is shared.
    augment_gen = torch.Generator().manual_seed(config.seed * 1000 + 1 + ctx.dist_info.rank)
    shard = dict(rank=ctx.dist_info.rank, world_size=ctx.dist_info.world_size)
    augmentation = Augmentation(translate=config.translate, rotate=config.rotate, scale=config.scale,
                                erase=config.erase)
    loader = functools.partial(InMemoryLoader, batch_size=config.batch_size, mean=preprocessing.mean,
                               std=preprocessing.std, device=device, **shard)
    train_loader = loader(train_split, shuffle=True, augment=augmentation, order_generator=order_gen,
                          augment_generator=augment_gen, pad=True, balanced=config.class_balance == "sampler")
    test_loader = loader(test_split, pad=False)
    val_loader = val_split and loader(val_split, pad=False)

    optimizer = recipe.build_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.momentum,
                                       bool(config.nesterov))
    schedule = recipe.LrSchedule(optimizer, config.schedule, len(train_loader), config.epochs,
                                 config.warmup_epochs)
    weights = (recipe.class_weights(train_split.labels, len(class_names)).to(device)
               if config.class_balance == "weighted-loss" else None)
    criterion = recipe.build_criterion(config.label_smoothing, weights)
    mix = None
    if config.mixup or config.cutmix:
        mix = functools.partial(mix_batch, num_classes=len(class_names), generator=augment_gen,
                                mixup_alpha=config.mixup, cutmix_alpha=config.cutmix)
    ema = recipe.ModelEma(model, config.ema) if config.ema else None
    state = TrainingState(model, optimizer, schedule, ema, order_gen, augment_gen, ctx.dist_info)
    if resume:
        note = state.load_state_dict(resume)
        if ctx.rank0:
            print(f"resuming {config.resume} after epoch {state.epoch}" + (f"\nnote: {note}" if note else ""))

    train_model = model
    if ctx.dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = recipe.maybe_compile(train_model, config.compile)
    built = Run(run_dir, class_names, preprocessing, model, train_model, state, train_loader, val_loader,
                test_loader, criterion, optimizer, schedule, mix, amp_dtype, scaler, lineage, bool(resume))
    if ctx.rank0:
        write_json(run_dir / "args.json", config.record())
        sizes = f"{len(train_split.labels)} train / " + (f"{len(val_split.labels)} val / " if val_split else "")
        print(f"{config.name}: {sizes}{len(test_split.labels)} test images, {len(class_names)} classes, "
              f"{config.img_size} px {preprocessing.color}, weights {config.weights}, recipe {config.recipe}, "
              f"device {device}" + (f" x {ctx.dist_info.world_size} processes" if ctx.dist_info.enabled else ""))
    if not resume:
        save_state(config, built, ctx)  # Ctrl-C during the first epoch still leaves something to resume from
    return built


def save_state(config: TrainConfig, built: Run, ctx: Context) -> None:
    """runs/NAME/checkpoint.pt: the weights, optimizer, schedule, EMA and random streams after this epoch."""
    saved = built.state.state_dict()  # on every rank: it gathers the augmentation streams
    if ctx.rank0:
        state = built.state
        record = checkpoint.model_record(built.model, built.preprocessing, arch=ARCH, class_names=built.class_names,
                                         args=config.record(), epoch=state.epoch, fmt=checkpoint.STATE_FORMAT,
                                         metrics=state.history[-1] if state.history else {},
                                         lineage=built.lineage, command=ctx.command)
        checkpoint.save({**record, **saved}, built.run_dir / "checkpoint.pt")


def evaluator(built: Run, ctx: Context):
    return functools.partial(evaluate_all, device=ctx.device, dist_info=ctx.dist_info, progress=ctx.progress,
                             amp_dtype=built.amp_dtype)


def fit(config: TrainConfig, built: Run, ctx: Context):
    """The epochs left (all, or those after a resumed state), a checkpoint after each. Returns the last
    epoch's test evaluation (None if no epoch ran), or None after Ctrl-C (said on stderr, resumable)."""
    state, run_dir = built.state, built.run_dir
    evaluate_on = evaluator(built, ctx)
    final, epoch = None, state.epoch
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            try:
                trained = train_one_epoch(built.train_model, built.train_loader, built.criterion, built.optimizer,
                                          ctx.device, ctx.progress, desc=f"epoch {epoch}/{config.epochs}",
                                          mix=built.mix, schedule=built.schedule, ema=state.ema,
                                          amp_dtype=built.amp_dtype, scaler=built.scaler)
            except NonFiniteLoss as err:  # nothing of this epoch is saved: the last good state stays
                raise diverged(config, epoch, str(err)) from None
            train_loss, train_acc = distributed.reduce_epoch(trained.loss, trained.acc, trained.seen,
                                                             ctx.dist_info, ctx.device)
            row = dict(epoch=epoch, train_loss=round(train_loss, 6), train_acc=round(train_acc, 6))
            val_line = ""
            if built.val_loader:
                checked = evaluate_on(state.eval_model, built.val_loader, desc="val")
                if not math.isfinite(checked.loss):  # nan weights must not be saved or chosen as best
                    raise diverged(config, epoch, f"the validation loss became {checked.loss}")
                built.schedule.epoch_end(checked.loss)
                state.remember_if_best(epoch, checked.acc)
                row.update(val_loss=round(checked.loss, 6), val_acc=round(checked.acc, 6))
                val_line = f"val loss {checked.loss:.4f} acc {checked.acc:6.2%}  "
            final = evaluate_on(state.eval_model, built.test_loader)  # reported only: nothing is chosen on it
            if not math.isfinite(final.loss):
                raise diverged(config, epoch, f"the test loss became {final.loss}")
            row.update(test_loss=round(final.loss, 6), test_acc=round(final.acc, 6), lr=built.schedule.lr,
                       seconds=round(time.perf_counter() - started, 2))
            state.history.append(row)
            state.epoch = epoch
            save_state(config, built, ctx)
            if ctx.rank0:
                report.write_metrics_csv(run_dir / "metrics.csv", state.history)
                print(f"epoch {epoch:>3}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:6.2%}  "
                      f"{val_line}test loss {final.loss:.4f} acc {final.acc:6.2%}  ({row['seconds']:.1f} s)",
                      flush=True)
    except KeyboardInterrupt:
        if ctx.rank0:
            print(f"\ninterrupted during epoch {epoch}: resume with --resume {run_dir / 'checkpoint.pt'} "
                  f"(continues after epoch {epoch - 1})", file=sys.stderr)
        return None
    return final if final is not None else evaluate_on(state.eval_model, built.test_loader)


def finish(config: TrainConfig, built: Run, ctx: Context, final) -> None:
    """Choose the epoch to keep (the best on validation, else the last), then write its reports and model."""
    state = built.state
    eval_model, history, best = state.eval_model, state.history, state.best
    chosen = history[-1] if history else None
    if best is not None and best["epoch"] != state.epoch:  # validation chose an earlier epoch than the last
        eval_model = copy.deepcopy(eval_model)
        eval_model.load_state_dict(best["model"])
        chosen = next(row for row in history if row["epoch"] == best["epoch"])
        final = evaluator(built, ctx)(eval_model, built.test_loader)
    if ctx.rank0:
        write_outputs(config, built.run_dir, eval_model, built.preprocessing, built.class_names, history, chosen,
                      final, lineage=built.lineage, command=ctx.command)


def what_survives(config: TrainConfig, command: str = "") -> str:
    """After a write the OS refused (disk full, permissions): the epoch the training state on disk holds
    and the exact command that continues from it (`command`: this run's, as train_resnet34.main
    recorded it; else the process's own arguments), or that there is none yet."""
    state = config.run_dir / "checkpoint.pt"
    try:
        epoch = int(torch.load(state, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - absent, or itself unreadable: there is nothing to resume
        if config.resume:
            return f"{config.resume} is unchanged: run the same command again"
        return "No training state was written yet: run the same command again"
    argv, skip = [], False
    for arg in shlex.split(command)[2:] if command else sys.argv[1:]:  # its own --resume replaced by the state
        if skip or arg == "--resume" or arg.startswith("--resume="):
            skip = arg == "--resume"
            continue
        argv.append(arg)
    resume = shlex.join(["python", "train_resnet34.py", *argv, "--resume", str(state)])
    return f"{state} holds epoch {epoch}: continue with `{resume}`"


def write_outputs(config: TrainConfig, run_dir: Path, model, preprocessing, class_names, history, chosen, final, *,
                  lineage=(), command: str = "") -> None:
    """Reports use the saved model's predictions only (the seed pooled every epoch's predictions)."""
    which = f" (epoch {chosen['epoch']}, best on val)" if chosen and "val_acc" in chosen else ""
    title = f"{config.name}: test accuracy {final.acc:.2%}{which}"
    report.plot_curves(run_dir / "curves.png", history, title=config.name)
    report.write_evaluation_reports(run_dir, final, class_names, title)
    metrics = dict(chosen) if chosen else {}
    metrics.update(test_acc=final.acc, test_loss=final.loss, test_images=int(len(final.targets)))
    record = checkpoint.model_record(model, preprocessing, arch=ARCH, class_names=class_names, args=config.record(),
                                     epoch=chosen["epoch"] if chosen else 0, metrics=metrics, lineage=list(lineage),
                                     command=command)
    model_path = checkpoint.save(record, Path(config.models_dir) / f"{config.name}.pt")
    print(f"test accuracy {final.acc:.2%}{which} on {len(final.targets)} images; model: {model_path}; "
          f"reports: {run_dir}/")
