"""Evaluation: accuracy, per-class precision/recall/F1, confusion matrix, and their plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Metrics of predicted ``probabilities`` (N, C) against true class indices ``y_true`` (N,)."""
    y_pred = probabilities.argmax(axis=1)
    n = len(classes)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    precision, recall, f1, support = {}, {}, {}, {}
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        predicted, actual = confusion[:, i].sum(), confusion[i, :].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precision[name], recall[name] = round(float(p), 6), round(float(r), 6)
        f1[name] = round(float(2 * p * r / (p + r)) if p + r else 0.0, 6)
        support[name] = int(actual)
    accuracy = float(np.trace(confusion) / confusion.sum()) if confusion.sum() else 0.0
    return {
        "accuracy": round(accuracy, 6),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "confusion": confusion.tolist(),
        "test_images": int(confusion.sum()),
    }


def plot_confusion_matrix(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    """Save the confusion matrix (rows: true class, columns: predicted) as a PNG."""
    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.8), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    """Save loss and accuracy per epoch, training and validation, as a PNG."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        ax.plot(epochs, history.get(key, []), label="train")
        ax.plot(epochs, history.get(f"val_{key}", []), label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
