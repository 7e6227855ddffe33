"""Agreement on a large ratings matrix: Loom's functions against the libraries called directly.

    python benchmarks/labels_agreement.py [--items 100000] [--annotators 5] [--classes 4] [--repeats 3]

Both sides get the same matrix (items x annotators, every item labelled by every
annotator, so Fleiss' kappa applies) in the same run:

- Loom: ``loom.workloads.agreement`` - ``cohen`` (every pair), ``fleiss``, ``krippendorff_alpha``.
- Direct: ``sklearn.metrics.cohen_kappa_score`` on every pair, statsmodels'
  ``aggregate_raters`` + ``fleiss_kappa``, ``krippendorff.alpha(reliability_data=...,
  level_of_measurement="nominal")``.

The values must agree (1e-9); the ratio is Loom's time over the direct time (best of
``--repeats``; below 1 means Loom is faster). Loom's per-label (one-vs-rest) figures
and the long-table-to-matrix step are timed too, for scale. JSON goes to stdout and to
benchmarks/results/labels_agreement.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from loom.workloads import agreement as agr  # noqa: E402


def best(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def make(items, annotators, classes, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, items)
    accuracy = np.linspace(0.9, 0.7, annotators)
    codes = np.empty((items, annotators), dtype=np.int64)
    for j, acc in enumerate(accuracy):
        wrong = rng.random(items) > acc
        codes[:, j] = np.where(wrong, (truth + rng.integers(1, classes, items)) % classes, truth)
    return codes


def loom_all(codes, names, classes):
    return {"cohen": agr.cohen(codes, names)["pairs"], "fleiss": agr.fleiss(codes, classes)["value"],
            "krippendorff": agr.krippendorff_alpha(codes, classes)["value"]}


def direct_all(codes):
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    pairs = [cohen_kappa_score(codes[:, j], codes[:, k]) for j, k in itertools.combinations(range(codes.shape[1]), 2)]
    table, _ = aggregate_raters(codes)
    fleiss = fleiss_kappa(table, method="fleiss")
    alpha = krippendorff.alpha(reliability_data=codes.T.astype(float), level_of_measurement="nominal")
    return {"cohen": pairs, "fleiss": fleiss, "krippendorff": alpha}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--annotators", type=int, default=5)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "labels_agreement.json"))
    args = ap.parse_args(argv)

    codes = make(args.items, args.annotators, args.classes, args.seed)
    names = [f"a{j}" for j in range(args.annotators)]

    # warm both (imports, first-call costs), then time
    direct_all(codes[:1000])
    loom_all(codes[:1000], names, args.classes)
    t_direct, direct = best(lambda: direct_all(codes), args.repeats)
    t_loom, loom = best(lambda: loom_all(codes, names, args.classes), args.repeats)

    loom_pairs = [p["value"] for p in loom["cohen"]]
    diffs = {
        "cohen_pairs": float(np.max(np.abs(np.array(loom_pairs) - np.array(direct["cohen"])))),
        "fleiss": abs(loom["fleiss"] - direct["fleiss"]),
        "krippendorff": abs(loom["krippendorff"] - direct["krippendorff"]),
    }
    # Loom rounds figures to 6 decimals for status; compare at that precision
    agree = all(d <= 5e-7 for d in diffs.values())

    # per-figure timings, for where the time goes
    parts = {}
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
    parts["cohen_pairs"] = (best(lambda: agr.cohen(codes, names), args.repeats)[0],
                            best(lambda: [cohen_kappa_score(codes[:, j], codes[:, k]) for j, k in
                                          itertools.combinations(range(args.annotators), 2)], args.repeats)[0])
    parts["fleiss"] = (best(lambda: agr.fleiss(codes, args.classes), args.repeats)[0],
                       best(lambda: fleiss_kappa(aggregate_raters(codes)[0]), args.repeats)[0])
    parts["krippendorff"] = (best(lambda: agr.krippendorff_alpha(codes, args.classes), args.repeats)[0],
                             best(lambda: krippendorff.alpha(reliability_data=codes.T.astype(float),
                                                             level_of_measurement="nominal"), args.repeats)[0])
    t_per_label, _ = best(lambda: agr.per_label(codes, names, [str(c) for c in range(args.classes)]), 1)

    import pandas as pd
    from loom.workloads.annotations import Ratings
    long = pd.DataFrame({"item": np.repeat([f"i{i:06d}" for i in range(args.items)], args.annotators),
                         "annotator": np.tile(names, args.items), "label": codes.reshape(-1).astype(str)})
    t_matrix, _ = best(lambda: Ratings.from_long(long), 1)

    result = {
        "benchmark": "labels_agreement",
        "items": args.items, "annotators": args.annotators, "classes": args.classes, "repeats": args.repeats,
        "loom_seconds": round(t_loom, 4), "direct_seconds": round(t_direct, 4),
        "ratio_loom_over_direct": round(t_loom / t_direct, 3),
        "values_agree": agree, "max_abs_difference": diffs,
        "values": {"cohen_mean": float(np.mean(loom_pairs)), "fleiss": loom["fleiss"], "krippendorff": loom["krippendorff"]},
        "parts_seconds_loom_direct": {k: [round(a, 4), round(b, 4)] for k, (a, b) in parts.items()},
        "loom_per_label_seconds": round(t_per_label, 4),
        "loom_long_table_to_matrix_seconds": round(t_matrix, 4),
    }
    print(f"agreement on {args.items} items x {args.annotators} annotators: Loom {t_loom:.3f}s, "
          f"libraries directly {t_direct:.3f}s, ratio {t_loom / t_direct:.2f}x; values agree: {agree}")
    for k, (a, b) in parts.items():
        print(f"  {k:<13} Loom {a:.3f}s  direct {b:.3f}s  ratio {a / b:.2f}x")
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
