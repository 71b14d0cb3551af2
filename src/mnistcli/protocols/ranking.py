"""Ranking measures: the ROC AUC of scores against binary labels (the Mann-Whitney U statistic), numpy only."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The probability that a random positive scores above a random negative (ties count half); None without both
    classes, or with a score that is not finite (a diverged model has no ranking)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if not np.isfinite(scores).all():
        return None
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))
