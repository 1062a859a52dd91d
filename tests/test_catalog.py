"""One file of the user's own for each kind of plugin (data source, model, method, loss, evaluator, calibrator),
found by its import path and by an installed package's entry point, through the one registry mechanism."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT

from mmix_eval.calibrators import fit_checked, get_calibrator
from mmix_eval.catalog import CALIBRATORS, DATASETS, EVALUATORS, LOSSES, METHODS, MODELS
from mmix_eval.data import load_data
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import get_evaluator
from mmix_eval.methods import create_method
from mmix_eval.models import create_model

PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn

    from mmix_eval.calibrators import Calibrator
    from mmix_eval.data import RawData, Split
    from mmix_eval.evaluate import Evaluator, MetricSpec
    from mmix_eval.methods import Method, StepOutput

    def squares(arg, root, download):
        """Four classes of 6x6 grey squares; ARG is the number of test images per class."""
        per = int(arg or 2)
        def split(n):
            y = np.arange(4 * n) % 4
            x = (y[:, None, None, None] * 60 + np.zeros((1, 1, 6, 6))).astype(np.uint8)
            return Split(torch.from_numpy(x), torch.from_numpy(y))
        return RawData(classes=list("abcd"), train=split(5), test=split(per), flip=False)

    def tiny(num_classes, in_channels, mean, std, hidden: int = 3):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    class Doubled(Method):
        name = "doubled"
        def step(self, model, x, y, rng):
            logits = model(x)
            return StepOutput(2 * nn.functional.cross_entropy(logits, y), logits)

    def halved_ce(logits, target):
        return 0.5 * -(target * logits.log_softmax(1)).sum(1).mean()

    class Constant(Evaluator):
        name = "constant"
        help = "always 1"
        metrics = {"one": MetricSpec("one", None)}
        def run(self, target, options, common):
            return []

    class Shift(Calibrator):
        name = "shift"
        def fit(self, logits, labels):
            return {"offset": 1.0}
        def apply(self, logits, params):
            return logits + params["offset"]

    class BadFit(Shift):
        def fit(self, logits, labels):
            return {"offset": float("nan")}
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_plugin", None)
    yield "my_plugin"
    sys.modules.pop("my_plugin", None)


def entry_points(monkeypatch, **groups):
    """Pretend an installed package declares these entry points: group suffix -> {name: "module:attr"}."""
    eps = {
        f"mmix_eval.{g}": [importlib.metadata.EntryPoint(name=n, value=v, group=f"mmix_eval.{g}") for n, v in m.items()]
        for g, m in groups.items()
    }
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: eps.get(group, []))


def test_a_data_source_by_import_path_with_its_argument_and_by_entry_point(plugin, monkeypatch):
    d = load_data("my_plugin:squares:3")
    assert d.classes == list("abcd") and len(d.test) == 12 and d.name == "my_plugin:squares"
    assert d.info["spec"] == "my_plugin:squares:3"
    entry_points(monkeypatch, datasets={"squares": "my_plugin:squares"})
    assert len(load_data("squares:1").test) == 4 and "squares" in DATASETS.names()
    with pytest.raises(UserError, match="unknown data set 'squarez'.*did you mean 'squares'"):
        load_data("squarez")
    with pytest.raises(UserError, match="module 'my_plugin' has no attribute 'nothing'"):
        load_data("my_plugin:nothing")


def test_a_model_by_import_path_and_by_entry_point(plugin, monkeypatch):
    m = create_model("my_plugin:tiny", 4, 1, hidden=5)
    assert m(torch.zeros(2, 1, 6, 6)).shape == (2, 4)
    entry_points(monkeypatch, models={"tiny": "my_plugin:tiny"})
    assert create_model("tiny", 3, 1)(torch.zeros(1, 1, 6, 6)).shape == (1, 3) and "tiny" in MODELS.names()


def test_a_method_and_a_loss_by_import_path_and_by_entry_point(plugin, monkeypatch):
    assert create_method("my_plugin:Doubled").name == "doubled"
    entry_points(monkeypatch, methods={"doubled": "my_plugin:Doubled"}, losses={"halved": "my_plugin:halved_ce"})
    assert create_method("doubled").name == "doubled" and "doubled" in METHODS.names()
    method = create_method("vanilla", loss="halved")
    y = torch.tensor([0, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert float(method.loss_fn(logits, torch.eye(2)[y])) == pytest.approx(
        0.5 * float(torch.nn.functional.cross_entropy(logits, y))
    )
    assert "halved" in LOSSES.names()


def test_an_evaluator_by_import_path_and_by_entry_point(plugin, monkeypatch):
    assert get_evaluator("my_plugin:Constant").name == "constant"
    entry_points(monkeypatch, evaluators={"constant": "my_plugin:Constant"})
    assert get_evaluator("constant").name == "constant" and "constant" in EVALUATORS.names()


def test_a_calibrator_by_import_path_and_by_entry_point_and_a_bad_fit_refused(plugin, monkeypatch):
    shift = get_calibrator("my_plugin:Shift")
    z = torch.zeros(2, 3)
    params = fit_checked(shift, z, torch.tensor([0, 1]))
    assert params == {"offset": 1.0} and torch.equal(shift.apply(z, params), z + 1)
    entry_points(monkeypatch, calibrators={"shift": "my_plugin:Shift"})
    assert get_calibrator("shift").name == "shift" and "shift" in CALIBRATORS.names()
    with pytest.raises(UserError, match="calibrator 'shift': parameter 'offset' expected finite numbers, got nan"):
        fit_checked(get_calibrator("my_plugin:BadFit"), z, torch.tensor([0, 1]))
    with pytest.raises(UserError, match="expected a mmix_eval.calibrators.Calibrator subclass"):
        get_calibrator("my_plugin:squares")


def test_builtin_temperature_calibrator_equals_a_scipy_minimisation_of_nll():
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 5, generator=g, dtype=torch.float64) * 3
    y = (logits + 4 * torch.randn(400, 5, generator=g, dtype=torch.float64)).argmax(1)  # right about half the time
    z, yy = logits.numpy(), y.numpy()
    nll = lambda t: -log_softmax(z / t, axis=1)[range(len(yy)), yy].mean()  # noqa: E731
    ref = math.exp(minimize_scalar(lambda log_t: nll(math.exp(log_t)), method="brent", tol=1e-12).x)
    cal = get_calibrator("temperature")
    params = fit_checked(cal, logits, y)
    assert 1.2 < ref < 19  # overconfident logits: an interior optimum, T > 1
    # LBFGS stops where the NLL is flat: T within 1e-4 of scipy's, the NLL within 1e-9 of the minimum
    assert params["temperature"] == pytest.approx(ref, rel=1e-4)
    assert nll(params["temperature"]) - nll(ref) < 1e-9
    assert torch.allclose(cal.apply(logits, params), logits / params["temperature"], rtol=0)
    assert torch.equal(get_calibrator("none").apply(logits, {}), logits)


def test_listing_registries_reads_the_lazy_table_and_imports_no_torch():
    code = (
        "import sys; from mmix_eval.cli import main; "
        "[main(['ls', w]) for w in ('models', 'datasets', 'losses', 'calibrators')]; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (
        "preactresnet18 " in r.stdout
        and "digits " in r.stdout
        and "soft_ce " in r.stdout
        and "temperature " in r.stdout
    )


def test_report_sections_are_in_the_one_catalog_and_listed_without_torch():
    """Issue 47: the report's sections live in catalog.py beside every other registry; `ls sections` lists them."""
    from mmix_eval.catalog import REGISTRIES, SECTIONS
    from mmix_eval.report.sections import ReportSection, section_for

    assert REGISTRIES["sections"] is SECTIONS and set(SECTIONS.builtin()) >= {
        "calibration",
        "corruptions",
        "ood",
        "shift",
    }
    for name in SECTIONS.builtin():  # each built-in resolves to its class, named after the evaluator
        s = section_for(name)
        assert isinstance(s, ReportSection) and type(s) is not ReportSection and s.evaluator == name
    assert type(section_for("my_own_evaluator")) is ReportSection  # any other: the generic section
    code = (
        "import sys; from mmix_eval.cli import main; main(['ls', 'sections']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[: len(SECTIONS.builtin())]] == sorted(SECTIONS.builtin())
    assert lines[-1].startswith("module:Class  your own for an evaluator: --section EVALUATOR=module:Class")
