"""Every built-in plugin, by name, as "module:attr" with its one-line help. Imports no torch.

Each registry resolves a name here first (importing the module on first use), then a "module:attr" path,
then an installed package's entry point in its group. A user's own model, method, loss, data source,
evaluator, calibrator or report section is one file reached the same way; nothing here needs to change for it.
"""

from __future__ import annotations

from mmix_eval.registry import Registry

MODELS: Registry = Registry(
    "model",
    "mmix_eval.models",
    {
        "mlp": (
            "mmix_eval.models.mlp:mlp",
            "MLP with numbered stages (hidden sizes as a list; a narrow linear one is a bottleneck)",
        ),
        "preactresnet18": (
            "mmix_eval.models.preactresnet:preactresnet18",
            "PreActResNet-18 (11.2M params), the paper's CIFAR network, as the official code",
        ),
        "preactresnet34": (
            "mmix_eval.models.preactresnet:preactresnet34",
            "PreActResNet-34 (21.3M params), the paper's Table 4 network, as the official code",
        ),
        "preactresnet18_he": (
            "mmix_eval.models.preactresnet:preactresnet18_he",
            "PreActResNet-18 with He et al.'s final BN-ReLU (not the paper's)",
        ),
        "preactresnet34_he": (
            "mmix_eval.models.preactresnet:preactresnet34_he",
            "PreActResNet-34 with He et al.'s final BN-ReLU (not the paper's)",
        ),
        "smallnet": (
            "mmix_eval.models.small:smallnet",
            "small pre-activation residual CNN (0.31M params at width 32), CPU-friendly",
        ),
        "wrn28_10": ("mmix_eval.models.wrn:wrn28_10", "Wide ResNet-28-10 (36.5M params), the paper's WRN"),
        "wrn": ("mmix_eval.models.wrn:wrn", "Wide ResNet of any depth (6n+4) and widen factor"),
    },
)

METHODS: Registry = Registry(
    "method",
    "mmix_eval.methods",
    {
        "vanilla": ("mmix_eval.methods.mixup:Vanilla", "no mixing: the loss on one-hot targets"),
        "manifold_mixup": (
            "mmix_eval.methods.mixup:manifold_mixup",
            "mix hidden states at k ~ U(S), S = {0, 1, 2} by default, alpha 2.0",
        ),
        "input_mixup": (
            "mmix_eval.methods.mixup:input_mixup",
            "mixup of the inputs (manifold mixup with S = {0}), alpha 1.0",
        ),
        "cutmix": (
            "mmix_eval.methods.cutmix:CutMix",
            "CutMix: paste a box from a shuffled copy, alpha 1.0, prob 0.5 (worked plugin example)",
        ),
        "label_smoothing": (
            "mmix_eval.methods.label_smoothing:LabelSmoothing",
            "targets (1 - eps) one-hot + eps / C, eps 0.1 (Szegedy et al. 2016)",
        ),
        "regmixup": (
            "mmix_eval.methods.regmixup:RegMixup",
            "clean loss + eta x input-mixup loss on the same batch, alpha 10, eta 1 (Pinto et al. 2022)",
        ),
    },
)

LOSSES: Registry = Registry(
    "loss",
    "mmix_eval.losses",
    {
        "bce_softmax": (
            "mmix_eval.methods.losses:bce_softmax",
            "binary cross-entropy on softmax probabilities, mean over batch x classes (official code)",
        ),
        "soft_ce": ("mmix_eval.methods.losses:soft_ce", "cross-entropy with soft targets, mean over the batch"),
    },
)

# A data spec is NAME[:ARG]; a NAME that is not one of these (nor an entry point) is read as a user's
# "module:attr[:ARG]".
DATASETS: Registry = Registry(
    "data set",
    "mmix_eval.datasets",
    {
        "digits": (
            "mmix_eval.data.sources:digits",
            "scikit-learn's 8x8 handwritten digits (1,797 images, embedded, no download)",
        ),
        "cifar10": ("mmix_eval.data.sources:cifar10", "CIFAR-10 through torchvision (--data-root, --download)"),
        "cifar100": ("mmix_eval.data.sources:cifar100", "CIFAR-100 through torchvision (--data-root, --download)"),
        "svhn": (
            "mmix_eval.data.sources:svhn",
            "SVHN (train + test, no extra) through torchvision (--data-root, --download)",
        ),
        "imagefolder": (
            "mmix_eval.data.sources:imagefolder",
            "imagefolder:PATH, a folder or .tar(.gz) of class folders (train/ and test/, or one set split 80/20)",
        ),
        "tinyimagenet": (
            "mmix_eval.data.tinyimagenet:tinyimagenet",
            "tinyimagenet[:PATH], Tiny-ImageNet as distributed (folder, .zip or .tar.gz; the validation split is "
            "the test split)",
        ),
        "cifar10.1": (
            "mmix_eval.data.sources:cifar10_1",
            "cifar10.1[:PATH], CIFAR-10.1 v6 (2,000 test images, natural shift; the .npy files or their folder)",
        ),
        "cifar10.2": (
            "mmix_eval.data.sources:cifar10_2",
            "cifar10.2[:PATH], CIFAR-10.2 (2,000 test images, natural shift; cifar102_test.npz or its folder)",
        ),
        "spiral": (
            "mmix_eval.data.sources:spiral",
            "spiral[:arms=2,points=2000,noise=0.3,turns=1.5,seed=0], 2-D points as "
            "(N, 2, 1, 1) images (the paper's Figure 1), no download",
        ),
    },
)

# In this order in reports; the help is the evaluator's own (`ls evaluators` imports them for their options).
EVALUATORS: Registry = Registry(
    "evaluator",
    "mmix_eval.evaluators",
    {
        "deformations": ("mmix_eval.evaluate.evaluators.deformations.evaluator:Deformations", ""),
        "fgsm": ("mmix_eval.evaluate.evaluators.attacks.fgsm:FGSM", ""),
        "calibration": ("mmix_eval.evaluate.evaluators.calibration:Calibration", ""),
        "corruptions": ("mmix_eval.evaluate.evaluators.corruptions.evaluator:Corruptions", ""),
        "spectra": ("mmix_eval.evaluate.evaluators.spectra:Spectra", ""),
        "ood": ("mmix_eval.evaluate.evaluators.ood:OOD", ""),
        "attack": ("mmix_eval.evaluate.evaluators.attacks.attack:Attack", ""),
        "shift": ("mmix_eval.evaluate.evaluators.shift:Shift", ""),
    },
)

CALIBRATORS: Registry = Registry(
    "calibrator",
    "mmix_eval.calibrators",
    {
        "none": ("mmix_eval.calibrators.base:Identity", "the logits as they are"),
        "temperature": (
            "mmix_eval.calibrators.temperature:Temperature",
            "one temperature T, logits / T, fitted by minimising NLL on the validation split (Guo et al. 2017)",
        ),
        "vector": (
            "mmix_eval.calibrators.vector:Vector",
            "a weight and a bias per class, logits · w + b, fitted by minimising NLL (Guo et al. 2017)",
        ),
        "matrix": (
            "mmix_eval.calibrators.matrix:Matrix",
            "a full matrix and a bias, W · logits + b, fitted by minimising NLL (Guo et al. 2017)",
        ),
        "dirichlet": (
            "mmix_eval.calibrators.dirichlet:Dirichlet",
            "W · log softmax + b with the ODIR regulariser chosen by cross-validation (Kull et al. 2019)",
        ),
        "histogram": (
            "mmix_eval.calibrators.histogram:Histogram",
            "one-vs-rest histogram binning, 15 equal-width bins per class (Zadrozny & Elkan 2001); outputs probabilities",
        ),
        "isotonic": (
            "mmix_eval.calibrators.isotonic:Isotonic",
            "one-vs-rest isotonic regression per class (Zadrozny & Elkan 2002); outputs probabilities",
        ),
        "ensemble_temperature": (
            "mmix_eval.calibrators.ensemble_temperature:EnsembleTemperature",
            "mixture of the T-scaled, raw and uniform softmax, weights fitted by NLL (Zhang et al. 2020)",
        ),
    },
)

# The report's section of an evaluator, by the evaluator's name; any other evaluator gets the generic section.
SECTIONS: Registry = Registry(
    "report section",
    "mmix_eval.report_sections",
    {
        "calibration": (
            "mmix_eval.report.sections.calibration:CalibrationSection",
            "reliability diagrams before and after scaling",
        ),
        "corruptions": (
            "mmix_eval.report.sections.corruptions:CorruptionsSection",
            "mCE / CE rows, severity plots, heatmap",
        ),
        "fgsm": ("mmix_eval.report.sections.attacks:AttackSection", "the gradient-masking check"),
        "attack": ("mmix_eval.report.sections.attacks:AttackSection", "the gradient-masking check"),
        "ood": ("mmix_eval.report.sections.ood:OODSection", "OOD detection rows"),
        "spectra": ("mmix_eval.report.sections.spectra:SpectraSection", "singular-value spectra plots"),
        "shift": ("mmix_eval.report.sections.shift:ShiftSection", "accuracy on the line, effective robustness"),
    },
)

REGISTRIES = {
    "models": MODELS,
    "methods": METHODS,
    "losses": LOSSES,
    "datasets": DATASETS,
    "evaluators": EVALUATORS,
    "calibrators": CALIBRATORS,
    "sections": SECTIONS,
}
