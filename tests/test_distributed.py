"""torchrun on CPU (gloo): two processes train, only rank 0 writes, and evaluation counts each image once."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import torch
from conftest import ROOT
from sklearn.metrics import confusion_matrix

from expression.core import checkpoint
from expression.core.datasets import check_splits, decode_split
from expression.core.preprocessing import Preprocessing
from expression.training.engine import evaluate
from expression.training.loader import InMemoryLoader


def torchrun(tmp_path, image_folder, name, *extra):
    """train_resnet34.py under torchrun with two CPU processes (gloo), as a user would start it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train_resnet34.py"), "--data", str(image_folder), "--weights", "none", "--epochs", "1",
           "--batch-size", "8", "--img-size", "32", "--device", "cpu", "--workers", "0", "--quiet",
           "--out", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--name", name, *extra]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_process_gloo_run_matches_single_process_evaluation(tmp_path, image_folder):
    # 21 test images over 2 ranks: shards of 11 and 10, so padding would show up as a duplicate.
    done = torchrun(tmp_path, image_folder, "ddp")
    assert done.stdout.count("epoch   1/1") == 1  # only rank 0 prints
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ddp.pt"]

    model, ckpt = checkpoint.load_model(tmp_path / "models" / "ddp.pt")
    pre = Preprocessing.from_checkpoint(ckpt)
    classes = check_splits(image_folder / "train", image_folder / "test")
    test = decode_split(image_folder / "test", classes, pre.img_size)
    single = evaluate(model, InMemoryLoader(test, 8, pre.mean, pre.std), "cpu")

    run_dir = tmp_path / "runs" / "ddp"
    with open(run_dir / "confusion_matrix.csv") as f:
        counts = np.array([[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]])
    assert counts.sum() == len(test.labels) == 21
    assert np.array_equal(counts, confusion_matrix(single.targets, single.preds, labels=range(len(classes))))
    report = json.loads((run_dir / "classification_report.json").read_text())
    assert report["accuracy"] == single.acc == ckpt["metrics"]["test_acc"]
    assert ckpt["metrics"]["test_images"] == 21


def test_distributed_resume_equals_uninterrupted(tmp_path, image_folder):
    torchrun(tmp_path, image_folder, "straight", "--epochs", "2")
    torchrun(tmp_path, image_folder, "split", "--epochs", "1")
    state = tmp_path / "runs" / "split" / "checkpoint.pt"
    assert len(torch.load(state, weights_only=True)["rng"]["augment"]) == 2  # every rank's stream saved
    torchrun(tmp_path, image_folder, "split", "--epochs", "2", "--resume", str(state))

    def rows(name):
        with open(tmp_path / "runs" / name / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]

    assert len(rows("split")) == 2 and rows("split") == rows("straight")
    straight = torch.load(tmp_path / "models" / "straight.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "models" / "split.pt", weights_only=True)["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
