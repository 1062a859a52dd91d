"""The evaluator interface: a name, a typed options dataclass, ``run(target, options, common) -> rows`` and a
``MetricSpec`` for every metric it emits. Imports no torch, so ``mmix-eval ls evaluators``, ``--help`` and
the report layer can read evaluators without loading a model.

An evaluator is found like a method: a registry name (``deformations``), a ``module:attr`` import path
(``my_evals:Occlusion``) or an installed entry point (group ``mmix_eval.evaluators``). See
``docs/evaluators.md`` for a worked plugin.

    @dataclass
    class OcclusionOptions:
        patch: int = field(default=8, metadata={"help": "square side in pixels"})

    class Occlusion(Evaluator):
        name = "occlusion"
        help = "accuracy with a grey square over the image centre"
        Options = OcclusionOptions
        metrics = {**SHIFT_METRICS}
        def run(self, target, options, common): ...
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mmix_eval.catalog import EVALUATORS
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.options import (  # noqa: F401
    MAX_BATCH,
    MAX_IMAGES,
    MAX_SEED,
    OptionError,
    check_count,
    coerce,
    option_fields,  # (OptionError, coerce, type_name: re-exported)
    type_name,
)

DIRECTIONS = ("higher", "lower", None)  # None: not a score (a fitted temperature, a bin count)


@dataclass(frozen=True)
class MetricSpec:
    """How a report shows a metric: its direction (which value is better), display format and label.

    ``headline``: rows of this metric go in the report's main comparison table (accuracy under a shift);
    the others go in the evaluator's own section. ``comparison``: a score the comparison table closes with, at
    the clean condition, raw and calibrated side by side (NLL, ECE, Brier)."""

    label: str
    direction: str | None
    format: str = ".4f"  # a format spec for float.__format__
    headline: bool = False
    comparison: bool = False

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"MetricSpec direction: expected 'higher', 'lower' or None, got {self.direction!r}")
        format(1.0, self.format)  # a bad format spec fails at definition, not in the report


# The metrics every condition that produces logits records (calibration under every shift).
SHIFT_METRICS: dict[str, MetricSpec] = {
    "acc": MetricSpec("accuracy (%)", "higher", ".2f", headline=True),
    "rel_acc": MetricSpec("relative accuracy (% of the model's clean accuracy)", "higher", ".2f"),
    "acc_top5": MetricSpec("top-5 accuracy (%)", "higher", ".2f"),  # recorded for more than 10 classes
    "nll": MetricSpec("NLL", "lower", comparison=True),
    "ece": MetricSpec("ECE", "lower", comparison=True),
    "brier": MetricSpec("Brier", "lower", comparison=True),
    "ece_em": MetricSpec("equal-mass ECE", "lower"),
    "cw_ece": MetricSpec("classwise ECE", "lower"),
    # Two calibration errors whose estimate is not inflated by each model's own sampling noise (a binned ECE is,
    # by an amount that grows with the model's spread of confidences, so a difference of ECEs can be the estimator's):
    "ce_debiased": MetricSpec("debiased L2 calibration error (Kumar et al. 2019, 15 equal-mass bins)", "lower"),
    "smece": MetricSpec("SmoothECE (Błasiok & Nakkiran 2024)", "lower"),
    "signed_ce": MetricSpec("signed calibration error (mean confidence − accuracy; > 0 overconfident)", None),
    "aurc": MetricSpec("AURC (area under the risk-coverage curve)", "lower"),
    "risk80": MetricSpec("error at 80 % coverage (the most confident)", "lower"),
    "risk90": MetricSpec("error at 90 % coverage (the most confident)", "lower"),
    # Split conformal sets (evaluate.conformal), calibrated on the held-out images at 1 − α: descriptive (coverage
    # has a target, not a direction; a smaller set is better only where coverage holds).
    **{
        f"{kind}_{m}": MetricSpec(f"{m.upper()} {what}", None, fmt)
        for m in ("thr", "aps", "raps")
        for kind, what, fmt in (("coverage", "set coverage (%)", ".2f"), ("set_size", "mean set size", ".3f"))
    },
}
# The probability metrics every condition records raw and, where a calibrator was fitted, calibrated.
PROBABILITY_METRICS = (
    "nll",
    "ece",
    "ece_em",
    "cw_ece",
    "signed_ce",
    "brier",
    "aurc",
    "risk80",
    "risk90",
    "ce_debiased",
    "smece",
)
# Split conformal sets' coverage and mean size (evaluate.conformal.METRICS), per condition and calibrator.
CONFORMAL_METRICS = tuple(f"{kind}_{m}" for m in ("thr", "aps", "raps") for kind in ("coverage", "set_size"))
# Calibration errors: descriptive only. A report never bolds or marks them, and no "better calibrated" verdict rests
# on them (binned estimators are biased by each model's own amount; verdicts rest on NLL and Brier, the proper scores).
CALIBRATION_ERRORS = ("ece", "mce", "ece_em", "cw_ece", "ce_debiased", "smece")
MAX_BINS = 10_000  # an ECE with more bins than this has a handful of images per bin at best


@dataclass(frozen=True)
class NoOptions:
    """For an evaluator with no options of its own."""


class Evaluator:
    """Base class. A subclass sets ``name``, ``help``, ``Options`` (a dataclass whose fields have defaults
    and, optionally, ``metadata={'help': ...}``), ``metrics`` (metric name -> MetricSpec) and implements
    ``run(target, options, common) -> list of record dicts`` (``common``: the ``EvalOptions`` every evaluator of
    the call shares: seed, bins, batch size, device, progress) (build them with ``mmix_eval.evaluate.records.record``
    or ``mmix_eval.evaluate.outcomes.condition_rows``). ``validate(options)`` raises ``OptionError`` for a
    bad value; it runs once, before any checkpoint is loaded."""

    name: ClassVar[str] = "evaluator"
    version: ClassVar[str] = "1"  # bump when the numbers change for the same options: stored results are redone
    needs_val: ClassVar[bool] = False  # uses the checkpoint's held-out validation split (target.val)
    help: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    metrics: ClassVar[dict[str, MetricSpec]] = {}

    def resolve(self, options):
        """The options with their units converted, once, as a new object (the given one is never changed); runs
        after the type checks and before ``validate``. Default: the options as given."""
        return options

    def validate(self, options) -> None:
        """Raise OptionError naming the option for a value of the right type but out of range. Never changes
        ``options`` (convert units in ``resolve``)."""

    def preflight(self, options, ctx: Preflight) -> None:
        """What a bench checks before anything trains, from what is known then (``Preflight``: the data spec,
        its channels and classes, the model as built, the shared options): raise UserError for what ``run``
        would refuse only after training (a missing data set, a layer the model lacks). Default: nothing."""

    def file_suffix(self, options) -> str:
        """Appended to the result files' name (``<name>-<suffix>.jsonl``) for options whose results must not
        overwrite the default's; '' (the default) for none."""
        return ""

    def run(self, target, options, common) -> list[dict]:
        raise NotImplementedError

    def clean_by_product(self, options) -> bool:
        """True when ``run`` computes the target's clean logits as a by-product of a pass it makes anyway
        (FGSM's input gradients): the runner then runs it before the evaluators that would take a clean
        pass of their own."""
        return False

    # ------------------------------------------------------------------ options

    def checked_validate(self, options) -> None:
        """``validate``, held to its promise: options it changes (a plugin's Options need not be frozen) are an
        error naming the evaluator, not a silent conversion that only some paths see."""
        before = copy.deepcopy(options)
        self.validate(options)
        if options != before:
            changed = [
                f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(before, f.name)
            ]
            raise UserError(
                f"evaluator '{self.name}': validate() changed option(s) {', '.join(changed) or '?'}; "
                f"expected it to leave its options as given (convert values in resolve(), which returns "
                f"a new object)"
            )

    def options(self, raw: dict | None = None, where: str | None = None):
        """Options from a mapping (YAML, CLI), strictly: unknown keys and wrong types are errors naming the
        option. Values are converted where lossless (an int for a float, a comma string for a list)."""
        raw = dict(raw or {})
        known = {f.name: f for f in dataclasses.fields(self.Options)}
        where = where or f"evaluator '{self.name}'"
        for k in raw:
            if k not in known:
                raise UserError(
                    f"{where}: unknown option '{k}'{did_you_mean(str(k), known)}; "
                    f"expected one of: {', '.join(known) or 'none'}"
                )
        hints = typing.get_type_hints(self.Options)
        values = {}
        try:
            for k, v in raw.items():
                ok, v = coerce(v, hints[k])
                if not ok:
                    raise OptionError(k, f"expected {type_name(hints[k])}, got {raw[k]!r}")
                values[k] = v
            opts = self.resolve(self.Options(**values))
            self.checked_validate(opts)
        except OptionError as e:  # which evaluator's option: a plugin's 'patch' names nothing on its own
            if "an option of the" in e.detail:
                raise
            raise OptionError(e.param, f"{e.detail} (an option of the {self.name} evaluator)") from None
        return opts


# The built-in evaluators' names, in report order (``mmix_eval.catalog.EVALUATORS`` says where each lives).
BUILTIN = tuple(EVALUATORS.builtin())
# What `evaluate` and `bench` run unless told otherwise (corruptions need the CIFAR-C files, or are asked for).
DEFAULT_EVALUATORS = ("deformations", "fgsm", "calibration")


def get_evaluator(spec: str) -> Evaluator:
    """An Evaluator instance by registry name, ``module:attr`` path or entry point, checked for the
    interface (a class or instance of Evaluator with a spec for every metric it declares)."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"evaluator: expected a name or module:attr, got {spec!r}")
    obj = EVALUATORS.instance(
        spec,
        Evaluator,
        "a mmix_eval.evaluate.Evaluator subclass (name, Options, metrics, run(target, options, common) -> rows)",
    )
    if not dataclasses.is_dataclass(obj.Options):
        raise UserError(f"evaluator '{spec}': 'Options' expected a dataclass, got {obj.Options!r}")
    for f in dataclasses.fields(obj.Options):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"evaluator '{spec}': option '{f.name}' expected a default value, got none")
    if not isinstance(obj.metrics, dict) or not all(isinstance(v, MetricSpec) for v in obj.metrics.values()):
        raise UserError(f"evaluator '{spec}': 'metrics' expected a mapping of metric name -> MetricSpec")
    if not isinstance(obj.name, str) or not obj.name or obj.name == Evaluator.name:
        raise UserError(f"evaluator '{spec}': expected a 'name' of its own (the name records and reports show)")
    return obj


def describe_evaluators() -> list[tuple[str, str, list[tuple[str, Any, Any, str]]]]:
    """(name, help, options) for the built-ins and installed entry points: what ``ls evaluators`` shows."""
    out = []
    for name in [*BUILTIN, *(n for n in EVALUATORS.names() if n not in BUILTIN)]:
        try:
            ev = get_evaluator(name)
        except UserError as e:  # an installed plugin that fails to load is listed as such, not the end of the list
            if name in BUILTIN:
                raise
            out.append((name, f"(unavailable: {e})", []))
            continue
        out.append((name, ev.help, option_fields(ev.Options)))
    return out


@dataclass
class Preflight:
    """What a bench knows about a run's evaluation before it trains (see ``Evaluator.preflight``)."""

    data: str
    data_root: str | None
    channels: int
    num_classes: int
    model: Any  # the model as the run builds it (untrained weights)
    common: EvalOptions
    image_shape: tuple | None = None  # (C, H, W) of the data's images; None where not known


@dataclass(frozen=True)
class EvalOptions:
    """Options every evaluator of one ``evaluate`` call shares: which images, the seed, the device. Checked once, when
    made (a changed copy, ``dataclasses.replace``, is checked again)."""

    data: str | None = field(default=None, metadata={"help": "override the data set, e.g. imagefolder:PATH"})
    data_root: str | None = field(default=None, metadata={"help": "override where torchvision data sets live"})
    limit: int | None = field(
        default=None,
        metadata={"help": "a seeded subset of N test images (the same for every checkpoint; at most 10^9)"},
    )
    download: bool = field(default=False, metadata={"help": "download a torchvision data set if missing"})
    class_map: str | None = field(
        default=None,
        metadata={
            "help": "when the data's class names or order differ from the checkpoint's: by-name, or a YAML file of "
            "data name: checkpoint name (labels are remapped, and the records say so)"
        },
    )
    seed: int = field(default=0, metadata={"help": "test subset, deformation parameters, PGD start (0 to 2^32 - 1)"})
    bins: int = field(
        default=15, metadata={"help": "ECE bins for every condition (15: Guo et al. 2017; at most 10,000)"}
    )
    calibrator: str = field(
        default="temperature",
        metadata={
            "help": "post-hoc calibrators fitted once per checkpoint on held-out images and applied to every condition's "
            "logits, one calibrated row each: none | a comma-separated list of temperature, vector, matrix, dirichlet, "
            "histogram, isotonic, ensemble_temperature, module:Class (mmix-eval ls calibrators)"
        },
    )
    conformal_alpha: float | None = field(
        default=None,
        metadata={
            "help": "split conformal sets (THR, APS, RAPS) at level 1 - ALPHA (0.1: 90 %%), calibrated on the held-out "
            "images the calibrators are fitted on: coverage and mean set size under every condition (default: none, "
            "no sets)"
        },
    )
    calibration_split: int | None = field(
        default=None,
        metadata={
            "help": "fit the calibrator on N seeded test images, left out of every evaluated subset (default: the "
            "checkpoint's own validation split; at most 10^9)"
        },
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "default: 500 on a CPU, 1000 on a GPU (at most 65,536)"}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    progress: bool = True
    allow_import: bool = False  # --trust-model-import: a checkpoint may name its model by module:factory
    # Model and data specs the caller named itself (a bench YAML naming a plugin): a checkpoint naming one of these
    # may be rebuilt and evaluated on it, although it imports code (mmix_eval.trust). Not part of a record.
    trusted: tuple = ()

    def __post_init__(self):
        self.check()

    @property
    def calibrators(self) -> tuple[str, ...]:
        """The calibrators named, in order (``calibrator`` is one name or a comma-separated list); () for 'none'."""
        names = tuple(s.strip() for s in self.calibrator.split(",")) if isinstance(self.calibrator, str) else ()
        return () if names == ("none",) else names

    def check(self) -> None:
        check_count("seed", self.seed, 0, MAX_SEED)
        check_count("bins", self.bins, 1, MAX_BINS)
        if not isinstance(self.calibrator, str) or not self.calibrator or not all(self.calibrators):
            raise OptionError(
                "calibrator", f"expected calibrator names or module:Class, separated by commas, got {self.calibrator!r}"
            )
        if "none" in self.calibrators and len(self.calibrators) > 1:
            raise OptionError("calibrator", f"expected 'none' alone or a list of calibrators, got {self.calibrator!r}")
        if len(set(self.calibrators)) < len(self.calibrators):
            raise OptionError("calibrator", f"expected each calibrator once, got {self.calibrator!r}")
        a = self.conformal_alpha
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1):
            raise OptionError("conformal_alpha", f"expected a number in (0, 1) or none, got {a!r}")
        check_count("calibration_split", self.calibration_split, 1, MAX_IMAGES, none_ok=True)
        check_count("limit", self.limit, 1, MAX_IMAGES, none_ok=True)
        check_count("batch_size", self.batch_size, 1, MAX_BATCH, none_ok=True)


def run_evaluator(evaluator: Evaluator, target, options=None, common: EvalOptions | None = None) -> list[dict]:
    """Run one evaluator on one target: options parsed and validated, rows checked and given their specs.
    What the runner does per checkpoint, and what the Python API functions call."""
    from mmix_eval.evaluate.records import with_specs

    common = common or EvalOptions(device=None)
    opts = options if isinstance(options, evaluator.Options) else evaluator.options(options)
    rows = evaluator.run(target, opts, common)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(
            f"evaluator '{evaluator.name}': run() expected to return a list of record dicts, got {type(rows).__name__}"
        )
    return with_specs(rows, evaluator)
