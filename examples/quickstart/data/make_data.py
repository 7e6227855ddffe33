"""Regenerate the quickstart data set deterministically (no network).

iris.csv         id, sepal_length, sepal_width, petal_length, petal_width (no label)
annotations.csv  item, annotator, label: three annotators who each agree with
                 the true species on 95%, 93% and 90% of items (seeded noise).
gold.csv         item, label: 15 items with known answers (every 10th flower).

    python examples/quickstart/data/make_data.py [OUT_DIR]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris

SEED = 20240601
ANNOTATORS = {"ann-alice": 0.95, "ann-bob": 0.93, "ann-chen": 0.90}
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def make(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    iris = load_iris()
    classes = [str(c) for c in iris.target_names]
    ids = [f"iris-{i:03d}" for i in range(len(iris.target))]

    with open(out_dir / "iris.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", *FEATURES])
        for item, row in zip(ids, iris.data):
            w.writerow([item, *(f"{v:.1f}" for v in row)])

    rng = np.random.default_rng(SEED)
    with open(out_dir / "annotations.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["item", "annotator", "label"])
        for annotator, accuracy in ANNOTATORS.items():
            # exactly round((1 - accuracy) * n) seeded disagreements per annotator
            n_wrong = round((1.0 - accuracy) * len(ids))
            wrong = set(rng.choice(len(ids), size=n_wrong, replace=False).tolist())
            for i, (item, truth) in enumerate(zip(ids, iris.target)):
                label = int(truth)
                if i in wrong:
                    # a realistic confusion: versicolor <-> virginica mostly
                    others = [c for c in range(len(classes)) if c != label]
                    weights = np.array([3.0 if {label, c} == {1, 2} else 1.0 for c in others])
                    label = int(rng.choice(others, p=weights / weights.sum()))
                w.writerow([item, annotator, classes[label]])


def make_gold(out_dir: Path) -> None:
    """Every 10th flower with its true species: the LabelJob's gold set."""
    iris = load_iris()
    with open(out_dir / "gold.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["item", "label"])
        for i in range(0, len(iris.target), 10):
            w.writerow([f"iris-{i:03d}", str(iris.target_names[iris.target[i]])])


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    make(out)
    make_gold(out)
