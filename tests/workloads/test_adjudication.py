"""Majority vote and Dawid-Skene: ties, confidence, and DS seeing through colluders."""
from __future__ import annotations

import numpy as np
import pytest

from loom.workloads import adjudication as adj


def colluders(n=600, seed=1):
    """Three honest annotators (80% right, errors at random) and two who collude: both
    always answer class 2 when the truth is 1. A majority follows the pair whenever one
    honest annotator slips; Dawid-Skene learns the pair's confusion and discounts them."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    cols = []
    for _ in range(3):
        lab = truth.copy()
        wrong = rng.random(n) > 0.8
        lab[wrong] = (truth[wrong] + rng.integers(1, 3, wrong.sum())) % 3
        cols.append(lab)
    pair = np.where(truth == 1, 2, truth)
    return truth, np.stack(cols + [pair, pair.copy()], axis=1)


def test_dawid_skene_recovers_the_truth_where_majority_is_fooled():
    truth, codes = colluders()
    maj = adj.majority(codes, 3)
    ds = adj.dawid_skene(codes, 3)
    maj_acc = (maj.label == truth).mean()
    ds_acc = (ds.label == truth).mean()
    assert maj_acc < 0.87, maj_acc
    assert ds_acc > 0.95 and ds_acc > maj_acc + 0.08, (ds_acc, maj_acc)
    # on the class the pair corrupts, the majority is wrong far more often
    ones = truth == 1
    assert (maj.label[ones] == 1).mean() < 0.6 < 0.9 < (ds.label[ones] == 1).mean()
    # the learned confusion of a colluder: true 1 -> says 2
    assert ds.confusion[3][1, 2] > 0.95 and ds.confusion[0][1, 1] > 0.7
    # EM climbed: the log-likelihood never falls
    assert np.all(np.diff(ds.log_likelihood) > -1e-6)
    assert np.allclose(ds.posterior.sum(axis=1), 1)


def test_gold_answers_anchor_dawid_skene_where_most_annotators_share_a_swap():
    """Three of five annotators swap b and c. Without gold, "truth" and "truth with b and c
    swapped" explain the labels equally well (same likelihood), and EM started from the
    vote follows the three. Thirty gold answers (5% of the items) pick the right one."""
    rng = np.random.default_rng(0)
    n = 600
    truth = rng.integers(0, 3, n)

    def noisy(base, accuracy):
        lab = base.copy()
        wrong = rng.random(n) > accuracy
        lab[wrong] = (base[wrong] + rng.integers(1, 3, wrong.sum())) % 3
        return lab

    swapped = np.array([0, 2, 1])[truth]
    codes = np.stack([noisy(truth, 0.85), noisy(truth, 0.85)] + [noisy(swapped, 0.9) for _ in range(3)], axis=1)
    known = np.full(n, -1)
    gold = rng.choice(n, 30, replace=False)
    known[gold] = truth[gold]
    plain = adj.dawid_skene(codes, 3)
    anchored = adj.dawid_skene(codes, 3, known=known)
    assert (adj.majority(codes, 3).label == truth).mean() < 0.5
    assert (plain.label == truth).mean() < 0.5
    assert (anchored.label == truth).mean() > 0.95
    assert (anchored.label[gold] == truth[gold]).all() and np.allclose(anchored.confidence[gold], 1)
    assert anchored.log_likelihood[-1] == pytest.approx(plain.log_likelihood[-1], rel=1e-3)  # the twin optimum


def test_majority_ties_are_never_guessed():
    codes = np.array([[0, 0, 1], [0, 1, -1], [2, 2, 2]])
    r = adj.majority(codes, 3)
    assert r.label.tolist() == [0, -1, 2]
    assert r.tie.tolist() == [False, True, False]
    assert r.confidence.tolist() == pytest.approx([2 / 3, 0.5, 1.0])


def test_dawid_skene_agrees_with_majority_on_clean_data_and_reports_low_confidence():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 300)
    codes = np.stack([np.where(rng.random(300) < 0.9, truth, 1 - truth) for _ in range(4)], axis=1)
    ds = adj.dawid_skene(codes, 2)
    maj = adj.majority(codes, 2)
    clear = ~maj.tie
    assert (ds.label[clear] == maj.label[clear]).mean() > 0.98
    # items with a 2-2 split are the least confident
    assert ds.confidence[maj.tie].mean() < ds.confidence[clear].mean()
    h = adj.entropy(ds.posterior)
    assert h.max() <= 1.0 + 1e-9 and h.min() >= 0


def test_entropy_orders_uncertainty():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    assert adj.entropy(p).tolist() == pytest.approx([0.0, 1.0, 0.468996], abs=1e-6)


def test_unknown_method():
    with pytest.raises(ValueError, match="dawid-skene"):
        adj.adjudicate(np.zeros((2, 2), int), 2, "vibes")
