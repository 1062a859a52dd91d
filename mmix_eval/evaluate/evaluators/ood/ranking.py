"""The ranking metrics every OOD score is judged by (scikit-learn's). Imports numpy only."""

from __future__ import annotations


def ranking_metrics(score_in, score_out) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR, in-distribution positive, from numpy score arrays."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = np.concatenate([score_in, score_out]).astype(np.float64)
    y = np.concatenate([np.ones(len(score_in)), np.zeros(len(score_out))])
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1 - y, -s)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95)]),
    }


def auroc_of(s_in, s_out) -> float:
    """AUROC, or NaN where a score is not finite (a setting that overflows is never chosen)."""
    import numpy as np

    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        return float("nan")
    return ranking_metrics(s_in, s_out)["auroc"]
