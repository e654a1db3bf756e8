"""Predict image files with an exported bundle (onnxruntime or OpenVINO, no torch): files, directories and globs.

Exit codes: 0 every file predicted, 1 some file failed (its error is reported, the others go on),
2 usage (no model, a bad flag, nothing to predict), 141 the reader of its output went away (`| head`).
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"


class EngineName(str, enum.Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


CSV_HEADER = ["path", "label", "class_id", "confidence", "top_k", "error_code", "error_message"]


def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, directories (recursive) or globs.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A bundle directory or a store reference (URI/NAME@ALIAS).")
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many classes to list per image.")] = 5,
    output: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json (lines) or csv.")] = (
        OutputFormat.table
    ),
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA when it really loads, else CPU.")] = (
        Device.auto
    ),
    engine: Annotated[
        EngineName,
        typer.Option("--engine", help="auto: the bundle's serving profile (imgcls bench --pick), else onnxruntime."),
    ] = EngineName.auto,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="fp32, bf16 (OpenVINO), int8 or fp16 (default: the profile's, else fp32).",
            show_default=False,
        ),
    ] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Run model.int8.onnx (imgcls export --int8).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Run model.fp16.onnx (imgcls export --fp16).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per inference call.")] = 32,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Inference threads.")] = None,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", min=1, help="Refuse images with more pixels (decompression bombs).")
    ] = 40_000_000,
    allow_webp: Annotated[
        bool, typer.Option("--webp/--no-webp", help="Decode WebP images (JPEG and PNG always).")
    ] = True,
) -> None:
    from imgcls.cli._files import find_images
    from imgcls.errors import UsageError
    from imgcls.runtime import Predictor, resolve_model

    if int8 + fp16 + (precision is not None) > 1:
        raise UsageError("--int8, --fp16 and --precision exclude each other", hint="pick one precision")
    files = find_images(paths)
    predictor = Predictor.from_bundle(
        resolve_model(model),
        engine=engine.value,
        device=device.value,
        precision="int8" if int8 else "fp16" if fp16 else precision,
        intra_threads=threads,
        max_pixels=max_pixels,
        allow_webp=allow_webp,
    )
    results = predictor.predict_paths(files, top_k=top_k, batch_size=batch_size)
    failed = _render(results, output, total=len(files), batch_size=batch_size, provider=predictor.provider)
    if failed:
        raise typer.Exit(1)


def _render(results: Any, output: OutputFormat, *, total: int, batch_size: int, provider: str) -> int:
    """Print results in ``output`` format as they come; returns how many files failed."""
    from imgcls.cli._render import console, err_console, styled

    # json/csv stream a line per file already; a live bar would also capture their stdout lines
    show_progress = output is OutputFormat.table and sys.stdout.isatty() and total > batch_size
    failed = 0
    rows: list[tuple[Path, Any]] = []
    writer = None
    if output is OutputFormat.csv:
        import csv

        writer = csv.writer(_TerminalSafe(sys.stdout) if sys.stdout.isatty() else sys.stdout, lineterminator="\n")
        writer.writerow(CSV_HEADER)
    progress = _progress(err_console, total) if show_progress else None
    task = progress.add_task("predicting", total=total) if progress else None
    try:
        if progress:
            progress.start()
        for path, result in results:
            ok = not hasattr(result, "code")
            failed += not ok
            if output is OutputFormat.json:
                sys.stdout.write(_json_line(path, result, ok) + "\n")
            elif writer is not None:
                writer.writerow(_csv_row(path, result, ok))
            else:
                rows.append((path, result))
            if progress and task is not None:
                progress.advance(task)
        sys.stdout.flush()
    finally:
        if progress:
            progress.stop()
    if output is OutputFormat.table:
        console.print(_table(rows, provider), soft_wrap=True)
    if failed:
        err_console.print(styled("[yellow]{} of {} file(s) could not be predicted[/]", failed, total), highlight=False)
    return failed


class _TerminalSafe:
    """A stream for CSV read on a terminal, as ``ls`` does: a file name's escape sequences are shown, not acted on
    (into a file or a pipe the CSV keeps every name's bytes as they are)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        from imgcls.text import printable

        return int(self.stream.write(printable(text)))


def _progress(console: Any, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _json_line(path: Path, result: Any, ok: bool) -> str:
    import json

    if ok:
        return json.dumps({"path": str(path), **result.to_dict()})
    return json.dumps({"path": str(path), "error": {"code": result.code, "message": result.message}})


def _csv_row(path: Path, result: Any, ok: bool) -> list[Any]:
    import json

    if ok:
        d = result.to_dict()
        return [str(path), d["label"], d["class_id"], f"{d['confidence']:.6f}", json.dumps(d["top_k"]), "", ""]
    return [str(path), "", "", "", "", result.code, result.message]


def _table(rows: list[tuple[Path, Any]], provider: str) -> Any:
    from rich.table import Table

    from imgcls.cli._render import styled

    table = Table(title=f"predictions ({provider.replace('ExecutionProvider', '')})", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("label")
    table.add_column("confidence", justify="right")
    table.add_column("top-k")
    for path, result in rows:
        if hasattr(result, "code"):
            table.add_row(str(path), styled("[red]error: {}[/]", result.code), "", result.message)
        else:
            top = ", ".join(f"{t.label} {t.probability:.1%}" for t in result.top_k[1:])
            table.add_row(str(path), result.label, f"{result.confidence:.1%}", top)
    return table
