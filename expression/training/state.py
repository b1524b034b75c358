"""What a training run carries from epoch to epoch, and what `--resume` restores of it.

`TrainingState` follows torch's own convention: `state_dict()` gives plain tensors and numbers
(loadable with `torch.load(weights_only=True)`), `load_state_dict()` puts them back. It holds the
weights, the optimizer moments, the learning-rate schedule, the weight average, the best epoch on
validation, the per-epoch history and the random streams (batch order, augmentation per process,
torch's global one), so that an interrupted run resumed from its last checkpoint continues exactly
as an uninterrupted one (tests/test_recipe.py and tests/test_train.py check this bit for bit).

    state = TrainingState(model, optimizer, schedule, ema, order_gen, augment_gen, dist_info)
    checkpoint.save({**record, **state.state_dict()}, "runs/x/checkpoint.pt")
    state.load_state_dict(torch.load("runs/x/checkpoint.pt", weights_only=True))
"""
from __future__ import annotations

import math

import torch

from expression.core.errors import InputError
from expression.core.model import unwrap
from expression.training import distributed
from expression.training.engine import evaluate


class TrainingState:
    def __init__(self, model, optimizer, schedule, ema, order_generator: torch.Generator,
                 augment_generator: torch.Generator, dist_info):
        self.model, self.optimizer, self.schedule, self.ema = model, optimizer, schedule, ema
        self.order_generator, self.augment_generator, self.dist_info = order_generator, augment_generator, dist_info
        self.epoch = 0          # epochs finished
        self.history: list[dict] = []  # one metrics row per finished epoch
        self.best: dict | None = None  # {"epoch", "val_acc", "model"}: the best epoch on validation

    @property
    def eval_model(self):
        """What is validated, tested and saved: the weight average when there is one."""
        return self.ema.module if self.ema else self.model

    def remember_if_best(self, epoch: int, val_acc: float) -> None:
        if self.best is None or val_acc > self.best["val_acc"]:
            self.best = {"epoch": epoch, "val_acc": val_acc,
                         "model": {k: v.detach().cpu().clone() for k, v in self.eval_model.state_dict().items()}}

    def state_dict(self) -> dict:
        """Collective under torchrun (every process's augmentation stream is gathered): call it on all."""
        augment_states = [self.augment_generator.get_state()]
        if self.dist_info.enabled:
            augment_states = [None] * self.dist_info.world_size
            torch.distributed.all_gather_object(augment_states, self.augment_generator.get_state())
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None, "best": self.best,
                "history": self.history, "epoch": self.epoch,
                "rng": {"order": self.order_generator.get_state(), "augment": augment_states,
                        "torch": torch.get_rng_state()}}

    def load_state_dict(self, state: dict) -> str | None:
        """Restore a saved state; returns a note for the user when the resume cannot be exact. The state
        is checked against this run first (InputError of "resume"): torch would load moments of another
        shape silently and fail, or compute nan, at the first step."""
        problem = self.state_problem(state)
        if problem:
            raise InputError(f"the training state does not fit this run ({problem}): the file is damaged or from "
                             f"another run; resume from another checkpoint or start a new run", option="resume")
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        elif self.ema:  # EMA switched on at resume time: start the average from the resumed weights
            self.ema.module.load_state_dict(unwrap(self.model).state_dict())
        self.best = state.get("best")
        self.history, self.epoch = list(state["history"]), int(state["epoch"])
        self.order_generator.set_state(state["rng"]["order"])
        torch.set_rng_state(state["rng"]["torch"])
        augment_states, processes = state["rng"]["augment"], self.dist_info.world_size
        if len(augment_states) == processes:
            self.augment_generator.set_state(augment_states[self.dist_info.rank])
            return None
        return (f"resuming with {processes} process(es) instead of {len(augment_states)}: "
                f"augmentation draws will differ from an uninterrupted run")

    def state_problem(self, state: dict) -> str | None:
        """What in a saved state does not fit this run's model, optimizer and weight average, or None."""
        try:
            return self._state_problem(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # a field missing or mistyped
            return f"malformed field ({type(err).__name__}: {str(err)[:80]})"

    def _state_problem(self, state: dict) -> str | None:
        if not isinstance(state["schedule"], dict):  # every state this project writes has one
            return "the learning-rate schedule's state is missing"
        mine = self.model.state_dict()
        weights = {"model": state["model"]}
        if self.ema and state.get("ema"):
            weights["ema"] = state["ema"]["model"]
        if state.get("best"):
            weights["best"] = state["best"]["model"]
        for where, saved in weights.items():
            problem = _tensors_problem(saved, mine, where)
            if problem:
                return problem
        groups, saved = self.optimizer.param_groups, state["optimizer"]
        if len(saved["param_groups"]) != len(groups) or \
                [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in groups]:
            return "the optimizer's parameter groups differ from this run's"
        params = {i: p for saved_group, group in zip(saved["param_groups"], groups)
                  for i, p in zip(saved_group["params"], group["params"])}
        for index, moments in saved["state"].items():
            if index not in params:
                return f"the optimizer holds moments for parameter {index}, which this run does not have"
            for name, value in moments.items():
                if not torch.is_tensor(value) or value.dim() == 0:  # the step count
                    if not math.isfinite(float(value)):
                        return f"optimizer {name} of parameter {index} is {value}"
                    continue
                if value.shape != params[index].shape:
                    return (f"optimizer {name} of parameter {index} has shape {tuple(value.shape)}, "
                            f"the parameter {tuple(params[index].shape)}")
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    return f"optimizer {name} of parameter {index} holds inf or nan"
        return None


def _tensors_problem(saved: dict, mine: dict, where: str) -> str | None:
    if set(saved) != set(mine):
        return f"the {where} weights have other layers than this run's model"
    for key, value in saved.items():
        if tuple(value.shape) != tuple(mine[key].shape):
            return f"{where} weight {key} has shape {tuple(value.shape)}, this run's {tuple(mine[key].shape)}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{where} weight {key} holds inf or nan"
    return None


def evaluate_all(model, loader, device, dist_info, progress, amp_dtype=None, desc="test"):
    """Evaluate the plain module (DDP's forward would sync buffers; ranks hold unequal shards here)."""
    distributed.sync_buffers(unwrap(model), dist_info)  # every rank scores the model rank 0 saves
    indices = loader.indices()
    result = evaluate(unwrap(model), loader, device, progress, desc=desc, amp_dtype=amp_dtype)
    return distributed.gather_evaluation(result, indices, len(loader.labels), dist_info)
