"""The per-condition journal: an evaluator stopped mid-grid resumes at its first missing condition, and the records
are the bytes an uninterrupted run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmix_eval.config import Config
from mmix_eval.evaluate import passes
from mmix_eval.evaluate.base import EvalOptions
from mmix_eval.evaluate.journal import KEY_FILE, Journal, journal_key
from mmix_eval.evaluate.runner import EvalJob, make_plan, run_evaluation
from mmix_eval.training import train


def test_journal_round_trip_and_what_invalidates_it(tmp_path):
    folder, key = tmp_path / "fgsm.partial", journal_key({"eps": [8]}, "abc")
    j = Journal(folder, key)
    z = torch.randn(5, 3)
    j.put("eps8", z, {"apgd-ce": 3, "target_classes": 2})
    j.put("clean", z + 1, count=False)
    assert j.computed == ["eps8"] and j.has("clean")
    again = Journal(folder, key)
    got, state = again.get("eps8")
    assert torch.equal(got, z) and state == {"apgd-ce": 3, "target_classes": 2} and again.reused == ["eps8"]
    assert again.get("eps4") is None and torch.equal(again.get("clean", count=False)[0], z + 1)
    assert again.reused == ["eps8"]  # the shared clean pass is not one of the evaluator's conditions
    # Two names that make the same safe file name stay apart.
    again.put("a/b", z)
    again.put("a_b", -z)
    assert torch.equal(Journal(folder, key).get("a/b")[0], z) and torch.equal(Journal(folder, key).get("a_b")[0], -z)
    # A damaged entry is recomputed, never half-read; a left-over temporary file is not an entry.
    (folder / next(p.name for p in folder.glob("eps8-*.safetensors"))).write_bytes(b"\x10\x00\x00")
    (folder / ".eps4-x.safetensors.abc.tmp").write_bytes(b"junk")
    assert Journal(folder, key).get("eps8") is None and Journal(folder, key).get("eps4") is None
    # Other options (or another checkpoint) clear the folder; so does a run that does not resume.
    other = Journal(folder, journal_key({"eps": [4]}, "abc"))
    assert not folder.exists() and other.get("a/b") is None
    Journal(folder, key).put("eps8", z)
    Journal(folder, key, resume=False)
    assert not folder.exists()
    # A reader that does not write (a rank other than the main one) never deletes.
    Journal(folder, key).put("eps8", z)
    Journal(folder, "other key", write=False)
    assert json.loads((folder / KEY_FILE).read_text())["key"] == key
    Journal(folder, key).close()
    assert not folder.exists()


def _digits_ckpt(root: Path) -> Path:
    cfg = Config()
    cfg.model.kwargs = {"width": 8}
    cfg.train.epochs, cfg.train.device, cfg.train.seed = 1, "cpu", 0
    cfg.data.val_size = 200
    train(cfg, root / "mm", progress=False)
    return root / "mm" / "model.safetensors"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _digits_ckpt(tmp_path_factory.mktemp("journal"))


class Killed(BaseException):
    """What a SIGKILL does to the evaluation, in-process: nothing after it runs (not an evaluator's error)."""


def _evaluate(ckpt, out, resume, fail_after=None, monkeypatch=None):
    if fail_after is not None:
        real, calls = passes.batch_logits, []

        def dying(*args, **kwargs):
            if len(calls) == fail_after:
                raise Killed
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(passes, "batch_logits", dying)
    plan = make_plan(["fgsm", "deformations"], {"fgsm": {"attack": "fgsm_official", "eps": [0.01, 0.02, 0.05]}})
    common = EvalOptions(device="cpu", progress=False, batch_size=100)
    try:
        run_evaluation([ckpt], plan, out, common, EvalJob(echo=lambda *_: None, skip_done=resume))
    finally:
        if fail_after is not None:
            monkeypatch.setattr(passes, "batch_logits", real)


def _journaled(folder: Path) -> list[Path]:
    """The conditions a journal holds (the shared clean pass aside)."""
    return [p for p in folder.glob("*.safetensors") if not p.name.startswith("clean-")]


def test_an_evaluator_stopped_mid_grid_resumes_at_its_first_missing_condition(ckpt, tmp_path, monkeypatch):
    _evaluate(ckpt, tmp_path / "whole", resume=False)
    out = tmp_path / "stopped"
    # fgsm_official first (3 conditions, each with its share of pixels outside [0, 1]: the condition's state), then the
    # deformations' 8. Stopped after 2 conditions of the first; resumed and stopped again after its last one and 5 of
    # the deformations'; resumed to the end.
    with pytest.raises(Killed):
        _evaluate(ckpt, out, resume=True, fail_after=2, monkeypatch=monkeypatch)
    run = out / "mm"
    assert not list(run.glob("*.meta.json")) and len(_journaled(run / "fgsm-fgsm_official.partial")) == 2
    with pytest.raises(Killed):
        _evaluate(ckpt, out, resume=True, fail_after=1 + 5, monkeypatch=monkeypatch)
    assert (run / "fgsm-fgsm_official.meta.json").exists() and not (run / "deformations.meta.json").exists()
    assert len(_journaled(run / "deformations.partial")) == 5
    _evaluate(ckpt, out, resume=True)
    meta = json.loads((run / "deformations.meta.json").read_text())
    assert meta["conditions_resumed"] == 5  # and 3 computed: the deformations' grid has 8
    assert json.loads((run / "fgsm-fgsm_official.meta.json").read_text())["conditions_resumed"] == 2
    assert not list(run.glob("*.partial"))
    for stem in ("fgsm-fgsm_official", "deformations"):
        for suffix in (".jsonl", ".outcomes.npz"):
            assert (run / f"{stem}{suffix}").read_bytes() == (
                tmp_path / "whole" / "mm" / f"{stem}{suffix}"
            ).read_bytes()


@pytest.mark.slow  # AutoAttack
def test_a_stopped_autoattack_resumes_at_its_first_missing_batch_with_its_cascade_counts(ckpt, tmp_path, monkeypatch):
    """An AutoAttack ε is journaled batch by batch (a long condition), with the cascade's per-attack counts as of
    that batch: stopped after the first batch of its second ε, it resumes at the first missing batch and gives the bytes of
    an uninterrupted run, robust accuracy after each attack included."""
    pytest.importorskip("pyautoattack")
    opts = {"fgsm": {"attack": "autoattack", "quick": True, "eps": [1, 2]}}  # small: points stay robust
    common = EvalOptions(device="cpu", progress=False, limit=16, batch_size=8, calibrator="none")
    job = lambda resume: EvalJob(echo=lambda *_: None, skip_done=resume)  # noqa: E731
    from mmix_eval.evaluate.evaluators.attacks import adversarial

    real_make = adversarial.make_autoattack

    def few_iterations(*args, **kwargs):  # the cascade and its seeding as they are, 10 steps per attack instead of 100
        aa, targets = real_make(*args, **kwargs)
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = 10
        return aa, targets

    monkeypatch.setattr(adversarial, "make_autoattack", few_iterations)
    run_evaluation([ckpt], make_plan(["fgsm"], opts), tmp_path / "whole", common, job(False))
    real, calls = passes.batch_logits, []

    def counting(*args, **kwargs):
        if len(calls) == stop_at:
            raise Killed
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(passes, "batch_logits", counting)
    stop_at = 2 + 1  # the first ε's 2 batches, then 1 of the second's
    with pytest.raises(Killed):
        run_evaluation([ckpt], make_plan(["fgsm"], opts), tmp_path / "stopped", common, job(True))
    calls.clear()
    stop_at = None
    run_evaluation([ckpt], make_plan(["fgsm"], opts), tmp_path / "stopped", common, job(True))
    assert len(calls) == 1  # only the second ε's last batch was attacked again
    stem = next((tmp_path / "whole" / "mm").glob("*.jsonl")).name
    assert (tmp_path / "stopped" / "mm" / stem).read_bytes() == (tmp_path / "whole" / "mm" / stem).read_bytes()
    meta = json.loads((tmp_path / "stopped" / "mm" / stem.replace(".jsonl", ".meta.json")).read_text())
    assert meta["conditions_resumed"] == 1 and not list((tmp_path / "stopped" / "mm").glob("*.partial"))
    rows = [json.loads(line) for line in (tmp_path / "whole" / "mm" / stem).read_text().splitlines()]
    assert any(r["metric"] == "acc_after" for r in rows)
