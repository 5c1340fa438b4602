"""Reports: charts (PNG) and one self-contained HTML page answering the blog's questions."""

from __future__ import annotations

from pathlib import Path

from cifarlab.report.html import build_report


def report(
    experiment: str | None = None,
    workspace: str | Path = "cifarlab-runs",
    output: str | Path | None = None,
    run: str | None = None,
) -> Path:
    """Write the report of an experiment (or one run, or all runs) and return its index.html.

    ``output`` defaults to ``<workspace>/report-<experiment|run|all>/``.
    """
    return build_report(workspace, experiment=experiment, run_id=run, output=output)


__all__ = ["build_report", "report"]
