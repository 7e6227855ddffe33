"""Declared, seeded perturbations of the test features (spec.robustness).

gaussianNoise adds N(0, (sigma x std)^2) to each value, std being the column's
standard deviation on the test split, so sigma is scale-free. dropValues
replaces a share `rate` of the values of each column with the column mean (as
a mean imputer would) or zero. The same seed gives the same perturbation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class PerturbationError(ValueError):
    pass


def perturb(x: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    columns = list(spec.get("columns") or x.columns)
    unknown = [c for c in columns if c not in x.columns]
    if unknown:
        raise PerturbationError(
            f"robustness {spec.get('name')!r}: column(s) {', '.join(unknown)} are not features of the model "
            f"({', '.join(x.columns)})"
        )
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    out = x.astype(np.float64).copy()
    n = len(out)
    kind = spec.get("type")
    for col in columns:
        values = out[col].to_numpy(copy=True)
        if kind == "gaussianNoise":
            values = values + rng.normal(0.0, float(spec["sigma"]) * float(values.std()), n)
        elif kind == "dropValues":
            fill = float(values.mean()) if spec.get("fill", "mean") == "mean" else 0.0
            values[rng.random(n) < float(spec["rate"])] = fill
        else:
            raise PerturbationError(f"robustness {spec.get('name')!r}: unknown type {kind!r}")
        out[col] = values
    return out
