"""Histogram binning (Zadrozny & Elkan 2001), one-vs-rest per class: each class's softmax probability is put in one
of BINS equal-width bins on [0, 1] and replaced by the share of held-out images in that bin whose label is the
class (an empty bin keeps its centre); the C calibrated values are renormalised and enter every metric as
``log_probs`` (floored at FLOOR). torch-uncertainty's ``HistogramBinningScaler`` computes the same.

Its failure modes: a class absent from the held-out images would get probability 0 in every bin, so it could
never be predicted again: such a class keeps its raw softmax probability, and every calibrated row says which. A
separable held-out set needs no care here (the bins' frequencies are 0 or 1, which the floor keeps finite)."""

from __future__ import annotations

import torch

from mmix_eval.calibrators.base import Calibrator, absent_note, log_probs

BINS = 15


def bin_index(p: torch.Tensor, bins: int) -> torch.Tensor:
    """Each probability's bin: (lo, hi] intervals of width 1 / bins, the first closed at 0."""
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=p.dtype)
    return torch.bucketize(p, edges[1:-1].contiguous())


class Histogram(Calibrator):
    name = "histogram"
    probabilities = True

    def fit(self, logits, labels) -> dict:
        p = torch.softmax(logits, dim=1)
        c = p.shape[1]
        idx = bin_index(p, BINS)
        onehot = torch.nn.functional.one_hot(labels, c).to(p.dtype)
        centres = (torch.arange(BINS, dtype=torch.float64) + 0.5) / BINS
        values = centres.repeat(c, 1)
        for k in range(c):
            for b in range(BINS):
                mask = idx[:, k] == b
                if mask.any():
                    values[k, b] = float(onehot[mask, k].mean())
        absent = sorted(set(range(c)) - set(labels.tolist()))
        return {"bins": BINS, "values": values.flatten().tolist(), "raw_classes": absent}

    def apply(self, logits, params):
        p = torch.softmax(logits, dim=1)
        c, bins = p.shape[1], int(params["bins"])
        values = torch.tensor(params["values"], dtype=p.dtype).view(c, bins)
        out = values.gather(1, bin_index(p, bins).T).T
        raw = list(params.get("raw_classes", []))
        if raw:
            out[:, raw] = p[:, raw]
        return log_probs(out)

    def note(self, params) -> str | None:
        return absent_note("histogram binning", params)
