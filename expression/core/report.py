"""Reports: metrics.csv, accuracy/loss curves, confusion matrix (seaborn) and classification report.

All files are written atomically; plots use the non-interactive Agg backend so training works on
servers and in CI without a display.
"""
from __future__ import annotations

import csv
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from expression.core.io import atomic_path, write_json, write_text  # noqa: E402  # noqa: E402

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
                  "seconds")


def write_metrics_csv(path, history: list[dict]) -> None:
    """One row per epoch; the val columns appear only for runs with a validation split."""
    columns = [c for c in METRIC_COLUMNS if any(c in row for row in history)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def plot_curves(path, history: list[dict], title: str = "") -> None:
    """Accuracy and loss per epoch, train vs (validation and) test, side by side."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((ax_acc, "acc", "accuracy"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], "o-", label=f"train {label}")
        if any(f"val_{key}" in row for row in history):
            ax.plot(epochs, [row.get(f"val_{key}") for row in history], "^-", label=f"val {label}")
        ax.plot(epochs, [row[f"test_{key}"] for row in history], "s-", label=f"test {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_title("Accuracy")
    ax_loss.set_title("Loss")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion_matrix(path, targets, preds, class_names, title: str = "") -> np.ndarray:
    """Counts and row-normalised (recall per true class) heat maps side by side; returns the counts."""
    labels = list(range(len(class_names)))
    counts = confusion_matrix(targets, preds, labels=labels)
    row_sums = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=float), where=row_sums > 0)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", ax=axes[0],
                xticklabels=class_names, yticklabels=class_names)
    sns.heatmap(normalised, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, ax=axes[1],
                xticklabels=class_names, yticklabels=class_names)
    for ax, name in zip(axes, ("counts", "row-normalised (recall)")):
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return counts


def write_confusion_csv(path, counts: np.ndarray, class_names) -> None:
    """The counts as text (rows: true class, columns: predicted), for diffing and scripts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, counts):
        writer.writerow([name, *map(int, row)])
    write_text(path, buffer.getvalue())


def write_classification_report(txt_path, json_path, targets, preds, class_names) -> dict:
    labels = list(range(len(class_names)))
    kwargs = dict(labels=labels, target_names=list(class_names), digits=4, zero_division=0)
    write_text(txt_path, classification_report(targets, preds, **kwargs) + "\n")
    report = classification_report(targets, preds, output_dict=True, **kwargs)
    write_json(json_path, report)
    return report


def write_evaluation_reports(out_dir, result, class_names, title: str = "") -> dict:
    """The report set of one evaluation (training's final model, evaluate.py per TTA mode): confusion
    matrix PNG + CSV and classification report text + JSON, over all the model's classes."""
    counts = plot_confusion_matrix(f"{out_dir}/confusion_matrix.png", result.targets, result.preds, class_names,
                                   title)
    write_confusion_csv(f"{out_dir}/confusion_matrix.csv", counts, class_names)
    return write_classification_report(f"{out_dir}/classification_report.txt",
                                       f"{out_dir}/classification_report.json", result.targets, result.preds,
                                       class_names)


def save_figure(fig, path, dpi: int = 120) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
