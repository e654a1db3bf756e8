"""``imgcls drift report --wandb``: the report's summary, its per-column table and the evidently HTML in a W&B run.

The conventions of the training logger (imgcls/train/wandb_logger.py): wandb is imported only here and only when
asked for (the ``monitor`` extra), the mode is decided by imgcls and never left to a W&B prompt (``online`` needs
an API key; ``offline`` writes a run under ``<dir>/wandb/`` that ``wandb sync`` uploads later), and W&B's own
errors become one line with a hint, exit 2.

One run per report (``job_type="drift"``), named after the model and its version, with:

- summary: ``drift`` (1, 0, or absent when there were too few rows for a verdict), ``drifted_columns`` (a
  comma-separated list) and ``n_drifted``, ``accuracy/estimated``, ``accuracy/low``, ``accuracy/high``,
  ``accuracy/reference``, ``rows/current``, ``rows/reference``, ``rows/other_models``;
- config: the model (name, version, sha256) and the window (source, first, last);
- ``drift/columns``: a table of every compared column (name, method, score, threshold, drifted, change in words);
- ``drift/report``: the self-contained evidently HTML (``wandb.Html``) when one was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.wandb_run import start_run

DEFAULT_PROJECT = "imgcls-drift"


def resolve_mode(mode: str | None) -> str:
    """``online``/``offline`` from ``--wandb-mode``, else from ``WANDB_MODE`` / a configured key
    (:func:`imgcls.wandb_run.resolve_mode`, as ``serve --wandb``).

    Raises:
        UsageError: wandb is not installed, an unknown mode, or online without an API key.
    """
    from imgcls.deps import require
    from imgcls.wandb_run import resolve_mode as decide

    require("wandb", feature="--wandb")
    return decide(requested=mode)


def log_report(
    summary: dict[str, Any], html: Path | None, *, mode: str, project: str = DEFAULT_PROJECT, directory: Path | None
) -> dict[str, str]:
    """Log one report to a new W&B run; returns its ``id``, ``dir`` (the local run folder) and ``url`` if online.

    Raises:
        ImgclsError: W&B could not start or finish the run (exit 2, with a hint).
    """
    import wandb

    model, acc, sizes = summary["model"], summary["accuracy"], summary["sample_sizes"]
    run = start_run(
        wandb,
        directory=directory,
        project=project,
        name=f"drift-{model['name']}-{model['version']}",
        job_type="drift",
        mode=mode,
        config={"model": model, "window": summary["window"], "rule": summary.get("rule")},
        reinit="finish_previous",
    )
    try:
        table = wandb.Table(columns=["column", "method", "score", "threshold", "drifted", "change"])
        for c in summary["columns"]:
            table.add_data(
                c["name"], c["method"], c["score"], c["threshold"], bool(c["drifted"]), c.get("description") or ""
            )
        logged: dict[str, Any] = {"drift/columns": table}
        if html is not None and html.is_file():
            logged["drift/report"] = wandb.Html(html.read_text(encoding="utf-8"), inject=False)
        run.log(logged)
        values: dict[str, Any] = {
            "drifted_columns": ", ".join(summary["drifted_columns"]),
            "n_drifted": len(summary["drifted_columns"]),
            "accuracy/estimated": acc["estimated"],
            "accuracy/low": acc["interval"][0],
            "accuracy/high": acc["interval"][1],
            "accuracy/reference": acc["reference"],
            "rows/current": sizes["current"],
            "rows/reference": sizes["reference"],
            "rows/other_models": sizes["other_models"],
        }
        if summary["drift"] is not None:  # no verdict (too few rows): no drift value rather than a false 0
            values["drift"] = int(bool(summary["drift"]))
        run.summary.update(values)
        info = {"id": str(run.id), "dir": str(Path(run.dir).parent), "url": str(run.url or "")}
    finally:
        run.finish()
    return info
