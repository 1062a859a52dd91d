"""Report sections, one file each, found by the evaluator's name. Imports no torch.

Built-in sections are named in ``mmix_eval.catalog.SECTIONS`` as "module:Class" and imported on first use; a user's section is one file
of their own, reached through ``build_report(sections={"my_evaluator": "my_sections:MySection"})``
(``mmix-eval report --section my_evaluator=my_sections:MySection``) or an installed package's entry point
in the group ``mmix_eval.report_sections`` named after the evaluator. Any other evaluator gets the generic
``ReportSection``.
"""

from __future__ import annotations

from mmix_eval.catalog import SECTIONS
from mmix_eval.errors import UserError
from mmix_eval.report.sections.base import Note, ReportSection, SectionContext, add_row, note_level

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
