"""Each split strategy's guarantee, on data built to tempt leakage: the same entity in
many rows, timestamps out of order, exact duplicates that would straddle splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loom.workloads import splits
from loom.workloads.dataerrors import DataError

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def patients(n_patients: int = 40, seed: int = 0) -> pd.DataFrame:
    """Visits: each patient has 1..30 rows (very uneven), shuffled, with a label and a time."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for v in range(int(rng.integers(1, 31))):
            day = int(rng.integers(0, 365))
            rows.append({"id": f"r{p:03d}-{v:02d}", "patient": f"p{p:03d}", "label": ["a", "b", "c"][p % 3],
                         "x": str(round(float(rng.normal()), 4)),
                         "ts": (pd.Timestamp("2024-01-01T00:00:00Z") + pd.Timedelta(days=day, hours=v)).isoformat()})
    df = pd.DataFrame(rows, dtype=object)
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)  # out of every order


def ids(parts):
    return {n: set(p["id"]) for n, p in parts.items()}


def assert_partition(df, parts):
    seen = [i for p in parts.values() for i in p["id"]]
    assert sorted(seen) == sorted(df["id"]), "every row in exactly one split"


def test_random_is_seeded_and_independent_of_row_order():
    df = patients()
    a = splits.split_random(df, FRACTIONS, 7, "id")
    b = splits.split_random(df.iloc[::-1].reset_index(drop=True), FRACTIONS, 7, "id")
    c = splits.split_random(df, FRACTIONS, 8, "id")
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    assert_partition(df, a)
    n = len(df)
    assert len(a["train"]) == round(n * 0.7) and len(a["validation"]) == round(n * 0.15)
    # random does not promise entity separation: with many rows per patient it leaks, and the report says so
    report = splits.leakage(a, "patient")
    assert report["entityOverlap"] > 0
    splits.check_leakage(report, "random")  # reported, not fatal for random


def test_stratified_keeps_the_class_mix_in_every_split():
    df = patients(60)
    parts = splits.split_stratified(df, FRACTIONS, 3, "id", "label")
    assert_partition(df, parts)
    overall = df["label"].value_counts(normalize=True)
    for name, part in parts.items():
        mix = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (mix - overall).abs().max() < 0.05, (name, mix.to_dict(), overall.to_dict())
    # per class the sizes are exact: round(n_c * f)
    for value, group in df.groupby("label"):
        assert (parts["train"]["label"] == value).sum() == round(len(group) * 0.7)


def test_stratified_without_labels_is_refused():
    df = patients()
    df.loc[3, "label"] = None
    with pytest.raises(DataError) as err:
        splits.split_stratified(df, FRACTIONS, 3, "id", "label")
    assert err.value.reason == "SchemaViolation" and "label" in str(err.value)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_group_never_puts_an_entity_in_two_splits(seed):
    df = patients(25, seed)
    parts = splits.split_group(df, FRACTIONS, seed, "id", "patient")
    assert_partition(df, parts)
    owners = {}
    for name, part in parts.items():
        assert len(part) > 0
        for p in set(part["patient"]):
            assert p not in owners, f"{p} in {owners.get(p)} and {name}"
            owners[p] = name
    report = splits.leakage(parts, "patient")
    assert report["entityOverlap"] == 0 and report["rowOverlap"] == 0
    splits.check_leakage(report, "group")
    # order of rows in the file does not matter
    again = splits.split_group(df.sample(frac=1, random_state=99), FRACTIONS, seed, "id", "patient")
    assert ids(again) == ids(parts)


def test_group_with_few_entities():
    df = patients(1)
    with pytest.raises(DataError) as err:
        splits.split_group(df, FRACTIONS, 0, "id", "patient")
    assert err.value.reason == "TooFewEntities"
    assert "groupColumn 'patient'" in str(err.value) and "found 1" in str(err.value)
    # exactly three entities: one each, even if one entity holds most rows
    df = pd.DataFrame({"id": [str(i) for i in range(30)], "patient": ["big"] * 28 + ["s1", "s2"]}, dtype=object)
    parts = splits.split_group(df, FRACTIONS, 0, "id", "patient")
    assert sorted(len(set(p["patient"])) for p in parts.values()) == [1, 1, 1]


def test_time_is_forward_chaining_whatever_the_row_order():
    df = patients(30)
    cut = {"validation": "2024-09-01T00:00:00Z", "test": "2024-11-01T00:00:00Z"}
    parts = splits.split_time(df, "id", "ts", cut)
    assert_partition(df, parts)
    t = {n: pd.to_datetime(p["ts"], utc=True) for n, p in parts.items()}
    assert t["train"].max() < pd.Timestamp(cut["validation"]) <= t["validation"].min()
    assert t["validation"].max() < pd.Timestamp(cut["test"]) <= t["test"].min()
    report = splits.leakage(parts, "id", "ts")
    assert report["timeOrderViolations"] == 0
    splits.check_leakage(report, "time")
    shuffled = splits.split_time(df.sample(frac=1, random_state=5), "id", "ts", cut)
    assert ids(shuffled) == ids(parts)


def test_time_split_empty_and_bad_times():
    df = patients(10)
    with pytest.raises(DataError) as err:
        splits.split_time(df, "id", "ts", {"validation": "2030-01-01T00:00:00Z", "test": "2031-01-01T00:00:00Z"})
    assert err.value.reason == "EmptySplit" and "split 'validation' would be empty" in str(err.value)
    df.loc[4, "ts"] = "yesterday"
    with pytest.raises(DataError) as err:
        splits.split_time(df, "id", "ts", {"validation": "2024-06-01T00:00:00Z", "test": "2024-09-01T00:00:00Z"})
    assert err.value.reason == "SchemaViolation" and "'yesterday'" in str(err.value)


def test_exact_duplicates_are_removed_by_row_hash_before_splitting():
    df = patients(20)
    dup = pd.concat([df, df.iloc[:15]], ignore_index=True)
    clean, removed = splits.drop_duplicates(dup)
    assert removed == 15 and len(clean) == len(df)
    # a row hash ignores column order
    assert list(splits.row_hashes(df[sorted(df.columns)])) == list(splits.row_hashes(df))


def test_leakage_report_counts_shared_rows_and_check_fails_for_strict_strategies():
    df = patients(12)
    parts = splits.split_group(df, FRACTIONS, 0, "id", "patient")
    leaked = dict(parts, test=pd.concat([parts["test"], parts["train"].iloc[:2]], ignore_index=True))
    report = splits.leakage(leaked, "patient")
    assert report["rowOverlap"] == 2 and report["entityOverlap"] >= 1
    with pytest.raises(DataError) as err:
        splits.check_leakage(report, "group")
    assert err.value.reason == "Leakage" and "in both train and test" in str(err.value)


def test_frozen_test_rows_and_entities_stay_out_of_train_and_validation():
    df = patients(30)
    first = splits.split_group(df, FRACTIONS, 0, "id", "patient")
    # a new version: more visits for every patient, including the test patients
    more = patients(30, seed=1)
    more["id"] = "n" + more["id"]
    new = pd.concat([df, more], ignore_index=True)
    spec = {"strategy": "group", "groupColumn": "patient", "seed": 5, **FRACTIONS}
    parts, excluded = splits.assign(new, spec, "id", None, frozen_test=first["test"])
    assert parts["test"] is first["test"]
    test_patients = set(first["test"]["patient"])
    assert excluded == int(new["patient"].isin(test_patients).sum())
    for name in ("train", "validation"):
        assert not set(parts[name]["patient"]) & test_patients
    splits.check_leakage(splits.leakage(parts, "patient"), "group")


def test_frozen_test_with_random_split_excludes_rows_by_hash():
    df = patients(20)
    first = splits.split_random(df, FRACTIONS, 0, "id")
    parts, excluded = splits.assign(df, {"strategy": "random", "seed": 9, **FRACTIONS}, "id", None, first["test"])
    assert excluded == len(first["test"])
    assert splits.leakage(parts, "id")["rowOverlap"] == 0
    n = len(df) - excluded
    assert len(parts["train"]) == round(n * 0.7 / 0.85)  # train/validation keep their ratio


def test_frozen_test_with_time_split_drops_no_row_silently():
    df = patients(30)
    cut = {"validation": "2024-06-01T00:00:00Z", "test": "2024-10-01T00:00:00Z"}
    first = splits.split_time(df, "id", "ts", cut)
    more = patients(30, seed=2)
    more["id"] = "n" + more["id"]
    new = pd.concat([df, more], ignore_index=True)
    # a later version whose own test cutoff is earlier than the frozen test's start
    spec = {"strategy": "time", "timeColumn": "ts", "cutoffs": {"validation": "2024-06-01T00:00:00Z", "test": "2024-08-01T00:00:00Z"}}
    parts, excluded = splits.assign(new, spec, "id", None, frozen_test=first["test"])
    assert len(parts["train"]) + len(parts["validation"]) + excluded == len(new)
    start = pd.to_datetime(first["test"]["ts"], utc=True).min()
    assert excluded == int((pd.to_datetime(new["ts"], utc=True) >= start).sum())
    report = splits.leakage(parts, "id", "ts")
    assert report["timeOrderViolations"] == 0 and report["rowOverlap"] == 0
