"""Are the report's claims valid? Simulations under the null and under an alternative, with seed effects (networks
drawn per seed, test images shared by every seed pair), of the very functions the report calls
(``mmix_eval.report.stats``; the bootstrap replicates through ``mmix_eval.evaluate.boot``, as evaluations store them).

For each claim kind (docs/statistics.md), at 3 and 5 seeds and 300 and 2,000 images:
- method claims (the training run as the unit; accuracy, and NLL from the stored replicates): the false-positive rate
  at alpha = 0.05 when both methods draw networks from one distribution, and the 95 % interval's coverage of the
  population difference (over networks and images) under an alternative whose effect also varies by image;
- network claims (these trained networks, per image): the false-positive rate when each pair's two networks have the
  same population accuracy, and the coverage of the pairs' population difference;
- the old procedure beside them (McNemar on discordances summed over seed pairs, read as a method claim);
- calibration verdicts between two perfectly calibrated models of different sharpness: how often "better calibrated"
  is declared, by the calibration gap (the NLL and Brier temperature scaling removes: what the report uses) and by
  the old bootstrap ECE difference.

    python benchmarks/bench_claims.py [--reps 1000] [--quick]

Accuracy model: network j answers image i correctly when z_i + u_j + v_j,class(i) + tau g_i [method A] + e_ji > 0,
with image difficulty z ~ N(1, 1.5^2), network offset u ~ N(mu, 0.15^2), per-class effects v ~ N(0, 0.2^2),
an image-specific method effect g ~ N(0, 1) (alternative only), and e ~ N(0, 1) per network and image; so
P(correct) = Phi((z + u + v + tau g) / 1) per image and the population accuracy has a closed form. The per-image NLL
is softplus(-(the same sum)), integrated by Gauss-Hermite quadrature for the truth.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import norm

from mmix_eval.evaluate import boot
from mmix_eval.report import stats

ALPHA = 0.05
MU_Z, SD_Z, SD_U, SD_V, SD_E, CLASSES = 1.0, 1.5, 0.15, 0.2, 1.0, 10
GH_X, GH_W = np.polynomial.hermite_e.hermegauss(40)  # E f(X), X ~ N(m, s^2) = sum w f(m + s x) / sqrt(2 pi)
GH_W = GH_W / math.sqrt(2 * math.pi)


def networks(rng, k: int, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """k networks: offsets (k,) and per-class effects (k, C)."""
    return rng.normal(mu, SD_U, k), rng.normal(0.0, SD_V, (k, CLASSES))


def population_acc(u: np.ndarray, v: np.ndarray, tau: float) -> np.ndarray:
    """Each network's accuracy over the population of images (closed form, classes equally likely)."""
    sd = math.sqrt(SD_Z**2 + SD_E**2 + tau**2)
    return norm.cdf((MU_Z + u[:, None] + v) / sd).mean(1) * 100.0


def population_nll(u: np.ndarray, v: np.ndarray, tau: float) -> np.ndarray:
    sd = math.sqrt(SD_Z**2 + SD_E**2 + tau**2)
    m = MU_Z + u[:, None, None] + v[:, :, None] + sd * GH_X
    return (np.logaddexp(0.0, -m) * GH_W).sum(-1).mean(1)


def images(rng, n: int):
    return rng.normal(MU_Z, SD_Z, n), rng.integers(0, CLASSES, n), rng.normal(0.0, 1.0, n)


def run_images(rng, u, v, z, cls, g, tau):
    """(correct (k, n) bool, per-image NLL (k, n)) of k networks on the images."""
    s = z + u[:, None] + v[:, cls] + tau * g + rng.normal(0.0, SD_E, (len(u), len(z)))
    return s > 0, np.logaddexp(0.0, -s)


def method_truth(delta: float, tau: float, rng) -> tuple[float, float]:
    """The population difference of the two methods (over networks and images): accuracy points, NLL."""
    ua, va = networks(rng, 20000, delta)
    ub, vb = networks(rng, 20000, 0.0)
    return (
        float(population_acc(ua, va, tau).mean() - population_acc(ub, vb, 0.0).mean()),
        float(population_nll(ua[:4000], va[:4000], tau).mean() - population_nll(ub[:4000], vb[:4000], 0.0).mean()),
    )


def _reps(nll: np.ndarray) -> np.ndarray:
    """The stored NLL replicates of each run (k, B): ``boot.replicates``, float16 deviations, as an evaluation writes."""
    n = nll.shape[1]
    dummy = np.zeros(n)
    return np.stack([boot.replicates(x, x, dummy, dummy.astype(bool), 15)[:, 0].astype(np.float64) for x in nll])


def one_trial(rng, k: int, n: int, delta: float, tau: float, network_null: bool, coverage: bool = True):
    """One experiment: k seed pairs of (method A, method B) networks on n shared images. Returns the method and
    network tests of accuracy and NLL, the old pooled McNemar p, and the per-pair network truths. ``coverage``
    False: the network accuracy interval (10,000 resamples) and the network truths, which only a coverage reads,
    are None (a third of a null trial's time; neither draws from ``rng``, so every other number is the same)."""
    ub, vb = networks(rng, k, 0.0)
    if network_null:  # each pair: two networks with the same parameters (equal population accuracy), other noise
        ua, va, tau_a = ub.copy(), vb.copy(), 0.0
    else:
        ua, va = networks(rng, k, delta)
        tau_a = tau
    z, cls, g = images(rng, n)
    ca, la = run_images(rng, ua, va, z, cls, g, tau_a)
    cb, lb = run_images(rng, ub, vb, z, cls, np.zeros(n), 0.0)
    d = ca.astype(np.int64) - cb.astype(np.int64)
    diffs = list(d.mean(1) * 100.0)
    acc_m = stats.method_test(diffs, *stats.image_terms(d * 100.0), images=n)
    _, lo, hi = stats.paired_image_bootstrap(ca, cb) if coverage else (None, None, None)
    acc_net = (float(np.mean(diffs)), lo, hi, stats.sign_flip_exact(d.sum(0)))
    old_p = stats.mcnemar_exact(*stats.discordant(ca, cb))
    nll_diffs = list(la.mean(1) - lb.mean(1))
    reps = _reps(la) - _reps(lb)
    nll_m = stats.method_test(nll_diffs, *stats.replicate_terms(reps), images=n)
    nll_net = stats.replicate_z(float(np.mean(nll_diffs)), reps)
    truth_net = (
        None
        if not coverage
        else (
            float(np.mean(population_acc(ua, va, tau_a) - population_acc(ub, vb, 0.0))),
            float(np.mean(population_nll(ua, va, tau_a) - population_nll(ub, vb, 0.0))),
        )
    )
    return acc_m, acc_net, old_p, nll_m, nll_net, truth_net


def claims_table(reps: int, seeds=(3, 5), sizes=(300, 2000), delta=0.15, tau=0.5, seed=0) -> list[dict]:
    """One row per (seeds, images): the rates and coverages the issue asks for."""
    out = []
    for k in seeds:
        for n in sizes:
            rng = np.random.default_rng([seed, k, n])
            truth = method_truth(delta, tau, rng)
            r = {"seeds": k, "images": n}
            null = [one_trial(rng, k, n, 0.0, 0.0, False, coverage=False) for _ in range(reps)]  # the method null
            r["method FPR acc"] = np.mean([t[0] is not None and t[0].p < ALPHA for t in null])
            r["method FPR nll"] = np.mean([t[3] is not None and t[3].p < ALPHA for t in null])
            r["old pooled McNemar FPR"] = np.mean([t[2] < ALPHA for t in null])
            alt = [one_trial(rng, k, n, delta, tau, False) for _ in range(reps)]
            r["method coverage acc"] = np.mean([t[0] is not None and t[0].low <= truth[0] <= t[0].high for t in alt])
            r["method coverage nll"] = np.mean([t[3] is not None and t[3].low <= truth[1] <= t[3].high for t in alt])
            r["method power acc"] = np.mean([t[0] is not None and t[0].p < ALPHA for t in alt])
            r["network coverage acc"] = np.mean([t[1][1] <= t[5][0] <= t[1][2] for t in alt])
            r["network coverage nll"] = np.mean([t[4][1] is not None and t[4][1] <= t[5][1] <= t[4][2] for t in alt])
            nnull = [one_trial(rng, k, n, 0.0, 0.0, True, coverage=False) for _ in range(reps)]  # the network null
            r["network FPR acc"] = np.mean([t[1][3] < ALPHA for t in nnull])
            r["network FPR nll"] = np.mean([t[4][3] is not None and t[4][3] < ALPHA for t in nnull])
            r["truth acc, nll"] = f"{truth[0]:+.2f}, {truth[1]:+.4f}"
            out.append(r)
    return out


# ---------------------------------------------------------------- calibration: two perfectly calibrated models


def calibrated_model(rng, n: int, a: float, b: float):
    """n images of a perfectly calibrated 10-class model whose top confidence c ~ 0.1 + 0.9 Beta(a, b): c on the
    predicted class, the rest spread evenly, and the label drawn from that very vector (so E[y | p] = p)."""
    c = 0.1 + 0.9 * rng.beta(a, b, n)
    p = np.repeat(((1.0 - c) / (CLASSES - 1))[:, None], CLASSES, 1)
    pred = rng.integers(0, CLASSES, n)
    p[np.arange(n), pred] = c
    right = rng.random(n) < c
    other = (pred + rng.integers(1, CLASSES, n)) % CLASSES
    y = np.where(right, pred, other)
    return np.log(p), y


def scores(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0):
    """Per-image NLL, Brier, top confidence and correctness after dividing the logits by the temperature."""
    lp = log_softmax(logits / temperature, axis=1)
    p = np.exp(lp)
    onehot = np.eye(CLASSES)[y]
    return -lp[np.arange(len(y)), y], ((p - onehot) ** 2).sum(1), p.max(1), p.argmax(1) == y


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling's fit (Guo et al. 2017): T in [0.05, 20] minimising held-out NLL, as the calibrator."""
    return float(minimize_scalar(lambda t: scores(logits, y, t)[0].mean(), bounds=(0.05, 20.0), method="bounded").x)


def calibration_trial(rng, k: int, n: int, n_val: int = 500):
    """k seeds of model A (flatter) and model B (sharper), both perfectly calibrated, on shared test images: are
    they declared differently calibrated (gap: the NLL / Brier the temperature removes; old: ECE)?"""
    gap_d = {"nll": [], "brier": []}
    gap_r = {"nll": [], "brier": []}
    ece_d, ece_r = [], []
    for _ in range(k):
        runs = []
        for a, b in ((2.0, 2.0), (5.0, 1.0)):  # flatter, sharper
            lt, yt = calibrated_model(rng, n, a, b)
            lv, yv = calibrated_model(rng, n_val, a, b)
            t = fit_temperature(lv, yv)
            raw, cal = scores(lt, yt), scores(lt, yt, t)
            rr = boot.replicates(raw[0], raw[1], raw[2], raw[3], 15).astype(np.float64)
            rc = boot.replicates(cal[0], cal[1], cal[2], cal[3], 15).astype(np.float64)
            ece = (
                np.abs(
                    np.bincount(boot.bin_index(raw[2], np.linspace(0, 1, 16)), weights=raw[2] - raw[3], minlength=15)
                ).sum()
                / n
            )
            runs.append((raw, cal, rr, rc, ece))
        (ra, ca, rra, rca, ea), (rb, cb, rrb, rcb, eb) = runs
        for j, s in enumerate(("nll", "brier")):
            gap_d[s].append((ra[j].mean() - ca[j].mean()) - (rb[j].mean() - cb[j].mean()))
            gap_r[s].append((rra[:, j] - rca[:, j]) - (rrb[:, j] - rcb[:, j]))
        ece_d.append(ea - eb)
        ece_r.append(rra[:, 2] - rrb[:, 2])
    out = {}
    for s in ("nll", "brier"):
        t = stats.method_test(gap_d[s], *stats.replicate_terms(np.stack(gap_r[s])), images=n)
        out[s] = t is not None and t.p < ALPHA
    old = stats.replicate_z(float(np.mean(ece_d)), np.stack(ece_r))
    out["ece"] = old[3] is not None and old[3] < ALPHA
    return out


def calibration_table(reps: int, seeds=(3, 5), sizes=(300, 2000), seed=1) -> list[dict]:
    out = []
    for k in seeds:
        for n in sizes:
            rng = np.random.default_rng([seed, k, n])
            trials = [calibration_trial(rng, k, n) for _ in range(reps)]
            out.append(
                {
                    "seeds": k,
                    "images": n,
                    "better calibrated by NLL gap": np.mean([t["nll"] for t in trials]),
                    "by Brier gap": np.mean([t["brier"] for t in trials]),
                    "old: by ECE (bootstrap z)": np.mean([t["ece"] for t in trials]),
                }
            )
    return out


def show(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=1000, help="simulated experiments per cell (default 1000)")
    p.add_argument("--quick", action="store_true", help="200 experiments per cell")
    args = p.parse_args()
    reps = 200 if args.quick else args.reps
    t0 = time.perf_counter()
    print(
        f"Claims at alpha = {ALPHA}, {reps} simulated experiments per row (binomial SE of a rate near 0.05: "
        f"{math.sqrt(0.05 * 0.95 / reps):.3f}):"
    )
    show(claims_table(reps))
    print(
        f"\nCalibration verdicts between two perfectly calibrated models of different sharpness ({reps // 2} per row):"
    )
    show(calibration_table(reps // 2))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
