"""Drift: make a bundle's reference, and compare served traffic (or a folder of images) with it.

Exit codes of `imgcls drift report`: 0 no drift (or no verdict: too few rows, with a warning); 4 drift found
with --fail-on-drift (without it, drift exits 0 too: the report is the product); 2 usage and bad input
(missing, empty or foreign log, --since selecting nothing, a bundle without a reference, a corrupted one);
1 anything else.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imgcls.cli._render import styled

if TYPE_CHECKING:
    from rich.text import Text

app = typer.Typer(
    help="Drift: a reference made with the model, reports over the server's own traffic.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("reference")
def reference(
    bundle: Annotated[Path, typer.Argument(help="The bundle (updated in place; its ONNX models are re-exported).")],
    data: Annotated[
        str | None, typer.Option("--data", help="Dataset (as `imgcls train --data`; default: the bundle's).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where datasets live.")] = None,
    size: Annotated[int, typer.Option("--size", help="Reference images (1,000-5,000).")] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Picks the sample and the calibration windows.")] = 0,
    k: Annotated[int, typer.Option("--components", "-k", min=1, max=64, help="PCA components of the embedding.")] = 8,
) -> None:
    """Make (or replace) the drift reference of a bundle from held-out images of its dataset."""
    from imgcls.cli._render import console
    from imgcls.drift.rebuild import add_reference

    section = add_reference(bundle, data=data, data_dir=data_dir, size=size, seed=seed, k=k)
    cal = section.calibration
    console.print(
        f"drift reference: {section.images} images of {section.source} (seed {section.seed}), "
        f"{len(section.columns)} columns, embedding k={section.embedding.k}; temperature "
        f"{cal.temperature:.3f}, reference accuracy {cal.reference_accuracy:.2%}",
        soft_wrap=True,
        highlight=False,
    )


@app.command("report")
def report(
    model: Annotated[str, typer.Option("--model", "-m", help="Bundle directory or store reference (NAME@ALIAS).")],
    log: Annotated[
        str | None, typer.Option("--log", help="Prediction log: an SQLite file, or a folder of logs / segments.")
    ] = None,
    images: Annotated[Path | None, typer.Option("--images", help="A folder of images instead of a log.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only rows of the last 90s / 30m / 24h / 7d.")] = None,
    last: Annotated[int | None, typer.Option("--last", help="Only the newest N rows.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write drift.json and report.html (evidently) here.")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 4 when drift is found (for cron and CI alerts).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    precision: Annotated[str, typer.Option("--precision", help="Model run for --images: fp32, int8.")] = "fp32",
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Log the summary, the column table and the HTML report to a W&B run.")
    ] = False,
    wandb_mode: Annotated[
        str | None,
        typer.Option(help="online (needs an API key) or offline (no network); default WANDB_MODE.", show_default=False),
    ] = None,
    wandb_project: Annotated[str, typer.Option(help="W&B project for --wandb.")] = "imgcls-drift",
) -> None:
    """Compare a window of the server's prediction log (or a folder of images) with the model's drift reference."""
    from imgcls.cli._render import console, err_console
    from imgcls.drift.report import DRIFT_EXIT_CODE, drift_report
    from imgcls.errors import UsageError
    from imgcls.fsio import check_output

    if fmt not in ("table", "json"):
        raise UsageError(f"--format {fmt!r}", hint="use table or json")
    if out is not None:
        check_output(out, "--out", folder=True)
    mode = None
    if wandb:
        from imgcls.drift.wandb_report import resolve_mode

        mode = resolve_mode(wandb_mode)  # before the report: a missing key fails fast
    elif wandb_mode is not None:
        raise UsageError("--wandb-mode applies to --wandb", hint="add --wandb")
    with contextlib.ExitStack() as stack:
        html_dir = out
        if wandb and out is None:  # the run gets the HTML even when no --out keeps it
            html_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imgcls-drift-")))
        result = drift_report(model, log=log, images=images, since=since, last=last, out=html_dir, precision=precision)
        if out is None:  # (the temporary HTML is gone after the run)
            result.out = None
            result.summary.pop("html", None)
        if mode is not None:
            from imgcls.drift.wandb_report import log_report

            run = log_report(result.summary, result.html, mode=mode, project=wandb_project, directory=out)
            where = run["url"] or f"{run['dir']} (offline: `wandb sync` it)"
            err_console.print(f"W&B run {run['id']}: {where}", highlight=False, soft_wrap=True)
    s = result.summary
    for w in s["warnings"]:
        err_console.print(styled("[yellow]warning:[/] {}", w), highlight=False, soft_wrap=True)
    if fmt == "json":
        print(json.dumps(s, indent=2))
    else:
        console.print(_table(s), soft_wrap=True)
        console.print(_verdict(s), soft_wrap=True, highlight=False)
        if result.out is not None:
            console.print(f"wrote {result.out / 'drift.json'}" + (f" and {result.html}" if result.html else ""))
    if fail_on_drift and s["drift"]:
        raise typer.Exit(DRIFT_EXIT_CODE)


def _verdict(s: dict[str, Any]) -> Text:
    acc = s["accuracy"]
    est = (
        f"estimated accuracy {acc['estimated']:.1%} [{acc['interval'][0]:.1%}, {acc['interval'][1]:.1%}] "
        f"(reference {acc['reference']:.1%})"
    )
    sizes = s["sample_sizes"]
    rows = f"{sizes['current']} rows vs {sizes['reference']} reference" + (
        f"; {sizes['other_models']} rows of other models not compared" if sizes["other_models"] else ""
    )
    if s["drift"] is None:
        return styled("[yellow]no verdict[/]: too few rows ({}); {}", rows, est)
    if not s["drift"]:
        return styled("[green]no drift[/] ({}); {}", rows, est)
    words = "; ".join(c["description"] for c in s["columns"] if c["drifted"])
    return styled("[bold red]drift[/] in {} column(s): {} ({}); {}", len(s["drifted_columns"]), words, rows, est)


def _table(s: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"drift of {s['model']['name']} {s['model']['version']}", title_justify="left")
    for col in ("column", "method", "score", "threshold", "drifted", "change"):
        table.add_column(col)
    for c in s["columns"]:
        mark = styled("[bold red]yes[/]") if c["drifted"] else "no"
        table.add_row(
            c["name"], c["method"], f"{c['score']:.4f}", f"{c['threshold']:.4f}", mark, c["description"] or ""
        )
    return table
