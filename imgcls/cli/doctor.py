"""Check what this machine can do (CUDA, onnxruntime, OpenVINO, CPU ISA, GCS, W&B, disk) and how to fix it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from imgcls.cli._render import console, styled

_MARK = {
    "ok": "[green]ok  [/]",
    "warn": "[yellow]warn[/]",
    "missing": "[red]miss[/]",
    "fail": "[red]FAIL[/]",
    "info": "[blue]info[/]",
}  # rich markup, for styled()
_UNDER = " " * 18  # a note or a fix lines up under the check's summary (the mark, its name in 12, the spaces)


def doctor(
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            "-r",
            metavar="CAP",
            help="Exit 2 unless this capability is present (repeat or comma-separate): cuda, torch, ort-cuda, "
            "tensorrt, openvino, avx2, avx512, vnni, amx, gcs, wandb, disk.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    no_torch: Annotated[
        bool, typer.Option("--no-torch", help="Skip the torch CUDA kernel check (it imports torch, ~1.5 s).")
    ] = False,
) -> None:
    """Check what this machine can do (CUDA, onnxruntime, OpenVINO, CPU ISA, GCS, W&B, disk) and how to fix it."""
    import os
    from pathlib import Path

    from imgcls.doctor import diagnose, required_names

    required = require or []
    needs_torch = any(cap in ("cuda", "torch") for cap in required_names(required))  # a bad name: before torch loads
    skip = ["torch"] if no_torch and not needs_torch else []
    report = diagnose(environ=dict(os.environ), home=Path.home(), skip=skip)
    missing = report.missing(required)  # validates the names before printing anything
    if as_json:
        print(json.dumps({**report.to_dict(), "required": required, "missing": missing}, indent=2))
    else:
        for check in report.checks:
            console.print(
                styled(_MARK[check.status] + " [bold]{}[/] {}", f"{check.name:<12}", check.summary),
                highlight=False,
                soft_wrap=True,
            )
            for note in check.notes:
                console.print(f"{_UNDER}→ {note}", highlight=False, soft_wrap=True)
            if check.fix:
                console.print(styled(_UNDER + "[yellow]fix:[/] {}", check.fix), highlight=False, soft_wrap=True)
    report.require(required)
