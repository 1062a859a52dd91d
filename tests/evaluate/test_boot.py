"""Paired bootstrap replicates of NLL, Brier and ECE (evaluate.boot): each replicate is the score recomputed on
its resample (netcal, numpy), two runs' replicates pair image for image, and the stored detail stays small."""

from __future__ import annotations

import numpy as np
import pytest

from mmix_eval.evaluate.boot import BOOT_RESAMPLES, BOOT_STATS, reliability, replicates, resample_counts
from mmix_eval.evaluate.metrics import netcal_measure
from mmix_eval.evaluate.outcomes import pack, read_many_detail, read_outcome_file, write_many


def fake_model(n: int, classes: int, sharp: float, seed: int, y: np.ndarray) -> np.ndarray:
    """Softmax probabilities of a noisy classifier of labels ``y``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    z = z * sharp
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def scores_of(p: np.ndarray, y: np.ndarray):
    """Per-image NLL, Brier, confidence and correctness, by hand."""
    nll = -np.log(p[np.arange(len(y)), y])
    brier = ((p - np.eye(p.shape[1])[y]) ** 2).sum(1)
    return nll, brier, p.max(1), (p.argmax(1) == y).astype(np.int64)


def test_each_replicate_is_the_score_recomputed_on_its_resample():
    n, bins = 700, 15
    y = np.random.default_rng(0).integers(0, 5, n)
    nll, brier, conf, correct = scores_of(fake_model(n, 5, 1.3, 1, y), y)
    counts = resample_counts(n).astype(np.int64)
    assert counts.shape == (BOOT_RESAMPLES, n) and (counts.sum(1) == n).all()
    assert np.array_equal(counts, resample_counts(n))  # the same resamples for every run of n images
    assert not np.array_equal(counts[0], counts[1])
    reps = replicates(nll, brier, conf, correct, bins)
    assert reps.shape == (BOOT_RESAMPLES, len(BOOT_STATS)) and reps.dtype == np.float16
    full = np.array([nll.mean(), brier.mean(), netcal_measure("ECE", conf, correct, bins)])
    for r in (0, 7, 123, BOOT_RESAMPLES - 1):
        take = np.repeat(np.arange(n), counts[r])  # the resample as a list of images
        direct = np.array(
            [nll[take].mean(), brier[take].mean(), netcal_measure("ECE", conf[take], correct[take], bins)]
        )
        assert reps[r].astype(np.float64) + full == pytest.approx(direct, abs=2e-4), r


def test_paired_replicates_give_the_paired_bootstrap_of_an_ece_difference():
    """The standard error of ECE(A) − ECE(B) from the stored replicates equals the one of a plain loop that
    resamples the same images for both and recomputes both ECEs with netcal, and that of a fresh bootstrap."""
    n, bins = 600, 10
    y = np.random.default_rng(3).integers(0, 4, n)
    a, b = (scores_of(fake_model(n, 4, s, k, y), y) for s, k in ((2.0, 4), (0.6, 4)))
    ra, rb = replicates(*a, bins), replicates(*b, bins)
    stored = (ra.astype(np.float64) - rb.astype(np.float64))[:, 2]
    counts = resample_counts(n).astype(np.int64)
    loop = []
    for r in range(BOOT_RESAMPLES):
        take = np.repeat(np.arange(n), counts[r])
        loop.append(
            netcal_measure("ECE", a[2][take], a[3][take], bins) - netcal_measure("ECE", b[2][take], b[3][take], bins)
        )
    full = netcal_measure("ECE", a[2], a[3], bins) - netcal_measure("ECE", b[2], b[3], bins)
    assert stored == pytest.approx(np.array(loop) - full, abs=3e-4)
    assert np.std(stored, ddof=1) == pytest.approx(np.std(loop, ddof=1), rel=0.02)
    fresh = np.random.default_rng(99).integers(0, n, (2000, n))
    plain = [
        netcal_measure("ECE", a[2][t], a[3][t], bins) - netcal_measure("ECE", b[2][t], b[3][t], bins) for t in fresh
    ]
    assert np.std(stored, ddof=1) == pytest.approx(np.std(plain, ddof=1), rel=0.12)  # B = 500 against 2,000


def test_reliability_sums_give_the_recorded_ece():
    n, bins = 400, 15
    y = np.random.default_rng(5).integers(0, 3, n)
    _, _, conf, correct = scores_of(fake_model(n, 3, 1.0, 6, y), y)
    count, hits, confs = reliability(conf, correct, bins).astype(np.float64)
    assert count.sum() == n and hits.sum() == correct.sum()
    assert np.abs(hits - confs).sum() / n == pytest.approx(netcal_measure("ECE", conf, correct, bins), abs=1e-6)


def detail_for(n: int, seed: int) -> tuple[np.ndarray, dict]:
    y = np.random.default_rng(seed).integers(0, 10, n)
    raw = scores_of(fake_model(n, 10, 1.0, seed + 1, y), y)
    cal = scores_of(fake_model(n, 10, 0.7, seed + 1, y), y)
    return raw[3].astype(bool), {
        "none": (replicates(*raw, 15), reliability(*raw[2:], 15)),
        "temperature": (replicates(*cal, 15), reliability(*cal[2:], 15)),
    }


def test_the_outcome_file_grows_by_at_most_10_kb_per_condition_at_10000_images():
    """Issue 26's bound: a condition's correctness bits, and its raw and calibrated replicates and reliability
    bins, add at most 10 KB to the outcome file of a 10,000-image evaluation."""
    n = 10_000
    indices = np.random.default_rng(0).permutation(50_000)[:n]
    sizes = []
    for k in (1, 2, 3):
        outcomes, detail = {}, {}
        for c in range(k):
            bits, d = detail_for(n, c)
            outcomes[f"cond{c}"] = bits
            detail.update({(f"cond{c}", cal): v for cal, v in d.items()})
        sizes.append(len(pack(outcomes, indices, detail)))
    per_condition = max(sizes[1] - sizes[0], sizes[2] - sizes[1])
    assert per_condition <= 10 * 1024, per_condition


def test_detail_round_trips_through_an_evaluation_file_and_a_reports_file(tmp_path):
    n = 300
    bits, d = detail_for(n, 1)
    indices = np.arange(n) * 3
    (tmp_path / "f.npz").write_bytes(pack({"eps2": bits}, indices, {("eps2", cal): v for cal, v in d.items()}))
    got_indices, out, own, detail = read_outcome_file(tmp_path / "f.npz")
    assert np.array_equal(got_indices, indices) and np.array_equal(out["eps2"], bits) and not own
    for cal, (boot, rel) in d.items():  # int8 times a power of two per column: within half a step
        step = np.exp2(np.ceil(np.log2(np.abs(boot.astype(np.float64)).max(0) / 127)))
        assert (np.abs(detail["eps2", cal][0] - boot.astype(np.float64)) <= step / 2 + 1e-12).all()
        assert (step <= np.abs(boot.astype(np.float64)).max(0) / 63.5).all()
        assert np.array_equal(detail["eps2", cal][1], rel)
    many = {("r", "fgsm", "eps2", cal): (indices, b, r) for (_, cal), (b, r) in detail.items()}
    write_many(tmp_path / "o.npz", {("r", "fgsm", "eps2"): (indices, bits)}, many)
    outcomes, back = read_many_detail(tmp_path / "o.npz")
    assert np.array_equal(outcomes["r", "fgsm", "eps2"][1], bits)
    for k, (i, b, r) in many.items():  # what was read is stored again exactly: a rebuild sees the same values
        assert np.array_equal(back[k][0], i) and np.array_equal(back[k][1], b) and np.array_equal(back[k][2], r)


def test_quantised_replicates_are_stable_and_keep_the_paired_standard_error():
    """Quantise-dequantise is a projection (a second pass changes no value), columns of zeros and of tiny values
    survive, non-finite replicates store nothing, and the standard error of a paired difference of two runs whose
    replicates correlate at 0.95 moves by less than 1 % (the bootstrap's own Monte Carlo error is about 3 %)."""
    from mmix_eval.evaluate.outcomes import dequantise, quantise

    rng = np.random.default_rng(7)
    for scale in (1e-6, 0.01, 0.3, 40.0):
        x = (rng.normal(size=(BOOT_RESAMPLES, 3)) * scale).astype(np.float16)
        once = dequantise(*quantise(x))
        assert np.array_equal(dequantise(*quantise(once)), once)
    zero = np.zeros((BOOT_RESAMPLES, 3))
    assert np.array_equal(dequantise(*quantise(zero)), zero)
    assert quantise(np.full((BOOT_RESAMPLES, 3), np.nan)) is None and quantise(np.array([[np.inf, 0, 0]])) is None
    assert quantise(np.array([[1e45, 0.0, 0.0]])) is None  # beyond 127 * 2**126: never clipped silently
    tiny = dequantise(*quantise(np.array([[1e-45, 2.0**-120, 0.0]])))
    assert tiny.tolist() == [[0.0, 2.0**-120, 0.0]]  # below the smallest step: 0; 2**-120 kept exactly
    common = rng.normal(size=(BOOT_RESAMPLES, 3)) * 0.05
    a = common + rng.normal(size=common.shape) * 0.05 * np.sqrt(0.05)
    b = common + rng.normal(size=common.shape) * 0.05 * np.sqrt(0.05)
    assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.93
    exact = np.std(a - b, axis=0, ddof=1)
    stored = np.std(dequantise(*quantise(a)).astype(np.float64) - dequantise(*quantise(b)), axis=0, ddof=1)
    assert np.abs(stored / exact - 1).max() < 0.01
    assert not np.array_equal(stored, exact)  # it did quantise


def test_replicates_of_another_scheme_are_not_paired(tmp_path, monkeypatch):
    """A file written with another resample count (another version) keeps its reliability bins but its
    replicates are dropped: pairing them with today's resamples would pair different images."""
    import mmix_eval.evaluate.outcomes as oc

    bits, d = detail_for(200, 2)
    monkeypatch.setattr(oc, "SCHEME", np.array([BOOT_RESAMPLES + 1, 0, 3, 1]))
    (tmp_path / "f.npz").write_bytes(pack({"c": bits}, np.arange(200), {("c", cal): v for cal, v in d.items()}))
    monkeypatch.undo()
    _, _, _, detail = read_outcome_file(tmp_path / "f.npz")
    assert all(boot is None for boot, _ in detail.values()) and all(rel is not None for _, rel in detail.values())


def test_the_reliability_figure_pools_the_runs_bins_and_keeps_clean_and_the_strongest_shift():
    from mmix_eval.report.plots_calibration import pick_conditions, pooled_bins

    conds = ["clean", *(f"eps{k}" for k in range(1, 11))]
    assert pick_conditions(conds, 6)[0] == "clean" and pick_conditions(conds, 6)[-1] == "eps10"
    assert len(pick_conditions(conds, 6)) == 6 and pick_conditions(conds[:4], 6) == conds[:4]
    a, b = np.arange(30, dtype=np.float32).reshape(3, 10), np.ones((3, 10), dtype=np.float32)
    detail = {("r0", "fgsm", "eps1", "none"): (None, None, a), ("r1", "fgsm", "eps1", "none"): (None, None, b)}
    assert np.array_equal(pooled_bins(detail, ["r0", "r1"], "fgsm", "eps1", "none"), a + b)
    assert pooled_bins(detail, ["r0"], "fgsm", "eps1", "temperature") is None


def test_a_non_finite_score_gives_non_finite_replicates_of_that_score_only_and_no_error():
    """NaN logits reach the replicates as a NaN NLL (and confidence): those columns are NaN, the others stay finite,
    nothing raises; the report then gives no interval for a non-finite difference (compare.boot_pair)."""
    n = 200
    y = np.random.default_rng(7).integers(0, 3, n)
    nll, brier, conf, correct = scores_of(fake_model(n, 3, 1.0, 8, y), y)
    nll[5] = np.nan
    reps = replicates(nll, brier, conf, correct, 15)
    assert np.isnan(reps[:, 0]).all() and np.isfinite(reps[:, 1:]).all()
    assert replicates(nll[:0], brier[:0], conf[:0], correct[:0], 15).shape == (BOOT_RESAMPLES, 3)  # no images: zeros


def test_a_reports_file_of_the_per_condition_layout_is_still_read(tmp_path):
    """Reports written before the stacked layout (one member per condition, float16 replicates) keep their values."""
    import json

    bits, d = detail_for(100, 3)
    boot, rel = d["none"]
    np.savez_compressed(
        tmp_path / "old.npz",
        idx0=np.arange(100),
        bits0=np.packbits(bits),
        keys=np.array([json.dumps(["r", "fgsm", "eps2"])]),
        subset_of=np.array([0]),
        boot0=boot,
        rel0=rel,
        dkeys=np.array([json.dumps(["r", "fgsm", "eps2", "none"])]),
        dsubset_of=np.array([0]),
        boot_scheme=np.array([BOOT_RESAMPLES, 0, 3, 1]),
    )
    out, detail = read_many_detail(tmp_path / "old.npz")
    assert np.array_equal(out["r", "fgsm", "eps2"][1], bits)
    assert np.array_equal(detail["r", "fgsm", "eps2", "none"][1], boot.astype(np.float32))


def test_a_stacked_file_whose_arrays_do_not_match_its_keys_is_refused(tmp_path):
    bits, d = detail_for(100, 4)
    many = {("r", "fgsm", "eps2", cal): (np.arange(100), b, r) for cal, (b, r) in d.items()}
    write_many(tmp_path / "o.npz", {("r", "fgsm", "eps2"): (np.arange(100), bits)}, many)
    with np.load(tmp_path / "o.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for name, cut in (("bits", 3), ("boot", 1), ("rel", 5)):
        bad = {**arrays, name: arrays[name][:-cut]}
        np.savez_compressed(tmp_path / "bad.npz", **bad)
        with pytest.raises(ValueError, match=name):
            read_many_detail(tmp_path / "bad.npz")
    np.savez_compressed(
        tmp_path / "long.npz", **{**arrays, "bits": np.concatenate([arrays["bits"], np.zeros(1, np.uint8)])}
    )
    with pytest.raises(ValueError, match="more bytes"):
        read_many_detail(tmp_path / "long.npz")


def test_auroc_replicates_without_reliability_bins_round_trip_beside_bins(tmp_path):
    """Issue 45: an OOD condition stores AUROC's replicates and no reliability bins ((3, 0) on disk, None read)."""
    from mmix_eval.evaluate.boot import auroc_replicates

    rng = np.random.default_rng(0)
    indices = np.arange(60)
    boot = auroc_replicates(rng.normal(1, 1, 60), rng.normal(0, 1, 40))
    bits, d = detail_for(60, 1)
    cal_boot, rel = d["none"]
    (tmp_path / "f.npz").write_bytes(
        pack({"eps2": bits}, indices, {("src/msp", "none"): (boot, None), ("eps2", "none"): (cal_boot, rel)})
    )
    _, _, _, detail = read_outcome_file(tmp_path / "f.npz")
    assert detail["src/msp", "none"][1] is None and np.array_equal(detail["eps2", "none"][1], rel)
    assert np.abs(detail["src/msp", "none"][0][:, 0] - boot[:, 0].astype(np.float64)).max() < 1e-3
    many = {("r", "ood", c, cal): (indices, b, r) for (c, cal), (b, r) in detail.items()}
    write_many(tmp_path / "o.npz", {}, many)
    _, back = read_many_detail(tmp_path / "o.npz")
    for k, (i, b, r) in many.items():
        assert np.array_equal(back[k][0], i) and np.array_equal(back[k][1], b)
        assert (r is None and back[k][2] is None) or np.array_equal(back[k][2], r)
