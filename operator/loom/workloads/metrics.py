"""Classification metrics with scikit-learn, from the model's class probabilities.

Labels are compared by index into the model's class list, so scikit-learn's own
label sorting never reorders the probability columns.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

LABEL_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Rows that already are distributions pass through; logits get a softmax."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"model output must be [rows, classes], got shape {out.shape}")
    if (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out / out.sum(axis=1, keepdims=True)  # float32 rounding: scikit-learn wants exact sums
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy and macro precision/recall/F1 over every class the model knows."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(n_classes))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "f1_macro": round(float(f), 6),
        "precision_macro": round(float(p), 6),
        "recall_macro": round(float(r), 6),
    }


def probability_metrics(y_true: np.ndarray, probs: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """roc_auc (one-vs-rest, macro) and log_loss; notes say why one could not be computed."""
    from sklearn.metrics import log_loss, roc_auc_score

    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    out: dict[str, float] = {}
    notes: list[str] = []
    out["log_loss"] = round(float(log_loss(y_true, np.clip(probs, 1e-15, 1.0), labels=labels)), 6)
    present = np.unique(y_true)
    if len(present) < n_classes:
        notes.append(f"roc_auc not computed: the test split has {len(present)} of the model's {n_classes} classes")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if n_classes == 2:
                auc = roc_auc_score(y_true, probs[:, 1])
            else:
                auc = roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
        out["roc_auc"] = round(float(auc), 6)
    return out, notes


def per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(len(classes))),
                                                 average=None, zero_division=0)
    return {c: {"precision": round(float(p[i]), 6), "recall": round(float(r[i]), 6), "f1": round(float(f[i]), 6),
                "support": int(s[i])} for i, c in enumerate(classes)}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).astype(int).tolist()
