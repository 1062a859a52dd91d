"""The report layer: Table-4-style comparisons from result records alone. Imports no torch.

    from mmix_eval.report import build_report
    build_report(["results/"], "reports/x", baseline="vanilla")

For the results as a pandas DataFrame, see ``mmix_eval.results``. ``build_report`` and ``load_results`` load
on first use: a bench job that only needs a label helper (``report.labels``) does not pay for matplotlib,
pandas and Jinja2 at start-up.
"""

__all__ = ["build_report", "load_results"]


def __getattr__(name: str):
    if name == "build_report":
        from mmix_eval.report.build import build_report

        return build_report
    if name == "load_results":
        from mmix_eval.report.load import load_results

        return load_results
    raise AttributeError(f"module 'mmix_eval.report' has no attribute '{name}'")
