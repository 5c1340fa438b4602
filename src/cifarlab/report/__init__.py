"""Reports: charts (PNG) and one self-contained HTML page answering the blog's questions."""

from __future__ import annotations

from pathlib import Path

from cifarlab.experiments.store import WORKSPACE


def report(
    experiment: str | None = None,
    workspace: str | Path = WORKSPACE,
    output: str | Path | None = None,
    run: str | None = None,
) -> Path:
    """Write the report of an experiment (or one run, or all runs) and return its index.html.

    ``output`` defaults to ``<workspace>/report-<experiment|run|all>/``.
    """
    from cifarlab.report.html import build_report  # matplotlib: loaded when a report is made

    return build_report(workspace, experiment=experiment, run_id=run, output=output)


__all__ = ["report"]
