"""One checkpoint's feature scores: fitted once on its training images, then every source scored from the
features of the pass that computes its logits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.ood.features import FEATURE_SCORES, HEAD_SCORES, PENULTIMATE, choose, fit_layer
from mmix_eval.evaluate.evaluators.ood.logit_scores import with_replicates
from mmix_eval.evaluate.evaluators.ood.ranking import auroc_of, ranking_metrics
from mmix_eval.evaluate.evaluators.ood.taps import forward_features, head_of, resolve_taps

NAN = float("nan")
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
FIT_SEED = 0x666974  # the training subset's stream, beside the evaluation seed


@dataclass
class FeatureRun:
    model: object
    device: object
    batch_size: int
    precision: str
    taps: dict
    which: tuple
    fits: dict  # layer -> LayerFit
    settings: dict  # evaluator-wide settings of the feature rows
    note: str | None = None  # a caveat every row of the evaluator carries (head scores n/a, say)
    test: dict | None = None  # layer -> the test images' features
    chosen: dict = field(default_factory=dict)  # (layer, score) -> how its setting was chosen
    val_spec: str | None = None  # the OOD validation source the settings are chosen on (None: the papers')
    test_scores: dict = field(default_factory=dict)  # layer -> the test images' scores, once for every source

    def forward(self, x):
        """(logits, layer -> features) of uint8 images ``x`` (an OOD source's: labels never read)."""
        import torch

        from mmix_eval.evaluate.images import Images

        images = x if isinstance(x, Images) else Images(x, torch.zeros(len(x), dtype=torch.int64))
        return forward_features(self.model, images, self.taps, self.device, self.batch_size, self.precision)

    def test_pass(self, target):
        """The clean test logits (computed here and shared when not yet cached) and the test features: one pass."""
        z, self.test = self.forward(target.test)
        if target.clean is None:
            target.clean = z
        return target.clean

    def choose_on(self, target, spec: str, x) -> None:
        """Each searched setting chosen per layer on the held-out in-distribution images against ``spec``."""
        _, f_in = self.forward(target.val)
        _, f_out = self.forward(x)
        for layer, fit in self.fits.items():
            for s, text in choose(fit, self.which, f_in[layer], f_out[layer], auroc_of).items():
                self.chosen[layer, s] = text

    def rows(self, base: dict, spec: str, f_out: dict, n_ood: int) -> list[dict]:
        from mmix_eval.evaluate.records import record

        rows = []
        for layer, fit in self.fits.items():
            if layer not in self.test_scores:  # after choose_on: the settings are final by now
                self.test_scores[layer] = fit.scores(self.test[layer], self.which)
            s_in, s_out = self.test_scores[layer], fit.scores(f_out[layer], self.which)
            for sc in s_in:
                label = f"{spec}, {sc} score at layer {layer}"
                extra = {
                    "ood": spec,
                    "score": sc,
                    "layer": layer,
                    "width": fit.width,
                    "n_ood": n_ood,
                    **fit.settings.get(sc, {}),
                    **({"chosen_by": self.chosen[layer, sc]} if (layer, sc) in self.chosen else {}),
                }
                got, rbase = ranked(s_in[sc], s_out[sc], base, f"{sc} at layer {layer}")
                these = [record(rbase, f"{spec}/{sc}@{layer}", m, v, label, **extra) for m, v in got.items()]
                for row in these:
                    row["headline"] = False  # the evaluator's section and its by-layer figure, not the main table
                rows += with_replicates(these, s_in[sc], s_out[sc]) if rbase is base else these
        return rows


def ranked(s_in, s_out, base: dict, what: str) -> tuple[dict, dict]:
    """(the ranking metrics, the rows' base): NaN metrics and a warning where a score is not finite (ASH-S's scale
    overflows on features of either sign), which no threshold can rank."""
    if np.isfinite(s_in).all() and np.isfinite(s_out).all():
        return ranking_metrics(s_in, s_out), base
    why = f"{what}: scores not finite (an overflow), no ranking"
    return dict.fromkeys(METRICS, NAN), {**base, "warnings": "; ".join(filter(None, [base.get("warnings"), why]))}


def feature_run(target, model, options, asked: tuple, common, device, batch_size: int) -> FeatureRun | str | None:
    """The fitted feature scores of ``target``; None when none is asked; with 'all', the reason there are none
    where the model or target allows none (a user who named a feature score gets that reason as an error)."""
    import torch

    from mmix_eval.evaluate.ensemble import Ensemble
    from mmix_eval.evaluate.images import Images

    which = tuple(s for s in FEATURE_SCORES if s in asked)
    if not which:
        return None
    explicit = list(options.scores) != ["all"]

    def refuse(why: str) -> str:
        if explicit:
            raise UserError(f"ood: feature scores ({', '.join(which)}) {why}")
        return f"feature scores n/a: {why}"

    val_spec, val_note = options.ood_val or None, None
    if val_spec and target.val is None:
        from mmix_eval.errors import mention

        if not (val_spec.startswith("openood:") and val_spec.endswith("/val")):
            raise UserError(
                f"ood: {mention('ood_val')} expected held-out in-distribution images to choose settings on, got "
                f"none ({target.run} holds no validation split; give {mention('calibration_split')})"
            )
        val_spec = None  # the protocol's own split, implied: the papers' settings, said on every row
        val_note = f"feature settings not chosen on '{options.ood_val}': {target.run} holds no validation split"
    if isinstance(target.model, Ensemble):
        return refuse("are not defined for a deep ensemble here (its members' features are not averaged)")
    if target.train is None:
        return refuse("expected the model's training images to fit on, got none (a model given without them)")
    try:
        taps = resolve_taps(model, list(options.feature_layers))
    except UserError as e:
        if options.feature_layers:
            raise
        return refuse(f"need named layers ({e})")
    train = target.train()
    n_all = len(train)
    idx = np.sort(np.random.default_rng([common.seed, FIT_SEED]).permutation(n_all)[: options.fit_images])
    sub = Images(train.x[torch.from_numpy(idx)], train.y[torch.from_numpy(idx)])
    z_tr, f_tr = forward_features(model, sub, taps, device, batch_size, target.precision)
    head, note = checked_head(model, taps, z_tr, f_tr, target.precision)
    if note and explicit and any(s in HEAD_SCORES for s in which):
        raise UserError(f"ood: {note}")
    y = sub.y.cpu()
    fits = {
        layer: fit_layer(layer, f_tr[layer], y, head if layer == PENULTIMATE else None, options.knn_k) for layer in taps
    }
    settings = {
        "feature_fit": f"{len(idx)} of {n_all} training images (seeded subset)",
        "feature_pool": "convolutional maps averaged over space",
        "feature_settings": (
            f"chosen per layer by AUROC of {len(target.val)} held-out images ({target.val_source}) against images "
            f"of '{val_spec}', never by test images"
            if val_spec
            else f"the papers' defaults (KNN k {options.knn_k}, ViM D half the width, ReAct and ASH-S percentile 90)"
        ),
    }
    note = "; ".join(filter(None, [note, val_note])) or None
    return FeatureRun(model, device, batch_size, target.precision, taps, which, fits, settings, note, val_spec=val_spec)


def checked_head(model, taps: dict, z, f: dict, precision: str):
    """(the last linear layer, None) where its output on the training images' penultimate features is their logits
    (to 10⁻³ of their scale; 10⁻² under bf16); else (None, why the head scores are left out)."""
    import torch

    if PENULTIMATE not in taps:
        return None, None
    head = head_of(model)
    gap = float((head.logits(f[PENULTIMATE].to(torch.float64)) - z.to(torch.float64)).abs().max())
    if gap <= (1e-2 if precision == "bf16" else 1e-3) * (1 + float(z.abs().max())):
        return head, None
    return None, (
        f"{', '.join(HEAD_SCORES)} n/a: the last linear layer's output is not the logits "
        f"(max difference {gap:.3g} on the training images)"
    )
