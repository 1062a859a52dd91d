"""Checkpoints from the Hugging Face Hub (``hf://``) read from a cache built here with HF_HUB_OFFLINE (no network), a
pickle refused before any download, and ``push`` with its model card (the upload itself mocked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmix_eval import hub
from mmix_eval.cli import main
from mmix_eval.config import Config
from mmix_eval.evaluate.records import read_records
from mmix_eval.training import train

hf = pytest.importorskip("huggingface_hub")
constants = pytest.importorskip("huggingface_hub.constants")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = Config()
    cfg.model.kwargs = {"width": 8}
    cfg.train.epochs, cfg.train.device, cfg.train.seed = 1, "cpu", 0
    cfg.data.val_size = 200
    out = tmp_path_factory.mktemp("hub") / "mm-digits"
    train(cfg, out, progress=False)
    return out


def _cache_repo(cache: Path, repo: str, files: dict[str, Path | bytes], commit: str = COMMIT, ref: str = "main"):
    """A repo in the Hugging Face cache layout: refs/REF -> commit, snapshots/COMMIT/FILES."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snap / name)
        else:
            (snap / name).write_bytes(content)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, run_dir):
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    _cache_repo(
        cache, "org/mm-net", {"model.safetensors": run_dir / "model.safetensors", "model.json": run_dir / "model.json"}
    )
    _cache_repo(cache, "org/pickled", {"pytorch_model.bin": b"\x80\x04K\x01."})
    return cache


def test_hf_checkpoint_loads_from_the_offline_cache_with_its_commit_recorded(offline_cache, run_dir, tmp_path, capsys):
    argv = ["--evaluators", "calibration", "--no-progress", "--calibrator", "none"]
    assert main(["evaluate", "--ckpt", "hf://org/mm-net", "--out", str(tmp_path / "hub"), *argv]) == 0
    assert main(["evaluate", "--ckpt", str(run_dir), "--out", str(tmp_path / "local"), *argv]) == 0
    meta = json.loads((tmp_path / "hub" / "mm-net" / "calibration.meta.json").read_text())
    assert meta["checkpoint_origin"] == f"hf://org/mm-net@{COMMIT}/model.safetensors"
    local = json.loads((tmp_path / "local" / "mm-digits" / "calibration.meta.json").read_text())
    assert meta["checkpoint_sha256"] == local["checkpoint_sha256"] and local["checkpoint_origin"] is None
    got = read_records(tmp_path / "hub" / "mm-net" / "calibration.jsonl")
    want = read_records(tmp_path / "local" / "mm-digits" / "calibration.jsonl")
    assert [(r["condition"], r["metric"], r["value"]) for r in got] == [
        (r["condition"], r["metric"], r["value"]) for r in want
    ]
    # A revision by commit hash, and a file named explicitly, resolve to the same weights.
    assert hub.resolve(f"hf://org/mm-net@{COMMIT}/model.safetensors")[1] == meta["checkpoint_origin"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hf://org/pickled", "expected 'model.safetensors' in hf://org/pickled at main, got only pickle files "
         "(pytorch_model.bin), which mmix-eval never loads"),
        ("hf://org/pickled/pytorch_model.bin", "expected a .safetensors file in hf://org/pickled, got "
         "'pytorch_model.bin' (mmix-eval never unpickles a downloaded file"),
        ("hf://org/mm-net@v2", "hf://org/mm-net@v2 is not in the local Hugging Face cache"),
        ("hf://org/absent", "hf://org/absent@main is not in the local Hugging Face cache"),
        ("hf://justone", "expected hf://ORG/REPO[@REVISION][/FILE], got 'hf://justone'"),
        ("hf://org/mm-net/../x.safetensors", "expected a file inside the repo, got '../x.safetensors'"),
    ],
)  # fmt: skip
def test_hf_refusals_are_one_line(offline_cache, tmp_path, capsys, spec, message):
    assert main(["evaluate", "--ckpt", spec, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_online_file_list_is_checked_before_any_download(monkeypatch):
    """Online, the repo's file list comes first: a repo whose weights are a pickle is refused without a download."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    info = SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename="pytorch_model.bin")])
    calls = []
    monkeypatch.setattr(hf.HfApi, "model_info", lambda self, repo, revision=None: calls.append(revision) or info)
    monkeypatch.setattr(hf, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded before the file list"))
    with pytest.raises(hub.UserError, match="only pickle files"):
        hub.resolve("hf://org/net@v1")
    assert calls == ["v1"]
    fetched = []
    info.siblings = [SimpleNamespace(rfilename=f) for f in ("model.safetensors", "model.json", "README.md")]
    monkeypatch.setattr(hf, "hf_hub_download", lambda repo, file, revision: fetched.append((file, revision)) or file)
    path, origin = hub.resolve("hf://org/net@v1")
    assert origin == f"hf://org/net@{COMMIT}/model.safetensors"
    assert fetched == [("model.safetensors", COMMIT), ("model.json", COMMIT)]  # by commit: the branch may move


def test_push_writes_weights_metadata_and_a_card_from_the_records(run_dir, tmp_path, monkeypatch, capsys):
    """The card's numbers are the records' (as measured, no calibrator); the upload (mocked: no network in tests)
    gets exactly the three files, in one commit, never the run's pickled training state."""
    results = tmp_path / "results"
    argv = ["evaluate", "--ckpt", str(run_dir), "--out", str(results), "--evaluators", "fgsm", "--eps", "8"]
    assert main([*argv, "--no-progress"]) == 0
    rows = read_records(results / "mm-digits" / "fgsm.jsonl")
    acc8 = next(
        r["value"] for r in rows if r["condition"] == "eps8" and r["metric"] == "acc" and r["calibrator"] == "none"
    )
    nll8 = next(
        r["value"] for r in rows if r["condition"] == "eps8" and r["metric"] == "nll" and r["calibrator"] == "none"
    )
    uploads = []

    class FakeApi:
        def create_repo(self, repo, private=False, exist_ok=False):
            uploads.append(("create", repo, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, revision, commit_message, allow_patterns):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            card = (Path(folder_path) / "README.md").read_text()
            weights = (Path(folder_path) / "model.safetensors").read_bytes()
            uploads.append(("upload", repo_id, files, revision, allow_patterns, card, weights))
            return SimpleNamespace(oid="c0ffee")

    monkeypatch.setattr(hf, "HfApi", FakeApi)
    argv = ["push", str(run_dir), "--repo", "me/mm-digits", "--results", str(results / "mm-digits"), "--private"]
    assert main(argv) == 0
    assert "pushed model.safetensors, model.json, README.md to https://huggingface.co/me/mm-digits (c0ffee)" in (
        capsys.readouterr().out
    )
    assert uploads[0] == ("create", "me/mm-digits", True, True)
    _, repo, files, revision, patterns, card, weights = uploads[1]
    assert files == ["README.md", "model.json", "model.safetensors"] and revision is None
    assert sorted(patterns) == files and weights == (run_dir / "model.safetensors").read_bytes()
    assert f"| fgsm | eps8 | {acc8:.2f} | {nll8:.4f} |" in card
    assert "library_name: mmix-eval" in card and "mmix-eval evaluate --ckpt hf://me/mm-digits" in card
    # --card-only writes the same files and uploads nothing.
    assert main(["push", str(run_dir), "--repo", "me/x", "--card-only", str(tmp_path / "card")]) == 0
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == files and len(uploads) == 2
    assert "No evaluation records were given" in (tmp_path / "card" / "README.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repo", "not a repo"], "--repo: expected a Hub repo id like org/name, got 'not a repo'"),
        (["--repo", "me/x", "--results", "{missing}"], "--results: expected a folder of the run's records"),
    ],
)
def test_push_refusals(run_dir, tmp_path, capsys, argv, message):
    argv = [a.replace("{missing}", str(tmp_path / "none")) for a in argv]
    assert main(["push", str(run_dir), *argv, "--card-only", str(tmp_path / "c")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["push", str(tmp_path), "--repo", "me/x", "--card-only", str(tmp_path / "c")]) == 2
    assert "push: expected a run folder holding model.safetensors" in capsys.readouterr().err
