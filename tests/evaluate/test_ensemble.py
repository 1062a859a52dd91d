"""Deep ensembles: the mean of the members' softmax (against a plain loop), and members that cannot be
ensembled refused in one line naming both files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmix_eval.errors import UserError
from mmix_eval.evaluate.ensemble import Ensemble, check_members, ensemble_sha


def test_the_ensemble_softmax_is_the_mean_of_its_members_softmax():
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)) for _ in range(3)]
    for m in members:
        with torch.no_grad():
            m[1].weight.mul_(10)  # confident members: a naive log(mean(exp)) in float32 would underflow
    x = torch.rand(7, 3, 2, 2)
    mean = sum(torch.softmax(m(x).double(), 1) for m in members) / 3
    got = Ensemble(members)(x)
    assert torch.allclose(torch.softmax(got.double(), 1), mean, atol=1e-6, rtol=0)
    assert torch.isfinite(got).all()
    assert torch.equal(got.argmax(1), mean.argmax(1))
    # one member: its own probabilities
    assert torch.allclose(F.softmax(Ensemble(members[:1])(x), 1), F.softmax(members[0](x), 1), atol=1e-6)


def meta(**over):
    m = {
        "data": {"spec": "digits", "classes": list("0123456789"), "image_size": [8, 8]},
        "model": {"kwargs": {"in_channels": 1, "num_classes": 10}},
        "config": {"data": {"val_size": 200}},
        "data_sha256": "a" * 64,
    }
    for k, v in over.items():
        section, key = k.split("__")
        m[section] = {**m[section], key: v}
    return m


@pytest.mark.parametrize(
    "other,what",
    [
        (meta(data__spec="cifar10"), "data set"),
        (meta(data__classes=list("0123456789")[::-1]), "classes"),
        (meta(data__image_size=[16, 16]), "image size"),
        (meta(model__kwargs={"in_channels": 3, "num_classes": 10}), "input channels"),
        (meta(config__data={"val_size": 100}), "data configuration"),
    ],
)
def test_members_that_differ_are_refused_naming_both_files(other, what):
    with pytest.raises(UserError) as e:
        check_members([Path("a/model.safetensors"), Path("b/model.safetensors")], [meta(), other])
    text = str(e.value)
    assert (
        f"members must share the {what}" in text and "'a/model.safetensors'" in text and "'b/model.safetensors'" in text
    )
    assert "\n" not in text


def test_one_member_or_one_file_twice_is_refused(tmp_path):
    with pytest.raises(UserError, match="ensemble: expected at least 2 checkpoints, got 1"):
        check_members([Path("a")], [meta()])
    with pytest.raises(UserError, match="expected different checkpoints, got one file twice"):
        check_members([tmp_path / "a", tmp_path / "." / "a"], [meta(), meta()])


def test_the_ensemble_hash_depends_on_every_member():
    a, b = meta(), {**meta(), "data_sha256": "b" * 64}
    assert ensemble_sha([a, b]) != ensemble_sha([a, a]) and ensemble_sha([a, b]) == ensemble_sha([dict(a), dict(b)])
    assert ensemble_sha([a, {**b, "data_sha256": None}]) is None
