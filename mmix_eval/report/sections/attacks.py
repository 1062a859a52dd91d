"""Adversarial attacks (the fgsm and attack evaluators): the gradient-masking check across every attack in
the report. Imports no torch."""

from __future__ import annotations

from mmix_eval.report.sections.base import ReportSection, SectionContext


class AttackSection(ReportSection):
    """FGSM, PGD, AutoAttack: accuracy against ε, plus the gradient-masking check (stated once per report,
    whichever attack section states it)."""

    def notes(self, ctx: SectionContext) -> list[str]:
        return masking_notes(ctx.records, ctx.labels)


MASKING_POINTS = 10.0  # FGSM accuracy this many points above a strong attack's at the same ε: flagged


def masking_notes(records: list[dict], labels: dict[str, str]) -> list[str]:
    """The gradient-masking check (RobustBench's guidance, Carlini et al. 2019): per method and Linf ε, FGSM's
    accuracy (mean over seeds) against the strongest iterative attack's (PGD or AutoAttack, any evaluator);
    more than MASKING_POINTS above it says FGSM overstates the robustness. Also PGD accuracy that rises with
    more steps. Returns the report's notes (none when there is nothing to compare)."""
    acc: dict = {}  # (method, ε) -> attack tag -> [values]
    for r in records:
        s = r["settings"] or {}
        e, tag = s.get("eps_255"), s.get("attack")
        if r["metric"] != "acc" or r["bin"] is not None or e is None or tag is None or r["value"] is None:
            continue
        if s.get("norm", "Linf") != "Linf":
            continue
        acc.setdefault((labels[r["run"]], float(e)), {}).setdefault(str(tag), []).append(r["value"])
    flags, compared = [], 0
    for (m, e), per in sorted(acc.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        mean = {t: sum(v) / len(v) for t, v in per.items()}
        strong = {t: v for t, v in mean.items() if t != "fgsm"}
        if "fgsm" in mean and strong:
            compared += 1
            t, v = min(strong.items(), key=lambda kv: kv[1])
            if mean["fgsm"] - v > MASKING_POINTS:
                flags.append(f"{m} at ε = {e:g}/255: FGSM {mean['fgsm']:.2f} % vs {t} {v:.2f} %")
        pgd = sorted(((int(t[3:]), v) for t, v in mean.items() if t.startswith("pgd") and t[3:].isdigit()))
        for (k1, v1), (k2, v2) in zip(pgd, pgd[1:]):
            if v2 > v1 + 1.0:
                flags.append(f"{m} at ε = {e:g}/255: PGD-{k2} accuracy {v2:.2f} % above PGD-{k1}'s {v1:.2f} %")
    if not compared:
        return []
    if not flags:
        return [
            f"Gradient-masking check passed: at every ε compared ({compared}), FGSM accuracy is within "
            f"{MASKING_POINTS:g} points of the strongest iterative attack's."
        ]
    return [
        f"Gradient-masking check (FGSM more than {MASKING_POINTS:g} points above an iterative attack at the same "
        f"ε, or PGD gaining accuracy with more steps, flags robustness that a strong attack removes): "
        + "; ".join(flags)
        + "."
    ]
