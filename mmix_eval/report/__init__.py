"""The report layer: Table-4-style comparisons from result records alone. Imports no torch.

    from mmix_eval.report import build_report
    build_report(["results/"], "reports/x", baseline="vanilla")

For the results as a pandas DataFrame, see ``mmix_eval.results``.
"""

from mmix_eval.report.build import build_report
from mmix_eval.report.load import load_results

__all__ = ["build_report", "load_results"]
