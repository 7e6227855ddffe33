"""Adjudication: one label per item from several annotators' labels.

``majority``: the label most annotators gave; its confidence is its vote share.

``dawid_skene``: A. P. Dawid and A. M. Skene, "Maximum Likelihood Estimation
of Observer Error-Rates Using the EM Algorithm", Applied Statistics 28(1),
20-28 (1979). Each annotator j has a confusion matrix ``pi[j, true, given]``;
EM alternates the posterior of each item's true label given everyone's labels
(E-step) with the class priors and confusion matrices that posterior implies
(M-step). Started from the vote shares (the paper's initialisation), it
learns which annotators to trust for which labels, so two annotators who share
a systematic confusion can outvote the others in a majority but not here.
The confidence of an item is its posterior probability.

Both return an :class:`Adjudicated`: ``label`` (class index, -1 for a tie),
``posterior`` (items x classes; vote shares for majority), ``confidence``.
Ties are never guessed: an item whose top two labels score the same is a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TIE_TOLERANCE = 1e-9


@dataclass
class Adjudicated:
    method: str
    label: np.ndarray  # class index per item, -1 for a tie
    posterior: np.ndarray  # items x classes
    confidence: np.ndarray  # posterior of the chosen label (vote share for majority)
    tie: np.ndarray  # bool per item
    iterations: int | None = None
    confusion: np.ndarray | None = None  # annotators x classes x classes (dawid-skene)
    priors: np.ndarray | None = None
    log_likelihood: list[float] = field(default_factory=list)


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """items x annotators x classes, 1 where annotator j gave label k to item i."""
    obs = np.zeros((*codes.shape, n_classes))
    i, j = np.nonzero(codes >= 0)
    obs[i, j, codes[i, j]] = 1.0
    return obs


def _decide(method: str, posterior: np.ndarray, **extra) -> Adjudicated:
    top = posterior.argmax(axis=1)
    ordered = np.sort(posterior, axis=1)
    tie = (ordered[:, -1] - ordered[:, -2] <= TIE_TOLERANCE) if posterior.shape[1] > 1 else np.zeros(len(posterior), bool)
    label = np.where(tie, -1, top)
    confidence = posterior[np.arange(len(posterior)), top]
    return Adjudicated(method, label, posterior, confidence, tie, **extra)


def vote_shares(codes: np.ndarray, n_classes: int) -> np.ndarray:
    counts = one_hot(codes, n_classes).sum(axis=1)
    totals = counts.sum(axis=1, keepdims=True)
    if (totals == 0).any():
        raise ValueError("every item needs at least one label")
    return counts / totals


def majority(codes: np.ndarray, n_classes: int) -> Adjudicated:
    return _decide("majority", vote_shares(codes, n_classes))


def dawid_skene(codes: np.ndarray, n_classes: int, max_iter: int = 200, tol: float = 1e-7,
                smoothing: float = 0.01, known: np.ndarray | None = None) -> Adjudicated:
    """EM over annotator confusion matrices. ``smoothing`` is a small Dirichlet
    pseudo-count that keeps every probability above 0 (a log of 0 would pin an
    item's posterior forever after one surprising label).

    ``known`` (class index per item, -1 where unknown): gold answers. Their
    posterior is held at the answer in every E-step, which anchors the confusion
    matrices to the truth (EM alone cannot tell a class from a relabelling of it
    when most annotators share a systematic swap)."""
    obs = one_hot(codes, n_classes)
    posterior = vote_shares(codes, n_classes)
    anchored = np.zeros(len(codes), bool) if known is None else np.asarray(known) >= 0
    if anchored.any():
        gold = np.eye(n_classes)[np.asarray(known)[anchored]]
        posterior[anchored] = gold
    history: list[float] = []
    iterations = 0
    for iterations in range(1, max_iter + 1):
        # M-step: class priors and each annotator's confusion matrix pi[j, true, given].
        # With gold answers the first M-step learns from them alone: EM starts from
        # confusion matrices measured against the truth rather than against the vote.
        weights = posterior * anchored[:, None] if iterations == 1 and anchored.any() else posterior
        priors = (weights.sum(axis=0) + smoothing) / (weights.sum() + smoothing * n_classes)
        counts = np.einsum("ic,ijk->jck", weights, obs) + smoothing
        confusion = counts / counts.sum(axis=2, keepdims=True)
        # E-step: log P(true = c | labels) = log prior_c + sum_j log pi[j, c, given_j] + const
        log_post = np.log(priors)[None, :] + np.einsum("ijk,jck->ic", obs, np.log(confusion))
        norm = np.logaddexp.reduce(log_post, axis=1, keepdims=True)
        posterior = np.exp(log_post - norm)
        if anchored.any():
            posterior[anchored] = gold
        history.append(float(norm.sum()))
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-2]):
            break
    return _decide("dawid-skene", posterior, iterations=iterations, confusion=confusion, priors=priors,
                   log_likelihood=history)


def entropy(posterior: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row: the uncertainty the review queue is ordered by."""
    p = np.clip(posterior, 1e-300, 1.0)
    return -(np.where(posterior > 0, posterior * np.log2(p), 0.0)).sum(axis=1)


def adjudicate(codes: np.ndarray, n_classes: int, method: str, known: np.ndarray | None = None) -> Adjudicated:
    if method == "majority":
        return majority(codes, n_classes)
    if method == "dawid-skene":
        return dawid_skene(codes, n_classes, known=known)
    raise ValueError(f"unknown adjudication {method!r} (majority or dawid-skene)")
