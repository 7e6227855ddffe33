"""Expected calibration error (top-label confidence) and its reliability table.

Bins are equal-width on (0, 1]: a row with confidence c falls in bin i when
i/bins < c <= (i+1)/bins (confidence 0 goes to bin 0). ECE is the row-weighted
mean of |accuracy - mean confidence| over the bins.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, Any]]]:
    if bins < 1:
        raise ValueError("bins must be at least 1")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    n = len(confidence)
    ece = 0.0
    table = []
    for i in range(bins):
        mask = index == i
        count = int(mask.sum())
        row: dict[str, Any] = {"bin": i, "lower": round(float(edges[i]), 6), "upper": round(float(edges[i + 1]), 6),
                               "count": count}
        if count:
            conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
            row.update(confidence=round(conf, 6), accuracy=round(acc, 6), gap=round(abs(acc - conf), 6))
            ece += count / n * abs(acc - conf)
        table.append(row)
    return round(float(ece), 6), table
