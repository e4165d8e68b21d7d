"""Classification metrics as the paper defines them, named so a reader knows which average.

The paper's precision/recall/F1 are macro averages (every class counts equally): that is
why 72% accuracy sat beside F1 0.13 when the model predicted NORM for every film.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    labels = list(range(len(class_names)))
    out = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred) if len(set(y_true)) > 1 else float(np.mean(y_true == y_pred)),
        "precision_macro": skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "recall_macro": skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "f1_macro": skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "f1_weighted": skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
    }
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, name in enumerate(class_names):
        out[f"precision_{name}"] = p[i]
        out[f"recall_{name}"] = r[i]
        out[f"f1_{name}"] = f[i]
    return {k: float(v) for k, v in out.items()}


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Always predicting the most frequent training class: what a result must beat."""
    majority = int(np.bincount(y_train, minlength=n_classes).argmax())
    pred = np.full_like(y_test, majority)
    labels = list(range(n_classes))
    return {
        "majority_class": float(majority),
        "majority_accuracy": float(skm.accuracy_score(y_test, pred)),
        "majority_f1_macro": float(skm.f1_score(y_test, pred, labels=labels, average="macro", zero_division=0)),
        # 1 / (classes present in the test set): what "better than chance" means for balanced accuracy
        "majority_balanced_accuracy": float(skm.balanced_accuracy_score(y_test, pred)) if len(set(y_test)) > 1
        else float(np.mean(y_test == pred)),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str):
    """The confusion matrix as a matplotlib figure (mlflow.log_figure shows it on the run page;
    close it with plt.close). The backend is Agg (MPLBACKEND, projects/core/runtime.py)."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 + 0.7 * len(class_names)), max(3.8, 0.8 + 0.6 * len(class_names))))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > peak / 2 else "black", fontsize=8)
    fig.tight_layout()
    return fig
