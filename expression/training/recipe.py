"""Training recipes: named presets of flags, and the optimizer, schedule, loss and EMA they select.

The `seed` recipe is the seed project's (Adam 1e-4, constant rate, plain cross-entropy, flip +
translate) and stays the default. `strong` gathers the usual ingredients of the best FER2013 single
networks (SGD with Nesterov momentum and weight decay, warm-up + cosine decay, label smoothing,
rotation/scale jitter, random erasing, an EMA of the weights, a validation split for choosing the
epoch, 96 px input, ImageNet normalisation). Flags given on the command line win over the preset.

    python train_resnet34.py --recipe strong --weights none --epochs 4 --img-size 48
"""
from __future__ import annotations

import re
import warnings

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel

from expression.core.errors import InputError
from expression.core.model import unwrap
from expression.core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, SEED_MEAN, SEED_STD, SEED_TRANSLATE

# Every recipe flag, with its value in each preset. None in the parser means "not given": the preset
# fills it in, so `--recipe strong --lr 0.01` changes only the rate.
RECIPES = {
    "seed": dict(img_size=48, epochs=15, lr=1e-4, optimizer="adam", momentum=0.9, nesterov=False,
                 weight_decay=0.0, schedule="constant", warmup_epochs=0.0, label_smoothing=0.0, mixup=0.0,
                 cutmix=0.0, translate=SEED_TRANSLATE, rotate=0.0, scale=0.0, erase=0.0, class_balance="none",
                 ema=0.0, norm="seed", val_split=0.0, amp="none", channels_last="off"),
    "strong": dict(img_size=96, epochs=60, lr=0.05, optimizer="sgd", momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0, label_smoothing=0.1, mixup=0.0,
                   cutmix=0.0, translate=SEED_TRANSLATE, rotate=10.0, scale=0.1, erase=0.25,
                   class_balance="none", ema=0.999, norm="imagenet", val_split=0.1, amp="auto",
                   channels_last="auto"),
    # What to run with only a CPU: chosen for accuracy per CPU-minute at 48 px from scratch (see the
    # recipe table in docs/results.md). One-cycle Adam is what made short runs work; decoupled weight decay,
    # smoothing, erasing and rotation/scale jitter are what a 20-epoch run needs against overfitting.
    "cpu": dict(img_size=48, epochs=20, lr=1e-3, optimizer="adamw", momentum=0.9, nesterov=False,
                weight_decay=0.05, schedule="onecycle", warmup_epochs=0.0, label_smoothing=0.1, mixup=0.0,
                cutmix=0.0, translate=SEED_TRANSLATE, rotate=10.0, scale=0.1, erase=0.25, class_balance="none",
                ema=0.0, norm="seed", val_split=0.05, amp="none", channels_last="off"),
}
NORMS = {"seed": (SEED_MEAN, SEED_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle", "plateau")
CLASS_BALANCE = ("none", "weighted-loss", "sampler")
AMP_CHOICES = ("none", "bf16", "fp16", "auto")


def preset_help(key: str, text: str) -> str:
    """Help that names the value under each preset (the parser default is None = "from the recipe")."""
    values = ", ".join(f"{name}: {_show(preset[key])}" for name, preset in RECIPES.items())
    return f"{text} (default from --recipe; {values})"


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_amp(amp: str, device: torch.device):
    """--amp -> autocast dtype or None. auto: bf16 on CUDA GPUs that have it, otherwise full precision
    (CPU bf16 autocast is slower than float32 on most CPUs)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise InputError(f"fp16 needs a CUDA device, not {device.type} (fp16 training on CPU/MPS is unsupported "
                         f"here): use bf16 or none", option="amp")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def use_channels_last(choice: str, device: torch.device) -> bool:
    """channels_last helps tensor cores; on CPU at 48 px it buys nothing, so auto means CUDA only."""
    return choice == "on" or (choice == "auto" and device.type == "cuda")


# ---------------------------------------------------------------------------------------------------
# Optimizer, schedule, loss


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                    nesterov: bool = False) -> torch.optim.Optimizer:
    """Weight decay skips biases and BatchNorm parameters (decaying a BN scale only fights the
    normalisation), the usual practice since Goyal et al. 2017. Without decay: one group, the seed's."""
    if weight_decay > 0:
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
        params = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)  # with weight_decay groups: L2 added to the gradient
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # group values override this
    if name == "sgd":
        if nesterov and momentum <= 0:
            raise InputError("Nesterov momentum needs a momentum above 0", option="momentum")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)
    raise InputError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}", option="optimizer")


class LrSchedule:
    """The learning rate of every optimizer step, made of torch.optim.lr_scheduler parts.

    constant  LinearLR warm-up, then the base rate (the seed: no warm-up, so exactly the base rate)
    cosine    LinearLR warm-up, then CosineAnnealingLR from 1 to 0 (Loshchilov & Hutter 2017)
    onecycle  OneCycleLR: cosine rise from 1/25 to 1 over the warm-up (30 % of training if none is
              given), then cosine decay towards 1/25e4 (Smith & Topin 2018), momentum not cycled
    plateau   LinearLR warm-up, then ReduceLROnPlateau: times `plateau_factor` whenever the validation
              loss has not improved for `plateau_patience` epochs (needs a validation split)

    Factors are relative to each group's base rate; `step()` runs after every optimizer step and
    `epoch_end(val_loss)` after each validation. The saved state is the step count, the plateau's
    cuts (`scale`) and its counters: plain numbers that `torch.load(weights_only=True)` reads in any torch version
    (some releases pickle functions inside OneCycleLR's own state). Loading replays the steps, which
    is exact because every per-step schedule here is a function of the step number alone.
    """

    def __init__(self, optimizer, kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
                 plateau_factor: float = 0.1, plateau_patience: int = 2):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")
        self.optimizer, self.kind = optimizer, kind
        self.total = max(1, steps_per_epoch * epochs)
        warmup = round(warmup_epochs * steps_per_epoch)
        if kind == "onecycle" and warmup == 0:
            warmup = round(0.3 * self.total)
        self.warmup = min(warmup, self.total - 1)
        self.steps = 0
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.per_step = self._per_step_schedule(kind)
        # torch's plateau rule cuts when the bad epochs exceed `patience`; ours when they reach it.
        self.plateau = (lr_scheduler.ReduceLROnPlateau(optimizer, factor=plateau_factor,
                                                       patience=plateau_patience - 1, threshold=1e-4,
                                                       threshold_mode="abs")
                        if kind == "plateau" else None)

    def _per_step_schedule(self, kind: str):
        opt, warmup, total = self.optimizer, self.warmup, self.total
        if kind == "onecycle":
            # One step more than training takes, placed so the peak is step `warmup` and the floor
            # would be reached one step after the last: every step of training has a rate above it.
            return lr_scheduler.OneCycleLR(opt, max_lr=[group["lr"] for group in opt.param_groups],
                                           total_steps=total + 1, pct_start=(warmup + 1) / (total + 1),
                                           anneal_strategy="cos", div_factor=25, final_div_factor=1e4,
                                           cycle_momentum=False)
        # (step + 1) / (warmup + 1): linear, never 0, the base rate at step `warmup`.
        warm = lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
        if kind != "cosine":
            return warm  # after its last iteration LinearLR leaves the rate alone
        decay = lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)
        return lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[warmup]) if warmup else decay

    def step(self) -> None:
        """After each optimizer step: set the rate for the next one."""
        self.steps += 1
        if self.steps <= self.total:  # OneCycleLR refuses steps beyond its length
            self.per_step.step()

    def epoch_end(self, val_loss: float | None) -> None:
        """Plateau bookkeeping, once warm-up is over; other schedules ignore it."""
        if self.plateau is not None and val_loss is not None and self.steps >= self.warmup:
            self.plateau.step(val_loss)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "scale": self.lr / self.base_lrs[0],
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the per-step schedule on this run's base rates (a resume with a new --lr uses it:
        the optimizer's saved groups carry the old one), replay the saved steps, then apply the
        plateau's cuts."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = group["initial_lr"] = base
        self.steps = 0
        self.per_step = self._per_step_schedule(self.kind)
        with warnings.catch_warnings():  # replaying without optimizer steps is the point here
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            for _ in range(int(state["steps"])):
                self.step()
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
            for group in self.optimizer.param_groups:
                group["lr"] *= float(state["scale"])  # the cuts so far (1 during warm-up)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so the average weight over the training samples is 1: the loss
    keeps its scale while each class contributes equally in total. A class with no samples gets 0."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    present = int((counts > 0).sum())
    weights = torch.where(counts > 0, len(labels) / (present * counts.clamp_min(1)), torch.zeros_like(counts))
    return weights.float()


def build_criterion(label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy; accepts hard labels or the soft targets mixup/cutmix produce."""
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------------------
# Exponential moving average of the weights


class ModelEma(AveragedModel):
    """torch's AveragedModel as an exponential moving average of the parameters and BatchNorm
    statistics: ema = d * ema + (1 - d) * current after every step (Polyak averaging; timm's
    ModelEmaV2 also averages buffers). The decay ramps up as min(decay, (1 + t) / (10 + t)) so that a
    short run's average is not dominated by the random initialisation; integer buffers
    (num_batches_tracked) are copied. `module` is the averaged network that is evaluated and saved."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(unwrap(model), avg_fn=self._average, use_buffers=True)
        self.decay = decay
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # AveragedModel's first update copies the model; doing it now makes update t (0-based) the
        # t-th average, with n_averaged = t + 1.
        self.update_parameters(unwrap(model))

    @property
    def updates(self) -> int:
        return int(self.n_averaged) - 1

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, n_averaged) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        return averaged.lerp(current.to(averaged.dtype), 1 - self._step_decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # Once per step, not per tensor: reading n_averaged is a device sync on a GPU.
        self._step_decay = self.current_decay()
        self.update_parameters(unwrap(model))

    def state_dict(self) -> dict:  # the checkpoint's format since before AveragedModel: plain tensors
        return {"model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"], strict=True)
        self.n_averaged.fill_(int(state["updates"]) + 1)


def maybe_compile(model: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """torch.compile for the training forward/backward; checkpoints still save the plain module
    (expression.core.model.unwrap strips `_orig_mod`)."""
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        raise InputError("torch.compile needs PyTorch 2.0 or newer", option="compile")
    return torch.compile(model, backend=backend)
