"""Export a bundle's model to ONNX (model.onnx; --int8 / --fp16 add quantized / half-precision copies), gated.

fp32 must match torch within 1e-4 on every logit with 100 % top-1 agreement (batch 1 and 32); int8 may lose
at most 1.0 point of validation top-1; fp16 gets 1 % of the logit range and 99 % agreement. A failed gate
exits 1 and leaves the bundle unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imgcls.cli._render import styled

if TYPE_CHECKING:
    from imgcls.bundle import ExportSection


def export(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory to export (it is updated in place).")],
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static int8, QDQ).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx (for GPU serving).")] = False,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's).")] = None,
    calib_size: Annotated[
        int, typer.Option("--calib-size", min=1, help="Training images that calibrate the int8 model.")
    ] = 256,
) -> None:
    from imgcls.cli._render import console, err_console
    from imgcls.export import export_bundle

    with err_console.status(f"exporting {bundle} …", spinner="dots") if err_console.is_terminal else _null():
        report = export_bundle(bundle, int8=int8, fp16=fp16, opset=opset, calib_size=calib_size)
    console.print(_table(report.section), soft_wrap=True)
    console.print(f"exported {', '.join(report.files)} into {report.bundle} (checked on {_source(report.section)})")


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _source(section: ExportSection) -> str:
    checked = section.checked_on or {}
    return f"{checked.get('val_images', '?')} images of {checked.get('source', '?')}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _table(section: ExportSection) -> Any:
    from rich.table import Table

    table = Table(title=f"ONNX export (opset {section.opset})", title_justify="left")
    for col in ("model", "file", "max |Δlogit| vs torch", "top-1 agreement", "val top-1", "gate"):
        table.add_column(col)
    for precision, entry in section.models.items():
        parity = entry.parity
        diffs = ", ".join(f"{p['max_abs_logit_diff']:.1e} (b{k.split('_')[-1]})" for k, p in parity.items()) or "–"
        agree = ", ".join(_pct(p["top1_agreement"]) for p in parity.values()) or "–"
        if precision == "int8":
            gate = f"drop {entry.top1_drop_points:.2f} ≤ {entry.tolerance['max_top1_drop_points']} pt"
        else:
            gate = f"|Δ| ≤ {entry.tolerance['max_abs_logit_diff']:.0e}"
        table.add_row(precision, entry.file, diffs, agree, _pct(entry.val_top1), styled("[green]ok[/] {}", gate))
    return table
