"""Report sections, one file each, found by the evaluator's name. Imports no torch.

Built-in sections are named here as "module:Class" and imported on first use; a user's section is one file
of their own, reached through ``build_report(sections={"my_evaluator": "my_sections:MySection"})``
(``mmix-eval report --section my_evaluator=my_sections:MySection``) or an installed package's entry point
in the group ``mmix_eval.report_sections`` named after the evaluator. Any other evaluator gets the generic
``ReportSection``.
"""

from __future__ import annotations

from mmix_eval.errors import UserError
from mmix_eval.registry import Registry
from mmix_eval.report.sections.base import Note, ReportSection, SectionContext, add_row, note_level

SECTIONS: Registry = Registry("report section", "mmix_eval.report_sections", {
    "calibration": ("mmix_eval.report.sections.calibration:CalibrationSection", "reliability diagrams before and after scaling"),
    "corruptions": ("mmix_eval.report.sections.corruptions:CorruptionsSection", "mCE / CE rows, severity plots, heatmap"),
    "fgsm": ("mmix_eval.report.sections.attacks:AttackSection", "the gradient-masking check"),
    "attack": ("mmix_eval.report.sections.attacks:AttackSection", "the gradient-masking check"),
    "ood": ("mmix_eval.report.sections.ood:OODSection", "OOD detection rows"),
    "spectra": ("mmix_eval.report.sections.spectra:SpectraSection", "singular-value spectra plots"),
    "shift": ("mmix_eval.report.sections.shift:ShiftSection", "accuracy on the line, effective robustness"),
})

__all__ = ["SECTIONS", "Note", "ReportSection", "SectionContext", "add_row", "note_level", "section_for"]


def section_for(evaluator: str, given: dict[str, str] | None = None) -> ReportSection:
    """The section of an evaluator: one the user names in ``given`` (evaluator -> "module:Class"), a
    registered or installed one, a built-in one, else the generic section."""
    path = (given or {}).get(evaluator)
    if path is not None:
        cls = SECTIONS.get(path)
    elif evaluator in SECTIONS:
        cls = SECTIONS.get(evaluator)
    else:
        cls = SECTIONS.entry_point(evaluator) or ReportSection
    if not (isinstance(cls, type) and issubclass(cls, ReportSection)):
        raise UserError(f"report section '{path or evaluator}': expected a ReportSection subclass, got {cls!r:.80}")
    return cls(evaluator)
