"""Recipe options: presets, optimizer groups, schedules, smoothing, class balance, validation split,
EMA, mixed precision, and the strong recipe end to end (with exact resume)."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from test_train import run
from torch import nn

import train_resnet34
from expression.apps.cli import UsageError
from expression.apps.configs import DEMO_EPOCHS, DEMO_LR, train_config
from expression.core.datasets import DecodedSplit, stratified_split
from expression.core.errors import InputError
from expression.training import recipe, trainer
from expression.training.augment import Augmentation
from expression.training.engine import train_one_epoch
from expression.training.loader import InMemoryLoader, balanced_indices

pytestmark = pytest.mark.usefixtures("single_thread")


def parse(*argv):
    args = train_resnet34.get_args_parser().parse_args(list(argv))
    return train_config(args)


# ---------------------------------------------------------------------------------------------------
# Presets


def test_defaults_are_the_seed_recipe():
    args = parse()
    assert (args.img_size, args.epochs, args.batch_size, args.lr, args.optimizer) == (48, 15, 64, 1e-4, "adam")
    assert (args.schedule, args.warmup_epochs, args.weight_decay, args.label_smoothing) == ("constant", 0, 0, 0)
    assert (args.translate, args.rotate, args.scale, args.erase, args.mixup, args.cutmix) == (0.1, 0, 0, 0, 0, 0)
    assert (args.norm, args.val_split, args.ema, args.class_balance, args.weights) == ("seed", 0, 0, "none",
                                                                                       "imagenet")


def test_strong_preset_fills_only_what_was_not_given():
    args = parse("--recipe", "strong", "--lr", "0.01", "--img-size", "48", "--no-nesterov")
    assert (args.lr, args.img_size, args.nesterov) == (0.01, 48, False)  # given on the command line
    assert (args.optimizer, args.schedule, args.label_smoothing, args.norm) == ("sgd", "cosine", 0.1, "imagenet")
    assert args.val_split == recipe.RECIPES["strong"]["val_split"] > 0


def test_demo_keeps_its_fast_defaults_only_with_the_seed_recipe():
    assert (parse("--demo").epochs, parse("--demo").lr) == (DEMO_EPOCHS, DEMO_LR)
    assert parse("--demo", "--recipe", "strong").lr == recipe.RECIPES["strong"]["lr"]


@pytest.mark.parametrize("argv, words", [
    (("--schedule", "plateau"), "--val-split"),
    (("--val-dir", "v", "--val-split", "0.1"), "give one"),
    (("--nesterov",), "--optimizer sgd"),
])
def test_inconsistent_flags_are_one_line_errors(argv, words):
    with pytest.raises(UsageError, match=words):
        parse(*argv)


def test_fraction_flags_reject_out_of_range(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--label-smoothing", "1.5")
    assert exit_info.value.code == 2
    assert "must be at least 0 and below 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Optimizer and schedule


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 7))


def test_weight_decay_skips_biases_and_batchnorm():
    net = small_net()
    opt = recipe.build_optimizer("sgd", net, 0.1, weight_decay=5e-4, momentum=0.9, nesterov=True)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4, 2}  # conv and linear weights only
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    # Without decay it is the seed's single Adam group over every parameter.
    adam = recipe.build_optimizer("adam", net, 1e-4)
    assert isinstance(adam, torch.optim.Adam) and len(adam.param_groups) == 1
    assert len(adam.param_groups[0]["params"]) == len(list(net.parameters()))


def schedule_for(kind, steps_per_epoch=10, epochs=3, warmup=0.0, lr=1.0):
    opt = torch.optim.SGD(small_net().parameters(), lr=lr)
    return recipe.LrSchedule(opt, kind, steps_per_epoch, epochs, warmup), opt


def test_constant_schedule_without_warmup_is_the_seeds_fixed_rate():
    sched, opt = schedule_for("constant", lr=1e-4)
    for _ in range(30):
        assert opt.param_groups[0]["lr"] == 1e-4
        sched.step()


def test_cosine_with_warmup_values():
    sched, opt = schedule_for("cosine", steps_per_epoch=10, epochs=3, warmup=1.0)  # 10 warm-up of 30 steps
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])  # linear, never 0
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.5)  # half-way through the decay
    assert lrs[29] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_onecycle_rises_from_a_25th_to_the_peak_then_anneals():
    sched, opt = schedule_for("onecycle", steps_per_epoch=10, epochs=10)  # warm-up: 30 % = 30 steps
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == pytest.approx(1 / 25)
    assert lrs[30] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert lrs[15] == pytest.approx(1 / 25 + (1 - 1 / 25) / 2)
    assert lrs[-1] < 1e-3 and lrs[-1] > 1 / 25e4


def test_plateau_cuts_the_rate_after_patience_epochs_without_improvement():
    sched, opt = schedule_for("plateau", lr=0.1)
    for loss in (1.0, 0.9, 0.95, 0.92):  # improves, then two epochs without improvement
        sched.epoch_end(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    sched.epoch_end(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # improving keeps the rate


def test_schedule_state_round_trips():
    sched, opt = schedule_for("cosine", warmup=0.5)
    for _ in range(13):
        sched.step()
    again, opt2 = schedule_for("cosine", warmup=0.5)
    again.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] != 1.0


def test_plateau_cuts_and_counters_survive_a_resume():
    sched, opt = schedule_for("plateau", lr=0.1)
    for loss in (1.0, 1.1, 1.2, 1.3):  # one cut after two bad epochs, one bad epoch counted since
        sched.epoch_end(loss)
        for _ in range(10):
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    again, opt2 = schedule_for("plateau", lr=0.1)
    again.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)
    sched.epoch_end(1.4), again.epoch_end(1.4)  # the second bad epoch since the cut: both cut again
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_a_resumed_schedule_follows_the_new_base_rate():
    """--resume with a new --lr: the saved optimizer groups carry the old rate, the schedule the new."""
    sched, opt = schedule_for("onecycle", lr=1.0)
    for _ in range(7):
        sched.step()
    again, opt2 = schedule_for("onecycle", lr=2.0)
    opt2.load_state_dict(opt.state_dict())  # what resuming does first
    again.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(2 * opt.param_groups[0]["lr"])


# ---------------------------------------------------------------------------------------------------
# Loss, class balance, validation split


def test_label_smoothing_targets_are_one_minus_eps_plus_eps_over_k():
    torch.manual_seed(0)
    logits, labels, eps, k = torch.randn(5, 7), torch.tensor([0, 3, 6, 1, 1]), 0.1, 7
    target = torch.full((5, k), eps / k)
    target[torch.arange(5), labels] += 1 - eps
    by_hand = -(target * logits.log_softmax(1)).sum(1).mean()
    assert recipe.build_criterion(eps)(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # Mixed (soft) targets go through the same loss.
    soft = torch.softmax(torch.randn(5, k), 1)
    soft_target = soft * (1 - eps) + eps / k
    assert recipe.build_criterion(eps)(logits, soft).item() == pytest.approx(
        -(soft_target * logits.log_softmax(1)).sum(1).mean().item(), rel=1e-6)


def test_class_weights_are_inverse_frequency_with_mean_one_over_samples():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    weights = recipe.class_weights(labels, 4)  # class 3 has no samples
    assert weights.tolist() == pytest.approx([100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10), 0.0])
    assert weights[labels].mean().item() == pytest.approx(1.0)
    assert (weights[:3] * torch.tensor([60, 30, 10])).tolist() == pytest.approx([100 / 3] * 3)  # equal totals


def test_balanced_sampler_draws_every_class_equally_often():
    labels = torch.tensor([0] * 800 + [1] * 150 + [2] * 40 + [3] * 10)
    draws = torch.cat([balanced_indices(labels, torch.Generator().manual_seed(s)) for s in range(20)])
    freq = torch.bincount(labels[draws], minlength=4).double() / len(draws)
    assert freq.tolist() == pytest.approx([0.25] * 4, abs=0.02)
    # Through the loader: the same draws, and an epoch is still len(labels) images.
    split = DecodedSplit(torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8), labels)
    loader = InMemoryLoader(split, 100, (0.5,) * 3, (0.5,) * 3, balanced=True,
                            order_generator=torch.Generator().manual_seed(0))
    assert torch.equal(loader.indices(), balanced_indices(labels, torch.Generator().manual_seed(0)))
    assert sum(len(y) for _, y in loader) == len(labels)


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 3 + [3] * 1)
    train, val = stratified_split(labels, 0.1, seed=0)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val], minlength=4).tolist() == [5, 2, 1, 0]  # >= 1 when a class has 2+
    again, val_again = stratified_split(labels, 0.1, seed=0)
    assert torch.equal(val, val_again)
    assert not torch.equal(val, stratified_split(labels, 0.1, seed=1)[1])


def test_seed_augmentation_object_matches_the_plain_flag():
    split = DecodedSplit(torch.randint(0, 255, (20, 1, 12, 12), dtype=torch.uint8), torch.arange(20) % 7)

    def batches(augment):
        loader = InMemoryLoader(split, 8, (0.5,) * 3, (0.5,) * 3, shuffle=True, augment=augment,
                                order_generator=torch.Generator().manual_seed(1),
                                augment_generator=torch.Generator().manual_seed(2))
        return [x for x, _ in loader]

    for a, b in zip(batches(True), batches(Augmentation())):
        assert torch.equal(a, b)
    erased = batches(Augmentation(erase=0.99, rotate=15, scale=0.2))
    assert not all(torch.equal(a, b) for a, b in zip(batches(True), erased))


# ---------------------------------------------------------------------------------------------------
# EMA, precision, compile


def test_ema_follows_the_weights_with_the_ramped_decay():
    net = small_net()
    ema = recipe.ModelEma(net, decay=0.99)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.add_(2.0)
        net[1].num_batches_tracked.add_(5)
    d = ema.current_decay()
    assert d == pytest.approx(1 / 10)  # (1 + 0) / (10 + 0): early averages track the weights
    ema.update(net)
    after = ema.module.state_dict()
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(after[name], d * before[name] + (1 - d) * value), name
    assert after["1.num_batches_tracked"].item() == 5
    assert ema.current_decay() == pytest.approx(2 / 11)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_amp_choices():
    cpu = torch.device("cpu")
    assert recipe.resolve_amp("auto", cpu) is None and recipe.resolve_amp("none", cpu) is None
    assert recipe.resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        recipe.resolve_amp("fp16", cpu)
    assert not recipe.use_channels_last("auto", cpu) and recipe.use_channels_last("on", cpu)


def test_bf16_autocast_training_step_runs_in_reduced_precision():
    net = small_net()
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    split = DecodedSplit(torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8), torch.arange(16) % 7)
    loader = InMemoryLoader(split, 8, (0.5,) * 3, (0.5,) * 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net[5].weight.detach().clone()
    result = train_one_epoch(net, loader, nn.CrossEntropyLoss(), opt, "cpu", amp_dtype=torch.bfloat16)
    assert seen and set(seen) == {torch.bfloat16}
    assert math.isfinite(result.loss) and not torch.equal(before, net[5].weight)
    assert net[5].weight.dtype == torch.float32  # master weights stay float32


def test_compile_wraps_and_unwrap_gives_the_plain_module():
    from expression.core.model import unwrap

    net = small_net().eval()
    compiled = recipe.maybe_compile(net, True, backend="eager")
    x = torch.randn(2, 3, 8, 8)
    assert compiled is not net and unwrap(compiled) is net
    assert torch.allclose(compiled(x), net(x))
    assert recipe.maybe_compile(net, False) is net


# ---------------------------------------------------------------------------------------------------
# The strong recipe end to end


def train(tmp_path, image_folder, *extra, name="strong"):
    """test_train's in-process run with the strong recipe and most of its options (later flags win)."""
    argv = ["--batch-size", "8", "--recipe", "strong", "--epochs", "2", "--lr", "0.01", "--mixup", "0.2",
            "--cutmix", "1.0", "--class-balance", "weighted-loss", *extra]
    if "--val-dir" not in extra:
        argv += ["--val-split", "0.3"]
    return run(tmp_path, image_folder, *argv, name=name)


def test_strong_recipe_selects_on_val_and_resumes_exactly(tmp_path, image_folder, capsys, monkeypatch):
    assert train(tmp_path, image_folder) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "strong" / "metrics.csv")))
    assert {"val_loss", "val_acc", "lr"} <= set(rows[0])
    assert float(rows[-1]["lr"]) < 0.01  # cosine decayed
    saved = torch.load(tmp_path / "models" / "strong.pt", weights_only=True)
    best_epoch = max(rows, key=lambda r: (float(r["val_acc"]), -int(r["epoch"])))["epoch"]
    assert saved["epoch"] == int(best_epoch)
    assert saved["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet normalisation travels along
    out = capsys.readouterr().out
    assert "val loss" in out and "best on val" in out

    # Two epochs straight == Ctrl-C in epoch 2, then --resume (schedule, EMA, mixup RNG all restored).
    calls = []

    def interrupt_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_one_epoch(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_one_epoch", interrupt_second_epoch)
        assert train(tmp_path, image_folder, name="split") == 130
    state = tmp_path / "runs" / "split" / "checkpoint.pt"
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert train(tmp_path, image_folder, "--resume", str(state), name="split") == 0
    first = torch.load(tmp_path / "runs" / "strong" / "checkpoint.pt", weights_only=True)
    second = torch.load(state, weights_only=True)
    for key in ("model",):
        for name, value in first[key].items():
            assert torch.equal(value, second[key][name]), name
    for name, value in first["ema"]["model"].items():
        assert torch.equal(value, second["ema"]["model"][name]), name
    assert first["schedule"] == second["schedule"]


def test_val_dir_replaces_the_held_out_fraction(tmp_path, image_folder):
    """With --val-dir the folder is the validation set (here the test folder, so the numbers must agree)."""
    assert parse("--recipe", "strong", "--val-dir", "v").val_split == 0
    # batch 6 divides the 42 training faces: a last batch of 2 at layer4's 1x1 gave BatchNorm a gradient
    # spike (1e5) and a model whose losses were nan, which a run now refuses to save
    assert train(tmp_path, image_folder, "--val-dir", str(image_folder / "test"), "--epochs", "1",
                 "--ema", "0", "--batch-size", "6", name="valdir") == 0
    row = next(csv.DictReader(open(tmp_path / "runs" / "valdir" / "metrics.csv")))
    assert (row["val_loss"], row["val_acc"]) == (row["test_loss"], row["test_acc"])
    saved = torch.load(tmp_path / "models" / "valdir.pt", weights_only=True)
    assert saved["metrics"]["test_images"] == 21 and saved["args"]["val_split"] == 0
